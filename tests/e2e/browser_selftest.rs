//! The browser harness's own test: it loads a page of a real server, types, clicks, reads the
//! console, takes a screenshot and ends Chromium with nothing left behind. It lives apart from
//! `browser.rs` because that file is also included by the server's process tests
//! (`server/tests/handoff.rs`), which have no in-process server to load a page from.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::{Browser, GRACE, VIEWPORT};
use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_over_devtools_loads_a_page_types_and_takes_a_screenshot() {
    let t0 = Instant::now();
    let server = common::start(&[]).await;
    let mut browser = Browser::launch().await;
    let launched = t0.elapsed();

    let viewer = server.viewer.as_deref().expect("a viewer");
    browser.goto(&format!("{viewer}/replays")).await;
    assert_eq!(browser.eval("document.title").await, "Arena replays");
    assert_eq!(
        browser.eval("[innerWidth, innerHeight]").await,
        json!([VIEWPORT.0, VIEWPORT.1])
    );

    browser
        .eval(
            "window.__keys = []; \
                 addEventListener('keydown', e => __keys.push(e.code + ':' + e.key)); \
                 window.__clicks = []; \
                 addEventListener('click', e => __clicks.push([e.clientX, e.clientY])); \
                 console.log('listeners', 'installed')",
        )
        .await;
    browser.key_down("d").await;
    browser.key_up("d").await;
    browser.press("Space").await;
    let keys = browser
        .wait_for(
            "__keys.includes('KeyD:d') && __keys.includes('Space: ') && __keys",
            common::WAIT,
        )
        .await;
    assert_eq!(keys, json!(["KeyD:d", "Space: "]));

    browser.mouse_click(100.0, 50.0).await;
    let clicks = browser
        .wait_for("__clicks.length && __clicks", common::WAIT)
        .await;
    assert_eq!(clicks, json!([[100, 50]]));
    assert!(
        browser
            .console_messages()
            .contains(&"console.log: listeners installed".to_string()),
        "{:?}",
        browser.console_messages()
    );
    let thrown = browser.try_eval("nope.nothing").await;
    assert!(
        thrown.as_ref().is_err_and(|e| e.contains("ReferenceError")),
        "{thrown:?}"
    );

    let png =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/browser-selftest.png");
    let _ = std::fs::remove_file(&png);
    browser.screenshot(&png).await;
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.len() > 1000, "a {}-byte screenshot", bytes.len());
    assert_eq!(&bytes[..16], b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR");
    let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(
        (size(16), size(20)),
        VIEWPORT,
        "the screenshot's width and height"
    );

    let pid = browser.process_group();
    let profile = browser.profile().to_path_buf();
    browser.close().await;
    // Helpers that outlive the browser by a moment are orphans that init reaps; none may
    // still be running.
    let deadline = Instant::now() + GRACE;
    while !live_in_group(pid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = live_in_group(pid);
    assert!(
        live.is_empty(),
        "chromium's processes {live:?} outlived close()"
    );
    assert!(!profile.exists(), "{} outlived close()", profile.display());
    server.stop().await;
    eprintln!(
        "browser self-test: launch {launched:?}, all {:?}, screenshot {} bytes",
        t0.elapsed(),
        bytes.len()
    );
}

/// The processes of group `pgid` that are not zombies, from /proc.
fn live_in_group(pgid: libc::pid_t) -> Vec<String> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z" {
            live.push(format!("{head}) {}", fields[0]));
        }
    }
    live
}
