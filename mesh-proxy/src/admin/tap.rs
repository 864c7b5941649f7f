//! `GET /tap` (admin port only): the requests and connections this proxy finishes, streamed as
//! they finish, one JSON object a line (`application/x-ndjson`). `?direction=inbound|outbound`
//! keeps one direction; `?max=N` ends the stream after N records. A reader that falls behind
//! gets `{"dropped":N}` for what it lost. A quiet stream gets an empty line every
//! [`KEEP_ALIVE`], so a reader can time out a dead connection and the proxy finds a reader that
//! went away (and frees its place) without waiting for traffic. The stream ends when the client goes away, at `max`,
//! or when the proxy starts draining. At most
//! [`MAX_TAPS`](crate::telemetry::tap::MAX_TAPS) at once: one more is answered 503. The feed
//! itself is [`crate::telemetry::tap`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use mesh_runtime::admin::{query_param, text};
use mesh_runtime::drain;

use super::AdminBody;
use crate::telemetry::tap::{Direction, Line, Tap, Watcher};

/// How often a stream checks whether the proxy drains. Polled, not watched: a tap must not
/// count as work the data path's drain waits for.
const DRAIN_CHECK: Duration = Duration::from_millis(250);

/// How long a stream stays silent before it sends an empty line.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What a tap was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ask {
    direction: Option<Direction>,
    max: Option<u64>,
}

/// The query's `direction` and `max`, or what is wrong with them.
fn ask(uri: &http::Uri) -> Result<Ask, String> {
    let direction = match query_param(uri, "direction") {
        None => None,
        Some(text) => Some(Direction::parse(&text).ok_or_else(|| {
            format!("direction={text}: use inbound or outbound (or leave it out for both)")
        })?),
    };
    let max = match query_param(uri, "max") {
        None => None,
        Some(text) => {
            Some(text.parse::<u64>().map_err(|_| format!("max={text}: use a number of records"))?)
        }
    };
    Ok(Ask { direction, max })
}

/// The answer of `GET /tap`.
pub fn respond(uri: &http::Uri, tap: &Arc<Tap>, drain: &drain::Trigger) -> Response<AdminBody> {
    let ask = match ask(uri) {
        Ok(ask) => ask,
        Err(why) => return boxed(text(StatusCode::BAD_REQUEST, format!("{why}\n"))),
    };
    if drain.is_draining() {
        return boxed(text(StatusCode::SERVICE_UNAVAILABLE, "draining: no new taps\n"));
    }
    let watcher = match tap.open(ask.direction) {
        Ok(watcher) => watcher,
        Err(busy) => return boxed(text(StatusCode::SERVICE_UNAVAILABLE, format!("{busy}\n"))),
    };
    let check = tokio::time::interval_at(tokio::time::Instant::now() + DRAIN_CHECK, DRAIN_CHECK);
    let state =
        Stream { watcher, drain: drain.clone(), left: ask.max, check, quiet: Duration::ZERO };
    let lines = futures::stream::unfold(state, Stream::next);
    let mut response = Response::new(http_body_util::StreamBody::new(lines).boxed_unsync());
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
    response
}

fn boxed(response: Response<mesh_runtime::admin::Body>) -> Response<AdminBody> {
    response.map(BodyExt::boxed_unsync)
}

/// One tap's stream: its watcher (dropped with it, which closes the tap), the drain it ends
/// on and how often it looks, and how many records it may still send.
struct Stream {
    watcher: Watcher,
    drain: drain::Trigger,
    left: Option<u64>,
    check: tokio::time::Interval,
    /// How long since the last line was sent (counted in drain checks).
    quiet: Duration,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Self)> {
        if self.left == Some(0) {
            return None;
        }
        let line = loop {
            // Both cancel-safe: a record not taken stays for the next round.
            tokio::select! {
                line = self.watcher.next() => break line,
                _ = self.check.tick() => {
                    if self.drain.is_draining() {
                        return None;
                    }
                    self.quiet += DRAIN_CHECK;
                    if self.quiet >= KEEP_ALIVE {
                        self.quiet = Duration::ZERO;
                        return Some((Ok(Frame::data(Bytes::from_static(b"\n"))), self));
                    }
                }
            }
        };
        self.quiet = Duration::ZERO;
        if let (Line::Record(_), Some(left)) = (&line, self.left.as_mut()) {
            *left -= 1;
        }
        Some((Ok(Frame::data(Bytes::from(line.json()))), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_asks_for_a_direction_and_a_count_or_is_told_what_is_wrong() {
        let parse = |uri: &str| ask(&uri.parse().unwrap_or_default());
        assert_eq!(parse("/tap"), Ok(Ask { direction: None, max: None }));
        assert_eq!(
            parse("/tap?direction=inbound&max=3"),
            Ok(Ask { direction: Some(Direction::Inbound), max: Some(3) })
        );
        assert_eq!(
            parse("/tap?direction=sideways"),
            Err("direction=sideways: use inbound or outbound (or leave it out for both)".to_owned())
        );
        assert_eq!(parse("/tap?max=-1"), Err("max=-1: use a number of records".to_owned()));
        assert_eq!(crate::telemetry::tap::MAX_TAPS, 4);
    }
}
