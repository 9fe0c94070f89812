//! Publishing through the shared log: a publish handed to the bus, its slot on the HTTP
//! connection, the answer (200 with the log's id, or 503 kept alive) in request order.

use std::time::Instant;

use super::*;
use crate::bus::types::{BusRequest, ClusterId, Publish, PublishFailure};
use crate::core::Core;
use crate::core::access;
use crate::core::answers::answer;
use crate::core::client::{Client, ClientId};
use crate::core::connection::{begin_reading, read_next};
use crate::core::error::RequestError;
use crate::core::exchange::{AfterAnswer, PublishSlot};
use crate::core::metrics::CloseReason;
use crate::core::timers::TimerKind;
use crate::http::response::{self, Connection};

/// Publishing through the bus.
impl Core {
    /// Hands a validated publish to the bus; returns the token its answer will carry. The
    /// answer goes to the HTTP `client` (which waits in [`Core::await_publish`]); `None` is
    /// a stdin line. Refused at once (503) while the bus is down.
    pub(in crate::core) fn publish_to_bus(
        &mut self,
        client: Option<ClientId>,
        event: Publish,
        now: Instant,
    ) -> Result<u64, RequestError> {
        let Some(cl) = self.cluster.as_mut() else {
            return Err(RequestError::ShuttingDown);
        };
        if !cl.connected {
            cl.stats.publishes_failed += 1;
            return Err(RequestError::BusUnavailable {
                retry_after_secs: PUBLISH_RETRY_AFTER_SECS,
            });
        }
        cl.next_token += 1;
        let token = cl.next_token;
        cl.publishes.insert(
            token,
            Waiter {
                client,
                custom_id: event.custom_id.clone(),
                since: now,
            },
        );
        cl.requests
            .push_back(BusRequest::Publish(Publish { token, ..event }));
        Ok(token)
    }

    /// Gives the client's publish `token` (handed to a log that answers later) its slot in
    /// [`Client::publishes`], then reads on (pipelined requests, up to
    /// [`MAX_PUBLISHES_IN_FLIGHT`]) unless the cap is reached or the request said close.
    pub(in crate::core) fn await_publish(
        &mut self,
        id: ClientId,
        token: u64,
        connection: Connection,
        now: Instant,
    ) {
        let Some(c) = self.client_mut(id) else { return };
        let cors = c.http.cors().map(Box::from);
        c.http.publishes_mut().push_back(PublishSlot {
            token,
            connection,
            answer: None,
            cors,
        });
        if reads_on(c) {
            // The read step goes on with what followed the publish.
            begin_reading(self, id, now);
        } else {
            c.http.wait_for_publishes(None);
        }
    }

    /// Answers a publish refused at once because the log is unreachable, in its place
    /// behind the client's publishes still in flight, and keeps the connection as the
    /// request asked (unlike other errors, which close).
    pub(in crate::core) fn refuse_publish_kept(
        &mut self,
        id: ClientId,
        connection: Connection,
        now: Instant,
    ) {
        let (status, bytes) = unavailable_answer(connection);
        let bytes = self.with_client_cors(id, bytes);
        let Some(c) = self.client_mut(id) else { return };
        if c.http.publishes().is_empty() {
            answer(self, id, status, bytes, AfterAnswer::after(connection), now);
            return;
        }
        c.http.publishes_mut().push_back(PublishSlot {
            token: 0,
            connection,
            answer: Some((status, bytes)),
            cors: None,
        });
        if reads_on(c) {
            begin_reading(self, id, now);
        } else {
            c.http.wait_for_publishes(None);
        }
    }

    /// Queues a final answer (an error; the connection closes after it) behind the
    /// client's publishes waiting for the bus. False when none wait: answer now.
    pub(in crate::core) fn answer_after_publishes(
        &mut self,
        id: ClientId,
        status: u16,
        bytes: Vec<u8>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.client_mut(id) else {
            return false;
        };
        if c.http.publishes().is_empty() || c.is_streaming() {
            return false;
        }
        c.http.publishes_mut().push_back(PublishSlot {
            token: 0,
            connection: Connection::Close,
            answer: Some((status, bytes)),
            cors: None,
        });
        c.http.wait_for_publishes(None);
        self.flush_publishes(id, now);
        true
    }

    pub(super) fn on_published(
        &mut self,
        token: u64,
        outcome: Result<ClusterId, PublishFailure>,
        now: Instant,
    ) {
        let bound = self.apply_bound();
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let Some(w) = cl.publishes.remove(&token) else {
            return;
        };
        match &outcome {
            Ok(id) => {
                // This node answered the id: it exists in the shared log, whatever the tail
                // has shown so far (a resume from it waits for it, never `unknown-id`).
                if cl.epoch.as_deref() == Some(id.epoch.as_str()) {
                    cl.learn_head(id.offset, now, bound);
                }
                cl.refused_in_a_row = 0;
                cl.stats.publishes_accepted += 1;
                cl.stats.publish_seconds_sum +=
                    now.saturating_duration_since(w.since).as_secs_f64();
                self.metrics.events_published += 1;
            }
            Err(why) => {
                if matches!(why, PublishFailure::Rejected(_)) {
                    cl.refused_in_a_row = cl.refused_in_a_row.saturating_add(1);
                }
                cl.stats.publishes_failed += 1;
                log::info!("publish not taken by the bus: {why}");
            }
        }
        let Some(id) = w.client else {
            return;
        };
        let Some(c) = self.client_mut(id) else { return };
        let Some((connection, cors)) = c
            .http
            .publishes_mut()
            .iter_mut()
            .find(|s| s.token == token)
            .map(|s| (s.connection, s.cors.take()))
        else {
            return;
        };
        let plain = "text/plain; charset=utf-8";
        let (status, bytes) = match outcome {
            Ok(cluster_id) => {
                let body = format!("{}\n", w.custom_id.unwrap_or(cluster_id.to_string()));
                let r = response::answer(200, plain, &[], body.as_bytes(), connection, false);
                (200, r)
            }
            Err(_) => unavailable_answer(connection),
        };
        let bytes = match cors {
            Some(lines) => access::with_cors(&bytes, &lines).unwrap_or(bytes),
            None => bytes,
        };
        let Some(c) = self.client_mut(id) else { return };
        if let Some(slot) = c.http.publishes_mut().iter_mut().find(|s| s.token == token) {
            slot.answer = Some((status, bytes));
        }
        self.flush_publishes(id, now);
    }

    /// Writes out the answers at the front of the client's publishes, in request order;
    /// then closes after one that said close, or reads on when the queue has room again.
    fn flush_publishes(&mut self, id: ClientId, now: Instant) {
        let shutting_down = self.shutdown_deadline.is_some();
        let Some(c) = self.client_mut(id) else { return };
        let mut out: Vec<u8> = Vec::new();
        let mut statuses: Vec<u16> = Vec::new();
        let mut close = false;
        while c
            .http
            .publishes()
            .front()
            .is_some_and(|s| s.answer.is_some())
        {
            let Some(slot) = c.http.publishes_mut().pop_front() else {
                break;
            };
            let Some((status, bytes)) = slot.answer else {
                break;
            };
            out.extend_from_slice(&bytes);
            statuses.push(status);
            if !slot.connection.keeps_alive() || (shutting_down && c.http.publishes().is_empty()) {
                close = true;
                break;
            }
        }
        if statuses.is_empty() {
            return;
        }
        c.queue_after_pending(out);
        if close {
            c.http.publishes_mut().clear();
            c.http.close_after_sent(CloseReason::Normal, now);
            self.timers
                .arm(id, TimerKind::Linger, now + self.cfg.linger);
        } else if reads_on(c)
            && let Some(early) = c.http.take_held_input()
        {
            read_next(self, id, (None, early), now);
        }
        for status in statuses {
            self.metrics.count_response(status);
        }
        self.schedule(id);
    }
}

/// The answer to a publish the log did not take: 503 + `Retry-After`, the connection kept
/// as the request asked, so a keep-alive publisher retries on the same connection.
fn unavailable_answer(connection: Connection) -> (u16, Vec<u8>) {
    let e = RequestError::BusUnavailable {
        retry_after_secs: PUBLISH_RETRY_AFTER_SECS,
    };
    let headers = e.headers();
    let headers: Vec<&str> = headers.as_deref().into_iter().collect();
    let body = format!("{} {}\n", e.status(), e.message());
    let plain = "text/plain; charset=utf-8";
    let bytes = response::answer(
        e.status(),
        plain,
        &headers,
        body.as_bytes(),
        connection,
        false,
    );
    (e.status(), bytes)
}

/// True when a connection with publishes in flight may parse more requests: below the cap,
/// and none of them said close.
fn reads_on(c: &Client) -> bool {
    let publishes = c.http.publishes();
    publishes.len() < MAX_PUBLISHES_IN_FLIGHT
        && publishes.iter().all(|s| s.connection.keeps_alive())
}
