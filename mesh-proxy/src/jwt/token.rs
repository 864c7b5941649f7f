//! A token taken apart as Envoy's `jwt_verify_lib` does: three base64url parts, a JSON header
//! with an implemented `alg`, a JSON payload whose registered claims have the right types, and
//! the time window checked with a clock skew. Nothing here is trusted until the signature
//! verifies ([`super::jwks`]).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::{MAX_TOKEN_BYTES, Status};

/// Base64url as Envoy reads it: with or without padding.
pub(super) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The signature algorithms Envoy implements (a token naming another, `none` included, is
/// refused before anything else is looked at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    Hs256,
    Hs384,
    Hs512,
    EdDsa,
}

impl Alg {
    const ALL: [Alg; 13] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::Es512,
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::EdDsa,
    ];

    /// The name in a JOSE header (`RS256`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A token parsed, not yet verified.
#[derive(Debug)]
pub(super) struct Jwt<'a> {
    /// `header.payload` as sent: what the signature covers.
    pub(super) signed: &'a str,
    /// The payload as sent (base64url), for `forward_payload_header`.
    pub(super) payload_base64: &'a str,
    pub(super) alg: Alg,
    /// `kid`, when the header names one (an empty one names none).
    pub(super) kid: Option<String>,
    pub(super) header: Map<String, Value>,
    pub(super) payload: Map<String, Value>,
    /// `iss` (empty when absent).
    pub(super) iss: String,
    /// `aud`, one or a list.
    pub(super) audiences: Vec<String>,
    /// `nbf` (0 when absent).
    nbf: u64,
    /// `exp` (0 when absent: no expiry).
    exp: u64,
    pub(super) signature: Vec<u8>,
}

impl<'a> Jwt<'a> {
    /// Takes `token` apart; the error is the status Envoy reports for it.
    pub(super) fn parse(token: &'a str) -> Result<Self, Status> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Status::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Status::BadFormat);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(Status::BadFormat);
        }
        let header_json = BASE64URL.decode(header).map_err(|_| Status::HeaderBadBase64)?;
        let header_map: Map<String, Value> =
            serde_json::from_slice(&header_json).map_err(|_| Status::HeaderBadJson)?;
        let alg = match header_map.get("alg") {
            Some(Value::String(name)) => Alg::parse(name).ok_or(Status::HeaderNotImplementedAlg)?,
            _ => return Err(Status::HeaderBadAlg),
        };
        let kid = match header_map.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()).filter(|k| !k.is_empty()),
            Some(_) => return Err(Status::HeaderBadKid),
        };
        let payload_json = BASE64URL.decode(payload).map_err(|_| Status::PayloadBadBase64)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload_json).map_err(|_| Status::PayloadBadJson)?;
        let iss = string_claim(&claims, "iss", Status::IssNotString)?;
        string_claim(&claims, "sub", Status::SubNotString)?;
        time_claim(&claims, "iat", Status::IatNotInteger, Status::IatOutOfRange)?;
        let nbf = time_claim(&claims, "nbf", Status::NbfNotInteger, Status::NbfOutOfRange)?;
        let exp = time_claim(&claims, "exp", Status::ExpNotInteger, Status::ExpOutOfRange)?;
        string_claim(&claims, "jti", Status::JtiNotString)?;
        let audiences = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(Status::AudNotString))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Status::AudNotString),
        };
        let signature = BASE64URL.decode(signature).map_err(|_| Status::SignatureBadBase64)?;
        Ok(Self {
            signed: &token[..header.len() + 1 + payload.len()],
            payload_base64: payload,
            alg,
            kid,
            header: header_map,
            payload: claims,
            iss,
            audiences,
            nbf,
            exp,
            signature,
        })
    }

    /// Whether the token is valid at `now` (Unix seconds), `skew` seconds either way.
    pub(super) fn check_time(&self, now: u64, skew: u64) -> Result<(), Status> {
        if now.saturating_add(skew) < self.nbf {
            return Err(Status::NotYetValid);
        }
        if self.exp != 0 && now > self.exp.saturating_add(skew) {
            return Err(Status::Expired);
        }
        Ok(())
    }
}

/// A claim that must be a string when present (empty when absent).
fn string_claim(claims: &Map<String, Value>, name: &str, wrong: Status) -> Result<String, Status> {
    match claims.get(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong),
    }
}

/// A time claim as Envoy reads it: any JSON number, truncated to whole seconds, refused when
/// negative or beyond 64 bits (0 when absent).
fn time_claim(
    claims: &Map<String, Value>,
    name: &str,
    wrong: Status,
    out_of_range: Status,
) -> Result<u64, Status> {
    match claims.get(name) {
        None => Ok(0),
        Some(Value::Number(n)) => {
            if let Some(whole) = n.as_u64() {
                return Ok(whole);
            }
            let value = n.as_f64().ok_or(out_of_range)?;
            // 2^64 as a double: the first value that does not fit.
            if !(0.0..18_446_744_073_709_551_616.0).contains(&value) {
                return Err(out_of_range);
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(value as u64)
        }
        Some(_) => Err(wrong),
    }
}
