//! The two ways telemetry names a protocol: Envoy's `%PROTOCOL%` in the access log (the
//! HTTP version the app spoke, or TCP), and Istio's `request_protocol` metrics label.

use std::fmt;

/// The protocol of a request or connection as Envoy's access log prints it. For HTTP it is
/// the version the app spoke, which also crosses the HTTP/2 hop between sidecars in
/// [`super::PROTOCOL_HEADER`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1` (also what a request that could not be parsed is logged as).
    #[default]
    Http11,
    /// `HTTP/2`.
    Http2,
    /// `TCP`.
    Tcp,
}

impl Protocol {
    /// The protocol of a request of HTTP `version` (anything but 1.0 and 2 is logged as 1.1).
    pub fn of(version: http::Version) -> Self {
        match version {
            http::Version::HTTP_2 => Self::Http2,
            http::Version::HTTP_10 => Self::Http10,
            _ => Self::Http11,
        }
    }

    /// An HTTP version as [`super::PROTOCOL_HEADER`] carries it; `None` for anything else.
    pub fn from_header(value: &str) -> Option<Self> {
        match value {
            "HTTP/1.0" => Some(Self::Http10),
            "HTTP/1.1" => Some(Self::Http11),
            "HTTP/2" => Some(Self::Http2),
            _ => None,
        }
    }

    /// The text Envoy prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
            Self::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Istio's `request_protocol` label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    /// `http`.
    #[default]
    Http,
    /// `grpc`: an HTTP request with a gRPC content type.
    Grpc,
    /// `tcp`: an opaque TCP connection.
    Tcp,
}

impl RequestProtocol {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for RequestProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{Protocol, RequestProtocol};

    #[test]
    fn protocols_print_as_envoy_and_istio_name_them() {
        let versions = [
            (http::Version::HTTP_09, "HTTP/1.1"),
            (http::Version::HTTP_10, "HTTP/1.0"),
            (http::Version::HTTP_11, "HTTP/1.1"),
            (http::Version::HTTP_2, "HTTP/2"),
            (http::Version::HTTP_3, "HTTP/1.1"),
        ];
        for (version, text) in versions {
            assert_eq!(Protocol::of(version).to_string(), text, "{version:?}");
            assert_eq!(Protocol::from_header(text), Some(Protocol::of(version)));
        }
        assert_eq!(Protocol::Tcp.to_string(), "TCP");
        assert_eq!(Protocol::from_header("TCP"), None, "the header carries HTTP versions only");
        assert_eq!(Protocol::from_header("HTTP/3"), None);
        let labels = [RequestProtocol::Http, RequestProtocol::Grpc, RequestProtocol::Tcp];
        assert_eq!(labels.map(RequestProtocol::as_str), ["http", "grpc", "tcp"]);
    }
}
