//! The placement engine as first written: one pass that builds and sorts a
//! candidate for every feasible node. Slow, obviously right, and kept as
//! the definition the indexed engine is tested against.

use std::collections::BTreeMap;

use super::*;
use crate::model::{Node, NodeState};

/// Runs the filters and the scoring over `nodes` and returns the decision.
pub fn place_by_definition<'n>(
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
                node: node.id.as_str().into(),
                region: node.region.as_str().into(),
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
            node: node.id.as_str().into(),
            region: node.region.as_str().into(),
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
        plan_cascade_by_definition(req, partial)
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
fn plan_cascade_by_definition(
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
