//! A provider's JSON Web Key Set, parsed once when the listener is compiled, and signature
//! verification with it as Envoy's `jwt_verify_lib` does: keys whose `kid` (when both sides
//! name one) and `alg` (when the key names one) fit the token are tried in order, the first
//! that verifies wins. A key this proxy cannot use is left out, with the reason kept for the
//! log, as Envoy leaves out keys that do not parse; a set left with none fails every token.
//!
//! With ring: RSA keys of 2048 to 8192 bits (PKCS #1 v1.5 and PSS; 1024 bits and up for RS256
//! and RS512), EC keys on P-256 and P-384, Ed25519, and HMAC secrets. ES512 (P-521) keys are
//! not usable here.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::Status;
use super::token::{Alg, BASE64URL, Jwt};
use base64::Engine as _;

/// Usable keys, in the order the set lists them.
#[derive(Debug, Default)]
pub(super) struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: Key,
}

enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
    Oct(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for Key {
    // The key material stays out of logs and config dumps: an HMAC key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Rsa { n, .. } => write!(f, "Rsa({} bits)", n.len() * 8),
            Key::Ec { curve, .. } => write!(f, "Ec({curve:?})"),
            Key::Oct(_) => f.write_str("Oct(..)"),
            Key::Ed25519(_) => f.write_str("Ed25519"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn field_bytes(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

impl Jwks {
    /// The usable keys of `json` (a JWKS document); the error says why there are none.
    pub(super) fn parse(json: &str) -> Result<Self, String> {
        let document: Value =
            serde_json::from_str(json).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let keys = match document.get("keys") {
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err("[keys] in Jwks is not an array".to_owned()),
            None => return Err("Jwks does not have [keys] field".to_owned()),
        };
        let mut usable = Vec::new();
        let mut last_error = None;
        for (i, key) in keys.iter().enumerate() {
            let Value::Object(key) = key else { continue };
            match Jwk::parse(key) {
                Ok(jwk) => usable.push(jwk),
                Err(why) => last_error = Some(format!("keys[{i}]: {why}")),
            }
        }
        if usable.is_empty() {
            return Err(last_error.unwrap_or_else(|| "the JWKS has no keys".to_owned()));
        }
        Ok(Self { keys: usable })
    }

    /// Whether a key of the set verifies `jwt`'s signature (Envoy's
    /// `verifyJwtWithoutTimeChecking`).
    pub(super) fn verify(&self, jwt: &Jwt<'_>) -> Result<(), Status> {
        let message = jwt.signed.as_bytes();
        let signature = jwt.signature.as_slice();
        let mut candidates = false;
        for jwk in &self.keys {
            if let (Some(wanted), Some(kid)) = (&jwt.kid, &jwk.kid)
                && wanted != kid
            {
                continue;
            }
            if jwk.alg.as_deref().is_some_and(|alg| alg != jwt.alg.name()) {
                continue;
            }
            candidates = true;
            match &jwk.key {
                Key::Ed25519(public) => {
                    // A malformed signature ends the search, as in Envoy.
                    if signature.len() != 64 {
                        return Err(Status::Ed25519SignatureWrongLength);
                    }
                    if UnparsedPublicKey::new(&signature::ED25519, public)
                        .verify(message, signature)
                        .is_ok()
                    {
                        return Ok(());
                    }
                }
                key => {
                    if key.verifies(jwt.alg, message, signature) {
                        return Ok(());
                    }
                }
            }
        }
        Err(if candidates { Status::VerificationFail } else { Status::JwksKidAlgMismatch })
    }
}

impl Key {
    /// Whether this key verifies `signature` over `message` under `alg`; the digest follows
    /// the token's `alg` and the scheme the key's type, as in Envoy (an RSA key never checks an
    /// ECDSA signature, an HMAC secret never an RSA one).
    fn verifies(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Key::Rsa { n, e } => {
                // ring takes 2048 to 8192 bits, and 1024 for PKCS #1 with SHA-256 or SHA-512
                // (what Envoy takes too); smaller or larger keys verify nothing here.
                let bits = n.first().map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
                let legacy = bits < 2048;
                let params: &signature::RsaParameters = match (alg, legacy) {
                    (Alg::Rs256, true) => {
                        &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
                    }
                    (Alg::Rs512, true) => {
                        &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY
                    }
                    (Alg::Rs256, false) => &signature::RSA_PKCS1_2048_8192_SHA256,
                    (Alg::Rs384, false) => &signature::RSA_PKCS1_2048_8192_SHA384,
                    (Alg::Rs512, false) => &signature::RSA_PKCS1_2048_8192_SHA512,
                    (Alg::Ps256, false) => &signature::RSA_PSS_2048_8192_SHA256,
                    (Alg::Ps384, false) => &signature::RSA_PSS_2048_8192_SHA384,
                    (Alg::Ps512, false) => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, signature).is_ok()
            }
            Key::Ec { curve, point } => {
                // Each curve with the digest RFC 7518 pairs it with; a token whose `alg`
                // pairs the curve with another digest is not verified (Envoy would try).
                let algorithm: &signature::EcdsaVerificationAlgorithm = match (curve, alg) {
                    (Curve::P256, Alg::Es256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (Curve::P384, Alg::Es384) => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(algorithm, point).verify(message, signature).is_ok()
            }
            Key::Oct(secret) => {
                let algorithm = match alg {
                    Alg::Hs384 => ring::hmac::HMAC_SHA384,
                    Alg::Hs512 => ring::hmac::HMAC_SHA512,
                    _ => ring::hmac::HMAC_SHA256,
                };
                ring::hmac::verify(&ring::hmac::Key::new(algorithm, secret), message, signature)
                    .is_ok()
            }
            Key::Ed25519(_) => false,
        }
    }
}

impl Jwk {
    /// One key of the set, by its `kty`, with Envoy's checks (and its texts for the log).
    fn parse(key: &Map<String, Value>) -> Result<Self, String> {
        let kty = match key.get("kty") {
            Some(Value::String(kty)) => kty.as_str(),
            Some(_) => return Err("[kty] is bad in [keys]".to_owned()),
            None => return Err("[kty] is missing in [keys]".to_owned()),
        };
        let text = |name: &str| key.get(name).and_then(Value::as_str).map(str::to_owned);
        let kid = text("kid").filter(|k| !k.is_empty());
        let alg = text("alg").filter(|a| !a.is_empty());
        let key = match kty {
            "RSA" => rsa(key, alg.as_deref())?,
            "EC" => ec(key, alg.as_deref())?,
            "oct" => oct(key, alg.as_deref())?,
            "OKP" => okp(key, alg.as_deref())?,
            _ => return Err("[kty] is not supported in [keys]".to_owned()),
        };
        Ok(Self { kid, alg, key })
    }
}

/// A string member of a key, with Envoy's texts when missing or not a string.
fn member<'k>(key: &'k Map<String, Value>, name: &str, kind: &str) -> Result<&'k str, String> {
    match key.get(name) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(format!("[{name}] field is not string for {kind}")),
        None => Err(format!("[{name}] field is missing for {kind}")),
    }
}

/// A big-endian unsigned integer in base64url, without its leading zeros.
fn unsigned(value: &str) -> Option<Vec<u8>> {
    let bytes = BASE64URL.decode(value).ok()?;
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Some(bytes[first..].to_vec())
}

fn rsa(key: &Map<String, Value>, alg: Option<&str>) -> Result<Key, String> {
    if alg.is_some_and(|a| !a.starts_with("RS") && !a.starts_with("PS")) {
        return Err("[alg] is not started with [RS] or [PS] for an RSA key".to_owned());
    }
    let n = member(key, "n", "a RSA key")?;
    let e = member(key, "e", "a RSA key")?;
    let parse_error = || "Jwks RSA [n] or [e] field is missing or has a parse error".to_owned();
    let (n, e) = (unsigned(n).ok_or_else(parse_error)?, unsigned(e).ok_or_else(parse_error)?);
    // Envoy refuses non-standard exponents early.
    if e != [3] && e != [1, 0, 1] {
        return Err(parse_error());
    }
    // Kept whatever its size, as Envoy keeps it, so that `kid` and `alg` match the same keys
    // there and here; one ring cannot verify with fails the signatures it is tried on.
    if n.is_empty() || n.len() > 16384 / 8 {
        return Err(parse_error());
    }
    Ok(Key::Rsa { n, e })
}

fn ec(key: &Map<String, Value>, alg: Option<&str>) -> Result<Key, String> {
    if alg.is_some_and(|a| !a.starts_with("ES")) {
        return Err("[alg] is not started with [ES] for an EC key".to_owned());
    }
    let crv = match key.get("crv") {
        None => None,
        Some(Value::String(crv)) => Some(crv.as_str()).filter(|c| !c.is_empty()),
        Some(_) => return Err("[crv] field is not string for an EC key".to_owned()),
    };
    if let (Some(alg), Some(crv)) = (alg, crv)
        && !matches!((alg, crv), ("ES256", "P-256") | ("ES384", "P-384") | ("ES512", "P-521"))
    {
        return Err("[crv] field specified is not compatible with [alg] for an EC key".to_owned());
    }
    let curve = match (alg, crv) {
        (Some("ES256"), _) | (_, Some("P-256")) | (None, None) => Curve::P256,
        (Some("ES384"), _) | (_, Some("P-384")) => Curve::P384,
        (Some("ES512"), _) | (_, Some("P-521")) => {
            return Err("P-521 (ES512) keys are not usable here".to_owned());
        }
        _ => return Err("[crv] or [alg] field is not supported for an EC key".to_owned()),
    };
    let x = member(key, "x", "an EC key")?;
    let y = member(key, "y", "an EC key")?;
    let bad = || "Jwks EC [x] or [y] field is an invalid Base64.".to_owned();
    let (x, y) = (unsigned(x).ok_or_else(bad)?, unsigned(y).ok_or_else(bad)?);
    let size = curve.field_bytes();
    if x.len() > size || y.len() > size {
        return Err("Jwks EC [x] and [y] fields have a parse error.".to_owned());
    }
    // The uncompressed point, each coordinate padded to the field size.
    let mut point = vec![0u8; 1 + 2 * size];
    point[0] = 4;
    point[1 + size - x.len()..1 + size].copy_from_slice(&x);
    point[1 + 2 * size - y.len()..].copy_from_slice(&y);
    Ok(Key::Ec { curve, point })
}

fn oct(key: &Map<String, Value>, alg: Option<&str>) -> Result<Key, String> {
    if alg.is_some_and(|a| !matches!(a, "HS256" | "HS384" | "HS512")) {
        return Err("[alg] does not start with [HS] for an HMAC key".to_owned());
    }
    let k = member(key, "k", "an HMAC key")?;
    match BASE64URL.decode(k) {
        Ok(secret) if !secret.is_empty() => Ok(Key::Oct(secret)),
        _ => Err("Jwks Oct key is an invalid Base64".to_owned()),
    }
}

fn okp(key: &Map<String, Value>, alg: Option<&str>) -> Result<Key, String> {
    if alg.is_some_and(|a| a != "EdDSA") {
        return Err("[alg] is not [EdDSA] for an OKP key".to_owned());
    }
    if member(key, "crv", "an OKP key")? != "Ed25519" {
        return Err("[crv] field is not supported for an OKP key".to_owned());
    }
    let x = member(key, "x", "an OKP key")?;
    match BASE64URL.decode(x) {
        Ok(public) if public.len() == 32 => Ok(Key::Ed25519(public)),
        Ok(_) => Err("Jwks OKP [x] field is wrong length.".to_owned()),
        Err(_) => Err("Jwks OKP [x] field is an invalid Base64.".to_owned()),
    }
}
