//! Why a request is refused: one enum, mapped to its status, message and extra headers in
//! one place ([`RequestError::status`], [`RequestError::message`], [`RequestError::headers`]).

use crate::http::body::BodyError;
use crate::http::request::HeadError;
use crate::http::response::{ALLOW_PUBLISH, ALLOW_READ};

/// The methods an endpoint allows (its `Allow` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// A read-only endpoint: GET, HEAD, OPTIONS.
    GetHead,
    /// `/publish`: POST, OPTIONS.
    Post,
}

/// A request the core answers with an error status (and then closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The request head could not be read.
    Head(HeadError),
    /// `Host` missing on HTTP/1.1, sent twice, or invalid (RFC 9112 §3.2); the reason.
    BadHost(&'static str),
    /// The request head did not arrive within `--head-timeout`.
    HeadTimeout,
    /// The request body did not arrive within `--head-timeout`.
    BodyTimeout,
    /// The body is (or announces being) larger than `--max-body`.
    BodyTooLarge,
    /// A chunked body that does not follow the chunked coding.
    MalformedChunked,
    /// A `Transfer-Encoding` other than chunked.
    UnsupportedCoding,
    /// A publish with neither `Content-Length` nor a chunked body.
    LengthRequired,
    /// A publish body that is not UTF-8.
    NotUtf8,
    /// The method is not one the path allows.
    MethodNotAllowed(Allow),
    /// No such path.
    NotFound,
    /// A topic name that is too long or contains NUL.
    InvalidTopic,
    /// An `event` that is empty, too long, or contains CR, LF or NUL.
    InvalidEvent,
    /// An `id` that is empty, too long, or contains CR, LF or NUL.
    InvalidId,
    /// More `topic` parameters than `--max-topics-per-client`.
    TooManyTopicsPerClient,
    /// Every topic slot holds a topic with subscribers.
    TooManyTopics,
    /// A non-EventSource stream request over `--max-clients`: come back after this many seconds.
    TooManyClients { retry_after_secs: u64 },
    /// A non-EventSource stream request past `--max-stream-rate` (too many new streams this
    /// second): come back after this many seconds.
    StreamRateExceeded { retry_after_secs: u64 },
    /// The server is shutting down.
    ShuttingDown,
    /// `/clients` from a non-loopback peer without the token.
    ClientsForbidden,
    /// `/metrics` or `/clients` without the publish token under `--protect-stats`.
    StatsNeedToken,
    /// Cluster mode: the shared log did not take the publish (Redis down, overloaded, or
    /// the outcome unknown); try again after this many seconds. No id was handed out.
    BusUnavailable { retry_after_secs: u64 },
    /// The verifier thread's queue of token checks is full (`--jwt-verify-queue`): come back
    /// after this many seconds.
    TokenChecksBusy { retry_after_secs: u64 },
}

impl RequestError {
    /// The HTTP status of the answer.
    pub fn status(self) -> u16 {
        use RequestError::*;
        match self {
            Head(e) => e.status(),
            BadHost(_) => 400,
            HeadTimeout | BodyTimeout => 408,
            BodyTooLarge => 413,
            MalformedChunked
            | NotUtf8
            | InvalidTopic
            | InvalidEvent
            | InvalidId
            | TooManyTopicsPerClient => 400,
            UnsupportedCoding => 501,
            LengthRequired => 411,
            MethodNotAllowed(_) => 405,
            NotFound => 404,
            TooManyTopics
            | TooManyClients { .. }
            | StreamRateExceeded { .. }
            | ShuttingDown
            | BusUnavailable { .. }
            | TokenChecksBusy { .. } => 503,
            ClientsForbidden => 403,
            StatsNeedToken => 401,
        }
    }

    /// The one-line explanation sent as the body.
    pub fn message(self) -> &'static str {
        use RequestError::*;
        match self {
            Head(e) => e.message(),
            BadHost(reason) => reason,
            HeadTimeout => "the request head did not arrive in time",
            BodyTimeout => "the request body did not arrive in time",
            BodyTooLarge => "body larger than --max-body",
            MalformedChunked => "malformed chunked body",
            UnsupportedCoding => "the only Transfer-Encoding supported is chunked",
            LengthRequired => "a Content-Length (or a chunked body) is required",
            NotUtf8 => "the body is not UTF-8",
            MethodNotAllowed(Allow::Post) => "use POST",
            MethodNotAllowed(Allow::GetHead) => "use GET",
            NotFound => "no such path (try / or /events)",
            InvalidTopic => "invalid topic name",
            InvalidEvent => "event must be 1 to 256 bytes without CR, LF or NUL",
            InvalidId => "id must be 1 to 256 bytes without CR, LF or NUL",
            TooManyTopicsPerClient => "too many topics",
            TooManyTopics => "too many topics in use",
            TooManyClients { .. } => "too many clients",
            StreamRateExceeded { .. } => "too many new streams, try again",
            ShuttingDown => "shutting down",
            ClientsForbidden => "/clients is for loopback or token holders",
            StatsNeedToken => {
                "/metrics and /clients need the publish token (Authorization: Bearer)"
            }
            BusUnavailable { .. } => "the shared event log is unavailable, try again",
            TokenChecksBusy { .. } => "too many tokens waiting to be checked, try again",
        }
    }

    /// Header lines the answer carries besides the standard ones.
    pub fn headers(self) -> Option<String> {
        use RequestError::*;
        match self {
            MethodNotAllowed(Allow::GetHead) => Some(ALLOW_READ.into()),
            MethodNotAllowed(Allow::Post) => Some(ALLOW_PUBLISH.into()),
            StatsNeedToken => Some("WWW-Authenticate: Bearer".into()),
            TooManyClients { retry_after_secs }
            | StreamRateExceeded { retry_after_secs }
            | BusUnavailable { retry_after_secs }
            | TokenChecksBusy { retry_after_secs } => {
                Some(format!("Retry-After: {retry_after_secs}"))
            }
            _ => None,
        }
    }

    /// `(status, message)`, for callers that only report.
    pub fn pair(self) -> (u16, &'static str) {
        (self.status(), self.message())
    }
}

impl From<BodyError> for RequestError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed => RequestError::MalformedChunked,
            BodyError::TooLarge => RequestError::BodyTooLarge,
            BodyError::LengthRequired => RequestError::LengthRequired,
            BodyError::UnsupportedCoding => RequestError::UnsupportedCoding,
        }
    }
}

impl From<HeadError> for RequestError {
    fn from(e: HeadError) -> Self {
        RequestError::Head(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body error answers the same status and reason through the core as the reference
    /// request stream (`http::pipeline`, which the simulator and fuzzers use) reports.
    #[test]
    fn body_errors_agree_with_their_request_errors() {
        for e in [
            BodyError::Malformed,
            BodyError::TooLarge,
            BodyError::LengthRequired,
            BodyError::UnsupportedCoding,
        ] {
            assert_eq!(RequestError::from(e).pair(), (e.status(), e.message()));
        }
    }

    #[test]
    fn statuses_and_headers() {
        assert_eq!(
            RequestError::TooManyTopics.pair(),
            (503, "too many topics in use")
        );
        assert_eq!(RequestError::Head(HeadError::TooLarge).status(), 431);
        assert_eq!(
            RequestError::MethodNotAllowed(Allow::Post)
                .headers()
                .as_deref(),
            Some("Allow: POST, OPTIONS")
        );
        assert_eq!(RequestError::ClientsForbidden.headers(), None);
        assert_eq!(
            RequestError::StatsNeedToken.pair(),
            (
                401,
                "/metrics and /clients need the publish token (Authorization: Bearer)"
            )
        );
        assert_eq!(
            RequestError::StatsNeedToken.headers().as_deref(),
            Some("WWW-Authenticate: Bearer")
        );
        assert_eq!(
            RequestError::TooManyClients {
                retry_after_secs: 3
            }
            .headers()
            .as_deref(),
            Some("Retry-After: 3")
        );
    }
}
