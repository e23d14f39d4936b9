//! Real-process chaos: three `fjord control-plane` replicas and four
//! `fjord media-node`s, each in a network namespace of its own (see
//! `fjord_benches::netns`), with participants and an operator client in a
//! further namespace. Each schedule, seeded, schedules and ends meetings
//! and keeps participants in some of them while it kills (SIGKILL) and
//! restarts processes, pauses them (SIGSTOP/SIGCONT), partitions replicas
//! (both ways and one way), and drops or delays packets. Then it heals
//! the network and checks:
//!
//! - every acknowledged meeting is present, placed inside its
//!   institution's residency (ended when its end was acknowledged);
//! - every participant is in its meeting, or its session ended with a
//!   recorded reason;
//! - the usage ledger matches what the participants recorded themselves,
//!   and no node sequence number is counted twice;
//! - no process exited or panicked except those the schedule killed.
//!
//! Prints one JSON summary; exits 1 when any check found an anomaly.
//! Needs root (it creates namespaces) and `nft`; run through
//! `scripts/chaos.sh`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fjord_benches::netns::Fabric;
use fjord_benches::{with_kek, with_tls};
use fjord_common::identity::Identity;
use fjord_common::pki::{self, LocalCa};
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_control_plane::placement::SplitMix64;
use fjord_media_node::client::session::Session;
use fjord_media_node::client::JoinRequest;
use fjord_proto::v1 as pb;
use serde_json::json;

mod checks;
mod faults;
mod world;

use checks::*;
use faults::*;
use world::*;

/// Node heartbeat, lease and usage flush of every schedule.
const HEARTBEAT_MS: u64 = 100;
const LEASE_MS: u64 = 3000;
const FLUSH_MS: u64 = 100;
const REPLICAS: [&str; 3] = ["cp1", "cp2", "cp3"];
/// Media nodes and their regions: nordic nests inside eu.
const NODES: [(&str, &str); 4] = [
    ("n1", "nordic"),
    ("n2", "nordic"),
    ("n3", "eu"),
    ("n4", "eu"),
];
/// Institutions and their residencies.
const INSTITUTIONS: [(&str, &str); 2] = [("uni-no", "nordic"), ("uni-eu", "eu")];
const PUBLIC_PORT: u16 = 7000;
const PEER_PORT: u16 = 7001;
const METRICS_PORT: u16 = 9100;
const MEDIA_PORT: u16 = 7400;

#[derive(Parser)]
#[command(
    about = "Seeded real-process fault schedules against a Fjord cluster in network namespaces"
)]
struct Args {
    /// Path of the `fjord` binary.
    #[arg(long)]
    fjord: PathBuf,
    /// Schedules to run (seeds SEED, SEED+1, ...).
    #[arg(long, default_value_t = 1)]
    schedules: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults per schedule.
    #[arg(long, default_value_t = 12)]
    fault_seconds: u64,
    /// Meetings that get participants (two each) per schedule.
    #[arg(long, default_value_t = 4)]
    meetings_with_participants: usize,
    /// Keep each schedule's directory (logs, data) here instead of a
    /// temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
}

struct Acked {
    id: u64,
    institution: &'static str,
    residency: &'static str,
    ended: bool,
}

/// What a meeting's participants recorded themselves.
#[derive(Default)]
struct Recorded {
    in_meeting: Duration,
    /// Join answers over every participant (re-joins included).
    joins: u64,
    /// One line per participant, for an anomaly's explanation.
    participants: Vec<String>,
}

#[derive(Default)]
struct ScheduleReport {
    seed: u64,
    anomalies: Vec<String>,
    faults: FaultCounts,
    writes: u64,
    acked: u64,
    ended: u64,
    participants: u64,
    participants_ended_with_reason: u64,
    ledger_rows: u64,
    ledger_worst_gap_ms: u64,
    seconds: f64,
}

async fn wait_for_leader(world: &World, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = world.ctl_json(&["cluster", "status"]) {
            if s["leader_id"].as_u64().unwrap_or(0) > 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn run_schedule(args: &Args, fabric: Arc<Fabric>, seed: u64) -> ScheduleReport {
    let started = Instant::now();
    let mut report = ScheduleReport {
        seed,
        ..Default::default()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = match &args.keep {
        Some(k) => k.join(format!("seed-{seed}")),
        None => tmp.path().to_path_buf(),
    };
    std::fs::create_dir_all(&dir).expect("schedule dir");
    fabric.heal_all().expect("clean network");
    let ca = LocalCa::open_or_init(&dir.join("pki")).expect("CA");
    issue_certificates(&ca, &fabric);
    let mut world = World {
        fjord: args.fjord.clone(),
        fabric: fabric.clone(),
        dir: dir.clone(),
        ca: ca.clone(),
        replicas: Vec::new(),
        nodes: Vec::new(),
        anomalies: Vec::new(),
    };
    for i in 0..REPLICAS.len() {
        let m = world.spawn_replica(i);
        world.replicas.push(m);
    }
    if !wait_for_leader(&world, Duration::from_secs(60)).await {
        report
            .anomalies
            .push("no leader within 60 s of the start".into());
        return report;
    }
    let op = ca.operator("chaos-operator").expect("operator");
    let config = ClientConfig::default();
    let cp = Arc::new(Client::from_files(&world.public_addrs(), &op, config).expect("client"));
    for (name, residency) in INSTITUTIONS {
        cp.create_institution(pb::CreateInstitutionRequest {
            name: name.into(),
            residency: residency.into(),
            max_participants: 1000,
            ..Default::default()
        })
        .await
        .expect("institution");
        cp.sample_licence(name, &[]).await.expect("licence");
    }
    for i in 0..NODES.len() {
        let m = world.spawn_node(i);
        world.nodes.push(m);
    }
    // Nodes registered and beating before the load starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = world
            .ctl_json(&["node", "list"])
            .and_then(|v| v.as_array().cloned())
            .map(|n| n.iter().filter(|n| n["state"] == "ready").count())
            .unwrap_or(0);
        if up == NODES.len() {
            break;
        }
        if Instant::now() > deadline {
            report
                .anomalies
                .push(format!("{up} of {} nodes up after 30 s", NODES.len()));
            return report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut rng = SplitMix64::new(seed);
    let fault_end = Instant::now() + Duration::from_secs(args.fault_seconds);
    let mut acked: Vec<Acked> = Vec::new();
    let mut sessions: Vec<(u64, Session)> = Vec::new();
    let mut pending: Vec<(Instant, Undo)> = Vec::new();
    let mut next_write = Instant::now();
    let mut next_fault = Instant::now() + Duration::from_millis(500);
    let mut faults = FaultCounts::default();
    while Instant::now() < fault_end {
        let now = Instant::now();
        // Undo what is due.
        let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(t, _)| *t <= now);
        pending = later;
        for (_, undo) in due {
            apply_undo(&mut world, undo);
        }
        if now >= next_write {
            next_write = now + Duration::from_millis(250 + rng.below(250) as u64);
            write_step(&cp, &mut rng, &mut acked, &mut sessions, args, &mut report).await;
        }
        if now >= next_fault {
            next_fault = now + Duration::from_millis(700 + rng.below(1300) as u64);
            inject(&mut world, &mut rng, &mut pending, &mut faults);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Heal: everything restarted, resumed and reconnected.
    for (_, undo) in pending.drain(..) {
        apply_undo(&mut world, undo);
    }
    fabric.heal_all().expect("heal");
    report.faults = faults;
    world.check_alive();
    if !wait_for_leader(&world, Duration::from_secs(30)).await {
        world
            .anomalies
            .push("no leader within 30 s of healing".into());
    }

    check_meetings(&cp, &acked, &mut world.anomalies).await;
    check_participants(&cp, &sessions, &mut world.anomalies, &mut report).await;
    // Everyone leaves; the ledger against the participants' own record.
    let mut recorded: BTreeMap<u64, Recorded> = BTreeMap::new();
    let mut states = Vec::new();
    for (m, s) in sessions.drain(..) {
        states.push((m, s.state.clone()));
        s.stop().await;
    }
    for (m, st) in &states {
        use std::sync::atomic::Ordering::Acquire;
        let e = recorded.entry(*m).or_default();
        let own = st.in_meeting();
        let joins = st.generation.load(Acquire);
        e.in_meeting += own;
        e.joins += joins;
        e.participants.push(format!(
            "{} ms in {joins} joins ({} after a loss, {} moves)",
            own.as_millis(),
            st.rejoins_after_loss.load(Acquire),
            st.moves.load(Acquire),
        ));
    }
    check_ledger(&world, &acked, &recorded, &mut report).await;
    world.check_alive();
    for m in world.replicas.iter().chain(world.nodes.iter()) {
        let text = std::fs::read_to_string(&m.log).unwrap_or_default();
        if text.contains("panicked at") {
            report
                .anomalies
                .push(format!("{} panicked (see {})", m.host, m.log.display()));
        }
    }
    report.anomalies.append(&mut world.anomalies);
    if !report.anomalies.is_empty() {
        // What happened, for a run that kept no directory (CI).
        let events = std::fs::read_to_string(dir.join("events.log")).unwrap_or_default();
        eprintln!("chaos: seed {seed}: events (wall-clock ms):\n{events}");
    }
    report.acked = acked.len() as u64;
    report.ended = acked.iter().filter(|a| a.ended).count() as u64;
    report.seconds = started.elapsed().as_secs_f64();
    drop(world);
    report
}

/// One client step: schedule a meeting (every fourth acknowledged one is
/// ended again), and give the first few meetings two participants.
async fn write_step(
    cp: &Arc<Client>,
    rng: &mut SplitMix64,
    acked: &mut Vec<Acked>,
    sessions: &mut Vec<(u64, Session)>,
    args: &Args,
    report: &mut ScheduleReport,
) {
    let (institution, residency) = INSTITUTIONS[rng.below(INSTITUTIONS.len())];
    report.writes += 1;
    let call = cp.schedule_meeting(pb::ScheduleMeetingRequest {
        institution: institution.into(),
        participants: 4,
        request_id: request_id(),
        settings: Some(pb::MeetingSettings {
            disable_waiting_room: true,
            allow_join_before_host: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(3), call).await else {
        return;
    };
    let Some(meeting) = m.meeting else {
        return;
    };
    acked.push(Acked {
        id: meeting.id,
        institution,
        residency,
        ended: false,
    });
    let with_participants = acked.iter().filter(|a| !a.ended).count();
    if with_participants <= args.meetings_with_participants {
        for _ in 0..2 {
            let req = JoinRequest {
                meeting_id: meeting.id,
                passcode: m.passcode.clone(),
                display_name: format!("p{}", sessions.len()),
                ..Default::default()
            };
            // Both publish, so each receives the other.
            sessions.push((meeting.id, Session::start(cp.clone(), req, true)));
        }
        report.participants += 2;
    } else if acked.len().is_multiple_of(4) {
        let id = meeting.id;
        let end = cp.call(|ch| async move {
            pb::meeting_service_client::MeetingServiceClient::new(ch)
                .end_meeting(pb::EndMeetingRequest { id })
                .await
        });
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), end).await {
            acked.last_mut().expect("just pushed").ended = true;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.fjord.exists(),
        "no fjord binary at {}",
        args.fjord.display()
    );
    if let Some(keep) = &args.keep {
        // The participants' own account (joins, losses, moves), for a
        // failing seed's post-mortem next to the processes' logs.
        std::fs::create_dir_all(keep)?;
        let log = std::fs::File::create(keep.join("participants.log"))?;
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,fjord_media_node::client=debug",
            ))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(log))
            .init();
    }
    let tag = format!("c{}", std::process::id() % 100_000);
    let mut hosts: Vec<&str> = REPLICAS.to_vec();
    hosts.extend(NODES.iter().map(|(h, _)| *h));
    hosts.push("cli");
    let fabric = Arc::new(Fabric::create(&tag, &hosts)?);
    eprintln!("chaos: network of {} namespaces made", hosts.len() + 1);
    // This thread, and the runtime's threads made from it, are the
    // participants' and the operator's host.
    fabric.enter("cli")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for i in 0..args.schedules {
        let seed = args.seed + i;
        let r = runtime.block_on(run_schedule(&args, fabric.clone(), seed));
        eprintln!(
            "chaos: schedule {}/{} seed {seed}: {} anomalies, {} writes ({} acked), {} participants, {:.1} s",
            i + 1,
            args.schedules,
            r.anomalies.len(),
            r.writes,
            r.acked,
            r.participants,
            r.seconds
        );
        for a in &r.anomalies {
            eprintln!("chaos:   anomaly: {a}");
        }
        reports.push(r);
    }
    let sum = |f: fn(&ScheduleReport) -> u64| reports.iter().map(f).sum::<u64>();
    let anomalies = sum(|r| r.anomalies.len() as u64);
    let summary = json!({
        "schedules": reports.len(),
        "first_seed": args.seed,
        "anomalies": anomalies,
        "seconds": started.elapsed().as_secs_f64(),
        "packets_delayed": fabric.delay_stats().delayed,
        "packets_reordered": fabric.delay_stats().reordered,
        "writes": sum(|r| r.writes),
        "acked_meetings": sum(|r| r.acked),
        "ended_meetings": sum(|r| r.ended),
        "participants": sum(|r| r.participants),
        "participants_ended_with_reason": sum(|r| r.participants_ended_with_reason),
        "ledger_rows": sum(|r| r.ledger_rows),
        "ledger_worst_gap_ms": reports.iter().map(|r| r.ledger_worst_gap_ms).max().unwrap_or(0),
        "faults": {
            "replica_kills": sum(|r| r.faults.replica_kills),
            "replica_pauses": sum(|r| r.faults.replica_pauses),
            "replica_isolations": sum(|r| r.faults.replica_isolations),
            "one_way_cuts": sum(|r| r.faults.one_way_cuts),
            "node_kills": sum(|r| r.faults.node_kills),
            "node_pauses": sum(|r| r.faults.node_pauses),
            "loss": sum(|r| r.faults.loss),
            "delay": sum(|r| r.faults.delay),
        },
        "failing_seeds": reports.iter().filter(|r| !r.anomalies.is_empty()).map(|r| json!({
            "seed": r.seed,
            "anomalies": r.anomalies,
            "replay": format!("scripts/chaos.sh --schedules 1 --seed {}", r.seed),
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    drop(runtime);
    drop(fabric);
    if anomalies > 0 {
        std::process::exit(1);
    }
    Ok(())
}
