use proptest::prelude::*;
use proptest::strategy::Strategy as Gen;

use super::*;
use crate::placement::{Refusal, Strategy};

fn req(now_ms: u64, command: Command) -> Request {
    Request {
        now_ms,
        seed: now_ms,
        strategy: Strategy::LeastLoaded,
        op_id: 0,
        command,
    }
}

fn institution(name: &str, residency: &str, max: u32) -> Command {
    Command::CreateInstitution {
        name: name.into(),
        residency: residency.into(),
        home_region: None,
        max_participants: max,
    }
}

fn register(id: &str, region: &str, capacity: u32) -> Command {
    Command::RegisterNode {
        id: id.into(),
        region: region.into(),
        address: "127.0.0.1:9".into(),
        capacity,
        certificate: Vec::new(),
    }
}

fn schedule(inst: &str, participants: u32, start_ms: Option<u64>, key: Option<&str>) -> Command {
    Command::ScheduleMeeting {
        request_id: key.map(str::to_string),
        institution: inst.into(),
        participants,
        start_ms,
        duration_ms: 1000,
        access: MeetingAccess::default(),
    }
}

fn setup() -> ClusterState {
    let mut s = ClusterState::default();
    for c in [
        institution("uio", "nordic", 500),
        institution("cern", "eu", 500),
        register("no-1", "nordic", 100),
        register("eu-1", "eu", 100),
    ] {
        s.apply(&req(1, c)).unwrap();
    }
    s
}

#[test]
fn regions_nest() {
    let s = ClusterState::default();
    assert_eq!(
        s.allowed_regions("nordic").into_iter().collect::<Vec<_>>(),
        ["nordic"]
    );
    assert_eq!(
        s.allowed_regions("eu").into_iter().collect::<Vec<_>>(),
        ["eu", "nordic"]
    );
}

#[test]
fn unknown_region_and_duplicates_are_refused() {
    let mut s = setup();
    let before = s.clone();
    assert_eq!(
        s.apply(&req(2, institution("x", "mars", 10))),
        Err(StateError::UnknownRegion {
            name: "mars".into()
        })
    );
    assert_eq!(
        s.apply(&req(2, institution("uio", "eu", 10))),
        Err(StateError::InstitutionExists { name: "uio".into() })
    );
    assert_eq!(
        s.apply(&req(2, register("n", "mars", 1))),
        Err(StateError::UnknownRegion {
            name: "mars".into()
        })
    );
    assert_eq!(s, before, "refused commands change nothing");
}

#[test]
fn nordic_meetings_never_overflow_to_eu_nodes() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 100, None, None))).unwrap();
    let err = s
        .apply(&req(3, schedule("uio", 1, None, None)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::NoCapacity {
                refusal: Refusal::NoCapacity { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // cern (eu) may still use the eu node.
    let out = s.apply(&req(4, schedule("cern", 100, None, None))).unwrap();
    let Output::Scheduled { meeting, .. } = out else {
        panic!()
    };
    assert_eq!(meeting.node.as_deref(), Some("eu-1"));
}

#[test]
fn idempotent_schedule_returns_the_first_meeting() {
    let mut s = setup();
    let a = s
        .apply(&req(2, schedule("cern", 10, None, Some("k1"))))
        .unwrap();
    let b = s
        .apply(&req(3, schedule("cern", 10, None, Some("k1"))))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(s.meetings.len(), 1);
}

#[test]
fn a_retried_write_is_answered_not_applied_twice() {
    let mut s = setup();
    let mut r = req(2, institution("sikt", "eu", 10));
    r.op_id = 42;
    let first = s.apply(&r);
    assert!(first.is_ok());
    r.now_ms = 3;
    assert_eq!(
        s.apply(&r),
        first,
        "same op id: same answer, not InstitutionExists"
    );
    r.op_id = 43;
    assert!(matches!(
        s.apply(&r),
        Err(StateError::InstitutionExists { .. })
    ));
}

#[test]
fn meetings_end_when_their_window_passes_and_release_capacity() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 100, None, None))).unwrap();
    assert!(s
        .apply(&req(500, schedule("uio", 100, None, None)))
        .is_err());
    // The first window is [2, 1002); at 1002 it is over.
    let out = s
        .apply(&req(1002, schedule("uio", 100, None, None)))
        .unwrap();
    assert!(matches!(out, Output::Scheduled { .. }));
    assert_eq!(s.meetings[&1].state, MeetingState::Ended);
    s.check_invariants().unwrap();
}

#[test]
fn lease_expiry_replaces_meetings_inside_residency() {
    let mut s = setup();
    s.apply(&req(2, register("no-2", "nordic", 100))).unwrap();
    let Output::Scheduled { meeting, .. } =
        s.apply(&req(3, schedule("uio", 50, None, None))).unwrap()
    else {
        panic!()
    };
    let first = meeting.node.clone().unwrap();
    // Everyone but the first node keeps beating.
    for n in ["no-1", "no-2", "eu-1"].iter().filter(|n| **n != first) {
        s.apply(&req(
            400,
            Command::Heartbeat {
                id: n.to_string(),
                participants: 0,
            },
        ))
        .unwrap();
    }
    let out = s
        .apply(&req(600, Command::ExpireLeases { lease_ms: 500 }))
        .unwrap();
    assert_eq!(
        out,
        Output::NodesDown {
            nodes: vec![first.clone()],
            replaced: vec![1]
        }
    );
    let m = &s.meetings[&1];
    assert_eq!(s.nodes[&first].state, NodeState::Down);
    assert_ne!(m.node.as_deref(), Some(first.as_str()));
    assert_eq!(s.nodes[m.node.as_ref().unwrap()].region, "nordic");
    assert_eq!(m.decisions.len(), 2);
    assert_eq!(m.decisions[1].trigger, Trigger::NodeDown { node: first });
    s.check_invariants().unwrap();
}

#[test]
fn unplaced_meetings_wait_for_a_node_and_retry() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 50, None, None))).unwrap();
    s.apply(&req(
        300,
        Command::Heartbeat {
            id: "eu-1".into(),
            participants: 0,
        },
    ))
    .unwrap();
    s.apply(&req(600, Command::ExpireLeases { lease_ms: 500 }))
        .unwrap();
    assert_eq!(
        s.meetings[&1].state,
        MeetingState::Unplaced,
        "eu-1 is outside uio's residency"
    );
    s.apply(&req(700, register("no-3", "nordic", 100))).unwrap();
    assert_eq!(s.meetings[&1].node.as_deref(), Some("no-3"));
    assert_eq!(
        s.meetings[&1].decisions.last().unwrap().trigger,
        Trigger::Retry
    );
    s.check_invariants().unwrap();
}

#[test]
fn drained_nodes_keep_meetings_but_take_no_new_ones() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 10, None, None))).unwrap();
    s.apply(&req(
        3,
        Command::SetNodeDraining {
            id: "no-1".into(),
            draining: true,
        },
    ))
    .unwrap();
    assert_eq!(s.meetings[&1].node.as_deref(), Some("no-1"));
    assert!(s.apply(&req(4, schedule("uio", 10, None, None))).is_err());
    s.apply(&req(
        5,
        Command::SetNodeDraining {
            id: "no-1".into(),
            draining: false,
        },
    ))
    .unwrap();
    assert!(s.apply(&req(6, schedule("uio", 10, None, None))).is_ok());
}

#[test]
fn capacity_cannot_shrink_below_reservations() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 60, None, None))).unwrap();
    assert!(matches!(
        s.apply(&req(3, register("no-1", "nordic", 50))),
        Err(StateError::CapacityBelowReservations { .. })
    ));
}

#[test]
fn state_survives_a_json_round_trip() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 60, None, Some("k"))))
        .unwrap();
    let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

/// A random command over a small universe of names, so commands collide.
fn arb_command() -> impl Gen<Value = Command> {
    let inst = prop::sample::select(vec!["uio", "sikt", "cern"]);
    let region = prop::sample::select(vec!["nordic", "eu", "mars"]);
    let node = prop::sample::select(vec!["n1", "n2", "n3", "n4", "n5"]);
    prop_oneof![
        (inst.clone(), region.clone(), 1u32..400).prop_map(|(n, r, m)| institution(n, r, m)),
        (node.clone(), region, 1u32..300).prop_map(|(n, r, c)| register(n, r, c)),
        (node.clone(), 0u32..300).prop_map(|(n, p)| Command::Heartbeat {
            id: n.into(),
            participants: p
        }),
        (node.clone(), any::<bool>()).prop_map(|(n, d)| Command::SetNodeDraining {
            id: n.into(),
            draining: d
        }),
        (200u64..3000).prop_map(|l| Command::ExpireLeases { lease_ms: l }),
        (
            inst,
            1u32..200,
            prop::option::of(0u64..20_000),
            1u64..5000,
            prop::option::of(0u8..4)
        )
            .prop_map(|(i, p, start, d, key)| Command::ScheduleMeeting {
                request_id: key.map(|k| format!("k{k}")),
                institution: i.into(),
                participants: p,
                start_ms: start,
                duration_ms: d,
                access: MeetingAccess::default(),
            }),
        (1u64..30).prop_map(|id| Command::EndMeeting { id }),
    ]
}

fn arb_log() -> impl Gen<Value = Vec<Request>> {
    prop::collection::vec(
        (
            arb_command(),
            0u64..400,
            any::<u64>(),
            any::<bool>(),
            0u64..8,
        ),
        1..120,
    )
    .prop_map(|cmds| {
        let mut now = 0;
        cmds.into_iter()
            .map(|(command, dt, seed, p2c, op_id)| {
                now += dt;
                Request {
                    now_ms: now,
                    seed,
                    op_id,
                    strategy: if p2c {
                        Strategy::PowerOfTwo
                    } else {
                        Strategy::LeastLoaded
                    },
                    command,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No meeting outside its residency, no node over capacity, after every
    /// command of any sequence.
    #[test]
    fn invariants_hold_for_any_command_sequence(log in arb_log()) {
        let mut s = ClusterState::default();
        for r in &log {
            let _ = s.apply(r);
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "after {:?}: {}", r.command, e);
            }
        }
    }

    /// Replicas applying the same log end in the same state (and give the
    /// same answers), including one that restarts from a snapshot midway.
    #[test]
    fn same_log_same_state(log in arb_log(), cut in 0usize..120) {
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        let cut = cut.min(log.len());
        let mut answers_a = Vec::new();
        for r in &log {
            answers_a.push(a.apply(r));
        }
        let mut answers_b = Vec::new();
        for r in &log[..cut] {
            answers_b.push(b.apply(r));
        }
        let mut b: ClusterState = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
        for r in &log[cut..] {
            answers_b.push(b.apply(r));
        }
        prop_assert_eq!(answers_a, answers_b);
        prop_assert_eq!(a, b);
    }
}
