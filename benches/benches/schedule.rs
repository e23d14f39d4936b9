//! What the licence check costs a schedule: the same `apply` of a schedule
//! (and the end that releases it) with and without the check, side by side.
//!
//! The checked variants look up the institution's licence (twelve dated
//! versions, as a year of monthly FTE reports leaves), its agreement status
//! in the service's time zone and the tier limits with add-ons; the
//! account variant also checks the host's account (one of 1,000) and
//! records its meeting.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fjord_control_plane::licensing::Affiliation;
use fjord_control_plane::licensing::{parse_date, LicenceTerms, MeetingKind, PriceTable, Tier};
use fjord_control_plane::placement::Strategy;
use fjord_control_plane::state::{
    AccountCommand, ClusterState, Command, ConfigureLogin, CreateInstitution, EndMeeting, Host,
    InstitutionCommand, LicenceCommand, LoadPriceTable, Login, LoginConfig, MeetingAccess,
    MeetingCommand, NodeCommand, Output, RegisterNode, Reporter, Request, ScheduleMeeting,
    SetLicence,
};

const NOW: u64 = 1_790_000_000_000; // 2026-09-21

fn req(now_ms: u64, command: Command) -> Request {
    Request {
        now_ms,
        seed: now_ms,
        strategy: Strategy::LeastLoaded,
        op_id: 0,
        command,
    }
}

fn state() -> ClusterState {
    let mut s = ClusterState::default();
    let mut cmds: Vec<Command> = vec![
        InstitutionCommand::Create(CreateInstitution {
            name: "uio".into(),
            residency: "eu".into(),
            home_region: None,
            max_participants: 1000,
        })
        .into(),
        LicenceCommand::LoadPriceTable(LoadPriceTable {
            table: PriceTable::builtin(),
            only_if_none: true,
        })
        .into(),
    ];
    for i in 0..100 {
        cmds.push(
            NodeCommand::Register(RegisterNode {
                id: format!("node-{i:03}"),
                region: if i % 2 == 0 { "eu" } else { "nordic" }.into(),
                address: "127.0.0.1:7201".into(),
                capacity: 1000,
                certificate: Vec::new(),
                boot: 0,
            })
            .into(),
        );
    }
    for month in 1..=12 {
        cmds.push(
            LicenceCommand::Set(SetLicence {
                institution: "uio".into(),
                effective: Some(parse_date(&format!("2025-{month:02}-01")).unwrap()),
                terms: LicenceTerms {
                    tier: Tier::Education,
                    staff_fte_centi: 600_000 + month * 100,
                    student_licences: 2000,
                    add_ons: ["large-meeting-1000".to_string(), "webinar-5000".to_string()].into(),
                    agreement_start: parse_date("2024-10-01").unwrap(),
                    agreement_contact: "avtale@uio.example".into(),
                    technical_contact: "https://alerts.uio.example/fjord".into(),
                    allow_overage: false,
                },
                reporter: Reporter::Operator,
            })
            .into(),
        );
    }
    cmds.push(
        AccountCommand::ConfigureLogin(ConfigureLogin {
            institution: "uio".into(),
            config: LoginConfig {
                issuer: "https://idp.uio.example".into(),
                audience: "fjord".into(),
                jwks: "{\"keys\":[]}".into(),
                affiliation_claim: "eduperson_affiliation".into(),
                eligible: [("employee".to_string(), Affiliation::Staff)].into(),
                affiliation_scope: None,
            },
        })
        .into(),
    );
    for i in 0..1000 {
        cmds.push(
            AccountCommand::Login(Login {
                institution: "uio".into(),
                account: format!("acct-{i:04}"),
                affiliations: vec!["employee".into()],
            })
            .into(),
        );
    }
    for c in cmds {
        s.apply(&req(NOW, c)).unwrap();
    }
    s
}

fn schedule(host: Host) -> Command {
    MeetingCommand::Schedule(ScheduleMeeting {
        request_id: None,
        institution: "uio".into(),
        participants: 50,
        start_ms: None,
        duration_ms: 3_600_000,
        access: MeetingAccess::default(),
        kind: MeetingKind::Meeting,
        host,
    })
    .into()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule_apply");
    group.throughput(Throughput::Elements(1));
    // Each iteration starts from the same state (a fresh copy, made outside
    // the timing): ended meetings stay in the state for days, so a state
    // reused across iterations would grow and skew whichever runs second.
    let base = state();
    for (name, host) in [
        ("unchecked", Host::Unchecked),
        ("licence_checked", Host::OnBehalf),
        (
            "licence_and_account_checked",
            Host::Account {
                id: "acct-0500".into(),
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || base.clone(),
                |s| {
                    let Ok(Output::Scheduled { meeting, .. }) =
                        s.apply(&req(NOW + 1, schedule(host.clone())))
                    else {
                        panic!("schedule refused")
                    };
                    s.apply(&req(
                        NOW + 1,
                        MeetingCommand::End(EndMeeting { id: meeting.id }).into(),
                    ))
                    .unwrap();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
