//! A node's reservations, indexed so that "the most participants reserved
//! at any instant of `[start, end)`" costs O(log steps), never a sweep over
//! every reservation the node holds, and so does adding or removing one.
//! The index is a treap in one arena (indexes, not pointers).
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

use super::profile::Profile;
use super::Reservation;

const NIL: u32 = u32::MAX;

/// One step in the treap: its instant and change, and what its subtree
/// adds up to.
#[derive(Debug, Clone)]
struct StepNode {
    time: u64,
    delta: i64,
    /// Heap order of the treap (a hash of the time: no randomness needed).
    prio: u64,
    left: u32,
    right: u32,
    /// Earliest and latest instant in the subtree.
    min_t: u64,
    max_t: u64,
    /// Sum of the subtree's changes, and the highest running sum over its
    /// steps in time order (the peak the subtree reaches above its start).
    sum: i64,
    max_prefix: i64,
}

/// The step function: instants with their changes in a treap ordered by
/// time (arena-allocated), each subtree keeping its sum and its highest
/// running sum. Adding a step, the level at an instant and the peak over a
/// window each cost O(log steps), whatever the order reservations arrive
/// in; a sorted array paid a shift and a re-levelling of every later step
/// for each one.
#[derive(Debug, Clone)]
struct Steps {
    nodes: Vec<StepNode>,
    free: Vec<u32>,
    root: u32,
    len: usize,
}

impl Default for Steps {
    fn default() -> Self {
        Steps {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            len: 0,
        }
    }
}

/// A running sum summary of consecutive steps: their total and the highest
/// running sum within them.
#[derive(Debug, Clone, Copy)]
struct Run {
    sum: i64,
    max_prefix: i64,
}

impl Run {
    fn then(self, next: Run) -> Run {
        Run {
            sum: self.sum + next.sum,
            max_prefix: self.max_prefix.max(self.sum + next.max_prefix),
        }
    }
}

fn join(a: Option<Run>, b: Option<Run>) -> Option<Run> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.then(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn priority(t: u64) -> u64 {
    // SplitMix64's finaliser: well spread, the same on every replica.
    let mut z = t.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Steps {
    fn run(&self, n: u32) -> Option<Run> {
        (n != NIL).then(|| {
            let x = &self.nodes[n as usize];
            Run {
                sum: x.sum,
                max_prefix: x.max_prefix,
            }
        })
    }

    /// Recomputes `n`'s subtree summary from its children.
    fn update(&mut self, n: u32) {
        let (l, r) = {
            let x = &self.nodes[n as usize];
            (x.left, x.right)
        };
        let own = {
            let x = &self.nodes[n as usize];
            Run {
                sum: x.delta,
                max_prefix: x.delta,
            }
        };
        let all = join(join(self.run(l), Some(own)), self.run(r)).expect("own step");
        let min_t = if l == NIL {
            self.nodes[n as usize].time
        } else {
            self.nodes[l as usize].min_t
        };
        let max_t = if r == NIL {
            self.nodes[n as usize].time
        } else {
            self.nodes[r as usize].max_t
        };
        let x = &mut self.nodes[n as usize];
        x.sum = all.sum;
        x.max_prefix = all.max_prefix;
        x.min_t = min_t;
        x.max_t = max_t;
    }

    /// Splits `n` into the steps before `t` and those at or after it.
    fn split(&mut self, n: u32, t: u64) -> (u32, u32) {
        if n == NIL {
            return (NIL, NIL);
        }
        if self.nodes[n as usize].time < t {
            let (a, b) = self.split(self.nodes[n as usize].right, t);
            self.nodes[n as usize].right = a;
            self.update(n);
            (n, b)
        } else {
            let (a, b) = self.split(self.nodes[n as usize].left, t);
            self.nodes[n as usize].left = b;
            self.update(n);
            (a, n)
        }
    }

    /// Joins two treaps, every step of `a` before every step of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.update(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.update(b);
            b
        }
    }

    fn alloc(&mut self, time: u64, delta: i64) -> u32 {
        let node = StepNode {
            time,
            delta,
            prio: priority(time),
            left: NIL,
            right: NIL,
            min_t: time,
            max_t: time,
            sum: delta,
            max_prefix: delta,
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// Adds `delta` to the step at time `t`; a step whose changes cancel
    /// out is removed.
    fn add(&mut self, t: u64, delta: i64) {
        let (before, rest) = self.split(self.root, t);
        let (mut at, after) = match t.checked_add(1) {
            Some(next) => self.split(rest, next),
            None => (rest, NIL),
        };
        if at == NIL {
            at = self.alloc(t, delta);
            self.len += 1;
        } else {
            self.nodes[at as usize].delta += delta;
            if self.nodes[at as usize].delta == 0 {
                self.free.push(at);
                self.len -= 1;
                at = NIL;
            } else {
                self.update(at);
            }
        }
        let left = self.merge(before, at);
        self.root = self.merge(left, after);
        if self.root == NIL {
            // Nothing reserved: give the memory back.
            self.nodes.clear();
            self.free.clear();
        }
    }

    /// The level at the instant `t`: the sum of every change at or before it.
    fn level_at(&self, t: u64) -> i64 {
        let mut acc = 0;
        let mut n = self.root;
        while n != NIL {
            let x = &self.nodes[n as usize];
            if x.time <= t {
                acc += self.run(x.left).map_or(0, |r| r.sum) + x.delta;
                n = x.right;
            } else {
                n = x.left;
            }
        }
        acc
    }

    /// The running-sum summary of the steps with `lo <= time <= hi`.
    fn range(&self, n: u32, lo: u64, hi: u64) -> Option<Run> {
        if n == NIL {
            return None;
        }
        let x = &self.nodes[n as usize];
        if x.max_t < lo || x.min_t > hi {
            return None;
        }
        if lo <= x.min_t && x.max_t <= hi {
            return self.run(n);
        }
        let own = (lo <= x.time && x.time <= hi).then_some(Run {
            sum: x.delta,
            max_prefix: x.delta,
        });
        join(
            join(self.range(x.left, lo, hi), own),
            self.range(x.right, lo, hi),
        )
    }

    /// The highest level at any instant of `[start, end)`.
    fn peak(&self, start: u64, end: u64) -> i64 {
        let before = self.level_at(start);
        let inside = match (start.checked_add(1), end.checked_sub(1)) {
            (Some(lo), Some(hi)) if lo <= hi => self.range(self.root, lo, hi),
            _ => None,
        };
        before.max(inside.map_or(before, |r| before + r.max_prefix))
    }

    /// The earliest and latest step, if any.
    fn span(&self) -> Option<(u64, u64)> {
        (self.root != NIL).then(|| {
            let x = &self.nodes[self.root as usize];
            (x.min_t, x.max_t)
        })
    }

    /// The highest level at any instant (0 when nothing is reserved).
    fn max_level(&self) -> i64 {
        self.run(self.root).map_or(0, |r| r.max_prefix.max(0))
    }
}

/// Reservations by meeting id, with the peak index and its coarse profile
/// kept in step.
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    by_meeting: BTreeMap<u64, Reservation>,
    steps: Steps,
    profile: Profile,
}

impl Reservations {
    /// Holds `r` for `meeting`, replacing what it held before.
    pub fn insert(&mut self, meeting: u64, r: Reservation) -> Option<Reservation> {
        let old = self.remove(&meeting);
        self.change(&r, 1);
        self.by_meeting.insert(meeting, r);
        old
    }

    pub fn remove(&mut self, meeting: &u64) -> Option<Reservation> {
        let r = self.by_meeting.remove(meeting)?;
        self.change(&r, -1);
        Some(r)
    }

    /// Adds (`sign` 1) or takes away (-1) `r`'s participants over its window.
    fn change(&mut self, r: &Reservation, sign: i64) {
        if r.end_ms <= r.start_ms || r.participants == 0 {
            return;
        }
        let p = sign * i64::from(r.participants);
        self.steps.add(r.start_ms, p);
        self.steps.add(r.end_ms, -p);
        let steps = &self.steps;
        self.profile
            .changed(r.start_ms, r.end_ms, p, steps.span(), |start, end| {
                steps.peak(start, end).clamp(0, i64::from(u32::MAX)) as u32
            });
    }

    /// Bounds on [`Reservations::peak`] over `[start, end)` from the coarse
    /// profile, in a few array reads: a lower bound, and an upper bound
    /// unless the window reaches past the profile.
    pub fn peak_bounds(&self, start_ms: u64, end_ms: u64) -> (u32, Option<u32>) {
        self.profile.bounds(start_ms, end_ms)
    }

    /// The most participants reserved at any one instant of `[start, end)`.
    pub fn peak(&self, start_ms: u64, end_ms: u64) -> u32 {
        if end_ms <= start_ms {
            return 0;
        }
        // The level at the window's start, then every level a step inside
        // the window reaches.
        self.steps
            .peak(start_ms, end_ms)
            .clamp(0, i64::from(u32::MAX)) as u32
    }

    /// The most participants reserved at any instant at all: an upper
    /// bound on every window's peak, in O(1), which lets placement skip
    /// the exact question for nodes with room to spare.
    pub fn peak_all(&self) -> u32 {
        self.steps.max_level().clamp(0, i64::from(u32::MAX)) as u32
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
        self.steps.len
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
    use crate::model::SLOT_MS;
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
            let steps = &index.steps;
            let rebuilt = Profile::rebuilt(steps.span(), |s, e| steps.peak(s, e) as u32);
            prop_assert!(index.profile.same_as(&rebuilt), "{:?} != {:?}", index.profile, rebuilt);
            if live.is_empty() {
                prop_assert_eq!(index.step_count(), 0, "an empty index keeps no steps");
            }
        }
    }

    proptest! {
        /// The profile, kept in step change by change over hours of
        /// reservations, equals one built afresh, and its bounds hold the
        /// exact peak of any window.
        #[test]
        fn the_profile_follows_every_change_and_bounds_the_peak(
            ops in prop::collection::vec(
                (0u64..40, 0u64..16 * 3_600_000, 1u64..4 * 3_600_000, 1u32..50, any::<bool>()),
                1..80,
            ),
            queries in prop::collection::vec((0u64..20 * 3_600_000, 1u64..10 * 3_600_000), 1..20),
        ) {
            let base = 1_800_000_000_000u64;
            let mut index = Reservations::default();
            for (meeting, start, len, p, remove) in ops {
                if remove {
                    index.remove(&meeting);
                } else {
                    index.insert(meeting, Reservation {
                        start_ms: base + start,
                        end_ms: base + start + len,
                        participants: p,
                    });
                }
                let steps = &index.steps;
                let rebuilt = Profile::rebuilt(steps.span(), |s, e| steps.peak(s, e) as u32);
                prop_assert!(index.profile.same_as(&rebuilt), "{:?} != {:?}", index.profile, rebuilt);
            }
            for (s, len) in queries {
                let (start, end) = (base + s, base + s + len);
                let exact = index.peak(start, end);
                let (lower, upper) = index.peak_bounds(start, end);
                prop_assert!(lower <= exact, "lower {} > exact {}", lower, exact);
                if let Some(upper) = upper {
                    prop_assert!(exact <= upper, "exact {} > upper {}", exact, upper);
                }
            }
        }
    }

    #[test]
    fn the_profile_bounds_a_window_by_its_slots() {
        let mut r = Reservations::default();
        let hour = 3_600_000;
        let t0 = 1_000 * SLOT_MS;
        // 10 over the first hour, 30 over a quarter inside the second.
        r.insert(
            1,
            Reservation {
                start_ms: t0,
                end_ms: t0 + hour,
                participants: 10,
            },
        );
        r.insert(
            2,
            Reservation {
                start_ms: t0 + hour + 60_000,
                end_ms: t0 + hour + 120_000,
                participants: 30,
            },
        );
        // Wholly inside the first hour: exact.
        assert_eq!(r.peak_bounds(t0, t0 + hour), (10, Some(10)));
        // A window that only touches the second reservation's slot: the
        // slot bounds it from above, not from below.
        assert_eq!(
            r.peak_bounds(t0 + hour + 120_000, t0 + hour + 180_000),
            (0, Some(30))
        );
        assert_eq!(r.peak(t0 + hour + 120_000, t0 + hour + 180_000), 0);
        // Past the last step nothing is reserved, however far it reaches.
        assert_eq!(r.peak_bounds(t0 + 3 * hour, t0 + 300 * hour), (0, Some(0)));
        // A reservation beyond the profile leaves windows reaching it open.
        r.insert(
            3,
            Reservation {
                start_ms: t0 + 20 * hour,
                end_ms: t0 + 21 * hour,
                participants: 5,
            },
        );
        assert_eq!(r.peak_bounds(t0, t0 + 24 * hour), (30, None));
        assert_eq!(r.peak(t0, t0 + 24 * hour), 30);
        // Removing the earliest moves the profile on.
        r.remove(&1);
        r.remove(&2);
        assert_eq!(r.peak_bounds(t0 + 20 * hour, t0 + 21 * hour), (5, Some(5)));
        r.remove(&3);
        assert_eq!(r.peak_bounds(0, u64::MAX), (0, Some(0)));
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
