//! The new server's side of a live handoff (`--take-over-from URL`): once bound, ask the old
//! server for its world, run it, then confirm. The old server's side is
//! [`crate::http::handoff`]; the flow is described in [`crate::handoff`].
//!
//! Nothing is confirmed before the restored simulation ticks here, and any failure before the
//! confirmation ends this process with an error: the old server, never told, unfreezes at its
//! `--handoff-timeout` and carries on with its players.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::handoff::{auth, bundle};
use crate::http::handoff::{CONFIRM_PATH, HEADER, PATH};
use crate::server::{Server, ServerError};

/// How long one request to the old server may take, connection to last byte. The state of
/// 5,000 NPCs and 500 players is a few MB on a local network.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes allowed for the answer's status line and headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Takes the world over from the server whose HTTP side is `from`, then serves it until
/// `shutdown` (as [`Server::run`]). `confirmed` turns true once the old server confirmed (under
/// Agones the server then allocates itself).
pub async fn run(
    mut server: Server,
    from: &str,
    confirmed: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let config = server.config();
    let secret = server.token_secret();
    let to = server.moved_to();
    let asked = std::time::Instant::now();
    let body = bitcode::encode(&to);
    let (status, answer) = post(from, PATH, &secret, &body, config.handoff_max_bytes)
        .await
        .map_err(ServerError::Takeover)?;
    if status != 200 {
        return Err(ServerError::Takeover(format!(
            "{from}{PATH} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        )));
    }
    let bundle = bundle::decode(&answer, config.handoff_max_bytes)
        .map_err(|e| ServerError::Takeover(format!("the state from {from}: {e}")))?;
    info!(
        tick = bundle.tick,
        bytes = answer.len(),
        seats = bundle.seats.len(),
        fetch_ms = asked.elapsed().as_secs_f64() * 1e3,
        "handoff: state received"
    );
    server.restore(bundle);
    let ticking = server.ticking();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    if ticking.await.is_err() {
        // run ended before starting the simulation: its error says why.
        return serving
            .await
            .unwrap_or(Err(ServerError::SimulationPanicked));
    }
    if config.debug_exit_before_confirm {
        error!("--debug-exit-before-confirm: exiting before the confirmation");
        std::process::exit(1);
    }
    match post(from, CONFIRM_PATH, &secret, b"", MAX_HEAD_BYTES).await {
        Ok((200, _)) => {
            info!(
                asked_to_confirmed_ms = asked.elapsed().as_secs_f64() * 1e3,
                "handoff confirmed: this server runs the world"
            );
            confirmed.send_replace(true);
        }
        failed => {
            let why = match failed {
                Ok((status, body)) => format!("{status}: {}", String::from_utf8_lossy(&body)),
                Err(e) => e,
            };
            shutdown.cancel();
            let _ = serving.await;
            return Err(ServerError::Takeover(format!(
                "{from}{CONFIRM_PATH} did not confirm ({why})"
            )));
        }
    }
    serving
        .await
        .unwrap_or(Err(ServerError::SimulationPanicked))
}

/// A signed `POST` of `body` to `base` + `path` over plain HTTP/1.1 (the game HTTP side's
/// scheme), within [`REQUEST_TIMEOUT`]; the status and at most `max_body` bytes of body.
pub async fn post(
    base: &str,
    path: &str,
    secret: &[u8],
    body: &[u8],
    max_body: usize,
) -> Result<(u16, Vec<u8>), String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// bases are spoken"))?
        .trim_end_matches('/');
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let signature = auth::sign(secret, "POST", path, body, unix_ms, nonce);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n{HEADER}: {signature}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let limit = (MAX_HEAD_BYTES + max_body) as u64;
        (&mut stream)
            .take(limit + 1)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer.len() as u64 > limit {
            return Err(format!("the answer is longer than {limit} bytes"));
        }
        parse_response(&answer)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{base}{path}: no answer within {REQUEST_TIMEOUT:?}"))?
}

/// The status and body of a whole HTTP/1.1 response with a `Content-Length` body.
fn parse_response(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "the answer's head is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no status")?;
    let body = &bytes[end + 4..];
    let length = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    match length {
        Some(n) if n != body.len() => Err(format!(
            "the answer's body is {} bytes, its header says {n}",
            body.len()
        )),
        _ => Ok((status, body.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn responses_are_read_whole_or_refused() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(parse_response(ok), Ok((200, b"abc".to_vec())));
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(forbidden), Ok((403, Vec::new())));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
