//! Who may read `/debug/*` on the monitoring port. What it shows (every proxy's node id, the
//! whole configuration each one is served, every service and endpoint) is a map of the mesh,
//! so it is answered only to those who could reach the pilot's own loopback, or who hold the
//! token of `--debug-token-file`. `/metrics` and `/ready` stay open to anyone (Prometheus and
//! the kubelet's probe call them without credentials).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// The secret of `--debug-token-file`: the file's contents, trimmed. Never printed.
#[derive(Clone)]
pub struct Token(Box<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token file gives no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("--debug-token-file {}: cannot read it: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds only whitespace: a token anyone could send.
    #[error("--debug-token-file {}: the file is empty; put a random token in it (e.g. `openssl rand -hex 32`)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl Token {
    /// Reads the token from `path` (its contents without surrounding whitespace, so a
    /// trailing newline from `echo` or a Secret does not count).
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read(path)
            .map_err(|source| TokenError::Read { path: path.to_owned(), source })?;
        Self::new(&text).ok_or_else(|| TokenError::Empty { path: path.to_owned() })
    }

    /// The token `text` holds, trimmed; `None` when nothing is left.
    pub fn new(text: &[u8]) -> Option<Self> {
        let token = text.trim_ascii();
        (!token.is_empty()).then(|| Self(token.into()))
    }

    /// Whether `offered` is this token, in time that does not depend on where the two first
    /// differ (a guess cannot be refined byte by byte). Only the length may show, and a
    /// random token's length is no secret.
    fn matches(&self, offered: &[u8]) -> bool {
        let mut difference = u8::from(self.0.len() != offered.len());
        for (a, b) in self.0.iter().zip(offered) {
            difference |= a ^ b;
        }
        std::hint::black_box(difference) == 0
    }
}

/// How `/debug/*` is guarded, decided once from where the monitoring listener is bound and
/// whether a token was given.
#[derive(Clone, Debug)]
pub enum DebugAccess {
    /// The listener is on loopback: whoever can connect is on the pilot's own host or pod.
    Loopback,
    /// Requests must carry `Authorization: Bearer <token>`.
    Token(Token),
    /// Neither: `/debug/*` is refused to everyone.
    Closed,
}

/// Why a `/debug/*` request is refused (answered 401): what the caller should do, for the
/// response body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization: Bearer` header.
    #[error(
        "/debug/* needs `Authorization: Bearer <token>` with the token in the pilot's --debug-token-file"
    )]
    NoToken,
    /// A bearer token, not the pilot's.
    #[error("/debug/*: the bearer token is not the one in the pilot's --debug-token-file")]
    WrongToken,
    /// No token is configured and the listener is not on loopback.
    #[error(
        "/debug/* is served only on a loopback monitoring listener (--monitoring-listen 127.0.0.1:15014), or to requests with `Authorization: Bearer <token>` when the pilot has --debug-token-file"
    )]
    Closed,
}

impl DebugAccess {
    /// The guard for a monitoring listener bound to `listener`, with the token of
    /// `--debug-token-file` if there is one. A loopback listener needs no token; any other
    /// address (`0.0.0.0` included, which takes connections from everywhere) does.
    pub fn new(listener: SocketAddr, token: Option<Token>) -> Self {
        match token {
            _ if listener.ip().is_loopback() => DebugAccess::Loopback,
            Some(token) => DebugAccess::Token(token),
            None => DebugAccess::Closed,
        }
    }

    /// How `/debug/*` is answered, for the pilot's log.
    pub fn describe(&self) -> &'static str {
        match self {
            DebugAccess::Loopback => "to anyone: the monitoring listener is on loopback",
            DebugAccess::Token(_) => "to requests with the token of --debug-token-file",
            DebugAccess::Closed => {
                "to no one (401): the monitoring listener is not on loopback and there is no --debug-token-file"
            }
        }
    }

    /// Whether a request with `headers` may read `/debug/*`. The peer's address is never
    /// asked: a connection from 127.0.0.1 may have been made for someone else (a sidecar or a
    /// port forward in front of the pilot connects from loopback).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let token = match self {
            DebugAccess::Loopback => return Ok(()),
            DebugAccess::Closed => return Err(Refused::Closed),
            DebugAccess::Token(token) => token,
        };
        let offered = headers.get(AUTHORIZATION).and_then(|v| bearer(v.as_bytes()));
        match offered {
            None => Err(Refused::NoToken),
            Some(offered) if token.matches(offered) => Ok(()),
            Some(_) => Err(Refused::WrongToken),
        }
    }
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let credentials = rest.trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn token(text: &str) -> Option<Token> {
        Token::new(text.as_bytes())
    }

    #[test]
    fn loopback_listeners_need_no_token_and_others_do() {
        for listener in ["127.0.0.1:15014", "[::1]:15014", "127.0.0.2:0"] {
            let access = DebugAccess::new(listener.parse().unwrap(), None);
            assert_eq!(access.check(&with(None)), Ok(()), "{listener}");
        }
        for listener in ["0.0.0.0:15014", "[::]:15014", "10.77.0.2:15014"] {
            let access = DebugAccess::new(listener.parse().unwrap(), None);
            assert_eq!(access.check(&with(None)), Err(Refused::Closed), "{listener}");
            let access = DebugAccess::new(listener.parse().unwrap(), token("s3cret"));
            assert_eq!(access.check(&with(None)), Err(Refused::NoToken), "{listener}");
            assert_eq!(access.check(&with(Some("Bearer s3cret"))), Ok(()), "{listener}");
        }
    }

    #[test]
    fn only_the_exact_bearer_token_opens() {
        let access = DebugAccess::new("0.0.0.0:15014".parse().unwrap(), token("s3cret\n"));
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            assert_eq!(access.check(&with(Some(good))), Ok(()), "{good:?}");
        }
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET", "Bearer x"] {
            assert_eq!(access.check(&with(Some(wrong))), Err(Refused::WrongToken), "{wrong:?}");
        }
        for malformed in ["s3cret", "Basic s3cret", "Bearer", "Bearer ", "Bearers3cret", ""] {
            assert_eq!(
                access.check(&with(Some(malformed))),
                Err(Refused::NoToken),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn a_token_file_is_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc123\n").unwrap();
        let read = Token::read(&path).unwrap();
        assert!(read.matches(b"abc123"));
        assert_eq!(format!("{read:?}"), "Token(<redacted>)", "the token never reaches a log");
        std::fs::write(&path, " \n").unwrap();
        let err = Token::read(&path).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = Token::read(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("cannot read"), "{err}");
    }
}
