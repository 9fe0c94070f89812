//! The model of the topic table (part of the oracle, written from the documented rules, not
//! from the core's code): at most `max_topics` named topics besides the default and tick
//! topics; a new name takes a free slot, else recycles the least recently appended-to named
//! topic without subscribers (its history and custom ids are gone), else is refused (503).
//! One request never recycles a topic it has just taken for an earlier name of its own
//! (two names of one request never share a topic). Ties in recency go to the oldest slot.

use super::*;

impl Sim {
    /// Open stream clients following topic incarnation `t`.
    fn model_subscribers(&self, t: usize) -> usize {
        self.conns
            .iter()
            .filter(|c| c.open && c.closed.is_none())
            .filter_map(|c| c.stream.as_ref())
            .filter(|s| s.topics.contains(&t))
            .count()
    }

    /// The named topic a new name would recycle (none taken by the same request).
    fn victim(&self, taken: &[usize]) -> Option<usize> {
        (0..self.topics.len())
            .filter(|&t| {
                let mt = &self.topics[t];
                mt.live && mt.slot >= 2 && !taken.contains(&t) && self.model_subscribers(t) == 0
            })
            .min_by_key(|&t| (self.topics[t].last_used, self.topics[t].slot))
    }

    /// Whether name `name` can get a topic now, without changing anything.
    pub(super) fn topic_available(&self, name: usize, taken: &[usize]) -> bool {
        self.name_topic[name].is_some()
            || self.slots_used < self.cfg.max_topics + 2
            || self.victim(taken).is_some()
    }

    /// The live topic for `name`: existing, created in a free slot, or recycled; `None`
    /// when the table is full of topics with subscribers.
    pub(super) fn model_topic_for(&mut self, name: usize, taken: &[usize]) -> Option<usize> {
        if let Some(t) = self.name_topic[name] {
            return Some(t);
        }
        let fresh = if self.slots_used < self.cfg.max_topics + 2 {
            self.slots_used += 1;
            self.coverage.reach(Reach::TopicCreated);
            MTopic {
                name,
                slot: self.slots_used - 1,
                live: true,
                lost: self.recycled_lost,
                ..MTopic::default()
            }
        } else {
            let Some(old) = self.victim(taken) else {
                self.coverage.reach(Reach::TopicRefused);
                return None;
            };
            self.coverage.reach(Reach::TopicRecycled);
            if taken.iter().any(|&t| self.topics[t].slot >= 2) {
                self.coverage.reach(Reach::TopicRecycledBesideNew);
            }
            // Its events are no longer retained (nor their publisher-given ids resolvable).
            let mt = &mut self.topics[old];
            // The table forgets names: whatever any recycling dropped may have been the new
            // name's own events, so a resume from before the newest of them is too old.
            let lost = mt
                .log
                .back()
                .map(|e| e.0)
                .or(mt.lost)
                .max(self.recycled_lost);
            self.recycled_lost = lost;
            let end = mt.end_seq();
            mt.log.clear();
            mt.first_seq = end;
            mt.bytes = 0;
            mt.live = false;
            mt.lost = lost;
            let slot = mt.slot;
            let old_name = mt.name;
            self.name_topic[old_name] = None;
            MTopic {
                name,
                slot,
                live: true,
                last_used: self.appends,
                first_seq: end,
                lost,
                ..MTopic::default()
            }
        };
        self.topics.push(fresh);
        let t = self.topics.len() - 1;
        self.name_topic[name] = Some(t);
        Some(t)
    }
}

/// Answers that depend on the topic table.
impl Sim {
    /// The core answered 503 in the call just made on `by`: outside shutdown, the topic
    /// table is full of topics with subscribers, for a stream request or a publish. The
    /// model replays the request's topic look-ups (an earlier name of the request may have
    /// recycled a topic before a later one was refused) and must refuse too.
    pub(super) fn on_503(&mut self, by: Option<ClientId>) -> Result<(), String> {
        let Some(ci) = by.and_then(|id| {
            self.slot_conn(id)
                .or_else(|| self.conns.iter().position(|c| c.id == id))
        }) else {
            return Ok(());
        };
        // Requests are answered in order and a stream ends a pipeline, so a publish still
        // pending was sent before the stream request: the 503 is the publish's.
        if self.conns[ci].publishes.is_empty()
            && let Some(want) = self.conns[ci].want_stream.take()
        {
            let mut taken = Vec::new();
            for &name in &want.topics {
                match self.model_topic_for(name, &taken) {
                    Some(t) => taken.push(t),
                    None => {
                        let at = self.elapsed;
                        self.conns[ci].sent.push(Expect {
                            statuses: vec![503],
                            closes: true,
                            head_only: false,
                            late: false,
                            completed_at: Some(at),
                        });
                        return Ok(());
                    }
                }
            }
            let names: Vec<&str> = want.topics.iter().map(|&n| TOPICS[n]).collect();
            return Err(format!(
                "connection {ci}: stream of {names:?} refused with 503, but the model's topic \
                 table has room"
            ));
        }
        if self.shutting_down {
            // Once shutting down, every publish is refused with 503 (a stream request is
            // still answered as at any time: above).
            return Ok(());
        }
        if let Some(p) = self.conns[ci].publishes.pop_front() {
            // The refusal closes the connection: requests pipelined after it get nothing.
            let c = &mut self.conns[ci];
            c.publishes.clear();
            c.sent.truncate(p.expect_index + 1);
            if let Some(e) = c.sent.get_mut(p.expect_index) {
                e.closes = true;
            }
            c.done = true;
            c.want_stream = None;
            ensure!(
                self.model_topic_for(p.topic, &[]).is_none(),
                "connection {ci}: publish to {:?} refused with 503, but the model's topic table \
                 has room",
                TOPICS[p.topic]
            );
        }
        Ok(())
    }
}
