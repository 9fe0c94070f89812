//! [`Peer`]: one [`LogNode`] and everything it reported, kept so a contract can state what
//! the node saw: the replies in order, the events, the greetings, and the answers by token.

use super::engines::LogNode;
use sse_server::bus::{
    BusEvent, BusReply, BusRequest, ClusterId, FetchRange, Publish, PublishFailure, RangeReply,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long any condition may take to come true (the machine may be loaded).
pub const LIMIT: Duration = Duration::from_secs(30);

/// What a `Connected` reply said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub epoch: String,
    pub head_offset: u64,
    pub first_retained_offset: Option<u64>,
    pub after_offset: u64,
}

/// A head probe's answer: (epoch, head offset), or why there was none.
pub type HeadAnswer = Result<(String, u64), String>;

/// A node and its record.
pub struct Peer {
    node: Box<dyn LogNode>,
    /// Every reply, in the order received.
    pub replies: Vec<BusReply>,
    /// Every event delivered by the tail, in order, redeliveries included.
    pub events: Vec<BusEvent>,
    pub greetings: Vec<Greeting>,
    /// `(previous, epoch)` of every `EpochChanged`.
    pub epoch_changes: Vec<(String, String)>,
    /// Every answer to a publish, by token (more than one is a broken promise).
    pub published: HashMap<u64, Vec<Result<ClusterId, PublishFailure>>>,
    /// Every answer to a range read, by token.
    pub ranges: HashMap<u64, Vec<Result<RangeReply, String>>>,
    /// Every answer to a head probe, by token.
    pub heads: HashMap<u64, Vec<HeadAnswer>>,
    next_token: u64,
}

impl Peer {
    pub fn new(node: Box<dyn LogNode>) -> Peer {
        Peer {
            node,
            replies: Vec::new(),
            events: Vec::new(),
            greetings: Vec::new(),
            epoch_changes: Vec::new(),
            published: HashMap::new(),
            ranges: HashMap::new(),
            heads: HashMap::new(),
            next_token: 1,
        }
    }

    fn record(&mut self, reply: BusReply) {
        match &reply {
            BusReply::Connected {
                epoch,
                head_offset,
                first_retained_offset,
                after_offset,
            } => self.greetings.push(Greeting {
                epoch: epoch.clone(),
                head_offset: *head_offset,
                first_retained_offset: *first_retained_offset,
                after_offset: *after_offset,
            }),
            BusReply::Disconnected { .. } | BusReply::Foreign { .. } => {}
            BusReply::EpochChanged { previous, epoch } => {
                self.epoch_changes.push((previous.clone(), epoch.clone()));
            }
            BusReply::Events { events, .. } => self.events.extend(events.iter().cloned()),
            BusReply::Published { token, id } => {
                self.published
                    .entry(*token)
                    .or_default()
                    .push(Ok(id.clone()));
            }
            BusReply::PublishFailed { token, reason } => {
                self.published
                    .entry(*token)
                    .or_default()
                    .push(Err(reason.clone()));
            }
            BusReply::Range(range) => {
                self.ranges
                    .entry(range.token)
                    .or_default()
                    .push(Ok(range.clone()));
            }
            BusReply::RangeFailed { token, reason } => {
                self.ranges
                    .entry(*token)
                    .or_default()
                    .push(Err(reason.clone()));
            }
            BusReply::Head {
                token,
                epoch,
                head_offset,
            } => {
                let head = (epoch.clone(), *head_offset);
                self.heads.entry(*token).or_default().push(Ok(head));
            }
            BusReply::HeadFailed { token, reason } => {
                let failed = Err(reason.clone());
                self.heads.entry(*token).or_default().push(failed);
            }
        }
        self.replies.push(reply);
    }

    /// Records replies until `done` holds; false if `limit` passes first.
    pub fn until(&mut self, limit: Duration, done: impl Fn(&Peer) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(reply) = self.node.recv(left.min(Duration::from_millis(50))) {
                self.record(reply);
            }
        }
        true
    }

    /// Records whatever arrives during `period` (to see that nothing more does).
    pub fn settle(&mut self, period: Duration) {
        self.until(period, |_| false);
    }

    /// Like [`Peer::until`], failing the test with `what` when the limit passes.
    pub fn wait(&mut self, what: &str, done: impl Fn(&Peer) -> bool) {
        assert!(self.until(LIMIT, done), "timed out waiting for {what}");
    }

    /// The first greeting, waited for.
    pub fn greeted(&mut self) -> Greeting {
        self.wait("the first Connected", |p| !p.greetings.is_empty());
        self.greetings[0].clone()
    }

    pub fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    pub fn submit(&mut self, request: BusRequest) {
        self.node.submit(request);
    }

    /// Submits `publish` as it is (its token included).
    pub fn publish(&mut self, publish: Publish) {
        self.submit(BusRequest::Publish(publish));
    }

    /// Submits a publish of `data` on `topic` with a fresh token; returns the token.
    pub fn publish_data(&mut self, topic: &str, data: &str) -> u64 {
        let token = self.token();
        self.publish(plain(token, topic, data));
        token
    }

    /// Publishes and waits for the answer, publishing again after a refusal (a log being
    /// reopened) until [`LIMIT`]. Returns the id.
    pub fn publish_surely(&mut self, topic: &str, data: &str) -> ClusterId {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            let token = self.publish_data(topic, data);
            self.wait("a publish's answer", |p| p.published.contains_key(&token));
            match &self.published[&token][0] {
                Ok(id) => return id.clone(),
                Err(_) => std::thread::sleep(Duration::from_millis(30)),
            }
        }
        let last = self
            .published
            .values()
            .flatten()
            .find_map(|r| r.clone().err());
        panic!("the publish of {data:?} was never accepted (a refusal: {last:?})");
    }

    /// The accepted id of `token`'s publish (which must have been answered once, with an id).
    pub fn id_of(&self, token: u64) -> ClusterId {
        match self.published.get(&token).map(Vec::as_slice) {
            Some([Ok(id)]) => id.clone(),
            other => panic!("publish {token} answered {other:?}"),
        }
    }

    /// Reads a range and waits for its answer, which must be a [`RangeReply`] for it.
    pub fn fetch(&mut self, mut fetch: FetchRange) -> RangeReply {
        fetch.token = self.token();
        let token = fetch.token;
        self.submit(BusRequest::FetchRange(fetch));
        self.wait("a range's answer", |p| p.ranges.contains_key(&token));
        match self.ranges[&token].as_slice() {
            [Ok(range)] => {
                assert_eq!(range.token, token);
                range.clone()
            }
            other => panic!("range {token} answered {other:?}"),
        }
    }

    /// Probes the log's head through the command side and waits for the answer, which must
    /// be an (epoch, head offset).
    pub fn probe_head(&mut self) -> (String, u64) {
        let token = self.token();
        self.submit(BusRequest::ProbeHead { token });
        self.wait("a head probe's answer", |p| p.heads.contains_key(&token));
        match self.heads[&token].as_slice() {
            [Ok(head)] => head.clone(),
            other => panic!("head probe {token} answered {other:?}"),
        }
    }

    /// The offsets of the events delivered so far.
    pub fn offsets(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.offset).collect()
    }
}

/// A publish with no event name and no publisher-given id.
/// The acceptance time [`plain`] stamps its publishes with (unix ms).
pub const PLAIN_ACCEPTED_MS: u64 = 1_700_000_000_123;

pub fn plain(token: u64, topic: &str, data: &str) -> Publish {
    Publish {
        token,
        topic: topic.into(),
        event: None,
        custom_id: None,
        data: data.into(),
        accepted_ms: PLAIN_ACCEPTED_MS,
    }
}

/// A range read of everything after `after_offset`, in one page as large as allowed.
pub fn range_after(after_offset: u64) -> FetchRange {
    FetchRange {
        token: 0,
        after_offset,
        through_offset: None,
        topics: None,
        limit: usize::MAX,
        max_bytes: usize::MAX,
    }
}
