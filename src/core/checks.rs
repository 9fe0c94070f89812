//! Token signature checks off the reactor, the core's side. A request whose token needs an
//! RS256/ES256 check ([`crate::auth::AuthConfig::checks_off_reactor`]) that the cache of
//! verified tokens cannot answer is held: its connection enters `Phase::Checking` (no answer
//! yet; the bytes that follow are kept, bounded, as for a request waiting for publishes; its
//! timers wait) and a [`VerifyRequest`] leaves through [`Core::poll_output`]
//! ([`super::Output::Verify`]). The driver checks it on its verifier thread and feeds the
//! [`VerifyReply`] back through [`Core::handle_verified`]; the request then goes on exactly as
//! with a result at hand: the same decision code runs again with the answer in place of the
//! signature check, so statuses, headers and cache insertion are those of a check made on
//! the spot (a success is kept only inside its time window, which is checked again at the
//! moment the answer is applied).
//!
//! Guarantees:
//! - the core never waits and never spawns: checks are requests like those for the log;
//! - a reply for a connection that left, or for a check it no longer waits for, is dropped
//!   (the [`ClientId`] generation and the check's number tell), and leaves nothing behind;
//! - a request handed out is answered once: checked, or refused at once by the driver
//!   ([`VerifyOutcome::Busy`]: its queue is full), answered `503` + `Retry-After` (an
//!   EventSource gets the over-the-limit `200` + `retry:` instead, which it retries);
//! - checks queued for a connection that left before they were handed out are not handed out.

use std::collections::VecDeque;
use std::time::Instant;

use super::Core;
use super::answers::fail;
use super::client::ClientId;
use super::connection::read_on;
use super::error::RequestError;
use super::exchange::CheckFor;
use super::metrics::{CloseReason, StreamRefusal};
use super::publish::begin_publish;
use super::stream::{over_limit, start_stream};
use crate::auth::{AuthConfig, AuthError, BearerToken, InvalidToken, TokenCache, VerifiedClaims};
use crate::http::request::RequestHead;

/// `Retry-After` of a request refused because the verifier's queue is full, in seconds.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// A token whose signature the driver checks off the reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// The connection waiting for it.
    pub client: ClientId,
    /// The check's number: the reply carries it back.
    pub check: u64,
    pub token: BearerToken,
    /// Unix seconds the request arrived at: the time the check is made for.
    pub unix_now: u64,
}

/// What became of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// [`AuthConfig::verify_token`]'s answer.
    Checked(Result<VerifiedClaims, InvalidToken>),
    /// Not checked: the verifier's queue was full.
    Busy,
}

/// The answer to a [`VerifyRequest`], fed back with [`Core::handle_verified`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReply {
    pub client: ClientId,
    pub check: u64,
    pub outcome: VerifyOutcome,
}

impl VerifyRequest {
    /// The reply carrying `outcome`.
    pub fn reply(&self, outcome: VerifyOutcome) -> VerifyReply {
        VerifyReply {
            client: self.client,
            check: self.check,
            outcome,
        }
    }

    /// Checks the token with `auth`'s keys here and now (the verifier thread's work; harnesses
    /// that answer at once call it too).
    pub fn check_with(&self, auth: &AuthConfig) -> VerifyReply {
        self.reply(VerifyOutcome::Checked(
            auth.verify_token(&self.token, self.unix_now),
        ))
    }
}

/// Counts since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Checks handed to the driver.
    pub handed_out: u64,
    /// Of those, refused because the verifier's queue was full.
    pub refused: u64,
}

/// The checks waiting to be handed out, and those handed out and not answered yet.
#[derive(Debug, Default)]
pub(super) struct Checks {
    next: u64,
    queued: VecDeque<VerifyRequest>,
    in_flight: usize,
    stats: CheckStats,
}

/// A check's answer, given to the decision that asked for it.
#[derive(Debug)]
pub(super) struct Answer {
    pub token: BearerToken,
    pub result: Result<VerifiedClaims, InvalidToken>,
}

/// Why a decision stopped: refused, or waiting for a check of this token.
#[derive(Debug)]
pub(super) enum Stop {
    Refused(AuthError),
    Check(BearerToken),
}

impl From<AuthError> for Stop {
    fn from(e: AuthError) -> Stop {
        Stop::Refused(e)
    }
}

/// The signature check of a decision at unix second `unix`: the answer when one came for
/// this token (its time window checked again now; a success kept in the cache), else the
/// cache, else a check made here, or (for a costly one with the verifier thread on) a stop
/// to have it made off the reactor.
pub(super) fn check_token(
    auth: &AuthConfig,
    cache: &mut TokenCache,
    token: &BearerToken,
    unix: u64,
    answer: Option<&Answer>,
) -> Result<VerifiedClaims, Stop> {
    let invalid = |e| Stop::Refused(AuthError::Invalid(e));
    if let Some(a) = answer.filter(|a| a.token == *token) {
        let result = a
            .result
            .clone()
            .and_then(|c| c.check_window(unix).map(|()| c));
        if let Ok(claims) = &result {
            cache.keep(token, claims, unix);
        }
        return result.map_err(invalid);
    }
    if let Some(hit) = cache.cached(token, unix) {
        return hit.map_err(invalid);
    }
    if auth.checks_off_reactor(token) {
        return Err(Stop::Check(token.clone()));
    }
    let result = auth.verify_token(token, unix);
    if let Ok(claims) = &result {
        cache.keep(token, claims, unix);
    }
    result.map_err(invalid)
}

impl Core {
    /// Holds the request `head` of `id` until the signature of `token` is checked, and
    /// queues the check.
    pub(super) fn hold_for_check(
        &mut self,
        id: ClientId,
        head: &RequestHead,
        purpose: CheckFor,
        token: BearerToken,
        now: Instant,
    ) {
        let unix_now = self.unix_now(now);
        self.checks.next += 1;
        let check = self.checks.next;
        let Some(c) = self.client_mut(id) else { return };
        if c.http
            .wait_for_check(check, purpose, head.clone(), token.clone())
        {
            self.checks.queued.push_back(VerifyRequest {
                client: id,
                check,
                token,
                unix_now,
            });
        }
    }

    /// The next check to hand out ([`Core::poll_output`]), skipping those whose connection
    /// no longer waits for them.
    pub(super) fn next_check_request(&mut self) -> Option<VerifyRequest> {
        while let Some(request) = self.checks.queued.pop_front() {
            let waits = self
                .client(request.client)
                .and_then(|c| c.http.checking())
                .is_some_and(|(check, _)| check == request.check);
            if waits {
                self.checks.in_flight += 1;
                self.checks.stats.handed_out += 1;
                return Some(request);
            }
        }
        None
    }

    /// Checks handed out and not answered yet (the `sse_jwt_verify_queue` gauge).
    pub fn checks_in_flight(&self) -> usize {
        self.checks.in_flight
    }

    /// Checks handed out and refused, since start.
    pub fn check_stats(&self) -> CheckStats {
        self.checks.stats
    }

    /// The answer to a check handed out: the request it held goes on (or, refused as busy,
    /// is answered `503`); dropped when the connection left or waits for no such check.
    pub fn handle_verified(&mut self, reply: VerifyReply, now: Instant) {
        self.checks.in_flight = self.checks.in_flight.saturating_sub(1);
        let id = reply.client;
        if reply.outcome == VerifyOutcome::Busy {
            self.checks.stats.refused += 1;
        }
        let Some(c) = self.client_mut(id) else { return };
        let Some(held) = c.http.end_check(reply.check) else {
            return;
        };
        // Reading again: an eviction candidate again, as before the check.
        let since = c.http.head_since();
        if c.reads_request() {
            self.connections.note_head_reader(id, since);
        }
        let more = !held.early.is_empty();
        match reply.outcome {
            VerifyOutcome::Busy if held.purpose == CheckFor::Stream => {
                over_limit(self, id, &held.head, StreamRefusal::VerifyQueue, now)
            }
            VerifyOutcome::Busy => fail(self, id, busy(), now),
            VerifyOutcome::Checked(result) => {
                let answer = Answer {
                    token: held.token,
                    result,
                };
                match held.purpose {
                    CheckFor::Stream => start_stream(self, id, &held.head, Some(&answer), now),
                    CheckFor::Publish => {
                        begin_publish(self, id, &held.head, more, Some(&answer), now)
                    }
                }
            }
        }
        read_on(self, id, held.early, now);
        self.debug_check();
    }

    /// The client ended its side while its request waits for a check: a stream request is
    /// closed now (as a stream whose client hangs up is), a publish is answered first.
    pub(super) fn checking_read_closed(&mut self, id: ClientId, purpose: CheckFor) {
        match purpose {
            CheckFor::Stream => self.remove(id, CloseReason::Normal),
            CheckFor::Publish => {
                if let Some(c) = self.client_mut(id) {
                    c.http.end_input();
                }
            }
        }
    }
}

/// The answer to a request whose check found the verifier's queue full.
pub(super) fn busy() -> RequestError {
    RequestError::TokenChecksBusy {
        retry_after_secs: BUSY_RETRY_AFTER_SECS,
    }
}
