//! The SLA sub-state inside the state machine: SLIs from the ledger, fault
//! notices on node failure, maintenance (notices, drain at the start, back
//! at the end), alert notifications and the delivery log.

use super::licence_tests::{at, cluster, req, schedule, set, terms};
use super::*;
use crate::licensing::{MeetingKind, Tier};
use crate::sla::notify::{Delivery, NoticeKind};
use crate::sla::{Sli, MINUTE_MS};

/// uio (nordic) and bsi (eu only) licensed, nodes no-1 (nordic) and eu-1
/// (eu), one uio meeting on no-1.
fn two_institutions(now: u64) -> (ClusterState, u64) {
    let mut s = cluster(now);
    s.apply(&req(
        now,
        InstitutionCommand::Create(CreateInstitution {
            name: "bsi".into(),
            residency: "eu".into(),
            home_region: None,
            max_participants: 1000,
        }),
    ))
    .unwrap();
    s.apply(&req(
        now,
        NodeCommand::Register(RegisterNode {
            id: "eu-1".into(),
            region: "eu".into(),
            address: "127.0.0.1:10".into(),
            capacity: 1000,
            certificate: Vec::new(),
            boot: 1,
        }),
    ))
    .unwrap();
    s.apply(&req(
        now,
        set("uio", terms(Tier::Education, &[], "2026-10-01"), None),
    ))
    .unwrap();
    let mut bsi = terms(Tier::Education, &[], "2026-10-01");
    bsi.technical_contact = "noc@bsi.example.org".into();
    s.apply(&req(now, set("bsi", bsi, None))).unwrap();
    let Ok(Output::Scheduled { meeting, .. }) =
        s.apply(&req(now, schedule("uio", 10, MeetingKind::Meeting)))
    else {
        panic!("scheduled")
    };
    assert_eq!(meeting.node(), Some("no-1"));
    (s, meeting.id)
}

fn notices(s: &ClusterState, kind: NoticeKind) -> Vec<crate::sla::notify::Notification> {
    s.sla
        .outbox
        .log(None)
        .filter(|n| n.kind == kind)
        .cloned()
        .collect()
}

#[test]
fn a_failed_node_notifies_the_institutions_it_carried_once_and_again_when_back() {
    let t = at("2026-11-24");
    let (mut s, _) = two_institutions(t);
    // eu-1 keeps beating; no-1 goes silent.
    s.apply(&req(
        t + 2_000,
        NodeCommand::Heartbeat(Heartbeat {
            id: "eu-1".into(),
            participants: 0,
            seen_ms: None,
            sent_ms: None,
        }),
    ))
    .unwrap();
    let out = s
        .apply(&req(
            t + 2_000,
            NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 1_500 }),
        ))
        .unwrap();
    assert!(matches!(out, Output::NodesDown { ref nodes, .. } if nodes == &["no-1".to_string()]));
    let faults = notices(&s, NoticeKind::Fault);
    assert_eq!(faults.len(), 1, "{faults:?}");
    let f = &faults[0];
    assert_eq!(f.institution, "uio");
    assert_eq!(f.status, "firing");
    assert_eq!(f.contact, "https://alerts.uio.no/fjord");
    assert!(matches!(f.delivery, Delivery::Pending { .. }));
    let body: serde_json::Value = serde_json::from_str(&f.body).unwrap();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(
        body["alerts"][0]["labels"]["alertname"],
        "FjordMediaNodeDown"
    );
    assert_eq!(body["alerts"][0]["labels"]["node"], "no-1");
    assert_eq!(body["alerts"][0]["labels"]["institution"], "uio");
    assert_eq!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert!(body["alerts"][0]["fingerprint"].as_str().unwrap().len() == 16);

    // A second expiry run finds nothing new to say.
    s.apply(&req(
        t + 4_000,
        NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 1_500 }),
    ))
    .unwrap();
    assert_eq!(notices(&s, NoticeKind::Fault).len(), 1);

    // The node comes back: uio hears it resolved, with the same fingerprint.
    s.apply(&req(
        t + 5_000,
        NodeCommand::Register(RegisterNode {
            id: "no-1".into(),
            region: "nordic".into(),
            address: "127.0.0.1:9".into(),
            capacity: 100_000,
            certificate: Vec::new(),
            boot: 2,
        }),
    ))
    .unwrap();
    let faults = notices(&s, NoticeKind::Fault);
    assert_eq!(faults.len(), 2);
    let resolved: serde_json::Value = serde_json::from_str(&faults[0].body).unwrap();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(
        resolved["alerts"][0]["fingerprint"],
        body["alerts"][0]["fingerprint"]
    );
}

#[test]
fn join_attempts_and_quality_minutes_from_nodes_feed_the_slis() {
    let t = at("2026-11-24");
    let (mut s, m) = two_institutions(t);
    let base = UsageEvent {
        seq: 0,
        boot: 0,
        at_ms: t,
        meeting: m,
        participant: 1,
        kind: UsageEventKind::JoinAttempt,
        features: 0,
        reason: SessionEnd::Left,
        minutes: 0,
        good_minutes: 0,
        join_ok: true,
        join_latency_ms: 300,
    };
    let events = vec![
        UsageEvent {
            seq: 1,
            ..base.clone()
        },
        UsageEvent {
            seq: 2,
            join_latency_ms: 2_500,
            ..base.clone()
        },
        UsageEvent {
            seq: 3,
            join_ok: false,
            ..base.clone()
        },
        UsageEvent {
            seq: 4,
            kind: UsageEventKind::Quality,
            minutes: 10,
            good_minutes: 9,
            ..base.clone()
        },
    ];
    s.apply(&req(
        t,
        LedgerCommand::Record(RecordUsage {
            node: "no-1".into(),
            events: events.clone(),
        }),
    ))
    .unwrap();
    // A resend counts nothing twice.
    s.apply(&req(
        t,
        LedgerCommand::Record(RecordUsage {
            node: "no-1".into(),
            events,
        }),
    ))
    .unwrap();
    let reports = s.sla_reports(Some("uio"), t + MINUTE_MS).unwrap();
    let slo = |sli| {
        reports[0]
            .slos
            .iter()
            .find(|x| x.sli == sli)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            slo(Sli::JoinSuccess).window.total,
            slo(Sli::JoinSuccess).window.bad
        ),
        (3, 1)
    );
    assert_eq!(
        (
            slo(Sli::JoinLatency).window.total,
            slo(Sli::JoinLatency).window.bad
        ),
        (2, 1)
    );
    assert_eq!(
        (
            slo(Sli::MediaQuality).window.total,
            slo(Sli::MediaQuality).window.bad
        ),
        (10, 1)
    );
    // bsi saw none of it.
    let bsi = s.sla_reports(Some("bsi"), t + MINUTE_MS).unwrap();
    assert!(bsi[0].slos.iter().all(|x| x.window.total == 0));
}

#[test]
fn maintenance_notifies_ahead_drains_at_the_start_and_undrains_at_the_end() {
    let t = at("2026-11-24");
    let (mut s, m) = two_institutions(t);
    let from = t + 10 * MINUTE_MS;
    let to = from + 30 * MINUTE_MS;
    let out = s
        .apply(&req(
            t,
            SlaCommand::Announce(AnnounceMaintenance {
                region: "nordic".into(),
                node: Some("no-1".into()),
                from_ms: from,
                to_ms: to,
                reason: "kernel upgrade".into(),
            }),
        ))
        .unwrap();
    // Nordic is inside eu: both institutions may have meetings there.
    let Output::MaintenanceAnnounced { notified, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(notified, vec!["bsi".to_string(), "uio".to_string()]);
    let notes = notices(&s, NoticeKind::Maintenance);
    assert_eq!(notes.len(), 2);
    let bsi = notes.iter().find(|n| n.institution == "bsi").unwrap();
    assert_eq!(
        bsi.delivery,
        Delivery::NoWebhook,
        "an e-mail contact is logged, not posted"
    );
    let body: serde_json::Value = serde_json::from_str(&notes[0].body).unwrap();
    assert_eq!(
        body["alerts"][0]["annotations"]["description"],
        "kernel upgrade"
    );

    // Before the start nothing moves.
    s.apply(&req(from - 1, SlaCommand::Evaluate(EvaluateSla {})))
        .unwrap();
    assert_eq!(s.nodes.get("no-1").unwrap().state, NodeState::Ready);
    // At the start no-1 drains and its meeting moves to eu-1 (uio's
    // residency is nordic, so it cannot: it stays and finishes there).
    let out = s
        .apply(&req(from, SlaCommand::Evaluate(EvaluateSla {})))
        .unwrap();
    assert!(
        matches!(out, Output::SlaEvaluated { ref drained, .. } if drained == &["no-1".to_string()])
    );
    assert_eq!(s.nodes.get("no-1").unwrap().state, NodeState::Draining);
    assert!(s.meetings.by_id.contains_key(&m));
    // Failed joins on no-1 during the window count raw, not corrected.
    s.apply(&req(
        from + MINUTE_MS,
        SlaCommand::Record(RecordSli {
            events: vec![crate::sla::SliEvent {
                at_ms: from + MINUTE_MS,
                institution: Some("uio".into()),
                region: "nordic".into(),
                node: Some("no-1".into()),
                sli: Sli::JoinSuccess,
                total: 100,
                bad: 100,
            }],
        }),
    ))
    .unwrap();
    let out = s
        .apply(&req(
            from + 2 * MINUTE_MS,
            SlaCommand::Evaluate(EvaluateSla {}),
        ))
        .unwrap();
    assert!(
        matches!(out, Output::SlaEvaluated { fired: 0, .. }),
        "{out:?}"
    );
    let r = &s.sla_reports(Some("uio"), from + 2 * MINUTE_MS).unwrap()[0];
    let js = r.slos.iter().find(|x| x.sli == Sli::JoinSuccess).unwrap();
    assert_eq!(js.raw_measured_ppm, Some(0));
    assert_eq!(js.measured_ppm, None);
    assert_eq!(js.budget_left_ppm, 1_000_000);
    assert!(r.regions.iter().any(|x| x.region == "nordic"));
    // At the end it is back in service.
    s.apply(&req(to, SlaCommand::Evaluate(EvaluateSla {})))
        .unwrap();
    assert_eq!(s.nodes.get("no-1").unwrap().state, NodeState::Ready);
}

#[test]
fn alerts_fire_once_notify_and_deliveries_back_off() {
    let t = at("2026-11-24");
    let (mut s, _) = two_institutions(t);
    let failing = |at_ms: u64| {
        SlaCommand::Record(RecordSli {
            events: vec![crate::sla::SliEvent {
                at_ms,
                institution: Some("uio".into()),
                region: "nordic".into(),
                node: Some("no-1".into()),
                sli: Sli::JoinSuccess,
                total: 200,
                bad: 100,
            }],
        })
    };
    s.apply(&req(t, failing(t))).unwrap();
    let out = s
        .apply(&req(t + 1_000, SlaCommand::Evaluate(EvaluateSla {})))
        .unwrap();
    assert!(
        matches!(out, Output::SlaEvaluated { fired: 2, .. }),
        "page and ticket: {out:?}"
    );
    let again = s
        .apply(&req(t + 2_000, SlaCommand::Evaluate(EvaluateSla {})))
        .unwrap();
    assert!(
        matches!(again, Output::SlaEvaluated { fired: 0, .. }),
        "{again:?}"
    );
    let alerts = notices(&s, NoticeKind::Alert);
    assert_eq!(alerts.len(), 2);
    let id = alerts[0].id;
    // A failed attempt schedules a retry a second later, then two.
    s.apply(&req(
        t + 3_000,
        SlaCommand::Delivery(RecordDelivery {
            id,
            at_ms: t + 3_000,
            ok: false,
            outcome: "503".into(),
        }),
    ))
    .unwrap();
    assert_eq!(
        s.sla.outbox.get(id).unwrap().delivery,
        Delivery::Pending {
            next_attempt_ms: t + 4_000
        }
    );
    s.apply(&req(
        t + 4_000,
        SlaCommand::Delivery(RecordDelivery {
            id,
            at_ms: t + 4_000,
            ok: false,
            outcome: "connection refused".into(),
        }),
    ))
    .unwrap();
    assert_eq!(
        s.sla.outbox.get(id).unwrap().delivery,
        Delivery::Pending {
            next_attempt_ms: t + 6_000
        }
    );
    s.apply(&req(
        t + 6_000,
        SlaCommand::Delivery(RecordDelivery {
            id,
            at_ms: t + 6_000,
            ok: true,
            outcome: "200".into(),
        }),
    ))
    .unwrap();
    let n = s.sla.outbox.get(id).unwrap();
    assert_eq!(n.delivery, Delivery::Delivered { at_ms: t + 6_000 });
    assert_eq!(n.attempts.len(), 3);
    // A late duplicate of a finished notification's attempt changes nothing.
    let out = s
        .apply(&req(
            t + 7_000,
            SlaCommand::Delivery(RecordDelivery {
                id,
                at_ms: t + 7_000,
                ok: false,
                outcome: "x".into(),
            }),
        ))
        .unwrap();
    assert_eq!(out, Output::DeliveryRecorded { recorded: false });
    // Snapshots carry it all.
    let bytes = rmp_serde::to_vec_named(&s).unwrap();
    let back: ClusterState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back.sla, s.sla);
}

#[test]
fn bad_maintenance_and_objectives_are_refused_with_reasons() {
    let t = at("2026-11-24");
    let (mut s, _) = two_institutions(t);
    let announce = |region: &str, node: Option<&str>, from_ms, to_ms| {
        SlaCommand::Announce(AnnounceMaintenance {
            region: region.into(),
            node: node.map(str::to_string),
            from_ms,
            to_ms,
            reason: "work".into(),
        })
    };
    assert!(matches!(
        s.apply(&req(t, announce("mars", None, t, t + 1))),
        Err(StateError::UnknownRegion { .. })
    ));
    assert!(matches!(
        s.apply(&req(t, announce("eu", Some("no-1"), t, t + 1))),
        Err(StateError::NodeNotInRegion { .. })
    ));
    assert!(matches!(
        s.apply(&req(t, announce("eu", None, t + 5, t))),
        Err(StateError::BadMaintenance { .. })
    ));
    let mut o = crate::sla::Objectives {
        availability_ppm: 1_000_000,
        ..Default::default()
    };
    assert!(matches!(
        s.apply(&req(
            t,
            SlaCommand::SetObjectives(SetObjectives {
                institution: "uio".into(),
                objectives: Some(o)
            })
        )),
        Err(StateError::BadObjective { .. })
    ));
    o.availability_ppm = 999_500;
    s.apply(&req(
        t,
        SlaCommand::SetObjectives(SetObjectives {
            institution: "uio".into(),
            objectives: Some(o),
        }),
    ))
    .unwrap();
    assert_eq!(s.sla.book.objectives_for("uio").availability_ppm, 999_500);
    assert_eq!(s.sla.book.objectives_for("bsi").availability_ppm, 999_000);
}
