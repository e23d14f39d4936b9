use super::*;
use crate::state::Reservation;

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
