//! A connection's byte stream split into requests: a head, then exactly the body its head
//! frames, then the next head. This is the one framing of the server: the core reads every
//! connection with it, one step at a time ([`RequestStream::step`]), deciding after each
//! head how its body is read ([`RequestStream::read_body`]: kept for a publish, read past
//! and dropped for anything else, or refused before a byte of it is read: 401, 411, 413).
//!
//! [`RequestStream::feed`] is the same steps under a fixed policy (keep the body of a
//! `POST`, read past any other; a `POST` without framing, 411, or with a coding we cannot
//! decode, 501, ends the stream): what the framing proptest and fuzz target check. The same
//! bytes in any split give the same requests, the same bodies and the same error, and each
//! request gives one outcome.

use super::body::{BodyError, BodyReader};
use super::request::{HeadError, HeadProgress, HeadReader, Method, RequestHead};

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: RequestHead,
    /// The body of a `POST`; empty for other methods (their body, if any, was discarded).
    pub body: Vec<u8>,
}

/// Why the stream could not be read further; the connection answers this status and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    Head(HeadError),
    Body(BodyError),
}

impl StreamError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            StreamError::Head(e) => e.status(),
            StreamError::Body(e) => e.status(),
        }
    }
}

/// What one read step found.
// Made once per request and moved straight out (as `HeadProgress`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete head. The caller says how its body is read ([`RequestStream::read_body`])
    /// before the next step, or stops reading the connection.
    Head(RequestHead),
    /// The body of the last head is complete: its bytes when kept, empty when read past.
    Body(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Head(HeadReader),
    /// A head was returned; its body's reader is not given yet.
    AwaitingBody,
    Body(BodyReader),
    Failed(StreamError),
}

/// Reads pipelined requests within a head limit and a body limit.
///
/// Guarantees: memory held is at most the head limit (a head being assembled) plus what a
/// kept body holds (at most its reader's limit); after an error every later step returns it
/// again and completes nothing.
#[derive(Debug)]
pub struct RequestStream {
    state: State,
    max_head: usize,
    max_body: usize,
    /// [`RequestStream::feed`] only: the head whose body is being read.
    feed_head: Option<Box<RequestHead>>,
}

impl RequestStream {
    pub fn new(max_head: usize, max_body: usize) -> RequestStream {
        RequestStream {
            state: State::Head(HeadReader::default()),
            max_head,
            max_body,
            feed_head: None,
        }
    }

    /// Bytes of a head buffered so far (0 between requests and while a body is read).
    pub fn buffered_head(&self) -> usize {
        match &self.state {
            State::Head(reader) => reader.buffered(),
            _ => 0,
        }
    }

    /// One read step over `input` (bytes read and not yet consumed): what it completed, if
    /// anything, and how many bytes of `input` it consumed. `None` means more bytes are
    /// needed (all of `input` was consumed), or a head waits for [`RequestStream::read_body`].
    pub fn step(&mut self, input: &[u8]) -> Result<(Option<Frame>, usize), StreamError> {
        let result = self.step_inner(input);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    fn step_inner(&mut self, input: &[u8]) -> Result<(Option<Frame>, usize), StreamError> {
        match &mut self.state {
            State::Failed(e) => Err(*e),
            State::AwaitingBody => Ok((None, 0)),
            State::Head(reader) => match reader.feed(input, self.max_head) {
                Ok(HeadProgress::Partial) => Ok((None, input.len())),
                Ok(HeadProgress::Complete { head, rest }) => {
                    // What follows the head is always the tail of this input.
                    self.state = State::AwaitingBody;
                    Ok((Some(Frame::Head(head)), input.len() - rest.len()))
                }
                Err(e) => Err(StreamError::Head(e)),
            },
            State::Body(reader) => {
                let used = if reader.is_done() || input.is_empty() {
                    0
                } else {
                    reader.feed(input).map_err(StreamError::Body)?.used
                };
                if !reader.is_done() {
                    return Ok((None, used));
                }
                let done = std::mem::replace(&mut self.state, State::Head(HeadReader::default()));
                let body = match done {
                    State::Body(reader) => reader.into_body(),
                    _ => Vec::new(),
                };
                Ok((Some(Frame::Body(body)), used))
            }
        }
    }

    /// After a [`Frame::Head`]: its body is read by `reader` (kept or read past, within the
    /// reader's limit); a body already complete (none framed) is returned by the next step.
    pub fn read_body(&mut self, reader: BodyReader) {
        if matches!(self.state, State::AwaitingBody) {
            self.state = State::Body(reader);
        }
    }

    /// The reference policy over [`RequestStream::step`]: feeds bytes read from the
    /// connection and appends every request they complete to `out`, in order, keeping the
    /// body of a `POST` and reading past any other. After an error, every later call returns
    /// it again and completes nothing.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Request>) -> Result<(), StreamError> {
        let mut at = 0;
        loop {
            let (frame, used) = self.step(&bytes[at..])?;
            at += used;
            match frame {
                None => return Ok(()),
                Some(Frame::Head(head)) => {
                    let reader = if head.method == Method::Post {
                        BodyReader::for_use(&head, self.max_body)
                    } else {
                        BodyReader::for_discard(&head, self.max_body)
                    };
                    match reader {
                        Ok(reader) => self.read_body(reader),
                        Err(e) => {
                            self.state = State::Failed(StreamError::Body(e));
                            return Err(StreamError::Body(e));
                        }
                    }
                    self.feed_head = Some(Box::new(head));
                }
                Some(Frame::Body(body)) => {
                    if let Some(head) = self.feed_head.take() {
                        out.push(Request { head: *head, body });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::BodyFraming;
    use proptest::prelude::*;

    fn run(parts: &[&[u8]]) -> (Vec<Request>, Option<StreamError>) {
        let mut s = RequestStream::new(256, 64);
        let mut out = Vec::new();
        for p in parts {
            if let Err(e) = s.feed(p, &mut out) {
                return (out, Some(e));
            }
        }
        (out, None)
    }

    /// A body on a GET is read past, never parsed as the next request (no smuggling).
    #[test]
    fn a_get_body_is_not_a_request() {
        let smuggled = "POST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx";
        let wire = format!(
            "GET /health HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{smuggled}GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
            smuggled.len()
        );
        let (reqs, err) = run(&[wire.as_bytes()]);
        assert_eq!(err, None);
        let paths: Vec<&str> = reqs.iter().map(|r| r.head.path.as_str()).collect();
        assert_eq!(paths, ["/health", "/metrics"]);
        assert!(reqs[0].body.is_empty(), "a GET's body is discarded");
        let chunked = format!(
            "GET /health HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
            smuggled.len()
        );
        let (reqs, err) = run(&[chunked.as_bytes()]);
        assert_eq!(err, None);
        let paths: Vec<&str> = reqs.iter().map(|r| r.head.path.as_str()).collect();
        assert_eq!(paths, ["/health", "/metrics"]);
    }

    #[test]
    fn publishes_keep_their_bodies_including_empty_ones() {
        let wire = b"POST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiPOST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nPOST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (reqs, err) = run(&[wire]);
        assert_eq!(err, None);
        let bodies: Vec<&[u8]> = reqs.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(bodies, [&b"hi"[..], b"", b""]);
        assert_eq!(reqs[1].head.framing, BodyFraming::Length(0));
    }

    #[test]
    fn errors_end_the_stream() {
        let wire = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 65\r\n\r\n";
        let (reqs, err) = run(&[wire]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(err, Some(StreamError::Body(BodyError::TooLarge)));
        assert_eq!(err.map(StreamError::status), Some(413));
        let mut s = RequestStream::new(256, 64);
        let mut out = Vec::new();
        assert!(
            s.feed(
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc",
                &mut out
            )
            .is_err()
        );
        assert_eq!(
            s.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out),
            Err(StreamError::Body(BodyError::Malformed))
        );
        assert!(out.is_empty());
    }

    fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "OPTIONS"]);
        let body = proptest::collection::vec(any::<u8>(), 0..30);
        (method, body, 0u8..4).prop_map(|(m, body, framing)| {
            let mut w = format!("{m} /p HTTP/1.1\r\nHost: h\r\n").into_bytes();
            match framing {
                0 => w.extend_from_slice(b"\r\n"),
                1 => {
                    w.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    w.extend_from_slice(&body);
                }
                2 => {
                    w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for c in body.chunks(5) {
                        w.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        w.extend_from_slice(c);
                        w.extend_from_slice(b"\r\n");
                    }
                    w.extend_from_slice(b"0\r\n\r\n");
                }
                _ => w.extend_from_slice(&body),
            }
            w
        })
    }

    proptest! {
        /// Pipelined requests (some with bodies on any method, some garbage) in any split give
        /// the same requests, bodies and error.
        #[test]
        fn any_split_same_requests(reqs in proptest::collection::vec(request_strategy(), 1..5),
                                   cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let wire: Vec<u8> = reqs.concat();
            let whole = run(&[&wire]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut prev = 0;
            for p in points { parts.push(&wire[prev..p]); prev = p; }
            parts.push(&wire[prev..]);
            prop_assert_eq!(run(&parts), whole.clone());
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            prop_assert_eq!(run(&bytes), whole);
        }
    }
}
