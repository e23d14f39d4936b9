//! A node's reservations, indexed so that "the most participants reserved
//! at any instant of `[start, end)`" costs two binary searches and a scan of
//! the steps inside the window (in blocks), never a sweep over every
//! reservation the node holds. Placement asks this for many nodes per
//! decision, so the index is flat arrays, not a tree of pointers.
//!
//! The reserved load is a step function of time: each reservation adds
//! `+p` at its start and `-p` at its end (windows are half-open). Steps at
//! the same instant are merged, and a step whose changes cancel out is
//! removed, so memory follows the reservations held now, not those ever
//! made. Answers are exact (no time slots, no rounding at the edges).
//!
//! Only the map by meeting is serialised; the index is rebuilt on load, and
//! equality compares the map, so two replicas that built their indexes in a
//! different order still compare equal.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Reservation;

/// Steps per block of the block maxima: a window's scan touches at most two
/// partial blocks and the whole blocks between them.
const BLOCK: usize = 32;

/// The step function: instants in time order, the change at each, and the
/// level (participants reserved) from each instant until the next.
#[derive(Debug, Clone, Default)]
struct Steps {
    times: Vec<u64>,
    deltas: Vec<i64>,
    levels: Vec<i64>,
    /// Highest level in each block of [`BLOCK`] steps.
    block_max: Vec<i64>,
    /// Highest level at any instant (0 when nothing is reserved).
    max_level: i64,
}

impl Steps {
    /// Adds `delta` to the step at time `t`.
    fn add(&mut self, t: u64, delta: i64) {
        let k = match self.times.binary_search(&t) {
            Ok(k) => {
                self.deltas[k] += delta;
                if self.deltas[k] == 0 {
                    self.times.remove(k);
                    self.deltas.remove(k);
                    self.levels.remove(k);
                }
                k
            }
            Err(k) => {
                self.times.insert(k, t);
                self.deltas.insert(k, delta);
                self.levels.insert(k, 0);
                k
            }
        };
        self.relevel(k);
    }

    /// Recomputes the levels from step `from` on, and the block maxima.
    fn relevel(&mut self, from: usize) {
        let mut level = if from == 0 { 0 } else { self.levels[from - 1] };
        for k in from..self.levels.len() {
            level += self.deltas[k];
            self.levels[k] = level;
        }
        let blocks = self.levels.len().div_ceil(BLOCK);
        self.block_max.resize(blocks, 0);
        for b in from / BLOCK..blocks {
            let end = ((b + 1) * BLOCK).min(self.levels.len());
            self.block_max[b] = self.levels[b * BLOCK..end]
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
        }
        self.max_level = self.block_max.iter().copied().max().unwrap_or(0).max(0);
    }

    /// Number of steps at or before `t`.
    fn upto(&self, t: u64) -> usize {
        self.times.partition_point(|&x| x <= t)
    }

    /// The level at the instant `t`.
    fn level_at(&self, t: u64) -> i64 {
        match self.upto(t) {
            0 => 0,
            k => self.levels[k - 1],
        }
    }

    /// Highest of `levels[lo..hi]`, or 0 when the range is empty.
    fn max_levels(&self, lo: usize, hi: usize) -> i64 {
        let mut best = 0i64;
        let mut k = lo;
        while k < hi {
            if k.is_multiple_of(BLOCK) && k + BLOCK <= hi {
                best = best.max(self.block_max[k / BLOCK]);
                k += BLOCK;
            } else {
                best = best.max(self.levels[k]);
                k += 1;
            }
        }
        best
    }
}

/// Reservations by meeting id, with the peak index kept in step.
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    by_meeting: BTreeMap<u64, Reservation>,
    steps: Steps,
}

impl Reservations {
    /// Holds `r` for `meeting`, replacing what it held before.
    pub fn insert(&mut self, meeting: u64, r: Reservation) -> Option<Reservation> {
        let old = self.remove(&meeting);
        if r.end_ms > r.start_ms && r.participants > 0 {
            let p = i64::from(r.participants);
            self.steps.add(r.start_ms, p);
            self.steps.add(r.end_ms, -p);
        }
        self.by_meeting.insert(meeting, r);
        old
    }

    pub fn remove(&mut self, meeting: &u64) -> Option<Reservation> {
        let r = self.by_meeting.remove(meeting)?;
        if r.end_ms > r.start_ms && r.participants > 0 {
            let p = i64::from(r.participants);
            self.steps.add(r.start_ms, -p);
            self.steps.add(r.end_ms, p);
        }
        Some(r)
    }

    /// The most participants reserved at any one instant of `[start, end)`.
    pub fn peak(&self, start_ms: u64, end_ms: u64) -> u32 {
        if end_ms <= start_ms {
            return 0;
        }
        // The level at the window's start, then every level a step inside
        // the window reaches.
        let steps = &self.steps;
        let first = steps.upto(start_ms);
        let before = match first {
            0 => 0,
            k => steps.levels[k - 1],
        };
        let last = steps.times.partition_point(|&x| x < end_ms);
        let inside = steps.max_levels(first, last.max(first));
        before.max(inside).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// The most participants reserved at any instant at all: an upper
    /// bound on every window's peak, in O(1), which lets placement skip
    /// the exact question for nodes with room to spare.
    pub fn peak_all(&self) -> u32 {
        self.steps.max_level.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Participants reserved at the instant `t_ms`.
    pub fn at(&self, t_ms: u64) -> u32 {
        self.steps.level_at(t_ms).clamp(0, i64::from(u32::MAX)) as u32
    }

    pub fn get(&self, meeting: &u64) -> Option<&Reservation> {
        self.by_meeting.get(meeting)
    }

    pub fn contains_key(&self, meeting: &u64) -> bool {
        self.by_meeting.contains_key(meeting)
    }

    pub fn len(&self) -> usize {
        self.by_meeting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_meeting.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &u64> + '_ {
        self.by_meeting.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &Reservation> + '_ {
        self.by_meeting.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Reservation)> + '_ {
        self.by_meeting.iter()
    }

    /// Steps in the index (memory follows the reservations held).
    pub fn step_count(&self) -> usize {
        self.steps.times.len()
    }
}

impl<'a> IntoIterator for &'a Reservations {
    type Item = (&'a u64, &'a Reservation);
    type IntoIter = std::collections::btree_map::Iter<'a, u64, Reservation>;
    fn into_iter(self) -> Self::IntoIter {
        self.by_meeting.iter()
    }
}

impl std::ops::Index<&u64> for Reservations {
    type Output = Reservation;
    fn index(&self, meeting: &u64) -> &Reservation {
        &self.by_meeting[meeting]
    }
}

impl FromIterator<(u64, Reservation)> for Reservations {
    fn from_iter<I: IntoIterator<Item = (u64, Reservation)>>(iter: I) -> Self {
        let mut r = Reservations::default();
        for (id, res) in iter {
            r.insert(id, res);
        }
        r
    }
}

impl PartialEq for Reservations {
    fn eq(&self, other: &Self) -> bool {
        self.by_meeting == other.by_meeting
    }
}

impl Eq for Reservations {}

impl Serialize for Reservations {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_meeting.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reservations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<u64, Reservation>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: sweep every reservation's edges.
    fn peak_by_sweep(rs: &[(u64, u64, u32)], start: u64, end: u64) -> u32 {
        let mut edges: Vec<(u64, i64)> = rs
            .iter()
            .filter(|(s, e, _)| *s < end && *e > start)
            .flat_map(|(s, e, p)| {
                [
                    ((*s).max(start), i64::from(*p)),
                    ((*e).min(end), -i64::from(*p)),
                ]
            })
            .collect();
        edges.sort_unstable();
        let (mut now, mut peak) = (0i64, 0i64);
        for (_, d) in edges {
            now += d;
            peak = peak.max(now);
        }
        peak as u32
    }

    proptest! {
        #[test]
        fn peak_matches_the_sweep(
            rs in prop::collection::vec((0u64..200, 1u64..80, 1u32..50), 0..120),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            queries in prop::collection::vec((0u64..300, 0u64..120), 1..20),
        ) {
            let base = 1_800_000_000_000u64;
            let mut index = Reservations::default();
            let mut live: BTreeMap<u64, (u64, u64, u32)> = BTreeMap::new();
            for (i, (s, len, p)) in rs.iter().enumerate() {
                let r = (base + s, base + s + len, *p);
                index.insert(i as u64, Reservation { start_ms: r.0, end_ms: r.1, participants: r.2 });
                live.insert(i as u64, r);
            }
            for ix in removed {
                if live.is_empty() { break; }
                let id = *live.keys().nth(ix.index(live.len())).unwrap();
                live.remove(&id);
                index.remove(&id);
            }
            let list: Vec<_> = live.values().copied().collect();
            for (s, len) in queries {
                let (start, end) = (base + s, base + s + len);
                prop_assert_eq!(index.peak(start, end), peak_by_sweep(&list, start, end));
                prop_assert_eq!(index.at(start), peak_by_sweep(&list, start, start + 1));
                prop_assert!(index.peak(start, end) <= index.peak_all());
            }
            prop_assert_eq!(index.peak_all(), peak_by_sweep(&list, 0, u64::MAX));
            if live.is_empty() {
                prop_assert_eq!(index.step_count(), 0, "an empty index keeps no steps");
            }
        }
    }

    #[test]
    fn replacing_and_round_tripping_keep_the_index() {
        let mut r = Reservations::default();
        r.insert(
            1,
            Reservation {
                start_ms: 10,
                end_ms: 20,
                participants: 5,
            },
        );
        r.insert(
            2,
            Reservation {
                start_ms: 15,
                end_ms: 30,
                participants: 7,
            },
        );
        assert_eq!(r.peak(0, 100), 12);
        r.insert(
            1,
            Reservation {
                start_ms: 25,
                end_ms: 40,
                participants: 1,
            },
        );
        assert_eq!(r.peak(0, 100), 8);
        assert_eq!(r.peak(30, 40), 1);
        assert_eq!(r.peak(20, 25), 7);
        let back: Reservations = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.peak(0, 100), 8);
    }
}
