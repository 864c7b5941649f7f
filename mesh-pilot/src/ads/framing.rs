//! State-of-the-world ADS on the wire without copies. A resource is encoded once per
//! translation (as the `resources` entry of a `DiscoveryResponse`) and every stream's response
//! is those shared bytes framed, not a re-encoded copy; and no stream keeps a buffer the size
//! of its largest response after sending it (tonic's encoder would, for as long as the stream
//! lives). Delta ADS and everything else go through tonic's generated server.
//!
//! Only gRPC framing and protobuf fields live here: this module knows nothing of the streams
//! above it (the state-of-the-world streams) or of what they serve.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::Any;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;

/// gRPC path of state-of-the-world ADS.
pub(crate) const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Largest request accepted (a proxy's subscription list).
pub(crate) const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// One resource as the bytes of a `DiscoveryResponse.resources` entry (field 2).
pub(crate) fn encode_resource(any: &Any) -> Bytes {
    let mut buf = BytesMut::new();
    prost::encoding::message::encode(2, any, &mut buf);
    buf.freeze()
}

fn string_field(tag: u32, value: &str, buf: &mut BytesMut) {
    if !value.is_empty() {
        prost::encoding::string::encode(tag, &value.to_owned(), buf);
    }
}

/// A `DiscoveryResponse` as gRPC message pieces: the 5-byte gRPC prefix and `version_info`,
/// the shared resource entries, then `type_url` and `nonce`.
pub(crate) struct Response {
    pieces: Vec<Bytes>,
}

impl Response {
    /// Frames a response from pre-encoded resource entries ([`encode_resource`]).
    pub(crate) fn new<'a>(
        version: &str,
        resources: impl Iterator<Item = &'a Bytes>,
        type_url: &str,
        nonce: &str,
    ) -> Self {
        let mut head = BytesMut::new();
        string_field(1, version, &mut head);
        let mut tail = BytesMut::new();
        string_field(4, type_url, &mut tail);
        string_field(5, nonce, &mut tail);
        // The prefix goes first but needs the length: its slot is filled last.
        let mut pieces = vec![Bytes::new()];
        pieces.extend(resources.cloned());
        let length = head.len() + tail.len() + pieces.iter().map(Bytes::len).sum::<usize>();
        let mut prefix = BytesMut::with_capacity(5 + head.len());
        prefix.put_u8(0); // not compressed
        prefix.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
        prefix.extend_from_slice(&head);
        pieces[0] = prefix.freeze();
        pieces.push(tail.freeze());
        Self { pieces }
    }
}

/// Size of the data frames a response is written in.
const CHUNK: usize = 64 * 1024;

/// The next data frame of a response: a large piece as it is, small ones copied together up to
/// [`CHUNK`]. HTTP/2 keeps a queue slot per data frame, and the queue keeps its size; a slot per
/// resource would leave every connection with thousands of them.
fn next_chunk(pieces: &mut std::iter::Peekable<std::vec::IntoIter<Bytes>>) -> Option<Bytes> {
    let first = pieces.next()?;
    if first.len() >= CHUNK || pieces.peek().is_none() {
        return Some(first);
    }
    let mut chunk = BytesMut::with_capacity(CHUNK);
    chunk.extend_from_slice(&first);
    while let Some(next) = pieces.next_if(|next| chunk.len() + next.len() <= CHUNK) {
        chunk.extend_from_slice(&next);
    }
    Some(chunk.freeze())
}

/// The response body of one stream: the pieces of each response as they come, then the gRPC
/// status as trailers. Holds nothing between responses.
pub(crate) struct Body {
    responses: mpsc::Receiver<Result<Response, Status>>,
    /// The pieces of the response being written.
    current: Option<std::iter::Peekable<std::vec::IntoIter<Bytes>>>,
    finished: bool,
}

impl Body {
    /// The body that writes `responses` as they come; an error ends it as the gRPC status.
    pub(crate) fn new(responses: mpsc::Receiver<Result<Response, Status>>) -> Self {
        Self { responses, current: None, finished: false }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(pieces) = self.current.as_mut() {
                match next_chunk(pieces) {
                    Some(chunk) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    None => self.current = None,
                }
            }
            if self.finished {
                return Poll::Ready(None);
            }
            let status = match self.responses.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(response))) => {
                    self.current = Some(response.pieces.into_iter().peekable());
                    continue;
                }
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            self.finished = true;
            let mut trailers = http::HeaderMap::new();
            if status.add_header(&mut trailers).is_err() {
                trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
    }
}

/// A state-of-the-world request whose resource names stay in the bytes they came in: every
/// ACK repeats the whole subscription (thousands of names), and it usually has not changed, so
/// it is fingerprinted, not decoded.
pub(crate) struct SotwRequest {
    /// Everything but `resource_names` (left empty).
    pub(crate) request: DiscoveryRequest,
    /// The names, undecoded.
    pub(crate) names: RawNames,
}

/// The `resource_names` of a request, as ranges of its bytes.
pub(crate) struct RawNames {
    message: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    /// A hash of the names in order: equal for the same subscription sent again.
    pub(crate) fingerprint: u64,
}

impl RawNames {
    /// How many names.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The names (any that is not UTF-8 cannot name a resource and is left out).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.ranges
            .iter()
            .filter_map(|(start, end)| std::str::from_utf8(&self.message[*start..*end]).ok())
    }
}

impl SotwRequest {
    fn decode(message: Vec<u8>) -> Result<Self, Status> {
        use std::hash::Hasher;
        let bad = |why: &str| Status::invalid_argument(format!("not a DiscoveryRequest: {why}"));
        // One pass over the fields: names are noted, the rest is copied for prost.
        let mut ranges = Vec::new();
        let mut rest = Vec::with_capacity(256);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut at = 0;
        while at < message.len() {
            let start = at;
            let mut buf = &message[at..];
            let key = prost::encoding::decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
            let mut end = message.len() - buf.len();
            match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
                    end = message.len() - buf.len();
                }
                1 => end += 8,
                5 => end += 4,
                2 => {
                    let length = prost::encoding::decode_varint(&mut buf)
                        .map_err(|e| bad(&e.to_string()))?;
                    let payload = message.len() - buf.len();
                    end = usize::try_from(length)
                        .ok()
                        .and_then(|l| payload.checked_add(l))
                        .ok_or_else(|| bad("a field longer than the message"))?;
                    if key >> 3 == 3 && end <= message.len() {
                        hasher.write(&message[payload..end]);
                        hasher.write_u8(0xff);
                        ranges.push((payload, end));
                        at = end;
                        continue;
                    }
                }
                _ => return Err(bad("groups are not used by xDS")),
            }
            if end > message.len() {
                return Err(bad("a field longer than the message"));
            }
            rest.extend_from_slice(&message[start..end]);
            at = end;
        }
        let request = <DiscoveryRequest as prost::Message>::decode(rest.as_slice())
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self { request, names: RawNames { message, ranges, fingerprint: hasher.finish() } })
    }
}

/// The requests of one stream, each assembled in a buffer of its own: a proxy's subscription
/// list can be large, and a buffer kept across messages would stay that large for the life of
/// the stream (tonic's decoder keeps one).
pub(crate) struct Requests {
    body: tonic::body::Body,
    /// The 5-byte gRPC prefix of the message being read.
    header: Vec<u8>,
    message: Vec<u8>,
    /// The length of the message being read, once its prefix is complete.
    expected: Option<usize>,
    /// What followed a finished message in the same frame.
    pending_data: Option<Bytes>,
    done: bool,
}

impl Requests {
    /// The requests in a request body.
    pub(crate) fn new(body: tonic::body::Body) -> Self {
        Self {
            body,
            header: Vec::with_capacity(5),
            message: Vec::new(),
            expected: None,
            pending_data: None,
            done: false,
        }
    }

    /// Takes what it can of `data` into the message being read; returns a finished message.
    fn take(&mut self, data: &mut Bytes) -> Result<Option<SotwRequest>, Status> {
        use bytes::Buf;
        if self.expected.is_none() {
            let want = (5 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data.split_to(want));
            if self.header.len() < 5 {
                return Ok(None);
            }
            if self.header[0] != 0 {
                return Err(Status::unimplemented("compressed xDS requests are not supported"));
            }
            let length = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]);
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > MAX_REQUEST {
                return Err(Status::resource_exhausted(format!(
                    "a request of {length} bytes; the most is {MAX_REQUEST}"
                )));
            }
            self.expected = Some(length);
            self.message = Vec::with_capacity(length);
        }
        let expected = self.expected.unwrap_or(0);
        let want = (expected - self.message.len()).min(data.remaining());
        self.message.extend_from_slice(&data.split_to(want));
        if self.message.len() < expected {
            return Ok(None);
        }
        self.header.clear();
        self.expected = None;
        SotwRequest::decode(std::mem::take(&mut self.message)).map(Some)
    }
}

impl futures::Stream for Requests {
    type Item = Result<SotwRequest, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let mut data = match self.pending_data.take() {
                Some(data) => data,
                None => match self.next_data(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => continue,
                    Poll::Ready(Some(Err(status))) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(status)));
                    }
                    Poll::Ready(Some(Ok(data))) => data,
                },
            };
            while !data.is_empty() {
                match self.take(&mut data) {
                    Ok(Some(request)) => {
                        if !data.is_empty() {
                            self.pending_data = Some(data);
                        }
                        return Poll::Ready(Some(Ok(request)));
                    }
                    Ok(None) => {}
                    Err(status) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(status)));
                    }
                }
            }
        }
    }
}

impl Requests {
    /// The next data frame of the body (`None` for a frame without data; `done` at the end).
    fn next_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        use http_body::Body as _;
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(frame.into_data().ok().map(Ok)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Requests {
        Requests::new(tonic::body::Body::empty())
    }

    fn framed(request: &DiscoveryRequest) -> Vec<u8> {
        let body = prost::Message::encode_to_vec(request);
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn requests_are_reassembled_across_frames_and_split_within_them() {
        let first = DiscoveryRequest {
            type_url: "a".into(),
            resource_names: (0..2000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..DiscoveryRequest::default()
        };
        let second = DiscoveryRequest { type_url: "b".into(), ..DiscoveryRequest::default() };
        let mut wire = framed(&first);
        wire.extend(framed(&second));
        let mut reader = requests();
        let mut got = Vec::new();
        // Frames of 7 bytes: prefixes and messages cut anywhere.
        for chunk in wire.chunks(7) {
            let mut data = Bytes::copy_from_slice(chunk);
            while !data.is_empty() {
                if let Some(request) = reader.take(&mut data).unwrap_or_else(|e| panic!("{e}")) {
                    let names: Vec<String> = request.names.iter().map(str::to_owned).collect();
                    got.push(DiscoveryRequest { resource_names: names, ..request.request });
                }
            }
        }
        assert_eq!(got, [first, second]);
    }

    #[test]
    fn the_same_names_give_the_same_fingerprint_and_others_another() {
        let decode = |names: &[&str]| {
            let request = DiscoveryRequest {
                type_url: "t".into(),
                response_nonce: "n".into(),
                resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                ..DiscoveryRequest::default()
            };
            SotwRequest::decode(prost::Message::encode_to_vec(&request))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let a = decode(&["x", "y"]);
        assert_eq!((a.request.type_url.as_str(), a.request.response_nonce.as_str()), ("t", "n"));
        assert!(a.request.resource_names.is_empty(), "names are not decoded");
        assert_eq!(a.names.fingerprint, decode(&["x", "y"]).names.fingerprint);
        assert_ne!(a.names.fingerprint, decode(&["x", "z"]).names.fingerprint);
        assert_ne!(a.names.fingerprint, decode(&["xy"]).names.fingerprint);
        assert_ne!(a.names.fingerprint, decode(&[]).names.fingerprint);
    }

    #[test]
    fn bad_requests_get_the_status_that_says_why() {
        let code = |wire: &[u8]| {
            let mut data = Bytes::copy_from_slice(wire);
            let mut reader = requests();
            loop {
                match reader.take(&mut data) {
                    Err(status) => return status.code(),
                    Ok(_) if data.is_empty() => return tonic::Code::Ok,
                    Ok(_) => {}
                }
            }
        };
        assert_eq!(code(&[1, 0, 0, 0, 1, 0]), tonic::Code::Unimplemented, "compressed");
        assert_eq!(code(&[0, 0xff, 0xff, 0xff, 0xff]), tonic::Code::ResourceExhausted);
        assert_eq!(code(&[0, 0, 0, 0, 2, 0xff, 0xff]), tonic::Code::InvalidArgument, "garbage");
    }

    #[test]
    fn responses_decode_as_the_envoy_message() {
        let resources: Vec<Any> = (0..3)
            .map(|i| Any { type_url: format!("t{i}"), value: vec![i; usize::from(i) * 100] })
            .collect();
        let encoded: Vec<Bytes> = resources.iter().map(encode_resource).collect();
        let response = Response::new("7", encoded.iter(), "type", "n-1");
        let wire: Vec<u8> = response.pieces.concat();
        assert_eq!(wire[0], 0);
        let length = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]);
        assert_eq!(usize::try_from(length).unwrap_or(0), wire.len() - 5);
        let decoded: envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse =
            prost::Message::decode(&wire[5..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.version_info, "7");
        assert_eq!(decoded.type_url, "type");
        assert_eq!(decoded.nonce, "n-1");
        assert_eq!(decoded.resources, resources);
    }
}
