//! A minimal HTTP/1.1 client: `GET` with `Connection: close`, body by `Content-Length` or to
//! the end of the stream. Enough for `/api/connect` on Arena's own HTTP side; it refuses
//! chunked bodies and responses over [`MAX_RESPONSE`] rather than guess.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response read, headers included.
pub const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("URL {0:?} is not http://HOST:PORT[/PATH]")]
    BadUrl(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("malformed HTTP response")]
    Malformed,
    #[error("HTTP status {status}: {body}")]
    Status { status: u16, body: String },
}

/// `GET base + path_and_query` and return the body of a 2xx response.
pub async fn get(
    base: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    tokio::time::timeout(timeout, get_inner(base, path_and_query))
        .await
        .map_err(|_| HttpError::Timeout)?
}

async fn get_inner(base: &str, path_and_query: &str) -> Result<Vec<u8>, HttpError> {
    let authority = base
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| HttpError::BadUrl(base.to_string()))?;
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.len() > MAX_RESPONSE {
            return Err(HttpError::Malformed);
        }
    }
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<Vec<u8>, HttpError> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed)?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| HttpError::Malformed)?;
    let mut body = response[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed)?;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity")
        {
            return Err(HttpError::Malformed);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| HttpError::Malformed)?;
            if body.len() < len {
                return Err(HttpError::Malformed);
            }
            body.truncate(len);
        }
    }
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_length_and_refuses_chunked() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(ok).unwrap(), b"{}");
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nno!";
        assert!(matches!(
            parse_response(bad),
            Err(HttpError::Status { status: 400, .. })
        ));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert!(matches!(parse_response(chunked), Err(HttpError::Malformed)));
        assert!(matches!(
            parse_response(b"garbage"),
            Err(HttpError::Malformed)
        ));
    }
}
