//! The keyspace of one reactor: string keys to string values, some with a deadline.
//!
//! Expiry works as in Redis: a key past its deadline is deleted when it is next touched
//! (lazily), and a periodic sweep (`sweep`, run by a reactor timer) samples keys that have
//! a deadline and deletes the expired ones, so keys nobody touches again do not stay
//! forever. The keys with a deadline are also kept in a vector, so the sweep can sample
//! them at random in O(1) each, as Redis samples its `expires` dictionary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use getty::codec::Bytes;

/// Keys sampled per round of a sweep (Redis's `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`).
const SAMPLE: usize = 20;
/// How long one sweep may go on while samples keep finding expired keys: a quarter of the
/// 100 ms tick, as Redis's slow expiry cycle. A fixed number of rounds instead capped the
/// reclaim rate (16 rounds of 20 keys: 3,200 keys a second), and keys written with short
/// deadlines faster than that piled up without bound.
const SWEEP_BUDGET: Duration = Duration::from_millis(25);
/// Rounds between looks at the clock.
const ROUNDS_PER_CLOCK_CHECK: usize = 16;

/// A value and, if it expires, when.
struct Slot {
    value: Bytes,
    expiry: Option<Expiry>,
}

#[derive(Clone, Copy)]
struct Expiry {
    at: Instant,
    /// Where the key is in `Store::volatile`.
    index: usize,
}

/// What a write does to the key's deadline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Ttl {
    /// No deadline (a plain `SET` clears any old one).
    Persist,
    /// Keep the deadline the key has (`SET ... KEEPTTL`).
    Keep,
    /// Expire at this instant.
    At(Instant),
}

pub(crate) struct Store {
    map: HashMap<Bytes, Slot>,
    /// The keys that have a deadline, in no order: what the sweep samples.
    volatile: Vec<Bytes>,
    rng: fastrand::Rng,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            map: HashMap::new(),
            volatile: Vec::new(),
            rng: fastrand::Rng::new(),
        }
    }

    /// The live value of `key`; deletes it if it has expired.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&Bytes> {
        self.expire_if_due(key);
        self.map.get(key).map(|slot| &slot.value)
    }

    pub(crate) fn contains(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to a copy of `value` (a stored value never pins the read buffer its
    /// command arrived in) with the deadline `ttl` says.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8], ttl: Ttl) {
        let value = Bytes::copy_from_slice(value);
        // An expired key's deadline is not kept by KEEPTTL: it is gone first.
        self.expire_if_due(key);
        let had_deadline = match self.map.get_mut(key) {
            Some(slot) => {
                slot.value = value;
                slot.expiry.is_some()
            }
            None => {
                let slot = Slot {
                    value,
                    expiry: None,
                };
                self.map.insert(Bytes::copy_from_slice(key), slot);
                false
            }
        };
        match ttl {
            Ttl::Keep => {}
            Ttl::Persist if !had_deadline => {}
            Ttl::Persist => {
                self.apply_deadline(key, None);
            }
            Ttl::At(at) => {
                self.apply_deadline(key, Some(at));
            }
        }
    }

    /// Deletes `key`; says whether it was there (and live).
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        self.expire_if_due(key);
        self.delete(key)
    }

    /// Sets or clears the deadline of a live key; says whether the key exists.
    pub(crate) fn set_deadline(&mut self, key: &[u8], at: Option<Instant>) -> bool {
        self.expire_if_due(key);
        self.apply_deadline(key, at)
    }

    /// Sets or clears the deadline of `key`, expired or not; says whether it exists.
    fn apply_deadline(&mut self, key: &[u8], at: Option<Instant>) -> bool {
        let Some(slot) = self.map.get_mut(key) else {
            return false;
        };
        match (slot.expiry.as_mut(), at) {
            (Some(expiry), Some(at)) => expiry.at = at,
            (None, Some(at)) => {
                let index = self.volatile.len();
                slot.expiry = Some(Expiry { at, index });
                let (stored_key, _) = self.map.get_key_value(key).expect("just found");
                self.volatile.push(stored_key.clone());
            }
            (Some(_), None) => {
                let index = slot.expiry.take().expect("matched Some").index;
                self.unindex(index);
            }
            (None, None) => {}
        }
        true
    }

    /// The deadline of a live key: `None` if there is no such key, `Some(None)` if it
    /// never expires.
    pub(crate) fn deadline(&mut self, key: &[u8]) -> Option<Option<Instant>> {
        self.expire_if_due(key);
        self.map
            .get(key)
            .map(|slot| slot.expiry.map(|expiry| expiry.at))
    }

    /// The number of keys, some of them possibly expired and not yet swept (as Redis's
    /// `DBSIZE`).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.volatile.clear();
    }

    /// One tick of the active expiry: samples keys with a deadline and deletes the expired
    /// ones, round after round while more than a quarter of a sample had expired (as Redis
    /// does), for at most `SWEEP_BUDGET`. Returns how many it deleted.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let started = Instant::now();
        let mut deleted = 0;
        for round in 1.. {
            let sample = self.volatile.len().min(SAMPLE);
            if sample == 0 {
                break;
            }
            let mut expired = 0;
            for _ in 0..sample {
                let index = self.rng.usize(..self.volatile.len());
                let key = self.volatile[index].clone();
                if self.is_due(&key, now) {
                    self.delete(&key);
                    expired += 1;
                }
                if self.volatile.is_empty() {
                    break;
                }
            }
            deleted += expired;
            if expired * 4 <= sample {
                break;
            }
            if round % ROUNDS_PER_CLOCK_CHECK == 0 && started.elapsed() >= SWEEP_BUDGET {
                break;
            }
        }
        deleted
    }

    /// Whether `key` has a deadline at or before `now`.
    fn is_due(&self, key: &[u8], now: Instant) -> bool {
        let expiry = self.map.get(key).and_then(|slot| slot.expiry);
        expiry.is_some_and(|expiry| expiry.at <= now)
    }

    /// The lazy half of expiry: deletes `key` if its deadline has passed. Reads the clock
    /// only for a key that has a deadline.
    fn expire_if_due(&mut self, key: &[u8]) {
        let due = match self.map.get(key).and_then(|slot| slot.expiry) {
            Some(expiry) => expiry.at <= Instant::now(),
            None => false,
        };
        if due {
            self.delete(key);
        }
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(Slot {
                expiry: Some(expiry),
                ..
            }) => {
                self.unindex(expiry.index);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Takes the key at `index` out of `volatile`; the last key moves into its place.
    fn unindex(&mut self, index: usize) {
        self.volatile.swap_remove(index);
        if let Some(moved) = self.volatile.get(index) {
            if let Some(expiry) = self.map.get_mut(moved).and_then(|s| s.expiry.as_mut()) {
                expiry.index = index;
            }
        }
    }
}

/// Time left until `at`, rounded as Redis rounds `TTL` (to the nearest second).
pub(crate) fn seconds_left(at: Instant) -> i64 {
    let left = at.saturating_duration_since(Instant::now());
    ((left + Duration::from_millis(500)).as_secs()) as i64
}

#[cfg(test)]
impl Store {
    /// Checks that `volatile` holds exactly the keys with a deadline, each where its slot
    /// says (tests include this file).
    pub(crate) fn check_index(&self) {
        let with_deadline = self.map.values().filter(|s| s.expiry.is_some()).count();
        assert_eq!(
            with_deadline,
            self.volatile.len(),
            "volatile holds every deadline"
        );
        for (index, key) in self.volatile.iter().enumerate() {
            let expiry = self.map[key].expiry.expect("a volatile key has a deadline");
            assert_eq!(expiry.index, index, "the slot knows where its key is");
        }
    }
}
