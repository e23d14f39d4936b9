//! The usage ledger in the state machine: resends, failure closes, boots,
//! periods and their adjustments, exports as of a revision, the audit
//! window.

use super::licence_tests::{at, cluster, req, set, terms, DAY_MS};
use super::*;
use crate::billing::export::{csv, json, ExportMeta};
use crate::billing::LineKind;
use crate::licensing::{parse_date, MeetingKind, Tier};

const BOOT_A: u64 = 0xA;
const BOOT_B: u64 = 0xB;

fn register(boot: u64) -> NodeCommand {
    NodeCommand::Register(RegisterNode {
        id: "no-1".into(),
        region: "nordic".into(),
        address: "127.0.0.1:9".into(),
        capacity: 100_000,
        certificate: Vec::new(),
        boot,
    })
}

fn ev(seq: u64, boot: u64, at_ms: u64, meeting: u64, pid: u64, joined: bool) -> UsageEvent {
    UsageEvent {
        seq,
        boot,
        at_ms,
        meeting,
        participant: pid,
        kind: if joined {
            UsageEventKind::Joined
        } else {
            UsageEventKind::Left
        },
        features: 0,
        reason: SessionEnd::Left,
        minutes: 0,
        good_minutes: 0,
        join_ok: false,
        join_latency_ms: 0,
    }
}

fn record(events: Vec<UsageEvent>) -> LedgerCommand {
    LedgerCommand::Record(RecordUsage {
        node: "no-1".into(),
        events,
    })
}

/// uio licensed from 2026-10-01, node no-1 on BOOT_A, one meeting
/// (webinar when asked) scheduled at `now`.
fn licensed(now: u64, kind: MeetingKind) -> (ClusterState, u64) {
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set("uio", terms(Tier::Education, &[], "2026-10-01"), None),
    ))
    .unwrap();
    s.apply(&req(now, register(BOOT_A))).unwrap();
    let Ok(Output::Scheduled { meeting, .. }) = s.apply(&req(
        now,
        MeetingCommand::Schedule(ScheduleMeeting {
            request_id: None,
            institution: "uio".into(),
            participants: 100,
            start_ms: None,
            duration_ms: 60 * DAY_MS,
            access: MeetingAccess::default(),
            kind,
            host: Host::OnBehalf,
        }),
    )) else {
        panic!("scheduled")
    };
    (s, meeting.id)
}

fn acked(out: Response) -> u64 {
    match out {
        Ok(Output::UsageAcked { acked_seq }) => acked_seq,
        other => panic!("{other:?}"),
    }
}

fn seconds_of(s: &ClusterState, day: &str, meeting: u64) -> u64 {
    let d = parse_date(day).unwrap();
    let r = s.usage_report("uio", d, d, u64::MAX / 2, false).unwrap();
    r.meetings
        .iter()
        .find(|m| m.meeting == meeting)
        .map_or(0, |m| m.participant_ms / 1000)
}

#[test]
fn a_resent_batch_is_answered_and_never_counted_twice() {
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    let batch = vec![
        ev(1, BOOT_A, t, m, 7, true),
        ev(2, BOOT_A, t + 60_000, m, 7, false),
    ];
    assert_eq!(acked(s.apply(&req(t + 61_000, record(batch.clone())))), 2);
    let once = s.ledger.clone();
    // The answer was lost: the node sends the same batch again, and more.
    let mut again = batch;
    again.push(ev(3, BOOT_A, t + 70_000, m, 8, true));
    again.push(ev(4, BOOT_A, t + 100_000, m, 8, false));
    assert_eq!(acked(s.apply(&req(t + 101_000, record(again)))), 4);
    assert_eq!(s.ledger.sessions.len(), 2);
    assert_eq!(seconds_of(&s, "2026-11-24", m), 60 + 30);
    assert_eq!(once.sessions[0], s.ledger.sessions[0], "append-only");
    // Out of order within a batch is put in order.
    let seqs: Vec<u64> = s.ledger.sessions.iter().map(|r| r.join_seq).collect();
    assert_eq!(seqs, [1, 3]);
}

#[test]
fn a_beat_committed_late_dates_the_node_s_life_by_when_it_was_sent() {
    // Found by the chaos runs: the replica read the node's last beat just
    // before the node was killed, and its commit waited out an election.
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    s.apply(&req(
        t + 1_000,
        record(vec![ev(1, BOOT_A, t + 1_000, m, 7, true)]),
    ))
    .unwrap();
    let sent = t + 30_000;
    let beat = |sent_ms| {
        NodeCommand::Heartbeat(Heartbeat {
            id: "no-1".into(),
            participants: 1,
            seen_ms: None,
            sent_ms,
        })
    };
    s.apply(&req(sent + 1_600, beat(Some(sent)))).unwrap();
    assert_eq!(s.nodes["no-1"].last_heartbeat_ms, sent);
    // The restarted process closes the dead one's session at the last
    // beat sent, not at its commit.
    s.apply(&req(sent + 2_000, register(BOOT_B))).unwrap();
    let row = s.ledger.sessions.back().unwrap();
    assert_eq!((row.end_ms, row.end), (sent, SessionEnd::Failure));
    // A beat is never dated after its commit, nor moves the last one back.
    let now = sent + 3_000;
    s.apply(&req(now, beat(Some(now + 9_000)))).unwrap();
    assert_eq!(s.nodes["no-1"].last_heartbeat_ms, now);
    s.apply(&req(now + 100, beat(Some(sent)))).unwrap();
    assert_eq!(s.nodes["no-1"].last_heartbeat_ms, now);
    // An older replica's summary (no send time) counts at its commit.
    s.apply(&req(now + 200, beat(None))).unwrap();
    assert_eq!(s.nodes["no-1"].last_heartbeat_ms, now + 200);
}

#[test]
fn a_dead_node_s_sessions_end_at_its_last_heartbeat_marked_by_failure() {
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    s.apply(&req(
        t + 1_000,
        record(vec![ev(1, BOOT_A, t + 1_000, m, 7, true)]),
    ))
    .unwrap();
    let last_beat = t + 30_000;
    s.apply(&req(
        last_beat,
        NodeCommand::Heartbeat(Heartbeat {
            id: "no-1".into(),
            participants: 1,
            seen_ms: None,
            sent_ms: None,
        }),
    ))
    .unwrap();
    // The replica holding its stream heard it once more before the stream
    // broke, and says so.
    let heard = last_beat + 200;
    let final_beat = |seen| {
        NodeCommand::Heartbeat(Heartbeat {
            id: "no-1".into(),
            participants: 1,
            seen_ms: Some(seen),
            sent_ms: None,
        })
    };
    s.apply(&req(last_beat + 300, final_beat(heard))).unwrap();
    s.apply(&req(
        last_beat + 10_000,
        NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 5_000 }),
    ))
    .unwrap();
    assert_eq!(s.ledger.open_sessions(), 0);
    let row = s.ledger.sessions.back().unwrap();
    assert_eq!(
        (row.start_ms, row.end_ms, row.end),
        (t + 1_000, heard, SessionEnd::Failure)
    );
    // A stream's last word never brings a node back.
    s.apply(&req(last_beat + 11_000, final_beat(last_beat + 10_500)))
        .unwrap();
    assert_eq!(s.nodes["no-1"].state, NodeState::Down);
    let last_beat = heard;
    // The restarted process resends what the dead one journaled after its
    // last report: a join before the failure close, and one after the
    // last heartbeat. Both end with the process; neither stays open.
    s.apply(&req(last_beat + 20_000, register(BOOT_B))).unwrap();
    s.apply(&req(
        last_beat + 21_000,
        record(vec![
            ev(2, BOOT_A, t + 20_000, m, 8, true),
            ev(3, BOOT_A, last_beat + 500, m, 9, true),
            ev(4, BOOT_A, last_beat + 900, m, 7, false),
        ]),
    ))
    .unwrap();
    assert_eq!(s.ledger.open_sessions(), 0);
    let ends: Vec<(u64, u64)> = s
        .ledger
        .sessions
        .iter()
        .map(|r| (r.participant, r.end_ms - r.start_ms))
        .collect();
    assert_eq!(ends, [(7, 29_200), (8, 10_200), (9, 0)]);
    assert_eq!(
        s.ledger.unmatched_left, 1,
        "the left after the failure close is not counted"
    );
    // The new process's own sessions run normally.
    s.apply(&req(
        last_beat + 40_000,
        record(vec![
            ev(5, BOOT_B, last_beat + 30_000, m, 10, true),
            ev(6, BOOT_B, last_beat + 40_000, m, 10, false),
        ]),
    ))
    .unwrap();
    assert_eq!(s.ledger.sessions.back().unwrap().end, SessionEnd::Left);
}

#[test]
fn a_quick_restart_closes_the_previous_process_s_sessions() {
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    s.apply(&req(t, record(vec![ev(1, BOOT_A, t, m, 7, true)])))
        .unwrap();
    // Restarted within its lease: never declared down.
    s.apply(&req(t + 2_000, register(BOOT_B))).unwrap();
    assert_eq!(s.ledger.open_sessions(), 0);
    assert_eq!(s.ledger.sessions[0].end, SessionEnd::Failure);
}

#[test]
fn closing_a_period_freezes_its_export_and_late_usage_becomes_an_adjustment() {
    let t = at("2026-11-03");
    let (mut s, m) = licensed(t, MeetingKind::Webinar);
    // A table without an inclusion, so every attendee-hour is billed.
    let mut table = crate::licensing::PriceTable::builtin();
    table.version = "test-1".into();
    table.effective = parse_date("2026-01-01").unwrap();
    table.consumption_included.clear();
    s.apply(&req(
        t,
        LicenceCommand::LoadPriceTable(LoadPriceTable {
            table,
            only_if_none: false,
        }),
    ))
    .unwrap();
    let attendee = |seq, at_ms, pid, joined| UsageEvent {
        features: FEATURE_WEBINAR_ATTENDEE,
        ..ev(seq, BOOT_A, at_ms, m, pid, joined)
    };
    // Two attendee-hours on 3 November.
    s.apply(&req(
        t + 7_200_000,
        record(vec![
            attendee(1, t, 1, true),
            attendee(2, t + 7_200_000, 1, false),
        ]),
    ))
    .unwrap();
    let nov = (
        parse_date("2026-11-01").unwrap(),
        parse_date("2026-11-30").unwrap(),
    );
    let dec = (
        parse_date("2026-12-01").unwrap(),
        parse_date("2026-12-31").unwrap(),
    );
    let export = |s: &ClusterState, p: (jiff::civil::Date, jiff::civil::Date), as_of| {
        let e = s.billing_export(Some("uio"), p.0, p.1, as_of).unwrap();
        let meta = ExportMeta {
            period_first: &p.0.to_string(),
            period_last: &p.1.to_string(),
            revision: e.revision,
            closed: e.closed,
        };
        (
            csv(&meta, &e.invoices).unwrap(),
            json(&meta, &e.invoices).unwrap(),
            e,
        )
    };
    // Not over yet: refused.
    assert!(matches!(
        s.apply(&req(
            at("2026-11-30"),
            LedgerCommand::ClosePeriod(ClosePeriod {
                first: nov.0,
                last: nov.1
            })
        )),
        Err(StateError::PeriodNotOver { .. })
    ));
    let (open_csv, _, open) = export(&s, nov, 0);
    let consumption: Vec<&crate::billing::InvoiceLine> = open.invoices[0]
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Consumption)
        .collect();
    // 7,200 s at 40 øre an hour: 80 øre.
    assert_eq!(consumption.len(), 1);
    assert_eq!(
        (consumption[0].quantity, consumption[0].amount_minor),
        (7200, 80)
    );
    assert!(!open.closed);

    let closed_at = at("2026-12-02");
    let Ok(Output::PeriodClosed { revision, .. }) = s.apply(&req(
        closed_at,
        LedgerCommand::ClosePeriod(ClosePeriod {
            first: nov.0,
            last: nov.1,
        }),
    )) else {
        panic!("closed")
    };
    let (closed_csv, closed_json, e) = export(&s, nov, 0);
    assert!(e.closed);
    assert_eq!(e.revision, revision);
    assert_eq!(e.invoices, open.invoices, "closing stores what was there");
    assert_ne!(
        open_csv, closed_csv,
        "the closed export names the close revision"
    );
    // Closing twice, or an overlapping period, is refused.
    assert!(matches!(
        s.apply(&req(
            closed_at,
            LedgerCommand::ClosePeriod(ClosePeriod {
                first: nov.0,
                last: nov.1
            })
        )),
        Err(StateError::PeriodOverlapsClosed { .. })
    ));

    // A node that was cut off reports an hour from 4 November, late.
    s.apply(&req(
        closed_at + 1_000,
        record(vec![
            attendee(3, at("2026-11-04"), 2, true),
            attendee(4, at("2026-11-04") + 3_600_000, 2, false),
        ]),
    ))
    .unwrap();
    let (again_csv, again_json, _) = export(&s, nov, 0);
    assert_eq!(
        again_csv, closed_csv,
        "a closed period's export never changes"
    );
    assert_eq!(again_json, closed_json);
    let (_, _, december) = export(&s, dec, 0);
    let adj: Vec<&crate::billing::InvoiceLine> = december.invoices[0]
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Adjustment)
        .collect();
    assert_eq!(adj.len(), 1, "{adj:?}");
    assert_eq!(adj[0].item, "consumption:webinar_attendee_hour");
    assert_eq!((adj[0].quantity, adj[0].amount_minor), (3600, 40));
    assert_eq!(adj[0].corrects.as_deref(), Some("2026-11-01..2026-11-30"));
    assert!(adj[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("after the period was closed"));
    // December closed with it: the adjustment is made once, not again in January.
    s.apply(&req(
        at("2027-01-02"),
        LedgerCommand::ClosePeriod(ClosePeriod {
            first: dec.0,
            last: dec.1,
        }),
    ))
    .unwrap();
    let jan = (
        parse_date("2027-01-01").unwrap(),
        parse_date("2027-01-31").unwrap(),
    );
    let (_, _, january) = export(&s, jan, 0);
    assert!(january.invoices[0]
        .lines
        .iter()
        .all(|l| l.kind != LineKind::Adjustment));
}

#[test]
fn an_export_as_of_a_revision_is_the_same_bytes_later() {
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Webinar);
    let attendee = |seq, at_ms, pid, joined| UsageEvent {
        features: FEATURE_WEBINAR_ATTENDEE,
        ..ev(seq, BOOT_A, at_ms, m, pid, joined)
    };
    s.apply(&req(
        t + 10,
        record(vec![
            attendee(1, t, 1, true),
            attendee(2, t + 9_000_000, 1, false),
        ]),
    ))
    .unwrap();
    let (first, last) = (
        parse_date("2026-10-01").unwrap(),
        parse_date("2027-09-30").unwrap(),
    );
    let before = s.billing_export(None, first, last, 0).unwrap();
    let rev = before.revision;
    // More usage, and a licence change, after that revision.
    s.apply(&req(
        t + 20,
        record(vec![
            attendee(3, t + 10, 2, true),
            attendee(4, t + 5_000_000, 2, false),
        ]),
    ))
    .unwrap();
    s.apply(&req(
        t + 30,
        set(
            "uio",
            terms(Tier::Education, &["webinar-1000"], "2026-10-01"),
            Some("2026-12-01"),
        ),
    ))
    .unwrap();
    let later = s.billing_export(None, first, last, rev).unwrap();
    assert_eq!(later, before);
    let now = s.billing_export(None, first, last, 0).unwrap();
    assert_ne!(now, before);
    assert!(matches!(
        s.billing_export(None, first, last, now.revision + 1),
        Err(StateError::RevisionAhead { .. })
    ));
}

#[test]
fn the_audit_window_drops_billed_raw_rows_and_keeps_their_daily_totals() {
    let t = at("2026-10-05");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    s.apply(&req(
        t + 10,
        record(vec![
            ev(1, BOOT_A, t, m, 1, true),
            ev(2, BOOT_A, t + 600_000, m, 1, false),
        ]),
    ))
    .unwrap();
    let oct = (
        parse_date("2026-10-01").unwrap(),
        parse_date("2026-10-31").unwrap(),
    );
    // Not billed yet: nothing is dropped, however old.
    let much_later = t + 400 * DAY_MS;
    let Ok(Output::LedgerSwept { dropped }) = s.apply(&req(
        much_later,
        LedgerCommand::Sweep(SweepLedger {
            audit_window_days: 30,
        }),
    )) else {
        panic!()
    };
    assert_eq!(dropped, 0);
    s.apply(&req(
        much_later,
        LedgerCommand::ClosePeriod(ClosePeriod {
            first: oct.0,
            last: oct.1,
        }),
    ))
    .unwrap();
    let Ok(Output::LedgerSwept { dropped }) = s.apply(&req(
        much_later,
        LedgerCommand::Sweep(SweepLedger {
            audit_window_days: 30,
        }),
    )) else {
        panic!()
    };
    assert_eq!(dropped, 1);
    assert!(s.ledger.sessions.is_empty());
    let r = s
        .usage_report("uio", oct.0, oct.1, much_later, false)
        .unwrap();
    assert_eq!((r.participant_ms, r.rolled_up_ms), (0, 600_000));
    assert!(matches!(
        s.apply(&req(
            much_later,
            LedgerCommand::Sweep(SweepLedger {
                audit_window_days: 0
            })
        )),
        Err(StateError::BadAuditWindow { .. })
    ));
}

#[test]
fn quality_minutes_add_up_per_institution_and_day() {
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    let quality = |seq, minutes, good| UsageEvent {
        kind: UsageEventKind::Quality,
        minutes,
        good_minutes: good,
        ..ev(seq, BOOT_A, t, m, 0, false)
    };
    s.apply(&req(t, record(vec![quality(1, 12, 11), quality(2, 3, 3)])))
        .unwrap();
    let d = parse_date("2026-11-24").unwrap();
    let r = s.usage_report("uio", d, d, t, false).unwrap();
    assert_eq!((r.quality_minutes, r.good_quality_minutes), (15, 14));
    assert!(s.ledger.sessions.is_empty(), "quality is no billing row");
}

#[test]
fn the_ledger_survives_a_snapshot_round_trip() {
    let t = at("2026-11-24");
    let (mut s, m) = licensed(t, MeetingKind::Meeting);
    s.apply(&req(
        t + 10,
        record(vec![
            ev(1, BOOT_A, t, m, 1, true),
            ev(2, BOOT_A, t + 5, m, 1, false),
            ev(3, BOOT_A, t + 6, m, 2, true),
        ]),
    ))
    .unwrap();
    let bytes = rmp_serde::to_vec_named(&s).unwrap();
    let back: ClusterState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, s);
    let json = serde_json::to_vec(&s).unwrap();
    let back: ClusterState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
}

mod properties {
    use proptest::prelude::{
        any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
    };
    use proptest::strategy::Strategy as _;

    use super::*;

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        /// A participant's stay: day offset, start second, length in
        /// seconds, feature bits.
        Stay(u16, u32, u32, u32),
        /// A licence change: day offset, staff FTE (hundredths), students,
        /// with the webinar add-on or not.
        Licence(u16, u64, u32, bool),
        /// Close the month after the last closed one, if it is over.
        CloseMonth,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        prop_oneof![
            6 => (0u16..55, 0u32..86_400, 1u32..20_000, 0u32..16).prop_map(|(d, s, l, f)| Step::Stay(d, s, l, f)),
            2 => (0u16..120, 1u64..1_000_000, 0u32..5_000, any::<bool>()).prop_map(|(d, f, s, w)| Step::Licence(d, f, s, w)),
            1 => Just(Step::CloseMonth),
        ]
    }

    /// Applies the steps in order of their day, from 2026-10-01.
    fn run(steps: &[Step]) -> ClusterState {
        let base = at("2026-10-01");
        let (mut s, m) = licensed(base, MeetingKind::Webinar);
        // Every attendee-hour billed, so consumption lines appear.
        let mut table = crate::licensing::PriceTable::builtin();
        table.version = "no-inclusion".into();
        table.consumption_included.clear();
        s.apply(&req(
            base,
            LicenceCommand::LoadPriceTable(LoadPriceTable {
                table,
                only_if_none: false,
            }),
        ))
        .unwrap();
        let mut seq = 0u64;
        let mut pid = 0u64;
        let mut closed_months = 0;
        let day_of = |st: &Step| match st {
            Step::Stay(d, ..) | Step::Licence(d, ..) => u64::from(*d),
            // Closing happens "now", after whatever came before.
            Step::CloseMonth => 0,
        };
        let mut last_day = 0u64;
        for st in steps {
            // Time only moves forward; a step about an earlier day arrives
            // late (usage reported after its period closed, a licence
            // change recorded after the fact).
            let day = day_of(st);
            last_day = last_day.max(day);
            let now = base + last_day * DAY_MS;
            let then = base + day * DAY_MS;
            match st {
                Step::Stay(_, start_s, len_s, features) => {
                    let start = then + u64::from(*start_s) * 1000 - DAY_MS / 2;
                    let end = start + u64::from(*len_s) * 1000;
                    pid += 1;
                    let mut j = ev(seq + 1, BOOT_A, start, m, pid, true);
                    j.features = *features & 7;
                    let l = ev(seq + 2, BOOT_A, end, m, pid, false);
                    seq += 2;
                    let _ = s.apply(&req(end.max(now), record(vec![j, l])));
                }
                Step::Licence(_, fte, students, webinar) => {
                    let mut t = terms(
                        Tier::Education,
                        if *webinar { &["webinar-1000"] } else { &[] },
                        "2026-10-01",
                    );
                    t.staff_fte_centi = *fte;
                    t.student_licences = *students;
                    let effective = crate::licensing::service_date(then).to_string();
                    let _ = s.apply(&req(now, set("uio", t, Some(&effective))));
                }
                Step::CloseMonth => {
                    let first = parse_date("2026-10-01")
                        .unwrap()
                        .checked_add(jiff::Span::new().months(closed_months))
                        .unwrap();
                    let last = first
                        .checked_add(jiff::Span::new().months(1))
                        .unwrap()
                        .yesterday()
                        .unwrap();
                    if s.apply(&req(
                        now,
                        LedgerCommand::ClosePeriod(ClosePeriod { first, last }),
                    ))
                    .is_ok()
                    {
                        closed_months += 1;
                    }
                }
            }
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn exports_are_pure_totals_add_up_and_only_adjustments_go_negative(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let s = run(&steps);
            if std::env::var_os("FJORD_PROPERTY_COVERAGE").is_some() {
                let kinds: std::collections::BTreeSet<&str> = s.ledger.closed_periods.iter()
                    .flat_map(|p| &p.invoices).flat_map(|i| &i.lines).map(|l| l.kind.as_str()).collect();
                eprintln!("closed {} periods, line kinds {kinds:?}", s.ledger.closed_periods.len());
            }
            let again = run(&steps);
            for (first, last) in [("2026-10-01", "2027-09-30"), ("2026-10-01", "2026-10-31"), ("2027-01-01", "2027-03-31")] {
                let (first, last) = (parse_date(first).unwrap(), parse_date(last).unwrap());
                let Ok(e) = s.billing_export(None, first, last, 0) else {
                    // Overlapping a closed period: refused, never wrong.
                    continue;
                };
                let meta = ExportMeta {
                    period_first: &first.to_string(),
                    period_last: &last.to_string(),
                    revision: e.revision,
                    closed: e.closed,
                };
                let bytes = (csv(&meta, &e.invoices).unwrap(), json(&meta, &e.invoices).unwrap());
                let e2 = again.billing_export(None, first, last, 0).unwrap();
                let bytes2 = (csv(&meta, &e2.invoices).unwrap(), json(&meta, &e2.invoices).unwrap());
                prop_assert_eq!(&bytes, &bytes2, "same inputs, same bytes");
                let e3 = s.billing_export(None, first, last, e.revision).unwrap();
                prop_assert_eq!(&e3, &e);
                for inv in &e.invoices {
                    prop_assert_eq!(inv.total_minor, inv.lines.iter().map(|l| l.amount_minor).sum::<i64>());
                    for l in &inv.lines {
                        if l.kind != LineKind::Adjustment {
                            prop_assert!(l.amount_minor >= 0 && l.quantity >= 0, "{:?}", l);
                        } else {
                            prop_assert!(l.corrects.is_some() && l.reason.is_some());
                        }
                    }
                }
            }
        }
    }
}
