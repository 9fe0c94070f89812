//! The model's records of the simulated world: what each connection sent and must get back,
//! each topic's events as the model expects them, and where a stream resumes.

use std::collections::{HashMap, VecDeque};

use super::*;

/// What a parsed event must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Expected {
    pub(super) event_type: String,
    pub(super) data: String,
    /// The `id:` the frame carries (`None`: the parser's last id is unchanged).
    pub(super) id: Option<String>,
}

/// One frame a stream client must receive: its exact bytes, and what a parser makes of it
/// (`None` for the `retry:` prelude, which dispatches nothing).
#[derive(Debug, Clone)]
pub(super) struct ExpFrame {
    pub(super) bytes: Rc<[u8]>,
    pub(super) event: Option<Expected>,
    /// The model event it is (`None` for prelude and gap frames).
    pub(super) model: Option<usize>,
}

/// An event the model knows was appended to a topic's log. `Sim::events[i]` is the event the
/// model numbers `i + 1` (see `model.rs`).
#[derive(Debug, Clone)]
pub(super) struct MEvent {
    pub(super) topic: usize,
    pub(super) local_seq: u64,
    pub(super) frame: ExpFrame,
}

/// The model of one topic's retained history (an independent re-statement of the log's
/// bounds: the newest `history` entries within `history_bytes`, the newest always kept).
///
/// One `MTopic` is one *incarnation* of a name in a slot of the topic table: when a slot is
/// recycled for another name, the old incarnation dies (its history is gone) and a new one
/// continues the slot's numbering (see `topics.rs`).
#[derive(Debug, Default)]
pub(super) struct MTopic {
    /// Index of its name in [`TOPICS`] ([`TICK`] for the tick topic).
    pub(super) name: usize,
    /// Its slot in the table, in creation order (0 default, 1 ticks, then named topics).
    pub(super) slot: usize,
    /// Still holds its slot.
    pub(super) live: bool,
    /// The table's append count at its last append (or when it took its slot; 0 when the
    /// slot was new): least recently used first when recycling.
    pub(super) last_used: u64,
    /// (event number, frame length) of the retained entries, oldest first.
    pub(super) log: VecDeque<(u64, usize)>,
    pub(super) first_seq: u64,
    pub(super) bytes: usize,
    /// The number of the newest event this slot lost (evicted, or cleared with an earlier
    /// incarnation when the slot was recycled).
    pub(super) lost: Option<u64>,
}

impl MTopic {
    pub(super) fn end_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }

    /// Where a resume after event number `n` starts in this topic: at its first retained
    /// event numbered above `n` (its end if none); `None` when the slot lost an event
    /// numbered above `n`, which can no longer be replayed (`too-old`).
    pub(super) fn resume_after(&self, n: u64) -> Option<u64> {
        if self.lost.is_some_and(|l| l > n) {
            return None;
        }
        let replayed = self.log.iter().rev().take_while(|e| e.0 > n).count();
        Some(self.end_seq() - replayed as u64)
    }
}

/// Where a `Last-Event-ID` points, as the model decides it (`Sim::resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// No id: the live edge.
    Fresh,
    /// After the event the model numbers `n` (0: before every event of this run).
    After(u64),
    /// An id of another run: everything retained.
    EarlierRun,
    /// An id the server never issued (or a forgotten publisher-given one): the live edge.
    Unknown,
}

/// What a request sent on a connection must get back.
#[derive(Debug, Clone)]
pub(super) struct Expect {
    /// Acceptable statuses.
    pub(super) statuses: Vec<u16>,
    /// The connection closes after this response.
    pub(super) closes: bool,
    /// A `HEAD /events`: the response is the bare stream head.
    pub(super) head_only: bool,
    /// Begun when the connection's head timeout had already passed (a 408 may answer it).
    pub(super) late: bool,
    /// When its last byte was sent (`None`: not yet).
    pub(super) completed_at: Option<Duration>,
}

/// A request whose bytes are fully sent and whose outcome is pending.
#[derive(Debug, Clone)]
pub(super) struct StreamWant {
    pub(super) topics: Vec<usize>,
    pub(super) last_id: Option<String>,
}

/// What a client of a stream must receive and what it got so far.
#[derive(Debug)]
pub(super) struct StreamState {
    /// Model topics (tick included for the default stream).
    pub(super) topics: Vec<usize>,
    /// Raw offset where the stream head starts.
    pub(super) head_at: usize,
    pub(super) expected: Vec<ExpFrame>,
    /// Frames of `expected` received whole (for `latest`, the index after the last match).
    pub(super) matched: usize,
    /// Raw offset of the first byte not yet matched to a whole frame.
    pub(super) pos: usize,
    pub(super) parser: Parser,
    /// Events the parser dispatched.
    pub(super) dispatched: Vec<Event>,
    /// Bytes of model frames received whole.
    pub(super) received_frame_bytes: u64,
    /// The last whole frame received (under `latest`, identical frames make the matched
    /// index ambiguous; the newest frame must be the last one received).
    pub(super) last_frame: Option<Rc<[u8]>>,
}

/// One simulated client connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: ClientId,
    /// The simulator still holds its socket.
    pub(super) open: bool,
    pub(super) window: usize,
    /// Writable readiness is watched (from the first `WouldBlock` on, as in the driver).
    pub(super) watching_writable: bool,
    /// Bytes the client sent that the driver has not read yet (its socket's receive queue).
    pub(super) unread: Vec<u8>,
    /// The client half-closed after `unread`: the driver sees the end once it read them.
    pub(super) eof_unread: bool,
    pub(super) reading: bool,
    pub(super) raw: Vec<u8>,
    pub(super) closed: Option<CloseReason>,
    /// The client itself ended the connection (half-close or reset).
    pub(super) client_ended: bool,
    /// Requests fully sent that get an HTTP response, in order.
    pub(super) sent: Vec<Expect>,
    /// Pieces of a request held back, and the request's expectation.
    pub(super) held: Option<(Vec<u8>, Option<StreamWant>, Option<PubReq>)>,
    /// A request was started but not finished (held back or never sent).
    pub(super) incomplete: bool,
    /// No more requests make sense (a closing request or a stream was sent).
    pub(super) done: bool,
    /// When the current request head phase began (accept, or the last keep-alive answer).
    pub(super) head_since: Duration,
    pub(super) want_stream: Option<StreamWant>,
    pub(super) stream: Option<StreamState>,
    /// `streaming clients >= max_clients` was seen while its stream request was pending, or
    /// the request was refused for the connect rate: it may be told to come back.
    pub(super) maybe_over_limit: bool,
    /// Publish requests sent whose event the core has not appended yet.
    pub(super) publishes: VecDeque<PubReq>,
    /// Responses already checked (complete) in `raw`.
    pub(super) responses_seen: usize,
    /// Where in `raw` the response after those ends (the next one to check begins).
    pub(super) checked_upto: usize,
    /// The last id a client carries across reconnects (as an EventSource does).
    pub(super) inherited_id: String,
    /// The server answered with 408 (and then closes).
    pub(super) timed_out: bool,
    /// That 408 answered no request at all (the client never began one).
    pub(super) extra_408: bool,
    /// It was told "over the client limit" in full (stream head and `retry:`).
    pub(super) over_limit_complete: bool,
    /// The next write to its socket fails this way ([`Op::WriteError`]).
    pub(super) write_error: Option<IoFailure>,
    /// The id each appended publish's answer must carry, by its index in `sent`.
    pub(super) publish_ids: HashMap<usize, String>,
}

/// A publish sent over HTTP, as the model must record it.
#[derive(Debug, Clone)]
pub(super) struct PubReq {
    pub(super) topic: usize,
    pub(super) event: Option<String>,
    pub(super) id: Option<String>,
    pub(super) data: String,
    /// Its answer's index in `Conn::sent`.
    pub(super) expect_index: usize,
}
