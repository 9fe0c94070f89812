//! One connection's HTTP exchange: where it is in its life ([`Phase`]), its publishes
//! waiting for the log, the CORS lines of the request being answered, the input that
//! arrives while it answers, whether the client ended its side, and when the current head
//! and answer phases began (what makes a timer of an earlier phase stale).

use std::collections::VecDeque;
use std::time::Instant;

use super::metrics::CloseReason;
use crate::auth::BearerToken;
use crate::http::pipeline::RequestStream;
use crate::http::request::RequestHead;
use crate::http::response::Connection;

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
            Phase::Checking(held) => Some(&mut held.early),
            _ => None,
        }
    }

    /// The number of the token check the request waits for, while it waits.
    pub fn checking(&self) -> Option<(u64, CheckFor)> {
        match &self.phase {
            Phase::Checking(held) => Some((held.check, held.purpose)),
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

    /// The request `head`, just parsed, waits for check number `check` of its `token`: no
    /// input is parsed until it is answered, and what arrives meanwhile is kept. False (and
    /// nothing changes) unless the connection was reading requests.
    pub fn wait_for_check(
        &mut self,
        check: u64,
        purpose: CheckFor,
        head: RequestHead,
        token: BearerToken,
    ) -> bool {
        if !self.is_reading() {
            return false;
        }
        let Phase::Reading(reading) =
            std::mem::replace(&mut self.phase, Phase::Closing(CloseReason::Normal))
        else {
            return false;
        };
        self.phase = Phase::Checking(Box::new(Checking {
            check,
            purpose,
            head,
            token,
            reading,
            early: Vec::new(),
        }));
        true
    }

    /// Check number `check` was answered: the connection reads requests again where it
    /// stopped (the same framing state), and the held request is handed back with what
    /// arrived meanwhile. `None` (nothing changes) when it waits for no such check.
    pub fn end_check(&mut self, check: u64) -> Option<Resumed> {
        if self.checking().is_none_or(|(c, _)| c != check) {
            return None;
        }
        let Phase::Checking(held) =
            std::mem::replace(&mut self.phase, Phase::Closing(CloseReason::Normal))
        else {
            return None;
        };
        let Checking {
            purpose,
            head,
            token,
            reading,
            early,
            ..
        } = *held;
        self.phase = Phase::Reading(reading);
        Some(Resumed {
            purpose,
            head,
            token,
            early,
        })
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

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading a request: its head, or the body of the head routed last (boxed: the slab
    /// entry of a streaming client stays small).
    Reading(Box<Reading>),
    /// Receiving the event stream.
    Streaming,
    /// Publishes wait for a log that answers later ([`Client::publishes`]) and no more input
    /// is parsed until they are answered: a request that is not a publish (`head`, parsed
    /// already) waits for every answer before it to be written; with no `head`, the cap of
    /// publishes in flight is reached (or one said close). Bytes that arrive meanwhile are
    /// kept (`early`), as for `Answering`.
    Pipelined(Box<Held>),
    /// A request's token waits for its signature check (off the reactor): no input is
    /// parsed until it is answered; bytes that arrive meanwhile are kept (`early`).
    Checking(Box<Checking>),
    /// A complete response is queued in `pending`; when it is sent, either close or go
    /// back to reading a head, with the bytes that arrived meanwhile (`early`).
    Answering { then: AfterAnswer, early: Vec<u8> },
    /// The last bytes (an error response) are queued; close for this reason when they are
    /// sent, ignore input.
    Closing(CloseReason),
}

/// Input held while pipelined publishes wait (boxed: the slab entry stays small).
#[derive(Debug, Default)]
pub struct Held {
    /// A parsed request that waits for the answers before it.
    pub head: Option<RequestHead>,
    /// Bytes received after it.
    pub early: Vec<u8>,
}

/// What the request waiting for a token check asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFor {
    Stream,
    Publish,
}

/// A request held while its token's signature is checked (boxed: the slab entry stays
/// small).
#[derive(Debug)]
pub struct Checking {
    /// The check's number (the core's, unique per core).
    pub check: u64,
    pub purpose: CheckFor,
    /// The request, parsed.
    pub head: RequestHead,
    /// The token being checked.
    pub token: BearerToken,
    /// The connection's framing, as the head left it (its body, if any, not read yet).
    pub reading: Box<Reading>,
    /// Bytes received after the head.
    pub early: Vec<u8>,
}

/// A request whose token check was answered, handed back to go on.
#[derive(Debug)]
pub struct Resumed {
    pub purpose: CheckFor,
    pub head: RequestHead,
    pub token: BearerToken,
    pub early: Vec<u8>,
}

/// A pipelined publish handed to a log that answers later, in request order: its answer is
/// written once it and every publish before it are answered.
#[derive(Debug)]
pub struct PublishSlot {
    /// The log's token of the publish (0 for an answer that needed no log).
    pub token: u64,
    /// What the request said about the connection.
    pub connection: Connection,
    /// The status and complete response, once known.
    pub answer: Option<(u16, Vec<u8>)>,
    /// Under `--allow-origin`: the CORS lines answering this publish's own `Origin` (a
    /// request pipelined after it replaces the connection's before this answer is known).
    pub cors: Option<Box<[String]>>,
}

/// A connection's publishes in flight, in request order; allocated only while there are
/// some (the slab entry stays small).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // 8 bytes in every slab entry instead of a VecDeque's 32.
pub struct PublishQueue(Option<Box<VecDeque<PublishSlot>>>);

impl PublishQueue {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub fn push_back(&mut self, slot: PublishSlot) {
        self.0.get_or_insert_with(Default::default).push_back(slot);
    }

    /// The oldest slot; the allocation goes with the last one.
    pub fn pop_front(&mut self) -> Option<PublishSlot> {
        let q = self.0.as_mut()?;
        let slot = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        slot
    }

    pub fn front(&self) -> Option<&PublishSlot> {
        self.0.as_ref()?.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublishSlot> {
        self.0.iter().flat_map(|q| q.iter())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut PublishSlot> {
        self.0.iter_mut().flat_map(|q| q.iter_mut())
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// What a connection does once a complete answer is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Read the next request (HTTP/1.1 keep-alive).
    KeepAlive,
    /// Close.
    Close,
}

impl AfterAnswer {
    /// What the connection does after an answer that says `connection`.
    pub fn after(connection: Connection) -> AfterAnswer {
        if connection.keeps_alive() {
            AfterAnswer::KeepAlive
        } else {
            AfterAnswer::Close
        }
    }
}

/// A connection reading requests: the one framing ([`RequestStream`]), and while a body
/// arrives what it is read for.
#[derive(Debug)]
pub struct Reading {
    pub requests: RequestStream,
    /// `Some` while a body is read (kept or discarded by the stream's body reader).
    pub body: Option<BodyPurpose>,
}

impl Reading {
    /// Reading the next request head, within these limits.
    pub fn new(max_head: usize, max_body: usize) -> Box<Reading> {
        Box::new(Reading {
            requests: RequestStream::new(max_head, max_body),
            body: None,
        })
    }

    /// True while a body is read (not a head).
    pub fn reads_body(&self) -> bool {
        self.body.is_some()
    }
}

/// What a request body is read for.
#[derive(Debug)]
pub enum BodyPurpose {
    /// A publish: the body is the event's data.
    Publish(PublishFields),
    /// Any other request with a body (`GET /health` with a `Content-Length`): the body is
    /// read past and dropped, then this head is routed as a request without a body.
    ThenRoute(Box<RequestHead>),
}

/// A publish request's fields from its head, kept while its body arrives.
#[derive(Debug)]
pub struct PublishFields {
    pub topic: String,
    pub event: Option<String>,
    pub id: Option<String>,
    /// What the answer says about the connection.
    pub connection: Connection,
}
