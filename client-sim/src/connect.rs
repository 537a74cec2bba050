//! One Arena connection's transport, step by step: ask the HTTP side for a token, connect over
//! WebTransport pinning the certificate by the hash it gave (never by turning verification
//! off), and the errors a bot counts by kind.
//!
//! The bots speak the protocol through the shared client session ([`crate::player`]); the
//! [`Transport`] methods that send `Hello` and read `Welcome` or `Reject` by hand are for the
//! integration tests, which must also send what no well-behaved client would.

use std::time::Duration;

use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{
    ClientMsg, DisconnectReason, Hello, MovedTo, PROTOCOL_VERSION, RejectReason, ResumeToken,
    ServerMsg, Welcome,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, RecvStream, SendStream};

use crate::endpoints::{self, Lease};
use crate::http::{self, HttpError};

/// Body of the server's `/api/connect`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectInfo {
    pub url: String,
    pub cert_sha256: Option<String>,
    /// Every hash to pin: the current one, then the next one shortly before the server rotates
    /// its self-signed certificate. Older servers send only `cert_sha256`.
    #[serde(default)]
    pub cert_sha256s: Vec<String>,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("fetching /api/connect: {0}")]
    Http(#[from] HttpError),
    #[error("/api/connect returned bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cert_sha256 is not a base64 SHA-256")]
    BadCertHash,
    #[error("WebTransport connect: {0}")]
    Connect(String),
    #[error("rejected: {reason:?} ({message})")]
    Rejected {
        reason: RejectReason,
        message: String,
        /// The server's hint: retry no sooner than this (0: none).
        retry_after_ms: u32,
    },
    #[error("disconnected: {reason:?} ({message})")]
    Disconnected {
        reason: DisconnectReason,
        message: String,
        /// The server's hint: reconnect no sooner than this (0: none).
        reconnect_after_ms: u32,
    },
    /// The server handed the session to another (`Disconnect(Moved)`): not a failure, the
    /// bot follows it.
    #[error("moved to {}", to.url)]
    Moved {
        to: MovedTo,
        /// Reconnect no sooner than this.
        reconnect_after_ms: u32,
    },
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("server sent a frame that does not decode")]
    BadFrame,
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl ClientError {
    /// A short stable label, for counting failures by kind in reports.
    pub fn kind(&self) -> String {
        match self {
            Self::Http(_) | Self::Json(_) => "http".into(),
            Self::BadCertHash => "bad_cert_hash".into(),
            Self::Connect(_) => "connect".into(),
            Self::Rejected { reason, .. } => format!("rejected_{}", reason.as_str()),
            Self::Disconnected { reason, .. } => format!("disconnected_{}", reason.as_str()),
            Self::Moved { .. } => "moved".into(),
            Self::Closed(_) => "closed".into(),
            Self::BadFrame => "bad_frame".into(),
            Self::Timeout(_) => "timeout".into(),
        }
    }
}

/// How long each handshake step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectInfo {
    /// Where a move sends a bot: the new server's URL, pinning the hashes it named, with no
    /// connect token (the resume token admits by itself where it is known).
    pub fn moved(to: &MovedTo) -> Self {
        Self {
            url: to.url.clone(),
            cert_sha256: None,
            cert_sha256s: to.cert_sha256.clone(),
            token: String::new(),
        }
    }
}

/// `GET /api/connect?name=NAME` on the server's HTTP side (`http://HOST:PORT`).
pub async fn fetch_connect_info(server: &str, name: &str) -> Result<ConnectInfo, ClientError> {
    let body = http::get(
        server,
        &format!("/api/connect?name={}", url_encode(name)),
        STEP_TIMEOUT,
    )
    .await?;
    Ok(serde_json::from_slice(&body)?)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The certificate hashes to pin: `cert_sha256s` when the server sends it, else `cert_sha256`;
/// none with a real certificate.
pub(crate) fn pinned_hashes(info: &ConnectInfo) -> Result<Vec<Sha256Digest>, ClientError> {
    let listed: Vec<&String> = if info.cert_sha256s.is_empty() {
        info.cert_sha256.iter().collect()
    } else {
        info.cert_sha256s.iter().collect()
    };
    listed
        .into_iter()
        .map(|hash| {
            STANDARD
                .decode(hash)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Sha256Digest::new)
                .ok_or(ClientError::BadCertHash)
        })
        .collect()
}

/// An open WebTransport session with its one bidirectional stream, before `Hello`.
pub struct Transport {
    /// Its own endpoint ([`open`], [`open_from`]).
    pub endpoint: Lease,
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    /// Stream bytes read during the handshake (the `Welcome`, with the map): what a bot counts
    /// as received before its play loop starts reading.
    pub handshake_bytes_read: u64,
}

/// `url` with its host and port replaced by `addr`: to dial the server through a proxy, a
/// port forward or a test's relay while keeping the path (the certificate is pinned by hash,
/// so the name does not matter).
pub fn url_via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    format!("{scheme}://{addr}{path}")
}

/// Connects to `info.url`, pinning `info.cert_sha256s` (or `info.cert_sha256`) when given,
/// else verifying with the system's roots.
pub async fn open(info: &ConnectInfo, idle_timeout: Duration) -> Result<Transport, ClientError> {
    open_from(info, idle_timeout, None).await
}

/// [`open`] from the local address `bind` (port 0: any free port) instead of the wildcard
/// address. Tests act as other hosts this way: Linux routes all of 127.0.0.0/8 to loopback,
/// so a client bound to 127.0.0.2 reaches a server on 127.0.0.1 from its own address. Either
/// way the connection gets an endpoint (a socket) of its own.
pub async fn open_from(
    info: &ConnectInfo,
    idle_timeout: Duration,
    bind: Option<std::net::SocketAddr>,
) -> Result<Transport, ClientError> {
    let builder = match bind {
        Some(addr) => ClientConfig::builder().with_bind_address(addr),
        None => ClientConfig::builder().with_bind_default(),
    };
    let hashes = pinned_hashes(info)?;
    let endpoint = endpoints::client_endpoint(builder, &hashes, idle_timeout)?;
    dial(Lease::own(endpoint), &info.url).await
}

/// Connects to `url` through `endpoint` and opens the session's stream.
async fn dial(endpoint: Lease, url: &str) -> Result<Transport, ClientError> {
    let conn = tokio::time::timeout(STEP_TIMEOUT, endpoint.connect(url))
        .await
        .map_err(|_| ClientError::Timeout("connect"))?
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let opening = tokio::time::timeout(STEP_TIMEOUT, conn.open_bi())
        .await
        .map_err(|_| ClientError::Timeout("open stream"))?
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    let (send, recv) = tokio::time::timeout(STEP_TIMEOUT, opening)
        .await
        .map_err(|_| ClientError::Timeout("open stream"))?
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    Ok(Transport {
        endpoint,
        conn,
        send,
        recv,
        handshake_bytes_read: 0,
    })
}

impl Transport {
    /// Writes raw bytes on the stream (tests use this to send garbage).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    pub async fn send_hello(&mut self, hello: &Hello) -> Result<usize, ClientError> {
        let mut frame = Vec::new();
        codec::encode_hello(hello, &mut frame).map_err(|_| ClientError::BadFrame)?;
        self.write_raw(&frame).await?;
        Ok(frame.len())
    }

    pub async fn send_msg(&mut self, msg: &ClientMsg) -> Result<usize, ClientError> {
        let mut frame = Vec::new();
        codec::encode_client(msg, &mut frame).map_err(|_| ClientError::BadFrame)?;
        self.write_raw(&frame).await?;
        Ok(frame.len())
    }

    /// Reads the next server message. A connection closed with an application code gives the
    /// matching `Rejected`/`Disconnected` error when the code is known.
    pub async fn read_msg(
        &mut self,
        reader: &mut FrameReader,
    ) -> Result<(ServerMsg, usize), ClientError> {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        loop {
            match reader.next_frame() {
                Ok(Some(body)) => {
                    let msg = codec::decode_server(&body).map_err(|_| ClientError::BadFrame)?;
                    return Ok((msg, read));
                }
                Ok(None) => {}
                Err(_) => return Err(ClientError::BadFrame),
            }
            match self.recv.read(&mut buf).await {
                Ok(Some(n)) => {
                    read += n;
                    reader.push(&buf[..n]);
                }
                Ok(None) => return Err(ClientError::Closed("server finished its stream".into())),
                Err(_) => return Err(close_error(self.conn.closed().await)),
            }
        }
    }

    /// Sends `Hello` and waits for `Welcome`; a `Reject` becomes [`ClientError::Rejected`].
    pub async fn handshake(
        &mut self,
        token: &str,
        name: &str,
        reader: &mut FrameReader,
    ) -> Result<Welcome, ClientError> {
        self.resume_handshake(token, name, None, reader).await
    }

    /// [`Transport::handshake`] presenting an earlier session's resume token: the server hands
    /// back that session's client id and entity if it still keeps them (`Welcome::resumed`),
    /// else admits by `token` as a new session.
    pub async fn resume_handshake(
        &mut self,
        token: &str,
        name: &str,
        resume: Option<ResumeToken>,
        reader: &mut FrameReader,
    ) -> Result<Welcome, ClientError> {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.into(),
            name: name.into(),
            resume,
        };
        self.send_hello(&hello).await?;
        let (msg, read) = tokio::time::timeout(STEP_TIMEOUT, self.read_msg(reader))
            .await
            .map_err(|_| ClientError::Timeout("welcome"))??;
        self.handshake_bytes_read += read as u64;
        match msg {
            ServerMsg::Welcome(w) => Ok(w),
            ServerMsg::Reject(r) => Err(ClientError::Rejected {
                reason: r.reason,
                message: r.message,
                retry_after_ms: r.retry_after_ms,
            }),
            ServerMsg::Disconnect(d) => Err(ClientError::Disconnected {
                reason: d.reason,
                message: d.message,
                reconnect_after_ms: d.reconnect_after_ms,
            }),
            ServerMsg::Pong(_) | ServerMsg::Event(_) | ServerMsg::Names(_) => {
                Err(ClientError::BadFrame)
            }
        }
    }
}

/// The QUIC application close code for Arena code `code` (e.g.
/// [`arena_shared::protocol::CLOSE_CLIENT_LEFT`]), mapped into WebTransport's application range
/// as the protocol requires ([`arena_shared::protocol::close_code`]).
pub fn close_varint(code: u32) -> wtransport::VarInt {
    wtransport::VarInt::try_from_u64(arena_shared::protocol::close_code(code))
        .expect("WebTransport's application codes are below 2^62")
}

/// An application close as text: the Arena code when the wire code carries one, otherwise the
/// code as it came (an HTTP/3 error), then the reason.
pub(crate) fn close_text(wire: u64, reason: &[u8]) -> String {
    let code = match arena_shared::protocol::arena_code(wire) {
        Some(code) => format!("Arena code {code:#x}"),
        None => format!("code {wire:#x}"),
    };
    format!("{code}: {}", String::from_utf8_lossy(reason))
}

/// What a closed connection says, as an error: the Arena code when the close carries one,
/// otherwise the code as it came (an HTTP/3 or QUIC error).
pub fn close_error(e: wtransport::error::ConnectionError) -> ClientError {
    match e {
        wtransport::error::ConnectionError::ApplicationClosed(close) => {
            ClientError::Closed(close_text(close.code().into_inner(), close.reason()))
        }
        other => ClientError::Closed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_via_swaps_the_authority_and_keeps_the_path() {
        let addr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(
            super::url_via("https://play.example.com:4433/", addr),
            "https://127.0.0.1:9000/"
        );
        assert_eq!(
            super::url_via("https://[::1]:4433/game?x=1", addr),
            "https://127.0.0.1:9000/game?x=1"
        );
        assert_eq!(
            super::url_via("https://host", addr),
            "https://127.0.0.1:9000/"
        );
    }

    #[test]
    fn the_hash_list_is_pinned_when_given_else_the_single_hash() {
        use base64::Engine;
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let mut info = super::ConnectInfo {
            url: "https://127.0.0.1:1/".into(),
            cert_sha256: Some(b64(1)),
            cert_sha256s: Vec::new(),
            token: String::new(),
        };
        assert_eq!(super::pinned_hashes(&info).unwrap().len(), 1);
        info.cert_sha256s = vec![b64(1), b64(2)];
        assert_eq!(super::pinned_hashes(&info).unwrap().len(), 2);
        info.cert_sha256s.push("not base64!".into());
        assert!(matches!(
            super::pinned_hashes(&info),
            Err(super::ClientError::BadCertHash)
        ));
        let real = super::ConnectInfo {
            cert_sha256: None,
            cert_sha256s: Vec::new(),
            ..info
        };
        assert!(super::pinned_hashes(&real).unwrap().is_empty());
    }
}
