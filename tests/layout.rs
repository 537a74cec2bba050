//! The client's netcode is put together in one place: `shared::client_session`.
//!
//! The bots, the browser module and the server's virtual-clock harness used to wire the
//! snapshot receiver, the clock, the predictor and the interpolator each by hand, and their
//! copies drifted (one started its predictor without the inputs in flight, one acknowledged
//! later than another). Now they drive `ClientSession`; this test keeps it that way by reading
//! the workspace's sources: outside the session, only the pieces' own unit tests, benchmarks
//! and the fuzzing entry points may build them.

use std::path::{Path, PathBuf};

/// The pieces a client session assembles, as their constructors are written.
const PIECES: [&str; 4] = [
    "Receiver::new(",
    "ClockSync::new(",
    "Predictor::new(",
    "Interpolator::new(",
];

/// Files allowed to build them outside tests: the session itself, and the fuzz entry points
/// (which feed one piece arbitrary bytes, no session around it).
const ALLOWED: [&str; 2] = ["shared/src/client_session.rs", "shared/src/fuzzing.rs"];

/// The crates' sources (not their tests, benches or fuzz targets).
const SOURCES: [&str; 5] = [
    "shared/src",
    "server/src",
    "client-sim/src",
    "web/src",
    "tools",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part of a file that is not a test: test modules are kept in `tests.rs` /
/// `*_tests.rs` files, or at the end of a file after `#[cfg(test)]`.
fn non_test_code(path: &Path, text: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
    {
        return None;
    }
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    Some(text[..end].to_string())
}

/// `(file, line, piece)` for every place outside [`ALLOWED`] that builds a piece.
fn wirings(root: &Path) -> Vec<(String, usize, &'static str)> {
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let mut found = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if ALLOWED.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(code) = non_test_code(&path, &text) else {
            continue;
        };
        for (i, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for piece in PIECES {
                if line.contains(piece) {
                    found.push((rel.clone(), i + 1, piece));
                }
            }
        }
    }
    found
}

#[test]
fn only_the_client_session_puts_the_client_netcode_together() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = wirings(root);
    assert!(
        found.is_empty(),
        "the client's netcode is assembled in shared::client_session only; drive a \
         ClientSession instead of building its pieces here: {found:#?}"
    );
    // The session itself is still found by the scan (so a rename cannot make it pass
    // vacuously).
    let session = std::fs::read_to_string(root.join(ALLOWED[0])).unwrap();
    for piece in PIECES {
        assert!(
            session.contains(piece),
            "client_session.rs no longer builds {piece}"
        );
    }
}

/// The session's constants, defined once: copies of these drifted before.
const SESSION_CONSTANTS: [&str; 5] = [
    "const SENT_LOG",
    "const PING_INTERVAL",
    "const MAX_PINGS_IN_FLIGHT",
    "const WARM_UP",
    "fn view_line",
];

#[test]
fn the_client_sessions_constants_have_one_copy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root.join(dir), &mut files);
    }
    for name in SESSION_CONSTANTS {
        let mut defined = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            if non_test_code(path, &text).is_some_and(|code| code.contains(name)) {
                defined.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
        assert_eq!(
            defined,
            [ALLOWED[0]],
            "`{name}` must be defined once, in the client session"
        );
    }
}
