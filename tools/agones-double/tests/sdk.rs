//! The double against the official client: each test drives it with the `agones` crate that
//! arena-server uses, so what passes here is what the server will see.

use std::time::{Duration, Instant};

use agones::Sdk;
use agones::errors::Error;
use arena_agones_double::{Call, Double, Init};
use tonic::Code;

/// Long enough for a loaded machine; a passing test never waits for it.
const PATIENCE: Duration = Duration::from_secs(10);

async fn connect(double: &Double) -> Sdk {
    tokio::time::timeout(PATIENCE, Sdk::new(Some(double.port()), None))
        .await
        .expect("the SDK connects within PATIENCE")
        .expect("the SDK connects to the double")
}

fn rpcs(calls: &[Call]) -> Vec<&str> {
    calls.iter().map(|c| c.rpc.as_str()).collect()
}

/// The gRPC code of a refused SDK call.
fn code<T: std::fmt::Debug>(result: agones::errors::Result<T>) -> Code {
    match result {
        Err(Error::Rpc(status)) => status.code(),
        other => panic!("expected a refused RPC, got {other:?}"),
    }
}

#[tokio::test]
async fn lifecycle_calls_move_the_state_and_are_recorded_in_order() {
    let double = Double::start(Init {
        ports: vec![("wt".into(), 7000), ("http".into(), 7001)],
        ..Init::default()
    })
    .unwrap();
    let mut sdk = connect(&double).await;

    let gs = sdk.get_gameserver().await.unwrap();
    let status = gs.status.unwrap();
    assert_eq!(status.state, "Scheduled");
    assert_eq!(status.address, "127.0.0.1");
    let ports: Vec<_> = status
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port))
        .collect();
    assert_eq!(ports, [("wt", 7000), ("http", 7001)]);

    sdk.ready().await.unwrap();
    assert_eq!(double.state(), "Ready");
    sdk.set_label("arena", "allocated").await.unwrap();
    assert_eq!(double.label("arena").as_deref(), Some("allocated"));
    let labels = sdk
        .get_gameserver()
        .await
        .unwrap()
        .object_meta
        .unwrap()
        .labels;
    assert_eq!(
        labels.get("agones.dev/sdk-arena").map(String::as_str),
        Some("allocated")
    );
    sdk.set_annotation("note", "x").await.unwrap();
    let annotations = double.game_server().object_meta.unwrap().annotations;
    assert_eq!(
        annotations.get("agones.dev/sdk-note").map(String::as_str),
        Some("x")
    );
    sdk.reserve(Duration::from_secs(60)).await.unwrap();
    assert_eq!(double.state(), "Reserved");
    sdk.allocate().await.unwrap();
    assert_eq!(double.state(), "Allocated");
    sdk.shutdown().await.unwrap();
    assert_eq!(double.state(), "Shutdown");

    let calls = double.calls();
    // Sdk::new polls GetGameServer until the double answers: one or more at the start.
    let after_connect: Vec<_> = rpcs(&calls)
        .into_iter()
        .skip_while(|rpc| *rpc == "GetGameServer")
        .collect();
    assert_eq!(
        after_connect,
        [
            "Ready",
            "SetLabel",
            "GetGameServer",
            "SetAnnotation",
            "Reserve",
            "Allocate",
            "Shutdown"
        ]
    );
    let label = calls.iter().find(|c| c.rpc == "SetLabel").unwrap();
    assert_eq!(label.detail, "arena=allocated");
    assert!(calls.iter().all(|c| c.error.is_none()));
    assert!(calls.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn health_pings_are_recorded_one_by_one_with_their_times() {
    let double = Double::start(Init::default()).unwrap();
    let sdk = connect(&double).await;
    let health = sdk.health_check();

    let before = Instant::now();
    for sent in 1..=3 {
        health.send(()).await.unwrap();
        let count = |calls: &[Call]| calls.iter().filter(|c| c.rpc == "Health").count();
        assert!(
            double
                .wait_for(|calls| count(calls) >= sent, PATIENCE)
                .await
        );
        assert_eq!(count(&double.calls()), sent, "one call per ping");
    }
    let after = Instant::now();

    let pings: Vec<Instant> = double
        .calls()
        .iter()
        .filter(|c| c.rpc == "Health")
        .map(|c| c.at)
        .collect();
    assert!(pings.windows(2).all(|w| w[0] < w[1]), "{pings:?}");
    assert!(before <= pings[0] && pings[2] <= after);
}

#[tokio::test]
async fn watch_streams_the_game_server_then_each_change() {
    let double = Double::start(Init {
        lists: vec![("players".into(), 10)],
        ..Init::default()
    })
    .unwrap();
    let mut sdk = connect(&double).await;
    let mut watch = sdk.watch_gameserver().await.unwrap();
    let mut next_state = async || {
        let gs = tokio::time::timeout(PATIENCE, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        gs.status.unwrap()
    };

    assert_eq!(
        next_state().await.state,
        "Scheduled",
        "the current GameServer comes at once"
    );
    double.set_state("Allocated");
    assert_eq!(next_state().await.state, "Allocated");
    sdk.beta()
        .clone()
        .append_list_value("players", "7")
        .await
        .unwrap();
    assert_eq!(next_state().await.lists["players"].values, ["7"]);
    assert_eq!(
        rpcs(&double.calls())
            .iter()
            .filter(|rpc| **rpc == "WatchGameServer")
            .count(),
        1
    );
}

#[tokio::test]
async fn lists_keep_the_sidecars_rules() {
    let double = Double::start(Init {
        lists: vec![("players".into(), 1)],
        ..Init::default()
    })
    .unwrap();
    let sdk = connect(&double).await;
    let mut beta = sdk.beta().clone();

    assert_eq!(
        code(beta.set_list_capacity("players", 1001).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(beta.set_list_capacity("players", -1).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(beta.set_list_capacity("nobody", 5).await),
        Code::NotFound
    );
    beta.set_list_capacity("players", 2).await.unwrap();
    assert_eq!(beta.get_list_capacity("players").await.unwrap(), 2);

    beta.append_list_value("players", "1").await.unwrap();
    assert_eq!(
        code(beta.append_list_value("players", "1").await),
        Code::AlreadyExists
    );
    beta.append_list_value("players", "2").await.unwrap();
    assert_eq!(
        code(beta.append_list_value("players", "3").await),
        Code::OutOfRange
    );
    assert_eq!(beta.get_list_values("players").await.unwrap(), ["1", "2"]);

    assert_eq!(
        code(beta.delete_list_value("players", "9").await),
        Code::NotFound
    );
    beta.delete_list_value("players", "1").await.unwrap();
    assert_eq!(code(beta.get_list_values("nobody").await), Code::NotFound);
    assert_eq!(double.list("players"), Some((2, vec!["2".to_string()])));
    assert_eq!(double.list("nobody"), None);

    // Lowering the capacity drops what no longer fits.
    beta.append_list_value("players", "4").await.unwrap();
    beta.set_list_capacity("players", 1).await.unwrap();
    assert_eq!(double.list("players"), Some((1, vec!["2".to_string()])));

    let calls = double.calls();
    let refused: Vec<_> = (calls.iter())
        .filter(|c| c.rpc == "AddListValue")
        .map(|c| {
            (
                c.detail.as_str(),
                c.error.as_deref().map(|e| e.split(':').next().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("1", None),
            ("1", Some("AlreadyExists")),
            ("2", None),
            ("3", Some("OutOfRange")),
            ("4", None)
        ]
    );
    let update = calls
        .iter()
        .find(|c| c.rpc == "UpdateList" && c.error.is_none())
        .unwrap();
    assert_eq!(update.detail, "players capacity=2");
}

#[tokio::test]
async fn counters_count_within_their_capacity() {
    let double = Double::start(Init {
        counters: vec![("rooms".into(), 3)],
        ..Init::default()
    })
    .unwrap();
    let sdk = connect(&double).await;
    let mut beta = sdk.beta().clone();

    beta.increment_counter("rooms", 2).await.unwrap();
    assert_eq!(
        code(beta.increment_counter("rooms", 2).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(beta.decrement_counter("rooms", 3).await),
        Code::OutOfRange
    );
    beta.decrement_counter("rooms", 1).await.unwrap();
    beta.set_counter_capacity("rooms", 10).await.unwrap();
    beta.set_counter_count("rooms", 9).await.unwrap();
    assert_eq!(beta.get_counter_count("rooms").await.unwrap(), 9);
    assert_eq!(beta.get_counter_capacity("rooms").await.unwrap(), 10);
    assert_eq!(
        code(beta.get_counter_count("nothing").await),
        Code::NotFound
    );
}

#[tokio::test]
async fn kill_drops_every_stream_at_once_and_the_port_serves_again() {
    let mut double = Double::start(Init::default()).unwrap();
    let port = double.port();
    let mut sdk = connect(&double).await;
    let mut watch = sdk.watch_gameserver().await.unwrap();
    watch
        .message()
        .await
        .unwrap()
        .expect("the current GameServer");
    let health = sdk.health_check();
    health.send(()).await.unwrap();
    assert!(
        double
            .wait_for(|calls| calls.iter().any(|c| c.rpc == "Health"), PATIENCE)
            .await
    );

    let killed = Instant::now();
    double.kill();
    let end = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("the stream ends");
    let noticed = killed.elapsed();
    assert!(
        !matches!(end, Ok(Some(_))),
        "no GameServer after the kill: {end:?}"
    );
    assert!(
        noticed < Duration::from_millis(500),
        "the watch stream ended after {noticed:?}"
    );
    assert!(
        sdk.ready().await.is_err(),
        "a call to a killed double fails"
    );
    assert_eq!(
        double.state(),
        "Scheduled",
        "the killed double served no Ready"
    );

    let again = Double::start_on(port, Init::default()).unwrap();
    assert_eq!(again.port(), port);
    // The same client reconnects on its next call, as arena-server's retries rely on.
    sdk.ready().await.unwrap();
    assert_eq!(again.state(), "Ready");
    assert_eq!(rpcs(&again.calls()), ["Ready"]);
}
