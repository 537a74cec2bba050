//! The browser game client, served by the server itself (no CDN, nothing fetched elsewhere):
//! `GET /` is the page, `/arena.js` its script, `/arena_web.wasm` the netcode module built
//! from the `web` crate by `build.rs` and embedded in the binary.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page (`web/www/index.html`).
pub const INDEX_HTML: &str = include_str!("../../../web/www/index.html");
/// Its script (`web/www/arena.js`): transport, input and drawing; no game rule.
pub const ARENA_JS: &str = include_str!("../../../web/www/arena.js");
/// The `web` crate for `wasm32-unknown-unknown` (empty if the wasm target was missing when the
/// server was built: see `build.rs`).
pub const ARENA_WEB_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arena_web.wasm"));

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/arena.js", get(script))
        .route("/arena_web.wasm", get(module))
}

/// Served fresh on every load: a new server build brings a new client, which must match it.
const NO_CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_CACHE],
        INDEX_HTML,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            NO_CACHE,
        ],
        ARENA_JS,
    )
        .into_response()
}

async fn module() -> Response {
    if ARENA_WEB_WASM.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this server was built without its browser client: \
             `rustup target add wasm32-unknown-unknown`, then build it again",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/wasm"), NO_CACHE],
        ARENA_WEB_WASM,
    )
        .into_response()
}

/// The module's imports, `(module, name)`, read from its import section: the client runs on
/// nothing but what the page passes in (no `env`, no wasm-bindgen glue). `None` if the bytes
/// are not a wasm module.
pub fn wasm_imports(wasm: &[u8]) -> Option<Vec<(String, String)>> {
    fn leb(b: &[u8], at: &mut usize) -> Option<u32> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn name(b: &[u8], at: &mut usize) -> Option<String> {
        let len = leb(b, at)? as usize;
        let s = b.get(*at..*at + len)?;
        *at += len;
        Some(String::from_utf8_lossy(s).into_owned())
    }
    if wasm.get(..4)? != b"\0asm" {
        return None;
    }
    let mut at = 8;
    let mut imports = Vec::new();
    while at < wasm.len() {
        let id = *wasm.get(at)?;
        at += 1;
        let len = leb(wasm, &mut at)? as usize;
        let end = at.checked_add(len)?;
        if id == 2 {
            let mut p = at;
            for _ in 0..leb(wasm, &mut p)? {
                let module = name(wasm, &mut p)?;
                let field = name(wasm, &mut p)?;
                imports.push((module, field));
                // The import's description: kind, then a type index, table, memory or global
                // type; only the names matter here, so a malformed one ends the reading.
                match *wasm.get(p)? {
                    0 => {
                        p += 1;
                        leb(wasm, &mut p)?;
                    }
                    1 => {
                        p += 2;
                        let flags = leb(wasm, &mut p)?;
                        leb(wasm, &mut p)?;
                        if flags & 1 != 0 {
                            leb(wasm, &mut p)?;
                        }
                    }
                    2 => {
                        p += 1;
                        let flags = leb(wasm, &mut p)?;
                        leb(wasm, &mut p)?;
                        if flags & 1 != 0 {
                            leb(wasm, &mut p)?;
                        }
                    }
                    3 => p += 3,
                    _ => return None,
                }
            }
        }
        at = end;
    }
    Some(imports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_client_module_is_wasm_and_imports_nothing() {
        assert!(
            !ARENA_WEB_WASM.is_empty(),
            "the server was built without its browser client: \
             server/build.rs adds `wasm32-unknown-unknown` where rustup manages the toolchain; \
             elsewhere install that target and build again"
        );
        let imports = wasm_imports(ARENA_WEB_WASM).expect("a wasm module");
        assert!(
            imports.iter().all(|(m, _)| m != "env"),
            "imports from env: {imports:?}"
        );
        assert_eq!(imports, [], "the module needs nothing from the page");
    }

    #[test]
    fn imports_are_read_from_a_module_that_has_some() {
        // (module (import "env" "now" (func)) (import "js" "mem" (memory 1)))
        let module: &[u8] = &[
            0, b'a', b's', b'm', 1, 0, 0, 0, // header
            1, 4, 1, 0x60, 0, 0, // type section: one () -> ()
            2, 21, 2, // import section, two imports
            3, b'e', b'n', b'v', 3, b'n', b'o', b'w', 0, 0, // env.now: func type 0
            2, b'j', b's', 3, b'm', b'e', b'm', 2, 0, 1, // js.mem: memory min 1
        ];
        assert_eq!(
            wasm_imports(module),
            Some(vec![
                ("env".into(), "now".into()),
                ("js".into(), "mem".into())
            ])
        );
        assert_eq!(wasm_imports(b"not wasm"), None);
    }
}
