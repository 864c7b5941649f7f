//! Who is calling: the bearer token of a request, checked by the Kubernetes API (TokenReview
//! with audience `mesh-ca`) or, in local mode, against a tokens file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use mesh_api::identity::SpiffeId;

/// The audience tokens must be issued for.
pub const AUDIENCE: &str = "mesh-ca";

/// The authenticated caller: a Kubernetes service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Namespace of the service account.
    pub namespace: String,
    /// Name of the service account.
    pub service_account: String,
}

impl Caller {
    /// The caller's SPIFFE identity in a trust domain.
    pub fn identity(&self, trust_domain: &str) -> Result<SpiffeId, AuthError> {
        SpiffeId::new(trust_domain, &self.namespace, &self.service_account)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carried no token.
    #[error("no bearer token: send the header `authorization: Bearer <service account token>`")]
    Missing,
    /// The token is unknown, expired or for someone the CA does not serve.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// The token could not be checked (the API server or the tokens file is unavailable).
    #[error("the token cannot be checked now: {0}")]
    Unavailable(String),
}

/// How tokens are checked.
pub enum Authenticator {
    /// Kubernetes mode: the API server's TokenReview checks the token and its audience.
    TokenReview(TokenReviewer),
    /// Local mode: the token is looked up in a tokens file.
    TokenFile(TokenFile),
}

impl Authenticator {
    /// The caller a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        match self {
            Authenticator::TokenReview(reviewer) => reviewer.review(token).await,
            Authenticator::TokenFile(file) => file.lookup(token).await,
        }
    }
}

/// Checks tokens with the Kubernetes API.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
}

impl TokenReviewer {
    /// A reviewer asking for tokens of `audience` (normally [`AUDIENCE`]).
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self { client, audience: audience.into() }
    }

    async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let review = api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = review.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "rejected by the API server".to_owned());
            return Err(AuthError::Invalid(why));
        }
        // No audiences back means the token is good for the API server's own audience, not
        // ours: refuse it.
        if !status.audiences.as_ref().is_some_and(|a| a.contains(&self.audience)) {
            return Err(AuthError::Invalid(format!(
                "the token is not for audience {}",
                self.audience
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let in_group =
            user.groups.as_ref().is_some_and(|g| g.iter().any(|g| g == "system:serviceaccounts"));
        parse_service_account(&username)
            .filter(|_| in_group)
            .ok_or_else(|| AuthError::Invalid(format!("{username:?} is not a service account")))
    }
}

/// `system:serviceaccount:<namespace>:<name>` into a caller.
fn parse_service_account(username: &str) -> Option<Caller> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, service_account) = rest.split_once(':')?;
    if namespace.is_empty() || service_account.is_empty() || service_account.contains(':') {
        return None;
    }
    Some(Caller { namespace: namespace.to_owned(), service_account: service_account.to_owned() })
}

/// Local mode: a file of `<token> <namespace>/<service-account>` lines (`#` starts a comment),
/// read again whenever it changes, so tokens can be added while the CA runs.
pub struct TokenFile {
    path: PathBuf,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    stamp: (SystemTime, u64),
    tokens: HashMap<String, Caller>,
}

impl TokenFile {
    /// Reads tokens from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), cache: tokio::sync::Mutex::new(None) }
    }

    async fn lookup(&self, token: &str) -> Result<Caller, AuthError> {
        let unavailable =
            |e: std::io::Error| AuthError::Unavailable(format!("{}: {e}", self.path.display()));
        let meta = tokio::fs::metadata(&self.path).await.map_err(unavailable)?;
        let stamp = (meta.modified().map_err(unavailable)?, meta.len());
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_none_or(|c| c.stamp != stamp) {
            let text = tokio::fs::read_to_string(&self.path).await.map_err(unavailable)?;
            *cache = Some(Cached { stamp, tokens: parse_tokens(&text) });
        }
        cache
            .as_ref()
            .and_then(|c| c.tokens.get(token).cloned())
            .ok_or_else(|| AuthError::Invalid("unknown token".to_owned()))
    }
}

fn parse_tokens(text: &str) -> HashMap<String, Caller> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter_map(|line| {
            let (token, who) = line.split_once(char::is_whitespace)?;
            let (namespace, service_account) = who.trim().split_once('/')?;
            Some((
                token.to_owned(),
                Caller {
                    namespace: namespace.to_owned(),
                    service_account: service_account.to_owned(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            parse_service_account("system:serviceaccount:default:sleep"),
            Some(Caller { namespace: "default".into(), service_account: "sleep".into() })
        );
        assert_eq!(parse_service_account("system:node:worker-1"), None);
        assert_eq!(parse_service_account("system:serviceaccount:default:"), None);
    }

    #[tokio::test]
    async fn token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# local mode tokens\nabc default/sleep\n").unwrap();
        let file = Authenticator::TokenFile(TokenFile::new(&path));
        assert_eq!(file.authenticate("abc").await.unwrap().service_account, "sleep");
        assert!(matches!(file.authenticate("xyz").await, Err(AuthError::Invalid(_))));
        std::fs::write(&path, "abc default/sleep\nxyz bookinfo/reviews   # added later\n").unwrap();
        assert_eq!(file.authenticate("xyz").await.unwrap().namespace, "bookinfo");
        assert!(matches!(file.authenticate("").await, Err(AuthError::Missing)));
    }
}
