//! The certificate authority proper: signing keys, policy, and turning an authenticated CSR
//! into a SPIFFE certificate. Pure of I/O; [`crate::root`] supplies the keys.
//!
//! The CA never trusts what the CSR asks for: it reads the CSR only for its public key (after
//! checking the signature, the key type and that no CA certificate is asked for), and signs
//! fresh parameters whose only SAN is the authenticated identity. A CSR that names another
//! identity than the caller's is refused (PERMISSION_DENIED) rather than silently signed for
//! the caller: a workload asking for someone else's name is a bug or an attack, and either way
//! it should hear about it. A CSR with no SAN at all is signed for the caller.
//!
//! DNS names are granted to the control plane only: a service account of the control-plane
//! namespace may ask for the names of the Service named like it (`mesh-pilot` gets
//! `mesh-pilot.mesh-system.svc`, which the API server calls its webhooks by). The chart owns both
//! the service accounts and the Services of that namespace, so the name proves the right; a
//! workload elsewhere never gets a DNS name, and a name outside that set is refused.

use std::time::Duration;

use mesh_api::identity::SpiffeId;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, ParsedExtension, X509CertificationRequest};
use x509_parser::public_key::PublicKey;

use crate::root::RootMaterial;

/// Lifetimes the CA hands out, and who may have DNS names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Lifetime when the caller asks for none (24 h, as Istio).
    pub default_ttl: Duration,
    /// The longest lifetime a caller may ask for.
    pub max_ttl: Duration,
    /// The control plane's namespace: its service accounts may ask for the DNS names of their
    /// Services (see [`Policy::dns_names_for`]).
    pub control_plane_namespace: String,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            control_plane_namespace: mesh_api::ports::CONTROL_PLANE_NAMESPACE.to_owned(),
        }
    }
}

impl Policy {
    /// The DNS names `caller` may have in its certificate: for a service account `S` of the
    /// control-plane namespace `N`, `S.N.svc` and `S.N.svc.cluster.local`; none for anyone else.
    pub fn dns_names_for(&self, caller: &SpiffeId) -> Vec<String> {
        if caller.namespace() != self.control_plane_namespace {
            return Vec::new();
        }
        let service = format!("{}.{}.svc", caller.service_account(), caller.namespace());
        vec![format!("{service}.cluster.local"), service]
    }
}

/// Why a CSR was not signed. Each maps to the gRPC status a client sees.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Not a PEM-encoded PKCS#10 request.
    #[error("the CSR cannot be parsed: {0}")]
    Malformed(String),
    /// The request's self-signature does not verify.
    #[error("the CSR signature does not verify")]
    BadSignature,
    /// A key type or size the mesh does not accept.
    #[error("the CSR key is {0}: use ECDSA P-256 or RSA of at least 2048 bits")]
    UnsupportedKey(String),
    /// The request asks for a CA certificate.
    #[error(
        "the CSR asks for a CA certificate (basic constraints CA:true); workloads get leaf certificates only"
    )]
    CaRequested,
    /// The request names an identity other than the caller's.
    #[error("the CSR asks for {requested} but the caller is {caller}")]
    IdentityMismatch {
        /// What the CSR asked for.
        requested: String,
        /// Who the token says the caller is.
        caller: String,
    },
    /// The requested lifetime is out of bounds.
    #[error("requested certificate lifetime {requested}s is not allowed: {why}")]
    BadTtl {
        /// What was asked, in seconds.
        requested: i64,
        /// The bound it breaks.
        why: String,
    },
    /// Signing failed inside the CA.
    #[error("signing failed: {0}")]
    Internal(String),
}

/// A loaded CA, ready to sign.
pub struct Authority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
    /// PEM certificates that follow a leaf: the signing certificate, any intermediates, the
    /// root last (just the root for a self-signed CA).
    chain: Vec<String>,
    root_pem: String,
    root_not_after: OffsetDateTime,
    policy: Policy,
    rng: SystemRandom,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why key material could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct MaterialError {
    /// Which piece of material.
    pub what: String,
    /// What is wrong with it.
    pub why: String,
}

fn material(what: &str, why: impl std::fmt::Display) -> MaterialError {
    MaterialError { what: what.to_owned(), why: why.to_string() }
}

/// The expiry of a PEM certificate.
pub fn not_after(pem: &str) -> Result<OffsetDateTime, MaterialError> {
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| material("certificate", e))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| material("certificate", e))?;
    Ok(cert.validity().not_after.to_datetime())
}

impl Authority {
    /// A CA from its key material, signing for `trust_domain`.
    pub fn new(
        root: &RootMaterial,
        trust_domain: &str,
        policy: Policy,
    ) -> Result<Self, MaterialError> {
        let key = KeyPair::from_pem(&root.signing_key_pem).map_err(|e| material("CA key", e))?;
        let issuer_der = CertificateDer::from_pem_slice(root.signing_cert_pem.as_bytes())
            .map_err(|e| material("CA certificate", e))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|e| material("CA certificate", e))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(material("CA key", "does not belong to the CA certificate"));
        }
        if !parsed.is_ca() {
            return Err(material(
                "CA certificate",
                "is not a CA certificate (basic constraints CA:false)",
            ));
        }
        let issuer_not_after = parsed.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&issuer_der, key)
            .map_err(|e| material("CA certificate", e))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            issuer,
            issuer_not_after,
            chain: root.chain_after_leaf(),
            root_not_after: not_after(&root.root_pem)?,
            root_pem: root.root_pem.clone(),
            policy,
            rng: SystemRandom::new(),
        })
    }

    /// The trust domain of the identities this CA signs.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// When the root expires.
    pub fn root_not_after(&self) -> OffsetDateTime {
        self.root_not_after
    }

    /// Signs `csr_pem` for the authenticated `caller`, valid for `ttl_secs` (0: the default).
    /// Returns the chain, leaf first and root last, PEM.
    pub fn sign(
        &self,
        csr_pem: &str,
        caller: &SpiffeId,
        ttl_secs: i64,
    ) -> Result<Vec<String>, SignError> {
        let ttl = self.ttl(ttl_secs)?;
        if caller.trust_domain() != self.trust_domain {
            return Err(SignError::IdentityMismatch {
                requested: format!("trust domain {}", caller.trust_domain()),
                caller: format!("this CA signs for {}", self.trust_domain),
            });
        }
        let csr_der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| SignError::Malformed(format!("not a PEM certificate request ({e})")))?;
        let dns_names = check_request(&csr_der, caller, &self.policy.dns_names_for(caller))?;
        let csr = CertificateSigningRequestParams::from_der(&csr_der).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => SignError::BadSignature,
            other => SignError::Malformed(other.to_string()),
        })?;
        let mut params = self.leaf_params(ttl)?;
        let internal = |e: rcgen::Error| SignError::Internal(e.to_string());
        params.subject_alt_names =
            vec![SanType::URI(caller.to_string().try_into().map_err(internal)?)];
        for name in dns_names {
            params.subject_alt_names.push(SanType::DnsName(name.try_into().map_err(internal)?));
        }
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        Ok(std::iter::once(cert.pem()).chain(self.chain.iter().cloned()).collect())
    }

    /// A workload certificate with a fresh key made here, without a CSR round trip: for local
    /// tooling and tests that play the workload and its CA in one process.
    pub fn issue_workload(&self, identity: &SpiffeId) -> Result<crate::sds::Material, SignError> {
        let (key, csr) = mesh_identity::client::new_csr(identity, &[])
            .map_err(|e| SignError::Internal(e.to_string()))?;
        let chain = self.sign(&csr, identity, 0)?;
        Ok(crate::sds::Material {
            chain,
            key_pem: key.serialize_pem(),
            roots: vec![self.root_pem.clone()],
        })
    }

    /// A serving certificate for the CA's own gRPC endpoint (DNS names), with a fresh key.
    /// Returns the chain (leaf first, PEM) and the key (PKCS#8 PEM).
    pub fn issue_server_cert(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<(Vec<String>, String), SignError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        let mut params = self.leaf_params(ttl)?;
        params
            .distinguished_name
            .push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
        params.subject_alt_names = dns_names
            .iter()
            .map(|n| n.clone().try_into().map(SanType::DnsName))
            .collect::<Result<_, _>>()
            .map_err(|e: rcgen::Error| SignError::Internal(e.to_string()))?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert =
            params.signed_by(&key, &self.issuer).map_err(|e| SignError::Internal(e.to_string()))?;
        let chain = std::iter::once(cert.pem()).chain(self.chain.iter().cloned()).collect();
        Ok((chain, key.serialize_pem()))
    }

    fn ttl(&self, requested: i64) -> Result<Duration, SignError> {
        match requested {
            0 => Ok(self.policy.default_ttl),
            r if r < 0 => Err(SignError::BadTtl { requested, why: "it is negative".to_owned() }),
            r if r.unsigned_abs() > self.policy.max_ttl.as_secs() => Err(SignError::BadTtl {
                requested,
                why: format!("the maximum is {}s", self.policy.max_ttl.as_secs()),
            }),
            r => Ok(Duration::from_secs(r.unsigned_abs())),
        }
    }

    /// Leaf parameters every issued certificate shares.
    fn leaf_params(&self, ttl: Duration) -> Result<CertificateParams, SignError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // A minute of slack for clocks that run behind the CA's.
        params.not_before = now - time::Duration::minutes(1);
        let wanted =
            now + time::Duration::try_from(ttl).map_err(|e| SignError::Internal(e.to_string()))?;
        // Never outlive the signing certificate.
        params.not_after = wanted.min(self.issuer_not_after);
        let mut serial = [0u8; 16];
        self.rng.fill(&mut serial).map_err(|_| SignError::Internal("no randomness".to_owned()))?;
        serial[0] &= 0x7f; // positive
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        Ok(params)
    }
}

/// Checks what the CSR asks for: signature, key type, no CA, no identity but the caller's, and
/// no DNS name but those in `allowed_dns`. Returns the DNS names asked for (all allowed).
fn check_request(
    der: &CertificateSigningRequestDer<'_>,
    caller: &SpiffeId,
    allowed_dns: &[String],
) -> Result<Vec<String>, SignError> {
    let (_, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| SignError::Malformed(format!("not a PKCS#10 certificate request ({e})")))?;
    let spki = &csr.certification_request_info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
        Ok(PublicKey::RSA(rsa)) => {
            return Err(SignError::UnsupportedKey(format!("RSA {} bits", rsa.key_size())));
        }
        Ok(PublicKey::EC(_)) => {
            let p256 = x509_parser::oid_registry::OID_EC_P256;
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            if curve.as_ref() != Some(&p256) {
                let name = curve.map_or("an unknown curve".to_owned(), |c| format!("EC curve {c}"));
                return Err(SignError::UnsupportedKey(name));
            }
        }
        Ok(_) | Err(_) => {
            return Err(SignError::UnsupportedKey(format!(
                "of algorithm {}",
                spki.algorithm.algorithm
            )));
        }
    }
    // After the key check: the verifier refuses weak keys with a less helpful message.
    csr.verify_signature().map_err(|_| SignError::BadSignature)?;
    let mut dns_names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(SignError::CaRequested),
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    let (requested, matches) = match name {
                        x509_parser::extensions::GeneralName::URI(uri) => {
                            ((*uri).to_owned(), *uri == caller.to_string())
                        }
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            let allowed = allowed_dns.iter().any(|a| a.eq_ignore_ascii_case(dns));
                            if allowed && !dns_names.iter().any(|d: &String| d == dns) {
                                dns_names.push((*dns).to_ascii_lowercase());
                            }
                            (format!("DNS name {dns}"), allowed)
                        }
                        other => (other.to_string(), false),
                    };
                    if !matches {
                        return Err(SignError::IdentityMismatch {
                            requested,
                            caller: caller.to_string(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(dns_names)
}
