//! A plain HTTP/1.1 GET for tests of admin, monitoring and debug endpoints: the whole response
//! as text, status line first, so a test asserts what `curl -i` would show.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` on `address` with `connection: close`; the response (head and body) as text, or
/// `None` if nothing answers.
pub async fn get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// The status code and body of a response from [`get`].
pub fn status_and_body(response: &str) -> (u16, &str) {
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_body_of_a_response() {
        let response = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 6\r\n\r\nnot ok";
        assert_eq!(status_and_body(response), (503, "not ok"));
        assert_eq!(status_and_body("garbage"), (0, ""));
    }
}
