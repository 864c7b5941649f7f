//! Validation of Gateway: servers, their ports and hosts, and the TLS they terminate.

use std::collections::BTreeSet;

use super::{labels, namespaced_host, port};
use crate::ObjectRef;
use crate::networking::*;
use crate::validate::{Checker, Code, Path, ValidationError};

/// Validates a Gateway.
pub fn gateway(gw: &Gateway) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(gw));
    let root = Path::root("spec");
    if gw.spec.servers.is_empty() {
        c.required(&root.field("servers"), "at least one server");
    }
    let mut names = BTreeSet::new();
    for (i, server) in gw.spec.servers.iter().enumerate() {
        let path = root.field("servers").index(i);
        port(&mut c, &path.field("port"), &server.port, true);
        if server.hosts.is_empty() {
            c.required(&path.field("hosts"), "at least one host");
        }
        for (j, host) in server.hosts.iter().enumerate() {
            namespaced_host(&mut c, &path.field("hosts").index(j), host, false);
        }
        if let Some(name) = &server.name
            && !names.insert(name.as_str())
        {
            c.error(
                &path.field("name"),
                Code::Duplicate,
                format!("server name {name:?} is used by an earlier server"),
            );
        }
        let protocol = server.port.protocol.to_ascii_uppercase();
        let terminates = matches!(protocol.as_str(), "HTTPS" | "TLS");
        match &server.tls {
            None if terminates => c.error(
                &path.field("tls"),
                Code::Required,
                format!("a {protocol} server needs tls settings"),
            ),
            None => {}
            Some(tls) => server_tls(&mut c, &path.field("tls"), tls, &protocol),
        }
    }
    labels(&mut c, &root.field("selector"), &gw.spec.selector);
    c.finish()
}

fn server_tls(c: &mut Checker, path: &Path, tls: &ServerTlsSettings, protocol: &str) {
    if let Some(mode) = &tls.mode {
        c.known(&path.field("mode"), mode);
        let has_credential = tls.credential_name.is_some() || !tls.credential_names.is_empty();
        let has_files = (tls.server_certificate.is_some() && tls.private_key.is_some())
            || !tls.tls_certificates.is_empty();
        match mode {
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if !has_credential && !has_files {
                    c.error(
                        path,
                        Code::MissingTlsCredentials,
                        format!("{mode} needs credentialName, or serverCertificate and privateKey"),
                    );
                }
                if *mode != ServerTlsMode::Simple
                    && !has_credential
                    && tls.ca_certificates.is_none()
                {
                    c.error(path, Code::MissingTlsCredentials, format!("{mode} needs caCertificates (or a credentialName holding the CA) to verify clients"));
                }
            }
            _ => {}
        }
        if matches!(protocol, "HTTP" | "GRPC" | "HTTP2" | "TCP")
            && *mode != ServerTlsMode::IstioMutual
        {
            c.error(
                &path.field("mode"),
                Code::TlsModeMismatch,
                format!("TLS mode {mode} needs an HTTPS or TLS server, not {protocol}"),
            );
        }
    }
    if tls.credential_name.is_some() && !tls.credential_names.is_empty() {
        c.not_both(&path.field("credentialNames"), "credentialName", "credentialNames");
    }
    for (field, version) in [
        ("minProtocolVersion", &tls.min_protocol_version),
        ("maxProtocolVersion", &tls.max_protocol_version),
    ] {
        if let Some(v) = version {
            c.known(&path.field(field), v);
        }
    }
    if let (Some(min), Some(max)) = (&tls.min_protocol_version, &tls.max_protocol_version) {
        let rank = |v: &TlsProtocol| TlsProtocol::KNOWN.iter().position(|k| *k == v.as_str());
        if let (Some(lo), Some(hi)) = (rank(min), rank(max))
            && lo > 0
            && hi > 0
            && lo > hi
        {
            c.error(
                &path.field("minProtocolVersion"),
                Code::TlsVersionsInverted,
                format!("{min} is above maxProtocolVersion {max}"),
            );
        }
    }
}
