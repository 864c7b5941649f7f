//! A small HTTP/1.1 client over any byte stream: what meshctl needs to read the mesh's admin and
//! debug endpoints through a namespace it entered or a Kubernetes port-forward, where a general
//! client's connector does not reach. One request per connection; every answer is bounded.

use std::io::{BufRead, BufReader, Read, Write};

use super::{AccessError, Conn};

/// The largest body read whole (a busy proxy's config dump or metrics fit; a runaway is cut).
pub const MAX_BODY: u64 = 64 << 20;
/// The largest head (status line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;
/// The largest chunk-size line accepted in a chunked body.
const MAX_CHUNK_LINE: u64 = 1024;

/// A request: `GET` of `path`, with a bearer token when the endpoint needs one.
#[derive(Clone, Debug)]
pub struct Get<'a> {
    /// Path and query.
    pub path: &'a str,
    /// `Authorization: Bearer` value.
    pub token: Option<&'a str>,
}

/// How the body of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer whose body is still to be read: what [`stream`] returns.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Box<dyn BufRead + Send>,
}

/// Sends `request` on `conn` and reads the whole answer: the status and the body as text.
pub fn get(
    conn: Box<dyn Conn>,
    what: &str,
    request: &Get<'_>,
) -> Result<(u16, String), AccessError> {
    let Answer { status, mut body } = stream(conn, what, request)?;
    let mut out = Vec::new();
    body.by_ref().take(MAX_BODY + 1).read_to_end(&mut out).map_err(|e| AccessError::io(what, e))?;
    if out.len() as u64 > MAX_BODY {
        return Err(AccessError::Http {
            what: what.to_owned(),
            reason: format!("the answer is larger than {} MiB", MAX_BODY >> 20),
        });
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

/// Sends `request` on `conn` and returns once the head is read; the body is read as it comes
/// (a streaming endpoint's lines arrive while the server writes them).
pub fn stream(
    mut conn: Box<dyn Conn>,
    what: &str,
    request: &Get<'_>,
) -> Result<Answer, AccessError> {
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: meshctl/{}\r\nAccept: */*\r\nConnection: close\r\n",
        request.path,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = request.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).map_err(|e| AccessError::io(what, e))?;
    conn.flush().map_err(|e| AccessError::io(what, e))?;
    let mut reader = BufReader::new(conn);
    let (status, framing) = read_head(&mut reader)
        .map_err(|reason| AccessError::Http { what: what.to_owned(), reason })?;
    let body: Box<dyn BufRead + Send> = match framing {
        Framing::Length(n) => Box::new(BufReader::new(reader.take(n))),
        Framing::UntilClose => Box::new(reader),
        Framing::Chunked => {
            Box::new(BufReader::new(Chunked { inner: reader, left: 0, done: false }))
        }
    };
    Ok(Answer { status, body })
}

/// Reads the status line and headers: the status and how the body is framed.
fn read_head(reader: &mut impl BufRead) -> Result<(u16, Framing), String> {
    let mut read = 0usize;
    let mut line = String::new();
    let mut next_line = |line: &mut String| -> Result<(), String> {
        line.clear();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - read) as u64)
            .read_line(line)
            .map_err(|e| e.to_string())?;
        read += n;
        if n == 0 || !line.ends_with('\n') {
            return Err(if read >= MAX_HEAD {
                format!("the answer's head is longer than {MAX_HEAD} bytes")
            } else {
                "the connection closed before an HTTP answer".to_owned()
            });
        }
        Ok(())
    };
    next_line(&mut line)?;
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim_end()))?;
    let mut framing = Framing::UntilClose;
    loop {
        next_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(
                value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    Ok((status, framing))
}

/// A chunked body, de-chunked as it is read.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.by_ref().take(MAX_CHUNK_LINE).read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or_default();
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {:?}", line.trim()),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        if self.left == 0 {
            // The CRLF that ends a chunk.
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A connection that answers `reply` whatever is written.
    struct Canned {
        reply: Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reply.read(buf)
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Conn for Canned {
        fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
        fn shutdown_write(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn set_read_timeout(&self, _: Option<std::time::Duration>) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn canned(reply: &str) -> Box<dyn Conn> {
        Box::new(Canned { reply: Cursor::new(reply.as_bytes().to_vec()), written: Vec::new() })
    }

    const GET: Get<'static> = Get { path: "/x", token: None };

    #[test]
    fn reads_a_body_by_its_length_and_ignores_what_follows() {
        let got =
            get(canned("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more"), "t", &GET);
        assert_eq!(got.unwrap(), (200, "hello".to_owned()));
    }

    #[test]
    fn de_chunks_a_chunked_body() {
        let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\n2\r\n}\n\r\n0\r\n\r\n";
        assert_eq!(get(canned(reply), "t", &GET).unwrap(), (200, "{\"a\":1}\n".to_owned()));
    }

    #[test]
    fn reads_until_close_without_a_length_and_keeps_the_status() {
        let got = get(canned("HTTP/1.0 404 Not Found\r\n\r\nnot found\n"), "t", &GET).unwrap();
        assert_eq!(got, (404, "not found\n".to_owned()));
    }

    #[test]
    fn says_what_is_wrong_with_an_answer_that_is_not_http() {
        let err = get(canned("SSH-2.0-OpenSSH\r\n"), "pilot", &GET).unwrap_err().to_string();
        assert!(err.contains("pilot") && err.contains("not an HTTP answer"), "{err}");
        let err = get(canned(""), "pilot", &GET).unwrap_err().to_string();
        assert!(err.contains("closed before an HTTP answer"), "{err}");
    }

    #[test]
    fn a_stream_gives_lines_as_they_come() {
        let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n";
        let answer = stream(canned(reply), "t", &GET).unwrap();
        let lines: Vec<String> = answer.body.lines().map(Result::unwrap).collect();
        assert_eq!(lines, ["one", "two"]);
    }
}
