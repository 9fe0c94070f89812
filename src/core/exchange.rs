//! One connection's HTTP exchange: where it is in its life ([`Phase`]), its publishes
//! waiting for the log, the CORS lines of the request being answered, the input that
//! arrives while it answers, whether the client ended its side, and when the current head
//! and answer phases began (what makes a timer of an earlier phase stale).

use std::time::Instant;

use super::client::{AfterAnswer, Held, Phase, PublishQueue, Reading};
use super::metrics::CloseReason;
use crate::http::request::RequestHead;

/// What a connection reads once its answer is sent: a request parsed already that waited
/// for the answers before it, and the bytes that arrived meanwhile.
pub(super) type NextInput = (Option<RequestHead>, Vec<u8>);

/// What follows a complete answer that was written.
// Made once per answer and moved straight out (as `HeadProgress`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum AfterSent {
    /// Read requests again, starting with this input.
    Read(NextInput),
    /// Close, for this reason.
    Close(CloseReason),
}

/// The HTTP side of a connection. Guarantees: the phase changes only through the
/// transitions below, each stamping the instant its timers are measured from; input kept
/// while answering is handed back, in order, when reading resumes.
#[derive(Debug)]
pub struct Exchange {
    phase: Phase,
    /// This connection's publishes waiting for the log's answer, in request order (bounded).
    publishes: PublishQueue,
    /// Under `--allow-origin` with credentials: the CORS lines answering the current
    /// request's `Origin` (one thin pointer: the slab entry stays within its budget).
    #[allow(clippy::box_collection)]
    cors: Option<Box<Vec<String>>>,
    /// When the current request-head phase began (accept, or the last keep-alive answer
    /// sent). Head timers armed for an earlier phase are stale before `head_since + timeout`.
    head_since: Instant,
    /// When the response being sent was queued. Linger timers armed for an earlier response
    /// on this kept-alive connection are stale before `answer_since + linger`.
    answer_since: Instant,
    /// A request on this connection was answered (it is kept alive between requests).
    answered: bool,
    /// The client ended its side (a read returned 0) while an answer was pending: finish
    /// answering what was received, then close.
    input_closed: bool,
}

impl Exchange {
    /// A connection accepted at `now`, reading its first request within these limits.
    pub fn new(now: Instant, (max_head, max_body): (usize, usize)) -> Exchange {
        Exchange {
            phase: Phase::Reading(Reading::new(max_head, max_body)),
            publishes: PublishQueue::default(),
            cors: None,
            head_since: now,
            answer_since: now,
            answered: false,
            input_closed: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Streaming)
    }

    /// True while reading requests (a head or a body).
    pub fn is_reading(&self) -> bool {
        matches!(self.phase, Phase::Reading(_))
    }

    /// True while reading a request head (not a body).
    pub fn is_reading_head(&self) -> bool {
        matches!(&self.phase, Phase::Reading(r) if !r.reads_body())
    }

    /// True while the client reads a request head or body and no publish of it waits for
    /// the log (it holds a slot and may make no progress: an eviction candidate).
    pub fn reads_request(&self) -> bool {
        self.is_reading() && self.publishes.is_empty()
    }

    /// The request being read, while reading.
    pub fn reading_mut(&mut self) -> Option<&mut Reading> {
        match &mut self.phase {
            Phase::Reading(r) => Some(r),
            _ => None,
        }
    }

    /// Where input that arrives while answering (or while publishes wait) is kept.
    pub fn early_input_mut(&mut self) -> Option<&mut Vec<u8>> {
        match &mut self.phase {
            Phase::Answering { early, .. } => Some(early),
            Phase::Pipelined(held) => Some(&mut held.early),
            _ => None,
        }
    }

    pub fn publishes(&self) -> &PublishQueue {
        &self.publishes
    }

    pub fn publishes_mut(&mut self) -> &mut PublishQueue {
        &mut self.publishes
    }

    pub fn cors(&self) -> Option<&[String]> {
        self.cors.as_deref().map(Vec::as_slice)
    }

    /// The CORS lines answering the current request's `Origin` (`None`: the default `*`).
    pub fn set_cors(&mut self, cors: Option<Vec<String>>) {
        self.cors = cors.map(Box::new);
    }

    pub fn head_since(&self) -> Instant {
        self.head_since
    }

    pub fn answer_since(&self) -> Instant {
        self.answer_since
    }

    pub fn answered(&self) -> bool {
        self.answered
    }

    pub fn input_closed(&self) -> bool {
        self.input_closed
    }

    /// The client ended its side: answer what was received, then close.
    pub fn end_input(&mut self) {
        self.input_closed = true;
    }

    /// Reads the next request (keep-alive, or between publishes waiting for the log): a
    /// fresh head phase from `now`.
    pub fn begin_reading(&mut self, (max_head, max_body): (usize, usize), now: Instant) {
        self.phase = Phase::Reading(Reading::new(max_head, max_body));
        self.answered = true;
        self.head_since = now;
    }

    /// A complete answer was queued at `now`; then read on or close, as `then` says.
    pub fn answer(&mut self, then: AfterAnswer, now: Instant) {
        self.phase = Phase::Answering {
            then,
            early: Vec::new(),
        };
        self.answer_since = now;
    }

    /// The last bytes were queued at `now`: close for `reason` once they are sent.
    pub fn close_after_sent(&mut self, reason: CloseReason, now: Instant) {
        self.phase = Phase::Closing(reason);
        self.answer_since = now;
    }

    /// The answer just queued is the last: close for `reason` once it is sent.
    pub fn close_when_sent(&mut self, reason: CloseReason) {
        self.phase = Phase::Closing(reason);
    }

    /// Answers of publishes were queued at `now` (the phase stays).
    pub fn answers_queued(&mut self, now: Instant) {
        self.answer_since = now;
    }

    /// The connection became an event stream.
    pub fn stream(&mut self) {
        self.phase = Phase::Streaming;
    }

    /// Publishes wait for the log and no more input is parsed until they are answered:
    /// `head`, parsed already, waits for every answer before it (`None`: the cap of
    /// publishes in flight is reached, or one said close).
    pub fn wait_for_publishes(&mut self, head: Option<RequestHead>) {
        self.phase = Phase::Pipelined(Box::new(Held {
            head,
            early: Vec::new(),
        }));
    }

    /// While waiting for publishes with no parsed request held: the input kept meanwhile,
    /// taken (reading may resume).
    pub fn take_held_input(&mut self) -> Option<Vec<u8>> {
        match &mut self.phase {
            Phase::Pipelined(held) if held.head.is_none() => Some(std::mem::take(&mut held.early)),
            _ => None,
        }
    }

    /// A complete answer was written: what follows.
    pub(super) fn answer_sent(&mut self) -> AfterSent {
        match &mut self.phase {
            Phase::Answering {
                then: AfterAnswer::KeepAlive,
                early,
            } => AfterSent::Read((None, std::mem::take(early))),
            Phase::Pipelined(held) => {
                AfterSent::Read((held.head.take(), std::mem::take(&mut held.early)))
            }
            Phase::Closing(reason) => AfterSent::Close(*reason),
            _ => AfterSent::Close(CloseReason::Normal),
        }
    }
}
