//! The model (the oracle): what each client must receive, computed from the operations
//! alone: per-topic retention, publisher ids, the resume rules, the reset event.
//!
//! It is written independently of the core and must stay so: it never calls the core's
//! functions it checks (no `core::event_log`, no routing, no validation from `core`), so
//! a bug in the core cannot hide behind the same bug in the model. What it shares with the
//! core is only the SSE encoder (`sse::frame`, tested on its own, and whose output clients
//! decode back with the WHATWG parser) and the run's boot id (a getter).

use super::*;

impl Sim {
    pub(super) fn resolve(&self, last: Option<&str>) -> Resume {
        let Some(last) = last.filter(|s| !s.is_empty()) else {
            return Resume::Fresh;
        };
        if let Some(&g) = self.custom_ids.get(last) {
            return Resume::After(g);
        }
        let Some((boot, seq)) = last.rsplit_once('-') else {
            return Resume::Unknown;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Resume::Unknown;
        };
        let base36 = !boot.is_empty()
            && boot.len() <= 13
            && boot
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !base36 {
            Resume::Unknown
        } else if boot == self.core.boot_id() {
            if seq < self.next_gseq {
                Resume::After(seq)
            } else {
                Resume::Unknown
            }
        } else {
            Resume::EarlierRun
        }
    }

    /// The core made a connection a stream client: compute what it must receive.
    pub(super) fn subscribe(&mut self, ci: usize) -> Result<(), String> {
        let Some(want) = self.conns[ci].want_stream.take() else {
            return Ok(());
        };
        // The topics, in request order, as the table gives them (created or recycled).
        let mut topics = Vec::new();
        for &name in &want.topics {
            let Some(t) = self.model_topic_for(name, &topics) else {
                return Err(format!(
                    "connection {ci}: streamed topic {:?}, but every topic has subscribers in \
                     the model's table (503 expected)",
                    TOPICS[name]
                ));
            };
            topics.push(t);
        }
        if want.topics.contains(&0) {
            topics.push(TICK);
        }
        let resume = self.resolve(want.last_id.as_deref());
        let mut gap = matches!(resume, Resume::Unknown | Resume::EarlierRun);
        let mut replaying = false;
        let mut starts = Vec::new();
        for &t in &topics {
            let mt = &self.topics[t];
            let start = match resume {
                _ if t == TICK => mt.end_seq(),
                Resume::Fresh | Resume::Unknown => mt.end_seq(),
                Resume::EarlierRun => mt.first_seq,
                Resume::After(g) => mt.resume_after(g).unwrap_or_else(|| {
                    gap = true;
                    mt.end_seq()
                }),
            };
            replaying |= start < mt.end_seq();
            starts.push((t, start));
        }
        let mut expected = Vec::new();
        if let Some(retry) = self.cfg.retry {
            let mut b = Vec::new();
            frame::encode_retry(&mut b, retry.as_millis() as u64);
            expected.push(ExpFrame {
                bytes: b.into(),
                event: None,
                model: None,
            });
        }
        if gap {
            let boot = self.core.boot_id().to_owned();
            let last_gseq = self.next_gseq - 1;
            let (reason, gap_id) = match resume {
                Resume::EarlierRun => ("restart", Some(format!("{boot}-0"))),
                Resume::Unknown => ("unknown-id", Some(format!("{boot}-{last_gseq}"))),
                _ => (
                    "too-old",
                    (!replaying).then(|| format!("{boot}-{last_gseq}")),
                ),
            };
            self.coverage.reach(match reason {
                "restart" => Reach::ResetRestart,
                "unknown-id" => Reach::ResetUnknownId,
                _ => Reach::ResetTooOld,
            });
            let data = format!("{{\"reason\":\"{reason}\"}}");
            let mut b = Vec::new();
            frame::encode_event(&mut b, gap_id.as_deref(), Some("reset"), &data);
            expected.push(ExpFrame {
                bytes: b.into(),
                event: Some(Expected {
                    event_type: "reset".into(),
                    data,
                    id: gap_id,
                }),
                model: None,
            });
        }
        for e in &self.events {
            if starts
                .iter()
                .any(|&(t, s)| t == e.topic && e.local_seq >= s)
            {
                expected.push(e.frame.clone());
            }
        }
        if replaying {
            self.coverage.reach(Reach::Replayed);
        }
        let c = &mut self.conns[ci];
        c.stream = Some(StreamState {
            topics,
            head_at: c.raw.len(),
            expected,
            matched: 0,
            pos: c.raw.len() + STREAM_HEAD.len(),
            parser: Parser::new(),
            dispatched: Vec::new(),
            received_frame_bytes: 0,
            last_frame: None,
        });
        self.trace("stream", ci as u64, 0);
        Ok(())
    }

    /// Records an appended event: retention, publisher ids, subscribers' expectations.
    pub(super) fn model_append(
        &mut self,
        topic: usize,
        id: Option<&str>,
        event: Option<&str>,
        data: &str,
        custom: Option<String>,
    ) -> Result<(), String> {
        let gseq = self.next_gseq;
        self.next_gseq += 1;
        let mut bytes = Vec::new();
        frame::encode_event(&mut bytes, id, event, data);
        self.max_frame = self.max_frame.max(bytes.len());
        let len = bytes.len();
        if let Some(c) = &custom {
            self.custom_ids.insert(c.clone(), gseq);
        }
        let (max_events, max_bytes) = (self.cfg.history.max(1), self.cfg.history_bytes);
        self.appends += 1;
        let mut evicted = false;
        let mt = &mut self.topics[topic];
        mt.last_used = self.appends;
        let local_seq = mt.end_seq();
        mt.log.push_back((gseq, len, custom));
        mt.bytes += len;
        while mt.log.len() > 1 && (mt.log.len() > max_events || mt.bytes > max_bytes) {
            if let Some((g, l, c)) = mt.log.pop_front() {
                mt.bytes -= l;
                mt.first_seq += 1;
                mt.evicted_gseq = Some(g);
                evicted = true;
                if let Some(c) = c
                    && self.custom_ids.get(&c) == Some(&g)
                {
                    self.custom_ids.remove(&c);
                }
            }
        }
        if evicted {
            self.coverage.reach(Reach::HistoryEvicted);
        }
        let ef = ExpFrame {
            bytes: bytes.into(),
            event: Some(Expected {
                event_type: event.unwrap_or("message").to_owned(),
                data: normalise_line_breaks(data),
                id: id.map(str::to_owned),
            }),
            model: Some(self.events.len()),
        };
        self.events.push(MEvent {
            topic,
            local_seq,
            frame: ef.clone(),
        });
        for c in &mut self.conns {
            if let Some(s) = &mut c.stream
                && c.closed.is_none()
                && s.topics.contains(&topic)
            {
                s.expected.push(ef.clone());
            }
        }
        self.appended.push(topic);
        self.trace("append", gseq, topic as u64);
        Ok(())
    }
}

/// A valid `event` or `id` value as the protocol rules say (1 to 256 bytes, no CR, LF or
/// NUL), written here rather than taken from the core.
pub(super) fn valid_field(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && !v.contains(['\r', '\n', '\0'])
}
