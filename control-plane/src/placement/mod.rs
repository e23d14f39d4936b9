//! Pure placement engine.
//!
//! ```text
//!   PlacementRequest + nodes + rng  ──place()──▶  Decision
//!        (window, size, allowed regions,          (considered, rejections with
//!         home region, strategy, now)              reasons, candidates, choice)
//! ```
//!
//! Hard filters run first — residency, node state, free capacity over the
//! meeting's whole window after existing reservations — then the survivors are
//! scored. A meeting no single node has room for is cascaded (M4): split
//! into shares over several allowed nodes, home region first and largest
//! free capacity first, so it spans as few nodes as it can. The engine never reads a clock or a socket: `now` and the random
//! seed come in, so every replica that runs it on the same state gets the same
//! answer. That is what lets the replicated state machine run placement inside
//! `apply`.

mod rng;

pub use rng::SplitMix64;

use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::model::{NodeState, NodeTable};

/// How many individual rejections a decision keeps; the rest are only counted
/// per reason, so a decision stays small on a 10,000-node cluster.
pub const MAX_LISTED_REJECTIONS: usize = 32;
/// How many of the best candidates a decision lists.
pub const MAX_LISTED_CANDIDATES: usize = 5;
/// Most nodes one meeting may span. Every pair of them is linked, so the
/// links of one meeting grow with the square of this.
pub const MAX_CASCADE_NODES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Lowest utilisation over the window wins (ties: home region, then node id).
    #[default]
    LeastLoaded,
    /// Two random feasible nodes, the less loaded wins: spreads load without
    /// every placement racing for the same emptiest node.
    PowerOfTwo,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoaded => "least-loaded",
            Strategy::PowerOfTwo => "power-of-two",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "least-loaded" => Ok(Strategy::LeastLoaded),
            "power-of-two" => Ok(Strategy::PowerOfTwo),
            other => Err(format!(
                "unknown placement strategy {other:?} (expected least-loaded or power-of-two)"
            )),
        }
    }
}

/// What caused a placement to be computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    Scheduled,
    /// The node the meeting was on lost its lease.
    NodeDown {
        node: String,
    },
    /// The meeting was unplaced and a node became available again.
    Retry,
    /// An operator moved the meeting off `node` (`meeting move`).
    Move {
        node: String,
    },
    /// `node` was drained with evacuation.
    Evacuate {
        node: String,
    },
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::NodeDown { .. } => "node_down",
            Trigger::Retry => "retry",
            Trigger::Move { .. } => "move",
            Trigger::Evacuate { .. } => "evacuate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    OutsideResidency,
    Draining,
    Down,
    InsufficientCapacity,
    /// The node the meeting is being moved off.
    MovingOff,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::OutsideResidency,
        RejectReason::Draining,
        RejectReason::Down,
        RejectReason::InsufficientCapacity,
        RejectReason::MovingOff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutsideResidency => "outside_residency",
            RejectReason::Draining => "draining",
            RejectReason::Down => "down",
            RejectReason::InsufficientCapacity => "insufficient_capacity",
            RejectReason::MovingOff => "moving_off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Node ids and regions are short: kept inline, a decision listing
    /// dozens of rejections allocates nothing for them. They serialise as
    /// plain strings.
    pub node: CompactString,
    pub region: CompactString,
    pub reason: RejectReason,
    /// Free participants over the window, for capacity rejections.
    pub free: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub node: CompactString,
    pub region: CompactString,
    /// Utilisation over the window after placing the meeting, per mille.
    pub score_permille: u32,
    pub in_home_region: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Refusal {
    /// No node at all lives in the allowed regions.
    NoNodeInResidency,
    /// Nodes exist in the allowed regions but none is ready.
    NoReadyNode,
    /// Ready nodes exist but not even all of them together (up to
    /// [`MAX_CASCADE_NODES`]) have room over the whole window.
    NoCapacity { needed: u32, largest_free: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoNodeInResidency => write!(f, "no media node in the allowed regions"),
            Refusal::NoReadyNode => {
                write!(
                    f,
                    "every media node in the allowed regions is draining or down"
                )
            }
            Refusal::NoCapacity {
                needed,
                largest_free,
            } => write!(
                f,
                "the ready media nodes in the allowed regions have no room for {needed} \
                 participants over the whole window, even cascaded (largest free: {largest_free} on one node)"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    Placed {
        node: String,
        /// The node's region when it was chosen.
        region: String,
        score_permille: u32,
    },
    /// No single node had room: the meeting spans these nodes.
    Cascaded {
        shares: Vec<ShareChoice>,
    },
    Refused {
        refusal: Refusal,
    },
}

/// One node's part of a cascaded placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareChoice {
    pub node: String,
    pub region: String,
    pub participants: u32,
}

/// A placement and everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub at_ms: u64,
    pub trigger: Trigger,
    pub strategy: Strategy,
    pub allowed_regions: Vec<String>,
    pub home_region: String,
    pub considered: u32,
    pub candidates: Vec<Candidate>,
    pub rejections: Vec<Rejection>,
    pub rejection_counts: BTreeMap<RejectReason, u32>,
    pub outcome: Outcome,
}

impl Decision {
    /// The chosen node, or the first of a cascade.
    pub fn chosen(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Placed { node, .. } => Some(node),
            Outcome::Cascaded { shares } => shares.first().map(|s| s.node.as_str()),
            Outcome::Refused { .. } => None,
        }
    }

    /// Every chosen node with its region at decision time and the
    /// participants it takes; empty when refused.
    pub fn shares(&self, participants: u32) -> Vec<ShareChoice> {
        match &self.outcome {
            Outcome::Placed { node, region, .. } => vec![ShareChoice {
                node: node.clone(),
                region: region.clone(),
                participants,
            }],
            Outcome::Cascaded { shares } => shares.clone(),
            Outcome::Refused { .. } => Vec::new(),
        }
    }

    /// Regions of every chosen node at decision time.
    pub fn chosen_regions(&self) -> Vec<&str> {
        match &self.outcome {
            Outcome::Placed { region, .. } => vec![region],
            Outcome::Cascaded { shares } => shares.iter().map(|s| s.region.as_str()).collect(),
            Outcome::Refused { .. } => Vec::new(),
        }
    }
}

/// One placement question.
#[derive(Debug, Clone)]
pub struct PlacementRequest<'a> {
    pub participants: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub now_ms: u64,
    /// Regions whose nodes may carry the meeting (the residency region and
    /// every region nested inside it).
    pub allowed_regions: &'a BTreeSet<String>,
    /// Preferred region: filled first, other allowed regions take overflow.
    pub home_region: &'a str,
    pub strategy: Strategy,
    pub trigger: Trigger,
    /// A node that must not be chosen (the one a meeting is moving off).
    pub exclude: Option<&'a str>,
}

/// Runs the filters and the scoring over the node table and returns the
/// decision: the same decision [`reference::place_by_definition`] returns,
/// without building, or even exactly scoring, a candidate per node.
///
/// One pass over the dense rows applies the filters. For a ready node in
/// the residency, the row bounds what the window can hold: at least the
/// reported load (when the window includes now), at most that or the most
/// the node ever reserved at once. A node whose bounds settle the question
/// costs no reservation lookup; only the undecided ones are checked
/// exactly. Scoring then needs exact figures only for the nodes whose
/// lower bound could still rank among the listed best
/// ([`MAX_LISTED_CANDIDATES`]): at most five upper bounds fix that line.
pub fn place(req: &PlacementRequest<'_>, table: &NodeTable, rng: &mut SplitMix64) -> Decision {
    let allowed = table.region_mask(req.allowed_regions);
    let home = table.region_id(req.home_region);
    let moving_off = req.exclude.and_then(|id| table.position(id));
    let needed = req.participants;
    // The reported load counts only for a window that includes now.
    let load_counts = req.start_ms <= req.now_ms && req.now_ms < req.end_ms;
    let exact_used = |i: usize| table.at(i).used_over(req.start_ms, req.end_ms, req.now_ms);

    let mut rejections = Rejections::default();
    let mut in_residency = 0u32;
    let mut ready_in_residency = 0u32;
    // Least-loaded keeps only the nodes that could still be listed (see
    // below), a few dozen at most; power-of-two samples among them all.
    let keep_all = req.strategy == Strategy::PowerOfTwo;
    let mut feasible: Vec<Feasible> = Vec::with_capacity(if keep_all { table.len() } else { 64 });
    let mut best_upper = Smallest::default();

    for (i, row) in table.rows().iter().enumerate() {
        if !allowed.contains(row.region) {
            rejections.add(table, i, RejectReason::OutsideResidency, None);
            continue;
        }
        in_residency += 1;
        if moving_off == Some(i) {
            rejections.add(table, i, RejectReason::MovingOff, None);
            continue;
        }
        match row.state {
            NodeState::Draining => {
                rejections.add(table, i, RejectReason::Draining, None);
                continue;
            }
            NodeState::Down => {
                rejections.add(table, i, RejectReason::Down, None);
                continue;
            }
            NodeState::Ready => {}
        }
        ready_in_residency += 1;
        let base = if load_counts {
            row.load_participants
        } else {
            0
        };
        let mut bounds = Bounds {
            lower: base,
            upper: row.peak_reserved_ever.max(base),
            refined: false,
        };
        if row.capacity.saturating_sub(bounds.upper) < needed {
            // The row leaves the fit open: the profile, then the index.
            if row.capacity.saturating_sub(bounds.lower) >= needed {
                bounds.refine(table, i, req, base);
            }
            if row.capacity.saturating_sub(bounds.lower) < needed {
                // Short of room whatever the window holds; the exact
                // figure only for a rejection that is listed.
                let free = rejections
                    .lists_more()
                    .then(|| row.capacity.saturating_sub(exact_used(i)));
                rejections.add(table, i, RejectReason::InsufficientCapacity, free);
                continue;
            }
            if row.capacity.saturating_sub(bounds.upper) < needed {
                let used = exact_used(i);
                let free = row.capacity.saturating_sub(used);
                if free < needed {
                    rejections.add(table, i, RejectReason::InsufficientCapacity, Some(free));
                    continue;
                }
                (bounds.lower, bounds.upper) = (used, used);
            }
        }
        let outside_home = Some(row.region) != home;
        let key = |used: u32| rank_key(outside_home, score(used, needed, row.capacity), i);
        if !keep_all {
            // Five nodes already have an exact key no higher than the
            // fifth best upper bound, and the line only falls: a node
            // ranked above it by its lower bound can never be listed.
            // Most nodes stop here, so without a division.
            let line = best_upper.bound();
            let above = |used| ranks_above(outside_home, used, needed, row.capacity, i, line);
            if above(bounds.lower) {
                continue;
            }
            // It might be: tighter bounds spare most exact lookups later.
            if bounds.lower < bounds.upper && !bounds.refined {
                bounds.refine(table, i, req, base);
                if above(bounds.lower) {
                    continue;
                }
            }
        }
        let lower_key = key(bounds.lower);
        let upper_key = if bounds.upper == bounds.lower {
            lower_key
        } else {
            key(bounds.upper)
        };
        best_upper.offer(upper_key);
        feasible.push(Feasible {
            position: i,
            outside_home,
            lower: lower_key,
            upper: upper_key,
        });
    }

    // The exact rank key of a feasible node.
    let exact_key = |f: &Feasible| {
        if f.lower == f.upper {
            f.upper
        } else {
            let capacity = table.rows()[f.position].capacity;
            rank_key(
                f.outside_home,
                score(exact_used(f.position), needed, capacity),
                f.position,
            )
        }
    };
    let listed: Vec<u64> = match req.strategy {
        _ if feasible.is_empty() => Vec::new(),
        Strategy::LeastLoaded => {
            // The listed best all have an exact key no higher than the
            // fifth best upper bound, so a node whose lower bound is above
            // it cannot be among them.
            let line = best_upper.bound();
            feasible.retain(|f| f.lower <= line);
            // Lowest bound first: once the next bound is above the fifth
            // best exact key, no node left can enter the list.
            feasible.sort_unstable_by_key(|f| f.lower);
            let mut best = Smallest::default();
            for f in &feasible {
                if f.lower > best.bound() {
                    break;
                }
                best.offer(exact_key(f));
            }
            best.keys().to_vec()
        }
        Strategy::PowerOfTwo => {
            // Sample only among the best tier (home region when it has
            // room), so the home-region preference holds for this strategy
            // too.
            let best_tier = feasible.iter().map(|f| f.outside_home).min();
            let tier: Vec<&Feasible> = feasible
                .iter()
                .filter(|f| Some(f.outside_home) == best_tier)
                .collect();
            let a = exact_key(tier[rng.below(tier.len())]);
            let b = exact_key(tier[rng.below(tier.len())]);
            let mut two = vec![a.min(b), a.max(b)];
            two.dedup();
            two
        }
    };
    let candidates: Vec<Candidate> = listed
        .iter()
        .map(|&key| {
            let node = table.at(key_position(key));
            Candidate {
                node: CompactString::from(node.id.as_str()),
                region: CompactString::from(node.region.as_str()),
                score_permille: key_score(key),
                in_home_region: key & OUTSIDE_HOME == 0,
            }
        })
        .collect();

    let (cascade, largest_free) = if candidates.is_empty() && ready_in_residency > 0 {
        // Nothing fits whole: every ready node in the residency is partly
        // free at best, and the cascade (or the refusal) needs each one's
        // exact room. Rare, so a second pass.
        let mut partial = Vec::new();
        let mut largest_free = 0u32;
        for (i, row) in table.rows().iter().enumerate() {
            if !allowed.contains(row.region)
                || moving_off == Some(i)
                || row.state != NodeState::Ready
            {
                continue;
            }
            let free = row.capacity.saturating_sub(exact_used(i));
            largest_free = largest_free.max(free);
            if free > 0 {
                partial.push((free, i));
            }
        }
        (plan_cascade(req, table, home, partial), largest_free)
    } else {
        (None, 0)
    };
    if let Some(shares) = &cascade {
        // The cascade's nodes were rejected only for holding less than the
        // whole meeting; they are the answer now, not rejections.
        for s in shares {
            rejections.counts[RejectReason::InsufficientCapacity as usize] -= 1;
            rejections.listed.retain(|r| r.node != s.node);
        }
    }

    let outcome = match (candidates.first(), cascade) {
        (Some(c), _) => Outcome::Placed {
            node: c.node.to_string(),
            region: c.region.to_string(),
            score_permille: c.score_permille,
        },
        (None, Some(shares)) => Outcome::Cascaded { shares },
        (None, None) => Outcome::Refused {
            refusal: if in_residency == 0 {
                Refusal::NoNodeInResidency
            } else if ready_in_residency == 0 {
                Refusal::NoReadyNode
            } else {
                Refusal::NoCapacity {
                    needed,
                    largest_free,
                }
            },
        },
    };

    Decision {
        at_ms: req.now_ms,
        trigger: req.trigger.clone(),
        strategy: req.strategy,
        allowed_regions: req.allowed_regions.iter().cloned().collect(),
        home_region: req.home_region.to_string(),
        considered: table.len() as u32,
        candidates,
        rejection_counts: rejections.counts(),
        rejections: rejections.listed,
        outcome,
    }
}

/// Utilisation after placing `needed` on a node using `used` of `capacity`,
/// per mille.
fn score(used: u32, needed: u32, capacity: u32) -> u32 {
    let after = u64::from(used) + u64::from(needed);
    (after * 1000 / u64::from(capacity.max(1))) as u32
}

/// Ranking as one integer: home region first, then lowest utilisation, then
/// node id (table position is id order). A total order, so the choice never
/// depends on how the nodes were scanned.
const OUTSIDE_HOME: u64 = 1 << 63;

fn rank_key(outside_home: bool, score_permille: u32, position: usize) -> u64 {
    // Feasible scores are at most 1000 and positions fit 32 bits.
    (if outside_home { OUTSIDE_HOME } else { 0 })
        | (u64::from(score_permille) << 32)
        | position as u64
}

/// Whether `rank_key(outside_home, score(used, needed, capacity),
/// position)` is above `line`, by multiplication instead of the division
/// a score costs.
fn ranks_above(
    outside_home: bool,
    used: u32,
    needed: u32,
    capacity: u32,
    position: usize,
    line: u64,
) -> bool {
    if line == u64::MAX {
        return false;
    }
    let line_outside = line & OUTSIDE_HOME != 0;
    if outside_home != line_outside {
        return outside_home;
    }
    // score = floor(after * 1000 / capacity), compared with the line's.
    let line_score = u64::from(key_score(line));
    let after_permille = (u64::from(used) + u64::from(needed)) * 1000;
    let capacity = u64::from(capacity.max(1));
    if after_permille >= (line_score + 1) * capacity {
        true
    } else if after_permille < line_score * capacity {
        false
    } else {
        position > key_position(line)
    }
}

fn key_score(key: u64) -> u32 {
    ((key & !OUTSIDE_HOME) >> 32) as u32
}

fn key_position(key: u64) -> usize {
    (key & u64::from(u32::MAX)) as usize
}

/// Bounds on what a node uses over the window: the row's first, then the
/// reservation profile's.
struct Bounds {
    lower: u32,
    upper: u32,
    refined: bool,
}

impl Bounds {
    /// Narrows the bounds with node `i`'s reservation profile; `base` is
    /// the reported load when it counts (0 otherwise).
    fn refine(&mut self, table: &NodeTable, i: usize, req: &PlacementRequest<'_>, base: u32) {
        let (lower, upper) = table
            .at(i)
            .reservations
            .peak_bounds(req.start_ms, req.end_ms);
        self.lower = self.lower.max(lower.max(base));
        if let Some(upper) = upper {
            self.upper = self.upper.min(upper.max(base));
        }
        self.refined = true;
    }
}

/// A node with room for the whole meeting, with its rank key's bounds.
struct Feasible {
    position: usize,
    outside_home: bool,
    lower: u64,
    upper: u64,
}

/// The [`MAX_LISTED_CANDIDATES`] smallest keys offered, in order.
#[derive(Default)]
struct Smallest {
    keys: [u64; MAX_LISTED_CANDIDATES],
    len: usize,
}

impl Smallest {
    fn offer(&mut self, key: u64) {
        if self.len == MAX_LISTED_CANDIDATES {
            if key >= self.keys[self.len - 1] {
                return;
            }
            self.len -= 1;
        }
        let at = self.keys[..self.len].partition_point(|k| *k < key);
        self.keys.copy_within(at..self.len, at + 1);
        self.keys[at] = key;
        self.len += 1;
    }

    /// The highest key kept once full; before that, anything may still
    /// make the list.
    fn bound(&self) -> u64 {
        if self.len == MAX_LISTED_CANDIDATES {
            self.keys[self.len - 1]
        } else {
            u64::MAX
        }
    }

    fn keys(&self) -> &[u64] {
        &self.keys[..self.len]
    }
}

/// Rejections counted per reason, the first [`MAX_LISTED_REJECTIONS`]
/// listed in node order.
struct Rejections {
    listed: Vec<Rejection>,
    counts: [u32; RejectReason::ALL.len()],
}

impl Default for Rejections {
    fn default() -> Self {
        Rejections {
            listed: Vec::with_capacity(MAX_LISTED_REJECTIONS),
            counts: [0; RejectReason::ALL.len()],
        }
    }
}

impl Rejections {
    fn lists_more(&self) -> bool {
        self.listed.len() < MAX_LISTED_REJECTIONS
    }

    fn add(&mut self, table: &NodeTable, position: usize, reason: RejectReason, free: Option<u32>) {
        self.counts[reason as usize] += 1;
        if self.lists_more() {
            let node = table.at(position);
            self.listed.push(Rejection {
                node: CompactString::from(node.id.as_str()),
                region: CompactString::from(node.region.as_str()),
                reason,
                free,
            });
        }
    }

    fn counts(&self) -> BTreeMap<RejectReason, u32> {
        RejectReason::ALL
            .iter()
            .filter(|r| self.counts[**r as usize] > 0)
            .map(|r| (*r, self.counts[*r as usize]))
            .collect()
    }
}

/// Splits a meeting over the partly free nodes (free room, table position):
/// home region first, then the most free capacity, then node id (a total
/// order, so every replica plans the same cascade). None when they cannot
/// hold it together.
fn plan_cascade(
    req: &PlacementRequest<'_>,
    table: &NodeTable,
    home: Option<u16>,
    mut partial: Vec<(u32, usize)>,
) -> Option<Vec<ShareChoice>> {
    let rows = table.rows();
    partial.sort_by_key(|&(free, i)| (Some(rows[i].region) != home, std::cmp::Reverse(free), i));
    let mut left = req.participants;
    let mut shares = Vec::new();
    for (free, i) in partial.into_iter().take(MAX_CASCADE_NODES) {
        if left == 0 {
            break;
        }
        let take = free.min(left);
        left -= take;
        let node = table.at(i);
        shares.push(ShareChoice {
            node: node.id.clone(),
            region: node.region.clone(),
            participants: take,
        });
    }
    (left == 0 && shares.len() > 1).then_some(shares)
}

#[cfg(test)]
pub mod reference;
#[cfg(test)]
mod tests;
