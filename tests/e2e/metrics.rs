//! `/metrics` over real HTTP while real bots play: it parses as Prometheus text, its client
//! gauge matches the bots connected, and sessions are counted by how they ended.

use std::collections::BTreeMap;
use std::time::Duration;

use arena_client_sim::http;
use arena_client_sim::swarm::{self, SwarmBehaviour};

use crate::common::{self, TestServer, WAIT};

/// One sample: metric name and its labels rendered as `k="v",...` (empty without labels).
type Series = (String, String);

/// Parses the Prometheus text exposition format (version 0.0.4), strictly: every line is a
/// `# HELP`, a `# TYPE` with a known type, or `name{labels} value` with a float value, and every
/// sample belongs to a family whose TYPE came first.
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut samples = BTreeMap::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) => assert!(valid_name(name), "{line}"),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name), "{line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    typed.insert(name.to_string(), kind.to_string());
                }
                _ => panic!("bad comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("labels close").to_string()),
            None => (series, String::new()),
        };
        assert!(valid_name(name), "{line}");
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label is k=\"v\"");
            assert!(
                valid_name(k) && v.starts_with('"') && v.ends_with('"'),
                "{line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample before its TYPE: {line}");
        samples.insert((name.to_string(), labels), value);
    }
    samples
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

async fn scrape(server: &TestServer) -> BTreeMap<Series, f64> {
    let body = http::get(&server.http, "/metrics", Duration::from_secs(5))
        .await
        .expect("/metrics answers");
    parse(std::str::from_utf8(&body).expect("UTF-8"))
}

fn value(m: &BTreeMap<Series, f64>, name: &str, labels: &str) -> f64 {
    *m.get(&(name.to_string(), labels.to_string()))
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} in {m:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_the_bots_that_are_connected() {
    // Heap trims every 100 ms: the swarm's seconds of play see a dozen or more.
    let server = common::start(&["--memory-trim-interval", "100ms"]).await;
    let bots = 12;
    let swarm = tokio::spawn(swarm::run(common::swarm(
        &server,
        bots,
        3,
        SwarmBehaviour::Headings,
        11,
    )));
    server.sessions_reach(bots as usize).await;
    server.players_reach(u64::from(bots)).await;
    // A bot acknowledges snapshots with its inputs, which begin once its first ping is
    // answered (in a snapshot): a tick or two after it joins.
    server
        .metric_reaches("arena_datagrams_received_total", 1)
        .await;

    let m = scrape(&server).await;
    assert_eq!(value(&m, "arena_clients_connected", ""), f64::from(bots));
    assert_eq!(value(&m, "arena_players", ""), f64::from(bots));
    assert_eq!(value(&m, "arena_entities", ""), f64::from(bots + 50));
    assert_eq!(
        value(&m, "arena_sessions_opened_total", ""),
        f64::from(bots)
    );
    assert!(value(&m, "process_resident_memory_bytes", "") > 1e6);
    // The tick histogram is whole: buckets never decrease and +Inf holds every tick.
    let buckets: Vec<f64> = m
        .iter()
        .filter(|((n, _), _)| n == "arena_tick_duration_seconds_bucket")
        .map(|(_, v)| *v)
        .collect();
    let count = value(&m, "arena_tick_duration_seconds_count", "");
    assert!(count >= 1.0 && buckets.len() > 10, "{buckets:?}");
    assert_eq!(
        value(&m, "arena_tick_duration_seconds_bucket", "le=\"+Inf\""),
        count
    );
    let mut sorted: Vec<(f64, f64)> = m
        .iter()
        .filter(|((n, _), _)| n == "arena_tick_duration_seconds_bucket")
        .map(|((_, l), v)| {
            let le = l.trim_start_matches("le=\"").trim_end_matches('"');
            (le.parse::<f64>().unwrap_or(f64::INFINITY), *v)
        })
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(sorted.windows(2).all(|w| w[0].1 <= w[1].1), "{sorted:?}");
    for phase in arena_server::metrics::PHASES {
        let labels = format!("phase=\"{phase}\"");
        assert!(value(&m, "arena_tick_phase_seconds_count", &labels) >= 1.0);
    }
    assert!(value(&m, "arena_datagrams_sent_total", "") > 0.0);
    assert!(
        value(&m, "arena_datagrams_received_total", "") > 0.0,
        "acks"
    );
    assert!(value(&m, "arena_stream_bytes_received_total", "") > 0.0);
    // Replication's memory: set once snapshots are built (they are: acks came back), and no
    // more than a dozen clients among ~60 entities can hold (a whole view of every entity is
    // under 2 KiB; a client holds its baseline, a few views in flight and two spares).
    let views = value(&m, "arena_replication_view_bytes", "");
    assert!(
        views > 0.0 && views <= f64::from(bots) * 8192.0,
        "{views} bytes of views for {bots} clients"
    );
    let whole = value(&m, "arena_replication_views_whole", "");
    assert!(whole <= f64::from(bots) * 32.0, "{whole} whole views");

    let result = tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    common::assert_all_played(&result.report, u64::from(bots));
    server.sessions_reach(0).await;
    let m = scrape(&server).await;
    assert_eq!(value(&m, "arena_clients_connected", ""), 0.0);
    // The heap was trimmed while they played (glibc builds; elsewhere there is no trim), each
    // trim short on this small world (microseconds; the bound leaves room for a loaded machine).
    let trims = value(&m, "arena_memory_trims_total", "");
    let last = value(&m, "arena_memory_trim_last_seconds", "");
    assert!(value(&m, "arena_memory_trim_released_bytes_total", "") >= 0.0);
    if arena_server::memory::SUPPORTED {
        assert!(
            trims >= 1.0 && last > 0.0 && last < 0.25,
            "{trims} trims, the last {last} s"
        );
    } else {
        assert_eq!((trims, last), (0.0, 0.0));
    }
    assert_eq!(
        value(&m, "arena_sessions_closed_total", "reason=\"client_left\""),
        f64::from(bots)
    );
    // Bytes the server counted out against bytes the bots counted in (datagram payloads and
    // stream bytes on both sides): the bots cannot get more, and lose little on loopback.
    let sent = value(&m, "arena_datagram_bytes_sent_total", "")
        + value(&m, "arena_stream_bytes_sent_total", "");
    let received: u64 = result.bots.iter().map(|b| b.down_bytes).sum();
    assert!(
        received as f64 <= sent && received as f64 >= 0.8 * sent,
        "server counted {sent} B out, bots {received} B in"
    );
    server.stop().await;
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{reason=\"x\"} 3\n";
    assert_eq!(parse(ok).len(), 1);
    for bad in [
        "a_total 3\n",                // no TYPE
        "# TYPE a gauge\na three\n",  // not a number
        "# TYPE a gauge\na{x=1} 3\n", // unquoted label
        "# TYPE a wibble\na 3\n",     // unknown type
        "# TYPE a gauge\n9a 3\n",     // bad name
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}
