use super::*;
use crate::model::{Node, Reservation};
use proptest::prelude::{any, prop, prop_assert_eq, proptest, ProptestConfig};
use proptest::strategy::{BoxedStrategy, Strategy as Gen};

/// Places through the node table and checks the answer, and what it drew
/// from the generator, against the definition.
fn place(req: &PlacementRequest<'_>, nodes: &[Node], rng: &mut SplitMix64) -> Decision {
    let table: NodeTable = nodes.iter().cloned().collect();
    let mut rng_for_definition = rng.clone();
    let decision = super::place(req, &table, rng);
    // The state machine always offered nodes in id order, as the table holds them.
    let mut in_id_order: Vec<&Node> = nodes.iter().collect();
    in_id_order.sort_by(|a, b| a.id.cmp(&b.id));
    let by_definition = reference::place_by_definition(req, in_id_order, &mut rng_for_definition);
    assert_eq!(
        decision, by_definition,
        "the indexed engine left the definition"
    );
    assert_eq!(rng.next_u64(), rng_for_definition.next_u64());
    decision
}

fn node(id: &str, region: &str, capacity: u32) -> Node {
    Node {
        id: id.into(),
        region: region.into(),
        address: "127.0.0.1:1".into(),
        capacity,
        state: NodeState::Ready,
        last_heartbeat_ms: 0,
        load_participants: 0,
        registered_at_ms: 0,
        certificate: Vec::new(),
        index: 0,
        reservations: Default::default(),
    }
}

fn regions(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn request<'a>(
    allowed: &'a BTreeSet<String>,
    home: &'a str,
    participants: u32,
) -> PlacementRequest<'a> {
    PlacementRequest {
        participants,
        start_ms: 1000,
        end_ms: 2000,
        now_ms: 1000,
        allowed_regions: allowed,
        home_region: home,
        strategy: Strategy::LeastLoaded,
        trigger: Trigger::Scheduled,
        exclude: None,
    }
}

#[test]
fn residency_filter_rejects_nodes_outside_the_policy() {
    let nodes = [node("eu-1", "eu", 100), node("no-1", "nordic", 100)];
    let allowed = regions(&["nordic"]);
    let d = place(
        &request(&allowed, "nordic", 10),
        &nodes,
        &mut SplitMix64::new(1),
    );
    assert_eq!(d.chosen(), Some("no-1"));
    assert_eq!(d.considered, 2);
    assert_eq!(d.rejections.len(), 1);
    assert_eq!(d.rejections[0].node, "eu-1");
    assert_eq!(d.rejections[0].reason, RejectReason::OutsideResidency);
}

#[test]
fn draining_and_down_nodes_take_nothing_new() {
    let mut a = node("a", "eu", 100);
    a.state = NodeState::Draining;
    let mut b = node("b", "eu", 100);
    b.state = NodeState::Down;
    let allowed = regions(&["eu"]);
    let d = place(
        &request(&allowed, "eu", 1),
        &[a, b],
        &mut SplitMix64::new(1),
    );
    assert_eq!(
        d.outcome,
        Outcome::Refused {
            refusal: Refusal::NoReadyNode
        }
    );
    assert_eq!(d.rejection_counts[&RejectReason::Draining], 1);
    assert_eq!(d.rejection_counts[&RejectReason::Down], 1);
}

#[test]
fn capacity_counts_overlapping_reservations_only() {
    let mut a = node("a", "eu", 100);
    // Busy before and after the window, free during it.
    a.reservations.insert(
        1,
        Reservation {
            start_ms: 0,
            end_ms: 1000,
            participants: 100,
        },
    );
    a.reservations.insert(
        2,
        Reservation {
            start_ms: 2000,
            end_ms: 3000,
            participants: 100,
        },
    );
    let allowed = regions(&["eu"]);
    let d = place(
        &request(&allowed, "eu", 100),
        &[a.clone()],
        &mut SplitMix64::new(1),
    );
    assert_eq!(d.chosen(), Some("a"));
    // Two 60-seat reservations that overlap each other inside the window.
    a.reservations.insert(
        3,
        Reservation {
            start_ms: 1200,
            end_ms: 1600,
            participants: 60,
        },
    );
    a.reservations.insert(
        4,
        Reservation {
            start_ms: 1500,
            end_ms: 1800,
            participants: 30,
        },
    );
    let d = place(&request(&allowed, "eu", 11), &[a], &mut SplitMix64::new(1));
    assert_eq!(
        d.outcome,
        Outcome::Refused {
            refusal: Refusal::NoCapacity {
                needed: 11,
                largest_free: 10
            }
        }
    );
    assert_eq!(d.rejections[0].free, Some(10));
}

#[test]
fn reported_load_counts_for_windows_that_include_now() {
    let mut a = node("a", "eu", 100);
    a.load_participants = 95;
    let allowed = regions(&["eu"]);
    let d = place(
        &request(&allowed, "eu", 10),
        &[a.clone()],
        &mut SplitMix64::new(1),
    );
    assert!(
        d.chosen().is_none(),
        "a node carrying 95 of 100 has no room for 10 now"
    );
    let mut later = request(&allowed, "eu", 10);
    later.start_ms = 5000;
    later.end_ms = 6000;
    let d = place(&later, &[a], &mut SplitMix64::new(1));
    assert_eq!(
        d.chosen(),
        Some("a"),
        "load now does not block a later window"
    );
}

#[test]
fn least_loaded_prefers_home_region_then_overflows() {
    let mut home = node("no-1", "nordic", 100);
    home.reservations.insert(
        1,
        Reservation {
            start_ms: 0,
            end_ms: 5000,
            participants: 80,
        },
    );
    let other = node("eu-1", "eu", 100);
    let allowed = regions(&["eu", "nordic"]);
    let d = place(
        &request(&allowed, "nordic", 20),
        &[home.clone(), other.clone()],
        &mut SplitMix64::new(1),
    );
    assert_eq!(d.chosen(), Some("no-1"), "home region is filled first");
    let d = place(
        &request(&allowed, "nordic", 21),
        &[home, other],
        &mut SplitMix64::new(1),
    );
    assert_eq!(
        d.chosen(),
        Some("eu-1"),
        "a full home region overflows into the residency"
    );
}

#[test]
fn least_loaded_picks_lowest_utilisation() {
    let mut a = node("a", "eu", 100);
    a.reservations.insert(
        1,
        Reservation {
            start_ms: 0,
            end_ms: 5000,
            participants: 50,
        },
    );
    let b = node("b", "eu", 1000);
    let allowed = regions(&["eu"]);
    let d = place(
        &request(&allowed, "eu", 10),
        &[a, b],
        &mut SplitMix64::new(1),
    );
    assert_eq!(d.chosen(), Some("b"));
    assert_eq!(d.candidates[0].node, "b");
    assert_eq!(d.candidates[0].score_permille, 10);
    assert_eq!(d.candidates[1].score_permille, 600);
}

#[test]
fn power_of_two_is_deterministic_per_seed_and_spreads() {
    let nodes: Vec<Node> = (0..20)
        .map(|i| node(&format!("n{i:02}"), "eu", 100))
        .collect();
    let allowed = regions(&["eu"]);
    let mut req = request(&allowed, "eu", 1);
    req.strategy = Strategy::PowerOfTwo;
    let a = place(&req, &nodes, &mut SplitMix64::new(7));
    let b = place(&req, &nodes, &mut SplitMix64::new(7));
    assert_eq!(a, b);
    let chosen: BTreeSet<String> = (0..50)
        .map(|s| {
            place(&req, &nodes, &mut SplitMix64::new(s))
                .chosen()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        chosen.len() > 5,
        "power-of-two should spread equal nodes, got {chosen:?}"
    );
    assert!(a.candidates.len() <= 2);
}

#[test]
fn refusal_names_the_reason() {
    let allowed = regions(&["nordic"]);
    let d = place(
        &request(&allowed, "nordic", 1),
        &[node("eu-1", "eu", 10)],
        &mut SplitMix64::new(1),
    );
    assert_eq!(
        d.outcome,
        Outcome::Refused {
            refusal: Refusal::NoNodeInResidency
        }
    );
    assert!(Refusal::NoCapacity {
        needed: 5,
        largest_free: 2
    }
    .to_string()
    .contains("largest free: 2"));
}

#[test]
fn decisions_stay_small_on_large_clusters() {
    let nodes: Vec<Node> = (0..5000)
        .map(|i| node(&format!("n{i}"), "eu", 10))
        .collect();
    let allowed = regions(&["nordic"]);
    let d = place(
        &request(&allowed, "nordic", 1),
        &nodes,
        &mut SplitMix64::new(1),
    );
    assert_eq!(d.considered, 5000);
    assert_eq!(d.rejections.len(), MAX_LISTED_REJECTIONS);
    assert_eq!(d.rejection_counts[&RejectReason::OutsideResidency], 5000);
}

#[test]
fn a_meeting_no_node_can_hold_cascades_over_the_fewest_largest_nodes() {
    let mut a = node("a", "nordic", 100);
    a.reservations.insert(
        9,
        Reservation {
            start_ms: 0,
            end_ms: 5000,
            participants: 60,
        },
    );
    let nodes = [
        a,
        node("b", "nordic", 100),
        node("c", "nordic", 100),
        node("d", "nordic", 100),
        node("e", "eu", 500),
    ];
    let allowed = regions(&["nordic"]);
    let d = place(
        &request(&allowed, "nordic", 250),
        &nodes,
        &mut SplitMix64::new(1),
    );
    let shares = d.shares(250);
    let got: Vec<(&str, u32)> = shares
        .iter()
        .map(|s| (s.node.as_str(), s.participants))
        .collect();
    // Three whole nodes hold 300 > 250; the partly used one is not needed.
    assert_eq!(got, vec![("b", 100), ("c", 100), ("d", 50)]);
    assert!(matches!(d.outcome, Outcome::Cascaded { .. }));
    assert_eq!(d.chosen(), Some("b"));
    // The eu node could hold it alone but is outside the residency.
    assert!(d
        .rejections
        .iter()
        .any(|r| r.node == "e" && r.reason == RejectReason::OutsideResidency));
    // The cascade's nodes are not listed as rejected.
    assert!(!d
        .rejections
        .iter()
        .any(|r| ["b", "c", "d"].contains(&r.node.as_str())));
}

#[test]
fn a_cascade_fills_the_home_region_before_overflowing() {
    let nodes = [
        node("eu-1", "eu", 100),
        node("no-1", "nordic", 60),
        node("no-2", "nordic", 50),
    ];
    let allowed = regions(&["eu", "nordic"]);
    let d = place(
        &request(&allowed, "nordic", 150),
        &nodes,
        &mut SplitMix64::new(1),
    );
    let got: Vec<(String, u32)> = d
        .shares(150)
        .into_iter()
        .map(|s| (s.node, s.participants))
        .collect();
    assert_eq!(
        got,
        vec![
            ("no-1".to_string(), 60),
            ("no-2".to_string(), 50),
            ("eu-1".to_string(), 40)
        ]
    );
}

#[test]
fn too_large_for_all_allowed_nodes_together_is_refused() {
    let nodes = [node("a", "nordic", 100), node("b", "nordic", 100)];
    let allowed = regions(&["nordic"]);
    let d = place(
        &request(&allowed, "nordic", 201),
        &nodes,
        &mut SplitMix64::new(1),
    );
    assert_eq!(
        d.outcome,
        Outcome::Refused {
            refusal: Refusal::NoCapacity {
                needed: 201,
                largest_free: 100
            }
        }
    );
}

#[test]
fn the_node_a_meeting_moves_off_is_never_chosen() {
    let nodes = [node("a", "nordic", 1000), node("b", "nordic", 100)];
    let allowed = regions(&["nordic"]);
    let mut r = request(&allowed, "nordic", 10);
    r.exclude = Some("a");
    let d = place(&r, &nodes, &mut SplitMix64::new(1));
    assert_eq!(d.chosen(), Some("b"));
    assert_eq!(d.rejections[0].reason, RejectReason::MovingOff);
}

fn any_node(i: usize) -> BoxedStrategy<Node> {
    (
        0usize..4,
        0u8..10,
        1u32..200,
        0u32..150,
        prop::collection::vec((0u64..4_000, 1u64..2_000, 1u32..120), 0..12),
    )
        .prop_map(move |(region, state, capacity, load, rs)| {
            let mut n = node(
                &format!("n{:03}", (i * 37) % 101),
                ["eu", "nordic", "oslo", "paris"][region],
                capacity,
            );
            n.state = match state {
                0 => NodeState::Draining,
                1 => NodeState::Down,
                _ => NodeState::Ready,
            };
            n.load_participants = load;
            for (m, (start, len, p)) in rs.into_iter().enumerate() {
                n.reservations.insert(
                    m as u64,
                    Reservation {
                        start_ms: start,
                        end_ms: start + len,
                        participants: p,
                    },
                );
            }
            n
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the cluster and the question, the indexed engine answers
    /// exactly as the definition does (the helper compares them).
    #[test]
    fn the_indexed_engine_decides_as_the_definition(
        nodes in (0usize..100).prop_flat_map(|n| {
            (0..n).map(any_node).collect::<Vec<_>>()
        }),
        allowed in prop::sample::subsequence(vec!["eu", "nordic", "oslo", "paris"], 0..=4),
        home in prop::sample::select(vec!["eu", "nordic", "oslo", "paris", "rome"]),
        participants in 1u32..400,
        start in 0u64..5_000,
        len in 1u64..3_000,
        now in 0u64..6_000,
        power_of_two in any::<bool>(),
        exclude in prop::option::of(0usize..101),
        seed in any::<u64>(),
        scale in prop::sample::select(vec![1u64, 1_000, 60_000]),
    ) {
        // Ids repeat across positions; keep the last of each, as a table would.
        let mut nodes: Vec<Node> = nodes
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .collect();
        // Milliseconds, seconds or minutes: from one slot of the
        // reservation profile to windows and reservations over many
        // slots, and past the profile's end.
        for n in &mut nodes {
            n.reservations = n
                .reservations
                .iter()
                .map(|(m, r)| {
                    (*m, Reservation {
                        start_ms: r.start_ms * scale,
                        end_ms: r.end_ms * scale,
                        participants: r.participants,
                    })
                })
                .collect();
        }
        let (start, len, now) = (start * scale, len * scale, now * scale);
        let allowed: BTreeSet<String> = allowed.iter().map(|s| s.to_string()).collect();
        let exclude = exclude.map(|i| format!("n{i:03}"));
        let req = PlacementRequest {
            participants,
            start_ms: start,
            end_ms: start + len,
            now_ms: now,
            allowed_regions: &allowed,
            home_region: home,
            strategy: if power_of_two { Strategy::PowerOfTwo } else { Strategy::LeastLoaded },
            trigger: Trigger::Scheduled,
            exclude: exclude.as_deref(),
        };
        place(&req, &nodes, &mut SplitMix64::new(seed));
    }
}

proptest! {
    /// The division-free pre-filter agrees with comparing rank keys.
    #[test]
    fn ranks_above_agrees_with_the_rank_key(
        outside_home in any::<bool>(),
        used in 0u32..2_000,
        needed in 1u32..500,
        capacity in 0u32..3_000,
        position in 0usize..10_000,
        line_outside in any::<bool>(),
        line_score in 0u32..1_200,
        line_position in 0usize..10_000,
        no_line in any::<bool>(),
    ) {
        let line = if no_line {
            u64::MAX
        } else {
            rank_key(line_outside, line_score, line_position)
        };
        let key = rank_key(outside_home, score(used, needed, capacity), position);
        prop_assert_eq!(
            ranks_above(outside_home, used, needed, capacity, position, line),
            key > line
        );
    }
}
