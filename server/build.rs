//! Builds the browser client core (`web/`, crate `arena-web`) for `wasm32-unknown-unknown` and
//! leaves it in `OUT_DIR` for the HTTP side to embed (`/arena_web.wasm`): the server binary
//! carries its own client, and a fresh checkout needs nothing but `cargo`.
//!
//! The nested build uses its own target directory (`target/wasm`), so it never waits on the
//! outer build's lock, and a release profile tuned for size (panic = abort: a panic in the page
//! ends the module, which the page reports).
//!
//! The wasm target. `rust-toolchain.toml` names it, and rustup installs it with the toolchain,
//! except where automatic installs are off (`RUSTUP_AUTO_INSTALL=0`, as on this project's
//! machines) or the toolchain was there before the file: so when the toolchain lacks it, this
//! script adds it with `rustup target add` and says so in a build warning. Without rustup (or
//! offline) the server still builds, warns, and serves a page saying what to do; the test suite
//! fails (it checks the module). Either way the script watches the target's library folder, so
//! the build after the target appears builds the client, whatever else changed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM: &str = "wasm32-unknown-unknown";

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
    let wasm_lib = ensure_wasm_target();
    // Missing, this path makes cargo run the script again at every build until it exists.
    println!("cargo:rerun-if-changed={}", wasm_lib.display());
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
            WASM,
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
    let built = target_dir.join(WASM).join("release").join("arena_web.wasm");
    match cmd.status() {
        Ok(s) if s.success() => {
            std::fs::copy(&built, &out).expect("copy the client module into OUT_DIR");
        }
        other => {
            println!(
                "cargo:warning=the browser client (web/) was not built for {WASM} ({other:?}); \
                 `rustup target add {WASM}` and build again. The server serves a page saying so."
            );
            std::fs::write(&out, b"").expect("write OUT_DIR");
        }
    }
}

/// The wasm target's standard library folder in the toolchain that builds us; if it is missing
/// and rustup manages that toolchain, adds the target first (a build warning says so).
fn ensure_wasm_target() -> PathBuf {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_default();
    let lib = sysroot.join("lib").join("rustlib").join(WASM).join("lib");
    if lib.is_dir() {
        return lib;
    }
    let Some(toolchain) = rustup_toolchain(&sysroot) else {
        return lib;
    };
    let rustup = rustup_binary();
    let added = Command::new(&rustup)
        .args(["target", "add", WASM, "--toolchain"])
        .arg(&toolchain)
        .output();
    match added {
        Ok(o) if o.status.success() && lib.is_dir() => println!(
            "cargo:warning=the toolchain {} lacked the {WASM} target, which the browser client \
             needs: added it with `rustup target add {WASM}`",
            toolchain.to_string_lossy()
        ),
        Ok(o) => println!(
            "cargo:warning=`rustup target add {WASM}` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("cargo:warning=could not run rustup to add the {WASM} target: {e}"),
    }
    lib
}

/// The rustup toolchain that runs this build: the one rustup's proxy chose
/// (`RUSTUP_TOOLCHAIN`), else the toolchain folder the sysroot is in; `None` if rustup does not
/// manage it (a distribution's or a hand-built Rust: then the target is the user's to add).
fn rustup_toolchain(sysroot: &Path) -> Option<OsString> {
    let under_rustup = sysroot
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "toolchains");
    if !under_rustup {
        return None;
    }
    std::env::var_os("RUSTUP_TOOLCHAIN")
        .filter(|t| !t.is_empty())
        .or_else(|| sysroot.file_name().map(OsString::from))
}

/// rustup on `PATH`, else where rustup installs itself (`$CARGO_HOME/bin`, `~/.cargo/bin`).
fn rustup_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("rustup"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
            Some(home.join("bin").join("rustup")).filter(|p| p.is_file())
        })
        .unwrap_or_else(|| "rustup".into())
}
