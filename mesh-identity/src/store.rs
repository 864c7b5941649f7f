//! The workload's current certificate and key: a lock-free snapshot that rotation replaces
//! while live connections keep the certificate they started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::tls::{TlsError, certs_from_pem, material, provider};

/// The current certificate and key, readable without locks and replaceable at any time.
/// Connections already up keep the certificate they started with.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// A store holding a chain (leaf first, PEM) and its key (PKCS#8 PEM).
    pub fn new(chain: &[String], key_pem: &str) -> Result<Self, TlsError> {
        Ok(Self { current: ArcSwap::from_pointee(certified_key(chain, key_pem)?) })
    }

    /// Replaces the certificate; new handshakes use it from now on.
    pub fn replace(&self, chain: &[String], key_pem: &str) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified_key(chain, key_pem)?));
        Ok(())
    }

    /// The certificate and key new handshakes present; a snapshot that a later `replace` does not
    /// change.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

fn certified_key(chain: &[String], key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let certs = certs_from_pem(chain)?;
    if certs.is_empty() {
        return Err(material("certificate chain", "is empty"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| material("private key", e))?;
    let signing = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| material("private key", format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(uri: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn refuses_an_empty_chain_and_a_key_of_another_certificate() {
        let (cert_a, key_a) = self_signed("spiffe://cluster.local/ns/default/sa/a");
        let (_, key_b) = self_signed("spiffe://cluster.local/ns/default/sa/b");
        let empty = CertStore::new(&[], &key_a).unwrap_err();
        assert_eq!(empty.to_string(), "certificate chain: is empty");
        let mismatch = CertStore::new(std::slice::from_ref(&cert_a), &key_b).unwrap_err();
        assert!(mismatch.to_string().starts_with("private key: does not match"), "{mismatch}");
    }

    #[test]
    fn replace_changes_what_new_handshakes_get() {
        let (cert_a, key_a) = self_signed("spiffe://cluster.local/ns/default/sa/a");
        let (cert_b, key_b) = self_signed("spiffe://cluster.local/ns/default/sa/b");
        let store = CertStore::new(&[cert_a], &key_a).unwrap();
        let before = store.current();
        store.replace(&[cert_b], &key_b).unwrap();
        let id = |key: &CertifiedKey| crate::peer_identity(&key.cert).unwrap().to_string();
        assert_eq!(id(&before), "spiffe://cluster.local/ns/default/sa/a");
        assert_eq!(id(&store.current()), "spiffe://cluster.local/ns/default/sa/b");
        // A bad replacement leaves the current certificate in force.
        assert!(store.replace(&[], &key_a).is_err());
        assert_eq!(id(&store.current()), "spiffe://cluster.local/ns/default/sa/b");
    }
}
