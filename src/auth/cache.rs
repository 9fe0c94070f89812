//! A bounded cache of verified tokens, so a reconnecting client costs a hash instead of a
//! signature check (an ES256 verification takes hundreds of microseconds on the reactor).
//!
//! What it guarantees:
//! - **Only successes are kept**, and only what verification proved: the claims of a token
//!   whose signature, `aud`/`iss`, time window and `sse` claim passed. A failure is never
//!   cached; the same bad token is verified (and refused) again each time.
//! - **Never valid outside the token's window**: a hit is checked against `exp` + leeway and
//!   `nbf` − leeway at the `now` of the request, in the same order and with the same bounds as
//!   [`super::Verifier::verify`], so a hit answers exactly what verifying again would. An entry
//!   found expired is dropped.
//! - **Keyed by SHA-256 of the token's bytes**, never by the token itself: the memory holds no
//!   bearer secret, and a token differing in any byte is another key (finding two tokens with
//!   one key is finding a SHA-256 collision).
//! - **Bounded**: at most `capacity` entries, and tokens longer than [`MAX_CACHED_TOKEN_BYTES`]
//!   are not kept (their claims could be as large). A full cache evicts with the clock
//!   (second-chance) algorithm: O(1) amortised, no allocation once full. Capacity 0 disables
//!   it: every token is verified.
//! - The per-request decision (topic matching, publish rights) is not cached: the decisions in
//!   [`super::decide`] run on the claims every time.
//!
//! A cache belongs to the key set it was filled under. Keys are read once at start (`SIGHUP`
//! reloads nothing), so entries never outlive their key; code that swaps keys must
//! [`TokenCache::clear`] the cache with them.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::extract::BearerToken;
use super::verify::{InvalidToken, VerifiedClaims};

/// Default of `--jwt-cache`: enough for the reconnect storm of a deployment's active users.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Largest `--jwt-cache`.
pub const MAX_CACHE_ENTRIES: usize = 1_000_000;

/// Tokens longer than this are verified every time: an entry's size follows its token's, and
/// this keeps a full default cache within about `capacity × 4 KiB` of claims.
pub const MAX_CACHED_TOKEN_BYTES: usize = 4096;

/// The SHA-256 of a token's bytes.
type Key = [u8; 32];

/// One cached verification.
struct Slot {
    key: Key,
    claims: VerifiedClaims,
    /// The clock's second-chance bit: set by a hit, cleared as the hand passes.
    referenced: bool,
}

/// Counts since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache (valid or, past `exp`, expired).
    pub hits: u64,
    /// Lookups that had to verify.
    pub misses: u64,
    /// Entries pushed out by the clock to make room.
    pub evictions: u64,
}

/// The cache of verified tokens (see the module documentation).
pub struct TokenCache {
    capacity: usize,
    index: HashMap<Key, usize>,
    slots: Vec<Slot>,
    /// The clock hand: the next slot considered for eviction.
    hand: usize,
    stats: CacheStats,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.slots.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: disabled). Memory is taken as entries arrive.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            stats: CacheStats::default(),
        }
    }

    /// A cache that keeps nothing (allocates nothing).
    pub fn disabled() -> TokenCache {
        TokenCache::new(0)
    }

    /// The most entries it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The entries it holds now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Hits, misses and evictions so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Forgets every entry (for a change of keys).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.hand = 0;
    }

    /// The claims of `token` at `now` (unix seconds): from the cache when it holds the token,
    /// else from `verify`, whose success is kept. The answer is the one `verify` would give.
    pub fn verify(
        &mut self,
        token: &BearerToken,
        now: u64,
        verify: impl FnOnce(&BearerToken) -> Result<VerifiedClaims, InvalidToken>,
    ) -> Result<VerifiedClaims, InvalidToken> {
        if let Some(answer) = self.cached(token, now) {
            return answer;
        }
        let claims = verify(token)?;
        self.keep(token, &claims, now);
        Ok(claims)
    }

    /// The cached answer for `token` at `now`, counted as a hit; `None` (counted as a miss
    /// when the token could be kept) when it must be verified.
    pub fn cached(
        &mut self,
        token: &BearerToken,
        now: u64,
    ) -> Option<Result<VerifiedClaims, InvalidToken>> {
        let key = self.key_of(token)?;
        let answer = self.lookup(&key, now);
        match answer {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        answer
    }

    /// Keeps the verified `claims` of `token`, unless they are outside their time window at
    /// `now`, the token is already kept, or it cannot be kept (too long, cache off).
    pub fn keep(&mut self, token: &BearerToken, claims: &VerifiedClaims, now: u64) {
        let Some(key) = self.key_of(token) else {
            return;
        };
        if claims.check_window(now).is_err() || self.index.contains_key(&key) {
            return;
        }
        self.insert(key, claims.clone());
    }

    /// The key of a token the cache may hold; `None` while disabled or for a long token.
    fn key_of(&self, token: &BearerToken) -> Option<Key> {
        let bytes = token.expose().as_bytes();
        if self.capacity == 0 || bytes.len() > MAX_CACHED_TOKEN_BYTES {
            return None;
        }
        Some(Sha256::digest(bytes).into())
    }

    /// The cached answer for `key` at `now`, checked as [`super::Verifier::verify`] checks
    /// time ([`VerifiedClaims::check_window`]): an expired entry is dropped.
    fn lookup(&mut self, key: &Key, now: u64) -> Option<Result<VerifiedClaims, InvalidToken>> {
        let at = *self.index.get(key)?;
        let slot = &mut self.slots[at];
        match slot.claims.check_window(now) {
            Err(InvalidToken::Expired) => {
                self.remove(at);
                Some(Err(InvalidToken::Expired))
            }
            Err(e) => Some(Err(e)),
            Ok(()) => {
                slot.referenced = true;
                Some(Ok(slot.claims.clone()))
            }
        }
    }

    /// Keeps `claims` under `key` (not present), evicting one entry if full.
    fn insert(&mut self, key: Key, claims: VerifiedClaims) {
        let slot = Slot {
            key,
            claims,
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return;
        }
        // The clock: clear second chances until an unreferenced slot comes up. Each pass
        // clears what it skips, so this ends within two turns of the hand.
        let victim = loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let s = &mut self.slots[self.hand];
            if !s.referenced {
                break self.hand;
            }
            s.referenced = false;
            self.hand += 1;
        };
        let old = std::mem::replace(&mut self.slots[victim], slot);
        self.index.remove(&old.key);
        self.index.insert(key, victim);
        self.hand = victim + 1;
        self.stats.evictions += 1;
    }

    /// Drops the slot at `at` (the last slot takes its place).
    fn remove(&mut self, at: usize) {
        let gone = self.slots.swap_remove(at);
        self.index.remove(&gone.key);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.key, at);
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
