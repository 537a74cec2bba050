//! Builds the browser client core (`web/`, crate `arena-web`) for `wasm32-unknown-unknown` and
//! leaves it in `OUT_DIR` for the HTTP side to embed (`/arena_web.wasm`): the server binary
//! carries its own client, and a fresh checkout needs nothing but `cargo`.
//!
//! The nested build uses its own target directory (`target/wasm`), so it never waits on the
//! outer build's lock, and a release profile tuned for size (panic = abort: a panic in the page
//! ends the module, which the page reports). If the wasm target is missing
//! (`rustup target add wasm32-unknown-unknown`), the server still builds, warns, and serves a
//! page saying so; the test suite fails (it checks the module).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let server = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = server
        .parent()
        .expect("the server is in the workspace")
        .to_path_buf();
    for p in [
        "web/src",
        "web/Cargo.toml",
        "shared/src",
        "shared/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("arena_web.wasm");
    let target_dir = root.join("target").join("wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--quiet",
            "-p",
            "arena-web",
            "--target",
            "wasm32-unknown-unknown",
            "--release",
            "--target-dir",
        ])
        .arg(&target_dir)
        // The outer build's flags and wrappers (clippy's, a host RUSTFLAGS) are not the
        // wasm build's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    let built = target_dir
        .join("wasm32-unknown-unknown")
        .join("release")
        .join("arena_web.wasm");
    match cmd.status() {
        Ok(s) if s.success() => {
            std::fs::copy(&built, &out).expect("copy the client module into OUT_DIR");
        }
        other => {
            println!(
                "cargo:warning=the browser client (web/) was not built for wasm32 ({other:?}); \
                 `rustup target add wasm32-unknown-unknown` and build again. The server serves a \
                 page saying so."
            );
            std::fs::write(&out, b"").expect("write OUT_DIR");
        }
    }
}
