//! Arena's browser client core, compiled to `wasm32-unknown-unknown` and served by the server
//! (`/arena_web.wasm`): [`screen::Screen`] (the shared client session and what the page shows of
//! it) behind a small C ABI that the page's JavaScript (`web/www/arena.js`) calls. No
//! wasm-bindgen: the module imports nothing (the server's tests check its import section), and
//! the page needs no generated glue.
//!
//! Calling convention: the page copies bytes in through [`arena_input`] (a buffer of the size
//! asked for, valid until the next call), calls a function with their length, and reads what
//! the function produced at [`arena_output_ptr`] / [`arena_output_len`] (valid until the next
//! call). Text is UTF-8. Outgoing bytes from [`arena_frame`] are a sequence of
//! `kind: u8 | len: u32 LE | bytes`, kind 0 for the reliable stream and 1 for a datagram.
//!
//! Wasm is single-threaded: the one client lives in a thread-local.

pub mod screen;

use std::cell::RefCell;

use glam::Vec2;
use screen::{Controls, Screen};

#[derive(Default)]
struct Module {
    client: Option<Screen>,
    input: Vec<u8>,
    output: Vec<u8>,
}

thread_local! {
    static MODULE: RefCell<Module> = RefCell::new(Module::default());
}

/// Runs `f` with the input's first `len` bytes and the client, and stores what it returns as
/// the output; returns the output's length.
fn with_client(len: u32, f: impl FnOnce(&mut Screen, &[u8]) -> Vec<u8>) -> u32 {
    MODULE.with_borrow_mut(|m| {
        let Module {
            client,
            input,
            output,
        } = m;
        let bytes = &input[..(len as usize).min(input.len())];
        *output = match client {
            Some(c) => f(c, bytes),
            None => Vec::new(),
        };
        output.len() as u32
    })
}

/// A buffer for `len` bytes of input; the page writes into it before the next call.
#[unsafe(no_mangle)]
pub extern "C" fn arena_input(len: u32) -> *mut u8 {
    MODULE.with_borrow_mut(|m| {
        m.input.clear();
        m.input.resize(len as usize, 0);
        m.input.as_mut_ptr()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn arena_output_ptr() -> *const u8 {
    MODULE.with_borrow(|m| m.output.as_ptr())
}

#[unsafe(no_mangle)]
pub extern "C" fn arena_output_len() -> u32 {
    MODULE.with_borrow(|m| m.output.len() as u32)
}

/// Creates the client; the input holds the player's name.
#[unsafe(no_mangle)]
pub extern "C" fn arena_new(name_len: u32) {
    MODULE.with_borrow_mut(|m| {
        let name = String::from_utf8_lossy(&m.input[..(name_len as usize).min(m.input.len())])
            .into_owned();
        m.client = Some(Screen::new(&name));
    });
}

/// Starts a session; the input holds the connect token. Output: the `Hello` frame (empty if
/// it cannot be made).
#[unsafe(no_mangle)]
pub extern "C" fn arena_hello(token_len: u32) -> u32 {
    with_client(token_len, |c, token| {
        c.hello(&String::from_utf8_lossy(token)).unwrap_or_default()
    })
}

/// Bytes read from the stream.
#[unsafe(no_mangle)]
pub extern "C" fn arena_on_stream(len: u32, now_ms: f64) {
    with_client(len, |c, bytes| {
        c.on_stream(bytes, now_ms);
        Vec::new()
    });
}

/// One datagram.
#[unsafe(no_mangle)]
pub extern "C" fn arena_on_datagram(len: u32, now_ms: f64) {
    with_client(len, |c, bytes| {
        c.on_datagram(bytes, now_ms);
        Vec::new()
    });
}

/// The transport closed; the input holds what the browser said.
#[unsafe(no_mangle)]
pub extern "C" fn arena_on_closed(len: u32) {
    with_client(len, |c, text| {
        c.on_closed(&String::from_utf8_lossy(text));
        Vec::new()
    });
}

/// Controls held now; output: what to send (see the module's docs). `buttons`: bit 0 fire,
/// bit 1 alternate fire, bit 2 when `aim_x`/`aim_y` (a world point) are meaningful.
#[unsafe(no_mangle)]
pub extern "C" fn arena_frame(
    now_ms: f64,
    move_x: f32,
    move_y: f32,
    aim_x: f32,
    aim_y: f32,
    buttons: u32,
) -> u32 {
    let controls = Controls {
        move_x: move_x.clamp(-1.0, 1.0),
        move_y: move_y.clamp(-1.0, 1.0),
        aim_at: (buttons & 4 != 0 && aim_x.is_finite() && aim_y.is_finite())
            .then(|| Vec2::new(aim_x, aim_y)),
        fire: buttons & 1 != 0,
        alt_fire: buttons & 2 != 0,
    };
    with_client(0, |c, _| {
        let out = c.frame(now_ms, controls);
        let mut bytes = Vec::with_capacity(out.stream.len() + 16);
        if !out.stream.is_empty() {
            bytes.push(0);
            bytes.extend_from_slice(&(out.stream.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&out.stream);
        }
        for d in out.datagrams {
            bytes.push(1);
            bytes.extend_from_slice(&(d.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&d);
        }
        bytes
    })
}

/// Output: what to draw, as JSON ([`Screen::render_json`]).
#[unsafe(no_mangle)]
pub extern "C" fn arena_render(now_ms: f64) -> u32 {
    with_client(0, |c, _| c.render_json(now_ms).into_bytes())
}

/// Output: the HUD's numbers, as JSON ([`Screen::stats_json`]).
#[unsafe(no_mangle)]
pub extern "C" fn arena_stats(now_ms: f64) -> u32 {
    with_client(0, |c, _| c.stats_json(now_ms).into_bytes())
}

/// Output: the session's map, as JSON ([`Screen::map_json`]).
#[unsafe(no_mangle)]
pub extern "C" fn arena_map() -> u32 {
    with_client(0, |c, _| c.map_json().into_bytes())
}
