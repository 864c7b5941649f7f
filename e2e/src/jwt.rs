//! A token issuer for tests: an ES256 key made at start, its JWKS, and tokens signed with it
//! (valid, expired, for another audience), as an identity provider would issue them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

/// An issuer with one signing key.
pub struct TestIssuer {
    /// Its `iss`.
    pub issuer: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl TestIssuer {
    /// A new issuer named `issuer`, with a fresh P-256 key.
    pub fn new(issuer: &str) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot make a P-256 key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot read the P-256 key"))?;
        Ok(Self { issuer: issuer.to_owned(), key, rng })
    }

    /// The JWKS holding the public key (kid `test`).
    pub fn jwks(&self) -> String {
        // An uncompressed point: 0x04, then X and Y.
        let point = self.key.public_key().as_ref();
        let (x, y) =
            point.get(1..).unwrap_or_default().split_at(32.min(point.len().saturating_sub(1)));
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test",
            "x": B64.encode(x), "y": B64.encode(y),
        }]})
        .to_string()
    }

    /// A token with `claims` (and this issuer's `iss`).
    pub fn token(&self, mut claims: serde_json::Value) -> anyhow::Result<String> {
        claims["iss"] = self.issuer.clone().into();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "test"});
        let signing_input =
            format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("cannot sign"))?;
        Ok(format!("{signing_input}.{}", B64.encode(signature.as_ref())))
    }
}

/// Seconds since the epoch, for `exp` and `iat`.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
