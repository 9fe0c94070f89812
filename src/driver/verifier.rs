//! The verifier thread: token signatures checked off the reactor. The core hands out
//! [`VerifyRequest`]s (RS256/ES256 tokens its cache could not answer); the driver queues them
//! here without ever waiting and feeds the [`VerifyReply`]s back, woken by the same
//! `mio::Waker` as the bus threads.
//!
//! Guarantees: [`Verifier::submit`] never blocks; the queue holds at most `--jwt-verify-queue`
//! requests and a request that finds it full (or the thread gone) is answered at once with
//! [`VerifyOutcome::Busy`] (the core answers `503`), so memory stays bounded whatever the
//! rate of first-sight tokens; every request submitted gets exactly one reply. The replies'
//! channel is bounded too: while the reactor is behind, the thread waits, then the queue
//! fills. Dropping the handle ends the thread once it finishes the check in hand.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::auth::AuthConfig;
use crate::bus::Notify;
use crate::core::{VerifyOutcome, VerifyReply, VerifyRequest};

/// The reactor's side of the verifier thread.
pub(super) struct Verifier {
    requests: SyncSender<VerifyRequest>,
    replies: Receiver<VerifyReply>,
}

impl Verifier {
    /// Starts the thread with room for `queue` requests (at least 1); it checks tokens with
    /// `auth`'s keys and calls `notify` after each reply.
    pub(super) fn start(
        auth: Arc<AuthConfig>,
        queue: usize,
        notify: Notify,
    ) -> std::io::Result<Verifier> {
        let queue = queue.max(1);
        let (requests, inbox) = sync_channel::<VerifyRequest>(queue);
        let (outbox, replies) = sync_channel::<VerifyReply>(queue);
        std::thread::Builder::new()
            .name("jwt-verify".into())
            .spawn(move || {
                while let Ok(request) = inbox.recv() {
                    if outbox.send(request.check_with(&auth)).is_err() {
                        return;
                    }
                    notify();
                }
            })?;
        Ok(Verifier { requests, replies })
    }

    /// Queues a check without waiting; `Err` is the reply to feed back at once (the queue is
    /// full, or the thread is gone).
    pub(super) fn submit(&self, request: VerifyRequest) -> Result<(), VerifyReply> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(r) | TrySendError::Disconnected(r) => r.reply(VerifyOutcome::Busy),
        })
    }

    /// The next reply, if one is ready.
    pub(super) fn try_recv(&self) -> Option<VerifyReply> {
        self.replies.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthOptions, BearerToken};
    use crate::core::ClientId;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn auth() -> Arc<AuthConfig> {
        Arc::new(
            AuthConfig::new(AuthOptions {
                jwt_secret: Some("a test secret of at least 32 bytes!".into()),
                ..AuthOptions::default()
            })
            .expect("valid"),
        )
    }

    fn request(check: u64) -> VerifyRequest {
        VerifyRequest {
            client: ClientId {
                key: check as u32,
                generation: 1,
            },
            check,
            token: BearerToken::new("not.a.token"),
            unix_now: 0,
        }
    }

    fn recv(v: &Verifier) -> VerifyReply {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = v.try_recv() {
                return r;
            }
            assert!(Instant::now() < deadline, "no reply");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn every_request_gets_one_reply_and_a_wake_up() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let notify: Notify = Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let v = Verifier::start(auth(), 8, notify).expect("thread");
        for check in 1..=5 {
            v.submit(request(check)).expect("room");
        }
        let mut got: Vec<u64> = (0..5).map(|_| recv(&v).check).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert!(v.try_recv().is_none());
        assert_eq!(woken.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        // The thread blocks on its first reply (room for one) until the test reads: the
        // queue behind it fills.
        let v = Verifier::start(auth(), 1, Arc::new(|| {})).expect("thread");
        let mut busy = 0;
        for check in 1..=20 {
            if let Err(reply) = v.submit(request(check)) {
                assert_eq!(reply.outcome, VerifyOutcome::Busy);
                assert_eq!(reply.check, check);
                busy += 1;
            }
        }
        assert!(
            busy >= 17,
            "at most the queue, the reply slot and the one in hand: {busy}"
        );
    }
}
