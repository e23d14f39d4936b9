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
    Command::Institution(InstitutionCommand::Create(CreateInstitution {
        name: name.into(),
        residency: residency.into(),
        home_region: None,
        max_participants: max,
    }))
}

fn register(id: &str, region: &str, capacity: u32) -> Command {
    Command::Node(NodeCommand::Register(RegisterNode {
        id: id.into(),
        region: region.into(),
        address: "127.0.0.1:9".into(),
        capacity,
        certificate: Vec::new(),
        boot: 0,
    }))
}

fn schedule(inst: &str, participants: u32, start_ms: Option<u64>, key: Option<&str>) -> Command {
    Command::Meeting(MeetingCommand::Schedule(ScheduleMeeting {
        request_id: key.map(str::to_string),
        institution: inst.into(),
        participants,
        start_ms,
        duration_ms: 1000,
        access: MeetingAccess::default(),
        kind: crate::licensing::MeetingKind::Meeting,
        host: Host::Unchecked,
    }))
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
    assert_eq!(meeting.node(), Some("eu-1"));
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
    let first = meeting.node().unwrap().to_string();
    // Everyone but the first node keeps beating.
    for n in ["no-1", "no-2", "eu-1"].iter().filter(|n| **n != first) {
        s.apply(&req(
            400,
            Command::Node(NodeCommand::Heartbeat(Heartbeat {
                id: n.to_string(),
                participants: 0,
                seen_ms: None,
                sent_ms: None,
            })),
        ))
        .unwrap();
    }
    let out = s
        .apply(&req(
            600,
            Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 500 })),
        ))
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
    assert_ne!(m.node(), Some(first.as_str()));
    assert_eq!(s.nodes[m.node().unwrap()].region, "nordic");
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
        Command::Node(NodeCommand::Heartbeat(Heartbeat {
            id: "eu-1".into(),
            participants: 0,
            seen_ms: None,
            sent_ms: None,
        })),
    ))
    .unwrap();
    s.apply(&req(
        600,
        Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 500 })),
    ))
    .unwrap();
    assert_eq!(
        s.meetings[&1].state,
        MeetingState::Unplaced,
        "eu-1 is outside uio's residency"
    );
    s.apply(&req(700, register("no-3", "nordic", 100))).unwrap();
    assert_eq!(s.meetings[&1].node(), Some("no-3"));
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
        Command::Node(NodeCommand::SetDraining(SetNodeDraining {
            id: "no-1".into(),
            draining: true,
            evacuate: false,
        })),
    ))
    .unwrap();
    assert_eq!(s.meetings[&1].node(), Some("no-1"));
    assert!(s.apply(&req(4, schedule("uio", 10, None, None))).is_err());
    s.apply(&req(
        5,
        Command::Node(NodeCommand::SetDraining(SetNodeDraining {
            id: "no-1".into(),
            draining: false,
            evacuate: false,
        })),
    ))
    .unwrap();
    assert!(s.apply(&req(6, schedule("uio", 10, None, None))).is_ok());
}

fn nordic_trio() -> ClusterState {
    let mut s = setup();
    for n in ["no-2", "no-3", "no-4"] {
        s.apply(&req(2, register(n, "nordic", 100))).unwrap();
    }
    s
}

fn shares(s: &ClusterState, id: u64) -> Vec<(String, u32)> {
    s.meetings[&id]
        .shares
        .iter()
        .map(|sh| (sh.node.clone(), sh.participants))
        .collect()
}

#[test]
fn a_meeting_too_large_for_one_node_spans_several_with_reservations_on_each() {
    let mut s = nordic_trio();
    let out = s.apply(&req(3, schedule("uio", 250, None, None))).unwrap();
    let Output::Scheduled { meeting, decision } = out else {
        panic!("{out:?}")
    };
    assert!(matches!(decision.outcome, Outcome::Cascaded { .. }));
    assert_eq!(meeting.shares.len(), 3);
    assert_eq!(
        meeting.shares.iter().map(|s| s.participants).sum::<u32>(),
        250
    );
    for sh in &meeting.shares {
        assert_eq!(s.nodes[&sh.node].region, "nordic");
        assert_eq!(
            s.nodes[&sh.node].reservations[&1].participants,
            sh.participants
        );
    }
    s.check_invariants().unwrap();
    // Node indexes are unique and fixed.
    let idx: BTreeSet<u32> = s.nodes.values().map(|n| n.index).collect();
    assert_eq!(idx.len(), s.nodes.len());
    assert!(!idx.contains(&0));
}

#[test]
fn a_lost_share_is_replaced_and_the_rest_of_the_cascade_stays() {
    let mut s = nordic_trio();
    s.apply(&req(3, schedule("uio", 250, None, None))).unwrap();
    let before = shares(&s, 1);
    let lost = before[0].0.clone();
    for n in ["no-1", "no-2", "no-3", "no-4", "eu-1"] {
        if n != lost {
            s.apply(&req(
                400,
                Command::Node(NodeCommand::Heartbeat(Heartbeat {
                    id: n.into(),
                    participants: 0,
                    seen_ms: None,
                    sent_ms: None,
                })),
            ))
            .unwrap();
        }
    }
    let out = s
        .apply(&req(
            600,
            Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 500 })),
        ))
        .unwrap();
    assert_eq!(
        out,
        Output::NodesDown {
            nodes: vec![lost.clone()],
            replaced: vec![1]
        }
    );
    let after = shares(&s, 1);
    assert!(!after.iter().any(|(n, _)| *n == lost));
    // The surviving shares did not move.
    for (n, p) in &before[1..] {
        assert!(after.iter().any(|(m, q)| m == n && q >= p), "{after:?}");
    }
    assert_eq!(after.iter().map(|(_, p)| p).sum::<u32>(), 250);
    assert_eq!(
        s.meetings[&1].decisions.last().unwrap().trigger,
        Trigger::NodeDown { node: lost }
    );
    s.check_invariants().unwrap();
}

#[test]
fn a_cascade_that_lost_a_share_with_nowhere_to_go_gets_its_seats_back_when_a_node_comes() {
    let mut s = setup();
    s.apply(&req(2, register("no-2", "nordic", 100))).unwrap();
    s.apply(&req(3, schedule("uio", 150, None, None))).unwrap();
    assert_eq!(s.meetings[&1].shares.len(), 2);
    let lost = s.meetings[&1].shares[0].node.clone();
    let kept = s.meetings[&1].shares[1].clone();
    for n in ["no-1", "no-2", "eu-1"] {
        if n != lost {
            s.apply(&req(
                400,
                Command::Node(NodeCommand::Heartbeat(Heartbeat {
                    id: n.into(),
                    participants: 0,
                    seen_ms: None,
                    sent_ms: None,
                })),
            ))
            .unwrap();
        }
    }
    // The lost share finds no room: the meeting runs on with fewer seats.
    s.apply(&req(
        600,
        Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 500 })),
    ))
    .unwrap();
    assert_eq!(s.meetings[&1].state, MeetingState::Placed);
    assert_eq!(shares(&s, 1), vec![(kept.node.clone(), kept.participants)]);
    s.check_invariants().unwrap();
    // A new node brings the missing seats back.
    s.apply(&req(700, register("no-3", "nordic", 100))).unwrap();
    let seats: u32 = s.meetings[&1].shares.iter().map(|s| s.participants).sum();
    assert_eq!(seats, 150);
    assert!(s.meetings[&1].shares.iter().any(|s| s.node == "no-3"));
    assert_eq!(
        s.meetings[&1].decisions.last().unwrap().trigger,
        Trigger::Retry
    );
    s.check_invariants().unwrap();
}

#[test]
fn move_takes_a_meeting_off_its_node_or_refuses_and_changes_nothing() {
    let mut s = setup();
    s.apply(&req(2, register("no-2", "nordic", 100))).unwrap();
    s.apply(&req(3, schedule("uio", 50, None, None))).unwrap();
    let from = s.meetings[&1].node().unwrap().to_string();
    let out = s
        .apply(&req(
            4,
            Command::Meeting(MeetingCommand::Move(MoveMeeting { id: 1, from: None })),
        ))
        .unwrap();
    let Output::Moved { meeting, decision } = out else {
        panic!()
    };
    assert_ne!(meeting.node(), Some(from.as_str()));
    assert_eq!(decision.trigger, Trigger::Move { node: from.clone() });
    assert!(s.nodes[&from].reservations.is_empty());
    s.check_invariants().unwrap();
    // Moving it back and forth works; moving with no room elsewhere does not.
    s.apply(&req(5, schedule("uio", 60, None, None))).unwrap();
    let before = s.clone();
    let err = s
        .apply(&req(
            6,
            Command::Meeting(MeetingCommand::Move(MoveMeeting { id: 1, from: None })),
        ))
        .unwrap_err();
    assert!(matches!(err, StateError::NoCapacity { .. }), "{err:?}");
    assert_eq!(s.meetings, before.meetings);
    assert_eq!(s.nodes, before.nodes);
    // Unknown ids and nodes are refused by name.
    assert!(matches!(
        s.apply(&req(
            7,
            Command::Meeting(MeetingCommand::Move(MoveMeeting { id: 99, from: None }))
        )),
        Err(StateError::UnknownMeeting { id: 99 })
    ));
    assert!(matches!(
        s.apply(&req(
            7,
            Command::Meeting(MeetingCommand::Move(MoveMeeting {
                id: 1,
                from: Some("eu-1".into())
            }))
        )),
        Err(StateError::NotOnNode { .. })
    ));
}

#[test]
fn a_cascaded_move_must_name_the_share() {
    let mut s = nordic_trio();
    s.apply(&req(3, schedule("uio", 150, None, None))).unwrap();
    assert!(matches!(
        s.apply(&req(
            4,
            Command::Meeting(MeetingCommand::Move(MoveMeeting { id: 1, from: None }))
        )),
        Err(StateError::NameTheShare { id: 1 })
    ));
    let from = shares(&s, 1)[1].0.clone();
    s.apply(&req(
        5,
        Command::Meeting(MeetingCommand::Move(MoveMeeting {
            id: 1,
            from: Some(from.clone()),
        })),
    ))
    .unwrap();
    assert!(!shares(&s, 1).iter().any(|(n, _)| *n == from));
    s.check_invariants().unwrap();
}

#[test]
fn evacuation_moves_what_fits_and_keeps_the_rest() {
    let mut s = setup();
    s.apply(&req(2, register("no-2", "nordic", 70))).unwrap();
    // Both land on no-1 (no-2 is fuller after the first two).
    s.apply(&req(
        3,
        Command::Node(NodeCommand::SetDraining(SetNodeDraining {
            id: "no-2".into(),
            draining: true,
            evacuate: false,
        })),
    ))
    .unwrap();
    s.apply(&req(4, schedule("uio", 60, None, None))).unwrap();
    s.apply(&req(5, schedule("uio", 30, None, None))).unwrap();
    s.apply(&req(
        6,
        Command::Node(NodeCommand::SetDraining(SetNodeDraining {
            id: "no-2".into(),
            draining: false,
            evacuate: false,
        })),
    ))
    .unwrap();
    let out = s
        .apply(&req(
            7,
            Command::Node(NodeCommand::SetDraining(SetNodeDraining {
                id: "no-1".into(),
                draining: true,
                evacuate: true,
            })),
        ))
        .unwrap();
    let Output::Evacuated { node, moved, kept } = out else {
        panic!("{out:?}")
    };
    assert_eq!(node.state, NodeState::Draining);
    assert_eq!(moved, vec![1]);
    assert_eq!(kept, vec![2], "no-2 has 10 seats left after the first");
    assert_eq!(s.meetings[&1].node(), Some("no-2"));
    assert_eq!(s.meetings[&2].node(), Some("no-1"));
    assert_eq!(
        s.meetings[&1].decisions.last().unwrap().trigger,
        Trigger::Evacuate {
            node: "no-1".into()
        }
    );
    s.check_invariants().unwrap();
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
fn a_meeting_stored_before_cascading_loads_with_one_share() {
    let mut s = setup();
    s.apply(&req(2, schedule("uio", 50, None, None))).unwrap();
    let mut v = serde_json::to_value(&s.meetings[&1]).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("shares");
    o.insert("node".into(), serde_json::json!("no-1"));
    let old: Meeting = serde_json::from_value(v).unwrap();
    assert_eq!(old, s.meetings[&1]);
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
        (inst.clone(), region.clone(), 1u32..800).prop_map(|(n, r, m)| institution(n, r, m)),
        (node.clone(), region, 1u32..300).prop_map(|(n, r, c)| register(n, r, c)),
        (node.clone(), 0u32..300).prop_map(|(n, p)| Command::Node(NodeCommand::Heartbeat(
            Heartbeat {
                id: n.into(),
                participants: p,
                seen_ms: None,
                sent_ms: None,
            }
        ))),
        (node.clone(), any::<bool>(), any::<bool>()).prop_map(|(n, d, e)| {
            Command::Node(NodeCommand::SetDraining(SetNodeDraining {
                id: n.into(),
                draining: d,
                evacuate: e,
            }))
        }),
        (1u64..30, prop::option::of(node.clone())).prop_map(|(id, n)| Command::Meeting(
            MeetingCommand::Move(MoveMeeting {
                id,
                from: n.map(str::to_string),
            })
        )),
        (200u64..3000)
            .prop_map(|l| Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: l }))),
        (
            inst,
            1u32..700,
            prop::option::of(0u64..20_000),
            1u64..5000,
            prop::option::of(0u8..4)
        )
            .prop_map(
                |(i, p, start, d, key)| Command::Meeting(MeetingCommand::Schedule(
                    ScheduleMeeting {
                        request_id: key.map(|k| format!("k{k}")),
                        institution: i.into(),
                        participants: p,
                        start_ms: start,
                        duration_ms: d,
                        access: MeetingAccess::default(),
                        kind: crate::licensing::MeetingKind::Meeting,
                        host: Host::Unchecked,
                    }
                ))
            ),
        (1u64..30).prop_map(|id| Command::Meeting(MeetingCommand::End(EndMeeting { id }))),
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
    fn no_placement_replacement_move_or_cascade_leaves_residency_or_overfills_a_node(log in arb_log()) {
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

#[test]
fn a_meeting_moved_many_times_keeps_a_bounded_decision_history() {
    let mut s = setup();
    s.apply(&req(2, register("no-2", "nordic", 100))).unwrap();
    s.apply(&req(3, schedule("uio", 10, None, None))).unwrap();
    for t in 0..40 {
        s.apply(&req(
            4 + t,
            Command::Meeting(MeetingCommand::Move(MoveMeeting { id: 1, from: None })),
        ))
        .unwrap();
    }
    let m = &s.meetings[&1];
    assert_eq!(m.decisions.len(), MAX_DECISIONS_KEPT);
    assert_eq!(
        m.decisions[0].trigger,
        Trigger::Scheduled,
        "the first stays"
    );
    assert_eq!(m.decisions.last().unwrap().at_ms, 43, "the latest is kept");
    s.check_invariants().unwrap();
}
