//! The ledger in one process, printing JSON: applies one institution-year
//! of usage (1,000,000 events by default: join/leave pairs spread over the
//! contract year, half of them webinar attendees) to the state machine,
//! then times what billing and usage reports do with it:
//!
//!   cargo run --release -p fjord-benches --bin ledger_bench [-- --events N]
//!
//! - `apply`: events/s through `ClusterState::apply` (no Raft, no disk);
//! - `export_current`: the institution-year's invoice at the current
//!   revision (daily totals) to CSV and JSON;
//! - `export_as_of_mid`: the same as of the revision halfway through (the
//!   later half of the rows subtracted from the daily totals);
//! - `usage_report`: participant time per meeting over the year (a scan
//!   of every row).

use std::time::Instant;

use clap::Parser;
use serde_json::json;

use fjord_control_plane::billing::export::{csv, json as export_json, ExportMeta};
use fjord_control_plane::licensing::calendar::start_of_service_date;
use fjord_control_plane::licensing::{parse_date, LicenceTerms, PriceTable, Tier};
use fjord_control_plane::placement::Strategy;
use fjord_control_plane::state::{
    ClusterState, Command, CreateInstitution, Host, InstitutionCommand, LedgerCommand,
    LicenceCommand, LoadPriceTable, MeetingCommand, NodeCommand, Output, RecordUsage, RegisterNode,
    Reporter, Request, ScheduleMeeting, SessionEnd, SetLicence, UsageEvent, UsageEventKind,
    FEATURE_WEBINAR_ATTENDEE,
};

#[derive(Parser)]
struct Args {
    /// Usage events in the year (pairs of join and leave).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per applied batch (one ledger command each).
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
}

const DAY_MS: u64 = 86_400_000;

fn req(now_ms: u64, command: impl Into<Command>) -> Request {
    Request {
        now_ms,
        seed: now_ms,
        strategy: Strategy::LeastLoaded,
        op_id: 0,
        command: command.into(),
    }
}

fn ms(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn main() {
    let args = Args::parse();
    let year_first = parse_date("2026-10-01").unwrap();
    let year_last = parse_date("2027-09-30").unwrap();
    let t0 = start_of_service_date(year_first) + 3_600_000;
    let mut s = ClusterState::default();
    let mut table = PriceTable::builtin();
    table.version = "bench".into();
    table.consumption_included.clear();
    let setup: Vec<Command> = vec![
        InstitutionCommand::Create(CreateInstitution {
            name: "bench".into(),
            residency: "nordic".into(),
            home_region: None,
            max_participants: 100_000,
        })
        .into(),
        NodeCommand::Register(RegisterNode {
            id: "n1".into(),
            region: "nordic".into(),
            address: "127.0.0.1:9".into(),
            capacity: 100_000,
            certificate: Vec::new(),
            boot: 1,
        })
        .into(),
        LicenceCommand::LoadPriceTable(LoadPriceTable {
            table,
            only_if_none: false,
        })
        .into(),
        LicenceCommand::Set(SetLicence {
            institution: "bench".into(),
            effective: None,
            terms: LicenceTerms {
                tier: Tier::Education,
                staff_fte_centi: 500_000,
                student_licences: 2_000,
                add_ons: ["webinar-5000".to_string()].into(),
                agreement_start: year_first,
                agreement_contact: "avtale@bench.example".into(),
                technical_contact: "noc@bench.example".into(),
                allow_overage: false,
            },
            reporter: Reporter::Operator,
        })
        .into(),
    ];
    for c in setup {
        s.apply(&req(t0, c)).expect("setup");
    }
    let Ok(Output::Scheduled { meeting, .. }) = s.apply(&req(
        t0,
        MeetingCommand::Schedule(ScheduleMeeting {
            request_id: None,
            institution: "bench".into(),
            participants: 1000,
            start_ms: Some(t0),
            duration_ms: 365 * DAY_MS,
            access: Default::default(),
            kind: fjord_control_plane::licensing::MeetingKind::Webinar,
            host: Host::OnBehalf,
        }),
    )) else {
        panic!("meeting not scheduled")
    };

    // Sessions of 30 minutes, starting evenly over the year.
    let sessions = args.events / 2;
    let step = 364 * DAY_MS / sessions.max(1);
    let mut seq = 0u64;
    let apply_start = Instant::now();
    let mut batch = Vec::with_capacity(args.batch as usize);
    let mut mid_revision = 0;
    for i in 0..sessions {
        let start = t0 + i * step;
        let features = if i % 2 == 0 {
            FEATURE_WEBINAR_ATTENDEE
        } else {
            0
        };
        for (kind, at) in [
            (UsageEventKind::Joined, start),
            (UsageEventKind::Left, start + 1_800_000),
        ] {
            seq += 1;
            batch.push(UsageEvent {
                seq,
                boot: 1,
                at_ms: at,
                meeting: meeting.id,
                participant: i + 1,
                kind,
                features,
                reason: SessionEnd::Left,
                minutes: 0,
                good_minutes: 0,
                join_ok: false,
                join_latency_ms: 0,
            });
        }
        if batch.len() as u64 >= args.batch || i + 1 == sessions {
            let now = start + 1_800_000;
            s.apply(&req(
                now,
                LedgerCommand::Record(RecordUsage {
                    node: "n1".into(),
                    events: std::mem::take(&mut batch),
                }),
            ))
            .expect("record");
            if mid_revision == 0 && i >= sessions / 2 {
                mid_revision = s.ledger.revision;
            }
        }
    }
    let apply_s = apply_start.elapsed().as_secs_f64();

    let export = |as_of: u64| {
        let t = Instant::now();
        let e = s
            .billing_export(Some("bench"), year_first, year_last, as_of)
            .expect("export");
        let meta = ExportMeta {
            period_first: "2026-10-01",
            period_last: "2027-09-30",
            revision: e.revision,
            closed: e.closed,
        };
        let c = csv(&meta, &e.invoices).expect("csv");
        let j = export_json(&meta, &e.invoices).expect("json");
        let took = ms(t);
        let total = e.invoices[0].total_minor;
        (took, c.len(), j.len(), total, e.invoices[0].lines.len())
    };
    let (current_ms, csv_bytes, json_bytes, total, lines) = export(0);
    let (mid_ms, _, _, mid_total, _) = export(mid_revision);
    let t = Instant::now();
    let report = s
        .usage_report("bench", year_first, year_last, u64::MAX / 2, false)
        .expect("usage");
    let usage_ms = ms(t);
    let out = json!({
        "benchmark": "ledger_in_process",
        "events": seq,
        "rows": s.ledger.sessions.len(),
        "apply_events_per_s": (seq as f64 / apply_s).round(),
        "export_current_ms": current_ms,
        "export_as_of_mid_ms": mid_ms,
        "usage_report_ms": usage_ms,
        "invoice_lines": lines,
        "invoice_total_minor": total,
        "invoice_total_minor_as_of_mid": mid_total,
        "csv_bytes": csv_bytes,
        "json_bytes": json_bytes,
        "participant_hours": report.participant_ms / 3_600_000,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
