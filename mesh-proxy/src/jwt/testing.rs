//! Keys made in the tests and tokens signed with them, for every algorithm the verifier
//! takes. ring makes EC, Ed25519 and HMAC keys on the spot; it cannot make RSA keys, so the
//! RSA key is a fixed 2048-bit test key (PKCS #1 DER, made with `openssl genpkey` for these tests
//! and used nowhere else).

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};

use super::token::BASE64URL;

/// The RSA test key, PKCS #1 DER in base64.
const RSA_PKCS1: &[&str] = &[
    "MIIEpAIBAAKCAQEAulLVk9xxKNkoteLWxsztdQ6YaXaWeshc2+EzbWv60VMW5lqwiwwQa+iKo5XYpM76bXffKHDtLeEOi8jd",
    "REpGSk/wt2Y5tok5oPDOcVC9GYnTfEahTOsTH797pUgF8uChrn6n3SfqBIu5RqGY0r46v4jhUtTbbHp6hGpcxfl3jUouIyzh",
    "Vdb+u8rJGjT8pmOdcj35lUrLfhM2LsdafbkRa04iYuIEcitQwzyqWIdajiOf9jCbMU2zDKcUooVO26Hso27ZqoGw52tI9rGY",
    "+4mkVj8wuU1rxszNFw2y5V4qT8pIHRfXlu8H2uYQviM4eLyVEbuVN0j2El0oBdFjBDphpQIDAQABAoIBACUw6pvQiS/fpN4l",
    "cLyO5CkU6DxI5QGOI+bp3UOOpaqJvMzvNkUS++YmLSI5A1zmSZt3LW6bl+QsA6TIS85ZSw2DRme9OnDilEO5PWPl+1DxL2sj",
    "iAfb9l3EcXBM348a4nr7ohMlZ/NPVoSwNdp/CSf5MQzBGylciz8KIgmMYZ4sZLdRAq8QYeqej0fRRWGPP3eSnNirPUm6czWS",
    "esGWDcy+uRTOxoZUf+A+J3Z/b0QFEY0NGZ1QQbETFzQqTmGQDXwsFnRQXFUf9LWeV2PnpwN+gR71pjNDNospRbXAp9jU203f",
    "TL1AFYG2rEivT9KdTP7MdouMNwdI5cxia7xrVfECgYEA2+V3YQFl/wdVkXGtFVnDP4BzSJ2Pb4g6EgYij2voYkwxqkWuZBxa",
    "jlSQWRpvwh8+VdWs1v1urrpH7QTvu4UHFeiav4E7l5CuHANdqIS7MHCucGTi8rcjHuMIaCHF2V5zcBWkHOoB98ykCCqVrWBT",
    "hFIX9aR/d5XWpT6UTf3L1jkCgYEA2OpCexfwzHO415puEVaTNzW+5vRsRPn5BXkhP+YhNJwfGs42MXYiXFy6KKl2gME880ZR",
    "/ONBslQPFwj7bzwjYofgqdVh6hGVhV/XJ0iXir3Ms1iUNjaMoheR7oCo48OZ3f5NHbxmNpUb0ujTXhsyWLvGZE576KlSXbA1",
    "7VTOhs0CgYEAzzCYmOguaGtKrq4DPZjEJTMsbIE4wwgCXzU0nxo3bVcJfLwHIwCsOmtnTu1f2/KAU3PvVOqZvTx7xNHf6Dnh",
    "gT0XgdWMhrSluHNbbgsSLQQe+Hu2cqcoClQ0eZlIyBT8g+GALlY24HsLGz60pRWb25NWS/dguxaNlkkuh4XY59ECgYEA0vDc",
    "vb/GV8yhkGmJaCr89s+5WfeP4nQFCqGFCBLPb83zIaovYWI0gAVcs3Y423UPxLQ5vudxV+4OzqPZf47ICmWAwSfVFD8NXKqb",
    "HISnejChBDe7ygy6Llclfv53PydUVmGatLQl4iaW7D+mbPmduFTC1YDNVrByfNGDX8z9GnECgYAvqF1SUtRKMJfhENwMAAXo",
    "Sq+Ii/T35Xz8M0UB6sS/FOn/g90li9C5135/tpP9ufMom0tJAxvTSbCsdQW9PhssdGMeYgqarGDx6SDVGY66IbGohnVvK4VP",
    "a65tp/xj82RHhRrleuZDachlpIAm2rEfRTGJgP+P25WP5KhYPPZxkw==",
];

/// How a test key signs.
pub(super) enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed25519(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A key with its `kid`.
pub(super) struct TestKey {
    pub(super) kid: String,
    signer: Signer,
}

impl TestKey {
    /// The RSA test key.
    pub(super) fn rsa(kid: &str) -> Self {
        let der = base64::engine::general_purpose::STANDARD.decode(RSA_PKCS1.concat()).unwrap();
        let pair = RsaKeyPair::from_der(&der).unwrap();
        Self { kid: kid.to_owned(), signer: Signer::Rsa(pair) }
    }

    /// A new P-256 key.
    pub(super) fn p256(kid: &str) -> Self {
        Self::ec(kid, &signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }

    /// A new P-384 key.
    pub(super) fn p384(kid: &str) -> Self {
        Self::ec(kid, &signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }

    fn ec(kid: &str, alg: &'static signature::EcdsaSigningAlgorithm, crv: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Self { kid: kid.to_owned(), signer: Signer::Ec(pair, crv) }
    }

    /// A new Ed25519 key.
    pub(super) fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self { kid: kid.to_owned(), signer: Signer::Ed25519(pair) }
    }

    /// A new HMAC secret.
    pub(super) fn hmac(kid: &str) -> Self {
        let mut secret = vec![0u8; 32];
        SystemRandom::new().fill(&mut secret).unwrap();
        Self { kid: kid.to_owned(), signer: Signer::Hmac(secret) }
    }

    /// Its public JWK (the secret, for HMAC), with its `kid` and no `alg`.
    pub(super) fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| BASE64URL.encode(bytes);
        match &self.signer {
            Signer::Rsa(pair) => {
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": self.kid, "n": b64(&public.n), "e": b64(&public.e)})
            }
            Signer::Ec(pair, crv) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                json!({
                    "kty": "EC", "kid": self.kid, "crv": crv,
                    "x": b64(&point[1..=size]), "y": b64(&point[1 + size..]),
                })
            }
            Signer::Ed25519(pair) => json!({
                "kty": "OKP", "kid": self.kid, "crv": "Ed25519",
                "x": b64(pair.public_key().as_ref()),
            }),
            Signer::Hmac(secret) => json!({"kty": "oct", "kid": self.kid, "k": b64(secret)}),
        }
    }

    /// A token of `claims` signed with `alg`, its header naming this key's `kid`.
    pub(super) fn sign(&self, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let signed = format!(
            "{}.{}",
            BASE64URL.encode(header.to_string()),
            BASE64URL.encode(claims.to_string())
        );
        let signature = self.signature(alg, signed.as_bytes());
        format!("{signed}.{}", BASE64URL.encode(signature))
    }

    fn signature(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(pair) => {
                let padding: &dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA does not sign {other}"),
                };
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(padding, &rng, message, &mut out).unwrap();
                out
            }
            Signer::Ec(pair, _) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Hmac(secret) => {
                let algorithm = match alg {
                    "HS384" => ring::hmac::HMAC_SHA384,
                    "HS512" => ring::hmac::HMAC_SHA512,
                    _ => ring::hmac::HMAC_SHA256,
                };
                ring::hmac::sign(&ring::hmac::Key::new(algorithm, secret), message)
                    .as_ref()
                    .to_vec()
            }
        }
    }
}

/// A JWKS document of `keys`.
pub(super) fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}
