//! A node's reservations, indexed so that "the most participants reserved
//! at any instant of `[start, end)`" costs O(log time) per question instead
//! of a sweep over every reservation the node holds.
//!
//! The reserved load is a step function of time: each reservation adds
//! `+p` at its start and `-p` at its end (windows are half-open). The steps
//! live in a sparse segment tree over milliseconds `[0, 2^42)` (to the year
//! 2109); each tree node keeps the sum of the steps under it and the best
//! prefix sum, so a window's peak is `load just before it + best prefix
//! inside it`. Tree nodes whose steps cancel out are freed, so memory
//! follows the reservations held now, not those ever made. Answers are
//! exact (no time slots, no rounding at the edges).
//!
//! Only the map by meeting is serialised; the tree is rebuilt on load, and
//! equality compares the map, so two replicas that built their trees in a
//! different order still compare equal.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Reservation;

const TIME_BITS: u32 = 42;
const MAX_TIME: u64 = (1 << TIME_BITS) - 1;
const NONE: u32 = 0;

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// Sum of the steps under this cell.
    sum: i64,
    /// Largest prefix sum of those steps, in time order (0 for none).
    best: i64,
    children: [u32; 2],
}

/// The step function; cell 0 is the root (never a child, so 0 means "none").
#[derive(Debug, Clone)]
struct StepTree {
    cells: Vec<Cell>,
    free: Vec<u32>,
}

impl Default for StepTree {
    fn default() -> Self {
        StepTree {
            cells: vec![Cell::default()],
            free: Vec::new(),
        }
    }
}

/// (sum, best prefix) of two adjacent ranges, left then right.
fn combine(l: (i64, i64), r: (i64, i64)) -> (i64, i64) {
    (l.0 + r.0, l.1.max(l.0 + r.1))
}

impl StepTree {
    fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.cells[i as usize] = Cell::default();
                i
            }
            None => {
                self.cells.push(Cell::default());
                (self.cells.len() - 1) as u32
            }
        }
    }

    /// Adds `delta` to the step at time `t`.
    fn add(&mut self, t: u64, delta: i64) {
        let t = t.min(MAX_TIME);
        let mut path = [0u32; TIME_BITS as usize + 1];
        let mut cell = 0u32;
        for level in 0..TIME_BITS {
            path[level as usize] = cell;
            let bit = ((t >> (TIME_BITS - 1 - level)) & 1) as usize;
            let mut next = self.cells[cell as usize].children[bit];
            if next == NONE {
                next = self.alloc();
                self.cells[cell as usize].children[bit] = next;
            }
            cell = next;
        }
        path[TIME_BITS as usize] = cell;
        let leaf = &mut self.cells[cell as usize];
        leaf.sum += delta;
        leaf.best = leaf.sum.max(0);
        // Back up to the root: recompute, and free cells that became empty.
        for level in (0..TIME_BITS).rev() {
            let parent = path[level as usize] as usize;
            let bit = ((t >> (TIME_BITS - 1 - level)) & 1) as usize;
            let child = self.cells[parent].children[bit];
            let c = self.cells[child as usize];
            if c.sum == 0 && c.best == 0 && c.children == [NONE, NONE] {
                self.cells[parent].children[bit] = NONE;
                self.free.push(child);
            }
            let [l, r] = self.cells[parent].children;
            let part = |i: u32| {
                if i == NONE {
                    (0, 0)
                } else {
                    let c = &self.cells[i as usize];
                    (c.sum, c.best)
                }
            };
            let (sum, best) = combine(part(l), part(r));
            let p = &mut self.cells[parent];
            p.sum = sum;
            p.best = best;
        }
    }

    /// (sum, best prefix) of the steps at times in `[lo, hi]`.
    fn range(&self, lo: u64, hi: u64) -> (i64, i64) {
        if lo > hi {
            return (0, 0);
        }
        self.range_in(0, 0, MAX_TIME, lo, hi)
    }

    fn range_in(&self, cell: u32, from: u64, to: u64, lo: u64, hi: u64) -> (i64, i64) {
        let c = &self.cells[cell as usize];
        if lo <= from && to <= hi {
            return (c.sum, c.best);
        }
        let mid = from + (to - from) / 2;
        let mut out = (0, 0);
        if lo <= mid && c.children[0] != NONE {
            out = self.range_in(c.children[0], from, mid, lo, hi);
        }
        if hi > mid && c.children[1] != NONE {
            out = combine(out, self.range_in(c.children[1], mid + 1, to, lo, hi));
        }
        out
    }

    fn live_cells(&self) -> usize {
        self.cells.len() - self.free.len()
    }
}

/// Reservations by meeting id, with the peak index kept in step.
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    by_meeting: BTreeMap<u64, Reservation>,
    steps: StepTree,
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
        let (before, _) = self.steps.range(0, start_ms);
        let (_, inside) = self.steps.range(start_ms + 1, end_ms - 1);
        (before + inside).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Participants reserved at the instant `t_ms`.
    pub fn at(&self, t_ms: u64) -> u32 {
        let (sum, _) = self.steps.range(0, t_ms);
        sum.clamp(0, i64::from(u32::MAX)) as u32
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

    /// Tree cells in use (memory follows the reservations held).
    pub fn index_cells(&self) -> usize {
        self.steps.live_cells()
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
            rs in prop::collection::vec((0u64..200, 1u64..80, 1u32..50), 0..40),
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
            }
            if live.is_empty() {
                prop_assert_eq!(index.index_cells(), 1, "an empty index frees its cells");
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
