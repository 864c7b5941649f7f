//! Where the CA's keys come from: a self-signed root made at first start and kept (a directory
//! in local mode, the Secret `mesh-ca-secret` in Kubernetes), or an intermediate plugged in from
//! files, as Istio's `cacerts` (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

/// Lifetime of a self-signed root (10 years, as Istio).
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Name of the Secret holding the self-signed root in Kubernetes mode.
pub const SECRET_NAME: &str = "mesh-ca-secret";

/// The keys and certificates a CA signs with.
#[derive(Clone, PartialEq, Eq)]
pub struct RootMaterial {
    /// The certificate that signs workload certificates (the root when self-signed).
    pub signing_cert_pem: String,
    /// Private key of `signing_cert_pem`, PEM; never printed (see the `Debug` impl).
    pub signing_key_pem: String,
    /// Certificates between the signing certificate and the root, signing side first.
    pub intermediates: Vec<String>,
    /// The mesh root certificate, PEM: what workloads trust and what [`crate::distribute`]
    /// publishes.
    pub root_pem: String,
}

impl std::fmt::Debug for RootMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("RootMaterial")
            .field("self_signed", &self.is_self_signed())
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

/// Why the CA's keys could not be loaded, created or stored.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Path of the file that could not be read or written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file or Secret holds something unusable.
    #[error("{what}: {why}")]
    Invalid {
        /// Which file or key.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// The Kubernetes API refused or failed.
    #[error("Secret {namespace}/{name}: {source}")]
    Kube {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

fn invalid(what: impl Into<String>, why: impl std::fmt::Display) -> RootError {
    RootError::Invalid { what: what.into(), why: why.to_string() }
}

impl RootMaterial {
    /// Whether the signing certificate is the root itself.
    pub fn is_self_signed(&self) -> bool {
        normalize(&self.signing_cert_pem) == normalize(&self.root_pem)
    }

    /// The PEM certificates that follow a leaf in a chain, ending with the root.
    pub fn chain_after_leaf(&self) -> Vec<String> {
        if self.is_self_signed() {
            return vec![normalize(&self.root_pem)];
        }
        std::iter::once(&self.signing_cert_pem)
            .chain(&self.intermediates)
            .chain(std::iter::once(&self.root_pem))
            .map(|pem| normalize(pem))
            .collect()
    }

    /// A new self-signed ECDSA P-256 root for `trust_domain`.
    pub fn generate(trust_domain: &str, validity: Duration) -> Result<Self, RootError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| invalid("root key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "mesh root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after =
            now + time::Duration::try_from(validity).map_err(|e| invalid("root validity", e))?;
        let cert = params.self_signed(&key).map_err(|e| invalid("root certificate", e))?;
        let pem = cert.pem();
        Ok(Self {
            signing_cert_pem: pem.clone(),
            signing_key_pem: key.serialize_pem(),
            intermediates: Vec::new(),
            root_pem: pem,
        })
    }
}

/// PEM text with exactly one trailing newline, so copies compare equal.
fn normalize(pem: &str) -> String {
    format!("{}\n", pem.trim_end())
}

/// Every certificate of a PEM bundle, each as its own PEM block (checked to parse).
fn split_pem(what: &str, bundle: &str) -> Result<Vec<String>, RootError> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..]
            .find(END)
            .ok_or_else(|| invalid(what, "a certificate block is not closed"))?;
        let block = &rest[start..start + end + END.len()];
        CertificateDer::from_pem_slice(block.as_bytes()).map_err(|e| invalid(what, e))?;
        out.push(normalize(block));
        rest = &rest[start + end + END.len()..];
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, RootError> {
    std::fs::read_to_string(path).map_err(|source| RootError::Io { path: path.to_owned(), source })
}

/// Writes a file readable by its owner only, atomically (a crash leaves the old file or none).
fn write_private(path: &Path, contents: &str) -> Result<(), RootError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| RootError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    // A leftover from a crash may have other permissions; `mode` applies only to new files.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The self-signed root kept in `dir` (`root-cert.pem`, `root-key.pem`), made at first start.
pub fn load_or_create_dir(dir: &Path, trust_domain: &str) -> Result<RootMaterial, RootError> {
    let cert_path = dir.join("root-cert.pem");
    let key_path = dir.join("root-key.pem");
    // A key without its certificate is what a crash between the two writes leaves: start over.
    if cert_path.exists() {
        let cert = read(&cert_path)?;
        return Ok(RootMaterial {
            signing_cert_pem: cert.clone(),
            signing_key_pem: read(&key_path)?,
            intermediates: Vec::new(),
            root_pem: cert,
        });
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| RootError::Io { path: dir.to_owned(), source })?;
    }
    let material = RootMaterial::generate(trust_domain, ROOT_VALIDITY)?;
    // The key first: a certificate without its key would be unusable at the next start.
    write_private(&key_path, &material.signing_key_pem)?;
    write_private(&cert_path, &material.signing_cert_pem)?;
    Ok(material)
}

/// A plugged-in intermediate CA from files, Istio's `cacerts` layout.
pub fn load_plugin(dir: &Path) -> Result<RootMaterial, RootError> {
    let signing_cert_pem = normalize(&read(&dir.join("ca-cert.pem"))?);
    let signing_key_pem = read(&dir.join("ca-key.pem"))?;
    let root_pem = normalize(&read(&dir.join("root-cert.pem"))?);
    // cert-chain.pem usually holds ca-cert.pem then the chain up to the root; keep only what
    // lies strictly between the two.
    let chain_path = dir.join("cert-chain.pem");
    let chain = if chain_path.exists() {
        split_pem("cert-chain.pem", &read(&chain_path)?)?
    } else {
        Vec::new()
    };
    let signing_der = first_der("ca-cert.pem", &signing_cert_pem)?;
    let root_der = first_der("root-cert.pem", &root_pem)?;
    let intermediates = chain
        .into_iter()
        .filter(|pem| {
            first_der("cert-chain.pem", pem).is_ok_and(|der| der != signing_der && der != root_der)
        })
        .collect();
    let material = RootMaterial { signing_cert_pem, signing_key_pem, intermediates, root_pem };
    material.check_chain()?;
    Ok(material)
}

impl RootMaterial {
    /// Checks that the signing certificate chains to the root through the intermediates and
    /// that none of them has expired: a bad plug-in must stop the CA, not make it issue
    /// certificates nobody accepts.
    pub fn check_chain(&self) -> Result<(), RootError> {
        let pems: Vec<&String> = std::iter::once(&self.signing_cert_pem)
            .chain(&self.intermediates)
            .chain(std::iter::once(&self.root_pem))
            .collect();
        let ders = pems
            .iter()
            .map(|pem| first_der("CA certificate", pem))
            .collect::<Result<Vec<_>, _>>()?;
        let mut parsed = Vec::new();
        for der in &ders {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| invalid("CA certificate", e))?;
            parsed.push(cert);
        }
        for cert in &parsed {
            if !cert.validity().is_valid() {
                return Err(invalid(
                    format!("CA certificate {}", cert.subject()),
                    "is expired or not yet valid",
                ));
            }
        }
        for pair in parsed.windows(2) {
            if pair[0].verify_signature(Some(pair[1].public_key())).is_err() {
                return Err(invalid(
                    format!("CA certificate {}", pair[0].subject()),
                    format!(
                        "is not signed by {}: check cert-chain.pem and root-cert.pem",
                        pair[1].subject()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn first_der(what: &str, pem: &str) -> Result<Vec<u8>, RootError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| invalid(what, e))
}

/// The self-signed root kept in a Kubernetes Secret, made at first start. When two replicas
/// start together, the one that loses the race to create the Secret reads the winner's.
pub async fn load_or_create_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<RootMaterial, RootError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_err =
        |source| RootError::Kube { namespace: namespace.to_owned(), name: name.to_owned(), source };
    if let Some(secret) = api.get_opt(name).await.map_err(kube_err)? {
        return from_secret(&secret, namespace, name);
    }
    let material = RootMaterial::generate(trust_domain, ROOT_VALIDITY)?;
    let data = BTreeMap::from([
        ("ca-cert.pem".to_owned(), ByteString(material.signing_cert_pem.clone().into_bytes())),
        ("ca-key.pem".to_owned(), ByteString(material.signing_key_pem.clone().into_bytes())),
        ("root-cert.pem".to_owned(), ByteString(material.root_pem.clone().into_bytes())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("mesh.io/ca-root".to_owned()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(material),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(name).await.map_err(kube_err)?;
            from_secret(&secret, namespace, name)
        }
        Err(err) => Err(kube_err(err)),
    }
}

fn from_secret(secret: &Secret, namespace: &str, name: &str) -> Result<RootMaterial, RootError> {
    let key = |k: &str| -> Result<String, RootError> {
        let bytes =
            secret.data.as_ref().and_then(|d| d.get(k)).ok_or_else(|| {
                invalid(format!("Secret {namespace}/{name}"), format!("has no {k}"))
            })?;
        String::from_utf8(bytes.0.clone())
            .map_err(|e| invalid(format!("Secret {namespace}/{name} key {k}"), e))
    };
    let cert = key("ca-cert.pem")?;
    Ok(RootMaterial {
        signing_cert_pem: cert.clone(),
        signing_key_pem: key("ca-key.pem")?,
        intermediates: Vec::new(),
        root_pem: cert,
    })
}
