//! Cold start of one fleet server: `arena-server --agones` started as a process against the
//! Agones SDK sidecar double, timed from the spawn to each call the double records (its first
//! `GetGameServer`, `Ready`), and its resident memory once Ready and idle (no player).
//!
//! `cargo bench -p arena-server --features agones --bench fleet_start` (a release build)
//! starts it `RUNS` times for each world size and prints the median and worst; BENCHMARKS.md
//! ("A fleet server's cold start") records the figures. Under `cargo test --all-targets` it
//! starts one small server once, as a smoke test.

use std::time::{Duration, Instant};

use arena_agones_double::{Double, Init};
use arena_server::fleet::{HTTP_PORT, PLAYERS_LIST, WT_PORT};

const RUNS: usize = 10;
/// How long after Ready the idle memory is read (the first keyframe, buffers warmed).
const SETTLE: Duration = Duration::from_secs(3);

struct Run {
    to_sidecar: Duration,
    to_ready: Duration,
    idle_rss_kib: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn once(npcs: u32, settle: Duration) -> Run {
    let wt_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let double = Double::start(Init {
        ports: vec![(WT_PORT.into(), wt_port), (HTTP_PORT.into(), 7654)],
        lists: vec![(PLAYERS_LIST.into(), 100)],
        ..Init::default()
    })
    .expect("the double starts");
    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args([
            "--agones",
            "--max-clients",
            "100",
            "--npcs",
            &npcs.to_string(),
        ])
        .args(["--wt-bind", &format!("127.0.0.1:{wt_port}")])
        .args([
            "--http-bind",
            "127.0.0.1:0",
            "--viewer-bind",
            "off",
            "--no-replays",
        ])
        .args(["--log", "warn"])
        .env("AGONES_SDK_GRPC_PORT", double.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("arena-server starts");
    let pid = child.id().expect("running");
    let ready = double
        .wait_for(
            |calls| calls.iter().any(|c| c.rpc == "Ready"),
            Duration::from_secs(60),
        )
        .await;
    assert!(ready, "no Ready: {:?}", double.calls());
    let calls = double.calls();
    let first = |rpc: &str| {
        calls
            .iter()
            .find(|c| c.rpc == rpc)
            .map(|c| c.at - spawned)
            .expect("seen")
    };
    let run = Run {
        to_sidecar: first("GetGameServer"),
        to_ready: first("Ready"),
        idle_rss_kib: {
            tokio::time::sleep(settle).await;
            rss_kib(pid)
        },
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    run
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (runs, sizes, settle): (usize, &[u32], Duration) = if bench {
        (RUNS, &[0, 1000, 5000], SETTLE)
    } else {
        (1, &[100], Duration::ZERO)
    };
    println!("fleet server cold start (spawn -> call seen by the SDK double), {runs} runs each");
    println!("npcs   sidecar reached ms (p50/max)   Ready ms (p50/max)   idle RSS MiB (p50)");
    for &npcs in sizes {
        let mut all = Vec::new();
        for _ in 0..runs {
            all.push(once(npcs, settle).await);
        }
        let p50_max = |f: &dyn Fn(&Run) -> f64| {
            let mut v: Vec<f64> = all.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() - 1])
        };
        let (s50, smax) = p50_max(&|r| ms(r.to_sidecar));
        let (r50, rmax) = p50_max(&|r| ms(r.to_ready));
        let (m50, _) = p50_max(&|r| r.idle_rss_kib as f64 / 1024.0);
        println!(
            "{npcs:<6} {s50:>10.1} / {smax:<10.1}          {r50:>7.1} / {rmax:<7.1}       {m50:>6.1}"
        );
    }
}
