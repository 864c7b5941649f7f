//! gRPC clients over TLS: the CA client and the proxy's xDS client reach their servers
//! through a [`GrpcEndpoint`], with mesh mTLS or server-authenticated TLS.

use std::sync::Arc;

/// A gRPC endpoint at `address` (`host:port`) reached over TLS with `config` (ALPN set to
/// HTTP/2), presenting `server_name` in SNI. Connections are made lazily and re-made after
/// failures, as tonic does. For mesh mTLS (`mesh_client_config`) the server name is only SNI:
/// the peer's SPIFFE identity is what is verified.
pub fn grpc_channel(
    address: &str,
    server_name: rustls_pki_types::ServerName<'static>,
    mut config: rustls::ClientConfig,
) -> Result<GrpcEndpoint, tonic::transport::Error> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    Ok(GrpcEndpoint { endpoint, connector, server_name, address: address.to_owned() })
}

/// A gRPC endpoint behind TLS; see [`grpc_channel`].
#[derive(Clone)]
pub struct GrpcEndpoint {
    endpoint: tonic::transport::Endpoint,
    connector: tokio_rustls::TlsConnector,
    server_name: rustls_pki_types::ServerName<'static>,
    address: String,
}

impl std::fmt::Debug for GrpcEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcEndpoint")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl GrpcEndpoint {
    /// Every call fails after `timeout` (not for streams that should live long).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.endpoint = self.endpoint.timeout(timeout);
        self
    }

    /// The channel; it connects on first use.
    pub fn connect_lazy(self) -> tonic::transport::Channel {
        let Self { endpoint, connector, server_name, address } = self;
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, server_name, address) =
                (connector.clone(), server_name.clone(), address.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
    }
}
