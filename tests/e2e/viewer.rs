//! The replay viewer in a real headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs, driven over DevTools in real time): it loads a recorded run, re-simulated by the
//! server, shows the entity count the recording has at a given tick, and plays on from there. A screenshot is left in
//! `target/test-artifacts/replay-viewer.png`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arena_client_sim::swarm::{self, SwarmBehaviour};
use arena_server::Config;
use arena_server::http::replays::{self, Library, Settings};
use arena_server::stats::Stats;
use arena_shared::replay::{self, Record};

use tokio_util::sync::CancellationToken;

use crate::browser::Browser;
use crate::common::{self, WAIT};
use crate::viewer_limits;

const TICK: u32 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_in_chromium_shows_the_recorded_entity_count_at_a_tick() {
    let dir = std::env::temp_dir().join(format!("arena-e2e-viewer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.display().to_string();
    let server = common::start(&["--replay-dir", &dir_arg, "--replay-keyframe-ticks", "30"]).await;
    let result = tokio::time::timeout(
        WAIT,
        swarm::run(common::swarm(&server, 10, 3, SwarmBehaviour::default(), 51)),
    )
    .await
    .expect("swarm ends");
    common::assert_all_played(&result.report, 10);
    // The run is still being recorded: the server's own viewer lists it and plays what is on
    // disk so far (the writer flushes at each keyframe).
    let served = server.viewer_addr.expect("a viewer");
    let listed = viewer_limits::get(served, "/api/replays").await.json();
    let live_id = listed["replays"][0].as_str().expect("a run").to_string();
    // Frames are streamed (chunked), which the bots' small client does not read.
    let live = viewer_limits::get(
        served,
        &format!("/api/replays/{live_id}/frames?from=1&count=30"),
    )
    .await
    .json();
    assert_eq!(live["frames"].as_array().map(Vec::len), Some(30));
    server.stop().await;

    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("replays")
        .map(|e| e.expect("entry").path())
        .collect();
    let id = replays::id_of(&files[0]).expect("a run id");
    // What the recording says is alive at the end of TICK.
    let read = replay::read(&std::fs::read(&files[0]).expect("readable"));
    let expected = read
        .records
        .iter()
        .find_map(|r| match r {
            Record::Keyframe { tick, entities, .. } if *tick == TICK => Some(entities.len()),
            _ => None,
        })
        .expect("a keyframe at the tick");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("bound");
    let settings = Settings::of(&Config::default(), None);
    let library = Arc::new(Library::files(
        id.clone(),
        files,
        settings,
        Arc::new(Stats::default()),
    ));
    let viewer = tokio::spawn(replays::serve(library, listener, CancellationToken::new()));
    let base = format!("http://{addr}");

    // The API the page reads gives the same count.
    let frames = viewer_limits::get(
        addr,
        &format!("/api/replays/{id}/frames?from={TICK}&count=1"),
    )
    .await
    .json();
    assert_eq!(frames["frames"][0]["t"], TICK);
    assert_eq!(
        frames["frames"][0]["e"].as_array().map(Vec::len),
        Some(expected)
    );

    let url = format!("{base}/replays/{id}?tick={TICK}");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("replay-viewer.png");
    let mut b = Browser::launch().await;
    b.goto(&url).await;
    let want = format!("tick {TICK} entities {expected}");
    b.wait_for(
        &format!("document.getElementById('status').textContent === {want:?}"),
        Duration::from_secs(20),
    )
    .await;
    b.screenshot(&shot).await;
    let png = std::fs::metadata(&shot).expect("a screenshot");
    assert!(png.len() > 1000, "{} bytes", png.len());
    // Play: the playhead moves on from the tick, in real time.
    b.eval("document.getElementById('play').click()").await;
    let moved = b
        .wait_for(
            &format!(
                "(() => {{ const m = document.getElementById('status').textContent.match(/^tick (\\d+)/); return m && Number(m[1]) > {TICK} + 10 && m[0]; }})()"
            ),
            Duration::from_secs(10),
        )
        .await;
    eprintln!(
        "viewer at {url}: {want}; playing, it reached {moved}; screenshot {}",
        shot.display()
    );
    b.close().await;
    viewer.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
