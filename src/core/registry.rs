//! The connections the core holds: clients in a slab whose slots are reused, each id
//! carrying the generation it was accepted with (an id of a departed client finds nothing);
//! how many of them stream; and the order in which those reading a request began (who is
//! evicted first at the connection limit).

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use slab::Slab;

use super::client::{Client, ClientId};

/// Every connection, found by id or by slab key.
///
/// Guarantees: a [`ClientId`] finds its client only while that client holds the slot; the
/// streaming count moves only with [`Registry::stream_started`] and
/// [`Registry::stream_ended`] (checked against the clients by [`Registry::check`]); the
/// eviction list stays within `2 × connections + 64` entries.
pub(super) struct Registry {
    clients: Slab<Client>,
    next_generation: u32,
    streaming: usize,
    /// Connections that may be holding a slot without progress: reading a head (their first,
    /// or between kept-alive requests) or a body, in the order that phase began (each entry
    /// is valid while the client's `head_since` matches; lazily pruned).
    head_readers: VecDeque<(ClientId, Instant)>,
}

impl Registry {
    pub(super) fn with_capacity(capacity: usize) -> Registry {
        Registry {
            clients: Slab::with_capacity(capacity),
            next_generation: 1,
            streaming: 0,
            head_readers: VecDeque::new(),
        }
    }

    /// Takes a slot for the client `make` builds with its generation; returns its id.
    pub(super) fn insert(&mut self, make: impl FnOnce(u32) -> Client) -> ClientId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let key = self.clients.insert(make(generation));
        let key = u32::try_from(key).unwrap_or(u32::MAX);
        ClientId { key, generation }
    }

    /// Frees the client's slot (a stale id frees nothing).
    pub(super) fn remove(&mut self, id: ClientId) -> Option<Client> {
        self.get(id)?;
        Some(self.clients.remove(id.key as usize))
    }

    pub(super) fn get(&self, id: ClientId) -> Option<&Client> {
        self.clients
            .get(id.key as usize)
            .filter(|c| c.generation() == id.generation)
    }

    pub(super) fn get_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        self.clients
            .get_mut(id.key as usize)
            .filter(|c| c.generation() == id.generation)
    }

    /// The client in slot `key`, whoever it is (topic subscriber lists hold keys).
    pub(super) fn by_key(&self, key: u32) -> Option<&Client> {
        self.clients.get(key as usize)
    }

    pub(super) fn by_key_mut(&mut self, key: u32) -> Option<&mut Client> {
        self.clients.get_mut(key as usize)
    }

    /// The id of the client in slot `key`, if any.
    pub(super) fn id_for_key(&self, key: u32) -> Option<ClientId> {
        self.by_key(key).map(|c| ClientId {
            key,
            generation: c.generation(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.clients.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Every client with its id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (ClientId, &Client)> {
        self.clients.iter().map(|(key, c)| {
            let id = ClientId {
                key: key as u32,
                generation: c.generation(),
            };
            (id, c)
        })
    }

    /// The ids of every connection (a snapshot, for closing many at once).
    pub(super) fn ids(&self) -> Vec<ClientId> {
        self.iter().map(|(id, _)| id).collect()
    }

    /// Streaming clients.
    pub(super) fn streaming(&self) -> usize {
        self.streaming
    }

    /// A client began streaming.
    pub(super) fn stream_started(&mut self) {
        self.streaming += 1;
    }

    /// A client's stream ended.
    pub(super) fn stream_ended(&mut self) {
        self.streaming = self.streaming.saturating_sub(1);
    }

    /// Records that the client began reading a request at `since` (accept, or back from a
    /// kept-alive answer): it is an eviction candidate until it is answered. Requests
    /// pipelined in one read share their instant: one entry stands for them all.
    pub(super) fn note_head_reader(&mut self, id: ClientId, since: Instant) {
        if self.head_readers.back() == Some(&(id, since)) {
            return;
        }
        self.head_readers.push_back((id, since));
        if self.head_readers.len() > 2 * self.clients.len() + 64 {
            // Drop entries of connections that left the phase: keeps this O(clients).
            let clients = &self.clients;
            self.head_readers.retain(|&(id, since)| {
                clients.get(id.key as usize).is_some_and(|c| {
                    c.generation() == id.generation
                        && c.http.head_since() == since
                        && c.reads_request()
                })
            });
            debug_assert!(
                self.head_readers.len() <= 2 * self.clients.len() + 64,
                "{} head-reader entries for {} connections after a compaction",
                self.head_readers.len(),
                self.clients.len()
            );
        }
    }

    /// The connection that has been reading a request head or body the longest (taken off
    /// the list), if any.
    pub(super) fn oldest_head_reader(&mut self) -> Option<ClientId> {
        while let Some((id, since)) = self.head_readers.pop_front() {
            if self
                .get(id)
                .is_some_and(|c| c.http.head_since() == since && c.reads_request())
            {
                return Some(id);
            }
        }
        None
    }

    /// The streaming count matches the clients, and every connection reading a request is
    /// listed with the instant it began.
    pub(super) fn check(&self) -> Result<(), String> {
        let streaming = self
            .clients
            .iter()
            .filter(|(_, c)| c.is_streaming())
            .count();
        if streaming != self.streaming {
            return Err(format!(
                "streaming count {} but {} streaming clients",
                self.streaming, streaming
            ));
        }
        let listed: HashSet<(ClientId, Instant)> = self.head_readers.iter().copied().collect();
        for (id, c) in self.iter() {
            if c.reads_request() && !listed.contains(&(id, c.http.head_since())) {
                return Err(format!(
                    "client {} reads a request but is not listed",
                    id.key
                ));
            }
        }
        Ok(())
    }

    /// Core tests: the eviction list, to check its bound.
    #[cfg(test)]
    pub(super) fn head_readers(&self) -> &VecDeque<(ClientId, Instant)> {
        &self.head_readers
    }

    /// Core tests: the eviction list, to break it on purpose.
    #[cfg(test)]
    pub(super) fn head_readers_mut(&mut self) -> &mut VecDeque<(ClientId, Instant)> {
        &mut self.head_readers
    }

    /// Core tests: skews the streaming count, to see the check report it.
    #[cfg(test)]
    pub(super) fn skew_streaming(&mut self, up: bool) {
        if up {
            self.streaming += 1;
        } else {
            self.streaming -= 1;
        }
    }
}
