//! What a WebTransport CONNECT request must look like before the session is accepted: the
//! path `/api/connect` hands out, and, when the request carries an `Origin` (browsers always
//! send one, native clients none), a page the operator trusts. A foreign page could otherwise
//! open game sessions from its visitors' browsers. Sans-IO: strings in, a verdict out.

use crate::config::Config;

/// Why a request was refused: the `reason` label of `arena_handshakes_rejected_total`, and
/// the HTTP status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 404: not the path the server hands out.
    WrongPath,
    /// 403: a page from an origin the server does not trust.
    Origin,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongPath => "wrong_path",
            Self::Origin => "origin_refused",
        }
    }
}

/// The server's rules for requests, from its configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The path of the URL `/api/connect` hands out (`/` unless `--public-url` names another).
    path: String,
    /// The host of `--public-url`, if set: pages from it are the operator's.
    public_host: Option<String>,
    /// `--allowed-origin`, without trailing slashes, lowercase.
    allowed: Vec<String>,
}

impl Rules {
    pub fn from_config(config: &Config) -> Self {
        let public = config.public_url.as_deref();
        Self {
            path: public.map_or_else(|| "/".to_string(), |u| path_of(u).to_string()),
            public_host: public.map(host_of),
            allowed: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Judges a request for `path` to `authority` (the host the client dialled), from a page
    /// at `origin` if any.
    pub fn check(&self, path: &str, authority: &str, origin: Option<&str>) -> Result<(), Refused> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        if path != self.path {
            return Err(Refused::WrongPath);
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        // A page served by the host the client dialled (or the public URL's host) is the
        // operator's own: the game page on the HTTP side of the same server.
        let page = host_of(&origin);
        let ours = [Some(host_of(authority)), self.public_host.clone()];
        if ours
            .iter()
            .flatten()
            .any(|h| *h == page || (is_loopback(h) && is_loopback(&page)))
        {
            return Ok(());
        }
        Err(Refused::Origin)
    }
}

/// The path of `url` (`/` when it has none).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or("/")
}

/// The host of a URL, an origin or an authority, lowercase, without port; an IPv6 literal
/// keeps its brackets.
fn host_of(s: &str) -> String {
    let rest = s.split_once("://").map_or(s, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    host.to_ascii_lowercase()
}

/// `localhost`, 127.0.0.0/8 or `[::1]`: the same machine under any of its loopback names.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::{Refused, Rules};
    use crate::config::Config;
    use clap::Parser;

    fn rules(flags: &[&str]) -> Rules {
        let mut args = vec!["arena-server"];
        args.extend_from_slice(flags);
        Rules::from_config(&Config::parse_from(args))
    }

    #[test]
    fn the_path_handed_out_is_the_only_one_accepted() {
        let r = rules(&[]);
        assert_eq!(r.check("/", "127.0.0.1:4433", None), Ok(()));
        assert_eq!(r.check("/?x=1", "127.0.0.1:4433", None), Ok(()));
        assert_eq!(r.check("/admin", "h:1", None), Err(Refused::WrongPath));
        assert_eq!(r.check("", "h:1", None), Err(Refused::WrongPath));
        let r = rules(&["--public-url", "https://play.example.com:4433/game"]);
        assert_eq!(r.check("/game", "play.example.com:4433", None), Ok(()));
        assert_eq!(
            r.check("/", "play.example.com:4433", None),
            Err(Refused::WrongPath)
        );
    }

    #[test]
    fn pages_from_the_servers_own_host_or_the_allowed_list_may_connect_and_no_others() {
        let r = rules(&["--allowed-origin", "https://Portal.example.net/"]);
        let ok = |origin, authority| r.check("/", authority, Some(origin));
        assert_eq!(
            ok("http://play.example.com:8080", "play.example.com:4433"),
            Ok(())
        );
        assert_eq!(
            ok("http://localhost:8080", "127.0.0.1:4433"),
            Ok(()),
            "one machine"
        );
        assert_eq!(ok("http://[::1]:8080", "[::1]:4433"), Ok(()));
        assert_eq!(
            ok("https://portal.example.net", "play.example.com:4433"),
            Ok(())
        );
        assert_eq!(
            ok("https://evil.example", "play.example.com:4433"),
            Err(Refused::Origin)
        );
        assert_eq!(
            ok(
                "https://play.example.com.evil.example",
                "play.example.com:4433"
            ),
            Err(Refused::Origin)
        );
        assert_eq!(ok("null", "127.0.0.1:4433"), Err(Refused::Origin));
        let public = rules(&["--public-url", "https://play.example.com/"]);
        assert_eq!(
            public.check("/", "10.0.0.5:4433", Some("https://play.example.com")),
            Ok(()),
            "behind a proxy the public URL's host is ours"
        );
    }
}
