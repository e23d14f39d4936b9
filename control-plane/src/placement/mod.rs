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

use serde::{Deserialize, Serialize};

use crate::state::{Node, NodeState};

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
    pub node: String,
    pub region: String,
    pub reason: RejectReason,
    /// Free participants over the window, for capacity rejections.
    pub free: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub node: String,
    pub region: String,
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

/// Runs the filters and the scoring over `nodes` and returns the decision.
pub fn place<'n>(
    req: &PlacementRequest<'_>,
    nodes: impl IntoIterator<Item = &'n Node>,
    rng: &mut SplitMix64,
) -> Decision {
    let mut considered = 0u32;
    let mut rejections = Vec::new();
    let mut rejection_counts: BTreeMap<RejectReason, u32> = BTreeMap::new();
    let mut feasible: Vec<Candidate> = Vec::new();
    let mut in_residency = 0u32;
    let mut ready_in_residency = 0u32;
    let mut largest_free = 0u32;
    // Ready allowed nodes with some room but not enough for the whole
    // meeting: the material for a cascade.
    let mut partial: Vec<(u32, &Node)> = Vec::new();

    let mut reject = |node: &Node, reason: RejectReason, free: Option<u32>| {
        *rejection_counts.entry(reason).or_default() += 1;
        if rejections.len() < MAX_LISTED_REJECTIONS {
            rejections.push(Rejection {
                node: node.id.clone(),
                region: node.region.clone(),
                reason,
                free,
            });
        }
    };

    for node in nodes {
        considered += 1;
        if !req.allowed_regions.contains(&node.region) {
            reject(node, RejectReason::OutsideResidency, None);
            continue;
        }
        in_residency += 1;
        if req.exclude == Some(node.id.as_str()) {
            reject(node, RejectReason::MovingOff, None);
            continue;
        }
        match node.state {
            NodeState::Draining => {
                reject(node, RejectReason::Draining, None);
                continue;
            }
            NodeState::Down => {
                reject(node, RejectReason::Down, None);
                continue;
            }
            NodeState::Ready => {}
        }
        ready_in_residency += 1;
        let used = node.used_over(req.start_ms, req.end_ms, req.now_ms);
        let free = node.capacity.saturating_sub(used);
        largest_free = largest_free.max(free);
        if free < req.participants {
            reject(node, RejectReason::InsufficientCapacity, Some(free));
            if free > 0 {
                partial.push((free, node));
            }
            continue;
        }
        let after = u64::from(used) + u64::from(req.participants);
        let score_permille = (after * 1000 / u64::from(node.capacity.max(1))) as u32;
        feasible.push(Candidate {
            node: node.id.clone(),
            region: node.region.clone(),
            score_permille,
            in_home_region: node.region == req.home_region,
        });
    }

    // Home region first, then lowest utilisation, then node id: a total order,
    // so the choice never depends on iteration order.
    let rank = |c: &Candidate| (!c.in_home_region, c.score_permille);
    let chosen = match req.strategy {
        _ if feasible.is_empty() => None,
        Strategy::LeastLoaded => feasible
            .iter()
            .min_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.node.cmp(&b.node)))
            .cloned(),
        Strategy::PowerOfTwo => {
            // Sample only among the best tier (home region when it has room),
            // so the home-region preference holds for this strategy too.
            let best_tier = feasible.iter().map(|c| !c.in_home_region).min();
            let tier: Vec<&Candidate> = feasible
                .iter()
                .filter(|c| Some(!c.in_home_region) == best_tier)
                .collect();
            let a = tier[rng.below(tier.len())];
            let b = tier[rng.below(tier.len())];
            let pick = if (rank(b), &b.node) < (rank(a), &a.node) {
                b.clone()
            } else {
                a.clone()
            };
            let keep = [a.node.clone(), b.node.clone()];
            feasible.retain(|c| keep.contains(&c.node));
            Some(pick)
        }
    };

    feasible.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.node.cmp(&b.node)));
    feasible.truncate(MAX_LISTED_CANDIDATES);

    let cascade = if chosen.is_none() {
        plan_cascade(req, partial)
    } else {
        None
    };
    if let Some(shares) = &cascade {
        // The cascade's nodes were rejected only for holding less than the
        // whole meeting; they are the answer now, not rejections.
        for s in shares {
            if let Some(n) = rejection_counts.get_mut(&RejectReason::InsufficientCapacity) {
                *n -= 1;
            }
            rejections.retain(|r| r.node != s.node);
        }
        rejection_counts.retain(|_, n| *n > 0);
    }

    let outcome = match (chosen, cascade) {
        (Some(c), _) => Outcome::Placed {
            node: c.node,
            region: c.region,
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
                    needed: req.participants,
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
        considered,
        candidates: feasible,
        rejections,
        rejection_counts,
        outcome,
    }
}

/// Splits a meeting over the partly free nodes: home region first, then
/// the most free capacity, then node id (a total order, so every replica
/// plans the same cascade). None when they cannot hold it together.
fn plan_cascade(
    req: &PlacementRequest<'_>,
    mut partial: Vec<(u32, &Node)>,
) -> Option<Vec<ShareChoice>> {
    partial.sort_by(|(fa, a), (fb, b)| {
        (a.region != req.home_region, std::cmp::Reverse(*fa), &a.id).cmp(&(
            b.region != req.home_region,
            std::cmp::Reverse(*fb),
            &b.id,
        ))
    });
    let mut left = req.participants;
    let mut shares = Vec::new();
    for (free, node) in partial.into_iter().take(MAX_CASCADE_NODES) {
        if left == 0 {
            break;
        }
        let take = free.min(left);
        left -= take;
        shares.push(ShareChoice {
            node: node.id.clone(),
            region: node.region.clone(),
            participants: take,
        });
    }
    (left == 0 && shares.len() > 1).then_some(shares)
}

#[cfg(test)]
mod tests;
