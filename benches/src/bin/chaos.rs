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

/// One process the schedule runs, and what the schedule did to it.
struct Managed {
    host: String,
    child: Option<Child>,
    stopped: bool,
    log: PathBuf,
}

impl Managed {
    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&mut self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: a signal to a child process this runner started.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                // SAFETY: as above.
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGCONT);
                }
                self.stopped = false;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct FaultCounts {
    replica_kills: u64,
    replica_pauses: u64,
    replica_isolations: u64,
    one_way_cuts: u64,
    node_kills: u64,
    node_pauses: u64,
    loss: u64,
    delay: u64,
}

/// What undoing a fault takes, due at a time.
enum Undo {
    RestartReplica(usize),
    Resume(ProcRef),
    RestartNode(usize),
    /// The host, and what its network suffers.
    Heal(String, &'static str),
}

#[derive(Clone, Copy)]
enum ProcRef {
    Replica(usize),
    Node(usize),
}

struct Acked {
    id: u64,
    institution: &'static str,
    residency: &'static str,
    ended: bool,
}

struct World {
    fjord: PathBuf,
    fabric: Arc<Fabric>,
    dir: PathBuf,
    ca: LocalCa,
    replicas: Vec<Managed>,
    nodes: Vec<Managed>,
    /// Processes that exited on their own, and panics in the logs.
    anomalies: Vec<String>,
}

fn addr(fabric: &Fabric, host: &str, port: u16) -> String {
    format!("{}:{port}", fabric.host(host).ip)
}

impl World {
    fn public_addrs(&self) -> Vec<String> {
        REPLICAS
            .iter()
            .map(|h| addr(&self.fabric, h, PUBLIC_PORT))
            .collect()
    }

    fn spawn_replica(&self, i: usize) -> Managed {
        let id = i + 1;
        let host = REPLICAS[i];
        let peers = REPLICAS
            .iter()
            .enumerate()
            .map(|(j, h)| format!("{}={}", j + 1, addr(&self.fabric, h, PEER_PORT)))
            .collect::<Vec<_>>()
            .join(",");
        let tls = self.ca.replica(id as u64).expect("replica certificate");
        let log = self.dir.join(format!("{host}.log"));
        let mut cmd = self.fabric.command(host, &self.fjord);
        let child = with_tls(with_kek(&mut cmd, &self.ca), &tls)
            .args(["control-plane", "--id", &id.to_string()])
            .args(["--listen", &addr(&self.fabric, host, PUBLIC_PORT)])
            .args(["--peer-listen", &addr(&self.fabric, host, PEER_PORT)])
            .args(["--peers", &peers])
            .args(["--metrics-listen", &addr(&self.fabric, host, METRICS_PORT)])
            .args(["--node-heartbeat-interval-ms", &HEARTBEAT_MS.to_string()])
            .args(["--node-lease-ms", &LEASE_MS.to_string()])
            .args(["--snapshot-every-entries", "200"])
            .arg("--data-dir")
            .arg(self.dir.join(host))
            .stdout(Stdio::null())
            .stderr(append(&log))
            .spawn()
            .expect("spawn fjord control-plane");
        Managed {
            host: host.into(),
            child: Some(child),
            stopped: false,
            log,
        }
    }

    fn spawn_node(&self, i: usize) -> Managed {
        let (host, region) = NODES[i];
        let tls = self.ca.node(host).expect("node certificate");
        let log = self.dir.join(format!("{host}.log"));
        let mut cmd = self.fabric.command(host, &self.fjord);
        let child = with_tls(&mut cmd, &tls)
            .args(["media-node", "--region", region, "--id", host])
            .args(["--listen", &addr(&self.fabric, host, MEDIA_PORT)])
            .args(["--control-plane", &self.public_addrs().join(",")])
            .args(["--capacity", "40"])
            .arg("--data-dir")
            .arg(self.dir.join(host))
            .args(["--usage-flush-interval", &format!("{FLUSH_MS}ms")])
            .stdout(Stdio::null())
            .stderr(append(&log))
            .spawn()
            .expect("spawn fjord media-node");
        Managed {
            host: host.into(),
            child: Some(child),
            stopped: false,
            log,
        }
    }

    fn managed(&mut self, p: ProcRef) -> &mut Managed {
        match p {
            ProcRef::Replica(i) => &mut self.replicas[i],
            ProcRef::Node(i) => &mut self.nodes[i],
        }
    }

    /// `fjord ctl -o json ARGS` as the operator, from the client's
    /// namespace; `None` when it fails.
    fn ctl_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let op = self.ca.operator("chaos-operator").expect("operator");
        let out = with_tls(&mut Command::new(&self.fjord), &op)
            .args(["ctl", "--endpoints", &self.public_addrs().join(",")])
            .args(["-o", "json"])
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Appends a line to the schedule's `events.log` (wall-clock ms, as
    /// the processes' logs and the ledger have them).
    fn event(&self, what: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("events.log"))
        {
            let _ = writeln!(f, "{} {what}", fjord_control_plane::raft::now_ms());
        }
    }

    /// Records processes that exited though nobody killed them.
    fn check_alive(&mut self) {
        for m in self.replicas.iter_mut().chain(self.nodes.iter_mut()) {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.anomalies
                        .push(format!("{} exited on its own: {status}", m.host));
                    m.child = None;
                }
            }
        }
    }
}

fn append(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// Issues every certificate the schedule uses for the fabric's addresses
/// (and loopback's, for the operator tools).
fn issue_certificates(ca: &LocalCa, fabric: &Fabric) {
    let sans = |ip: &str| -> Vec<String> {
        let mut s = vec![ip.to_string()];
        s.extend(pki::LOCAL_SANS.iter().map(|s| s.to_string()));
        s
    };
    for (i, host) in REPLICAS.iter().enumerate() {
        pki::issue(
            ca.dir(),
            &Identity::Replica { id: i as u64 + 1 },
            &sans(&fabric.host(host).ip),
            pki::DEFAULT_VALID_DAYS,
        )
        .expect("replica certificate");
    }
    for (host, _) in NODES {
        pki::issue(
            ca.dir(),
            &Identity::Node { id: host.into() },
            &sans(&fabric.host(host).ip),
            pki::DEFAULT_VALID_DAYS,
        )
        .expect("node certificate");
    }
}

fn region_of(node: &str) -> Option<&'static str> {
    NODES.iter().find(|(n, _)| *n == node).map(|(_, r)| *r)
}

fn allowed(residency: &str) -> &'static [&'static str] {
    match residency {
        "nordic" => &["nordic"],
        _ => &["eu", "nordic"],
    }
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
    let mut recorded: BTreeMap<u64, (Duration, u64)> = BTreeMap::new();
    let mut states = Vec::new();
    for (m, s) in sessions.drain(..) {
        states.push((m, s.state.clone()));
        s.stop().await;
    }
    for (m, st) in &states {
        let e = recorded.entry(*m).or_default();
        e.0 += st.in_meeting();
        e.1 += st.generation.load(std::sync::atomic::Ordering::Acquire);
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

fn inject(
    world: &mut World,
    rng: &mut SplitMix64,
    pending: &mut Vec<(Instant, Undo)>,
    counts: &mut FaultCounts,
) {
    let now = Instant::now();
    let hold = |rng: &mut SplitMix64, min: u64, span: u64| {
        now + Duration::from_millis(min + rng.below(span as usize) as u64)
    };
    // At most two replicas faulty at once (a majority may still be lost
    // for a while: writes then fail, which is allowed).
    let replicas_faulty = pending
        .iter()
        .filter(|(_, u)| {
            matches!(
                u,
                Undo::RestartReplica(_) | Undo::Resume(ProcRef::Replica(_))
            ) || matches!(u, Undo::Heal(h, _) if h.starts_with("cp"))
        })
        .count();
    let busy = |pending: &Vec<(Instant, Undo)>, host: &str| {
        pending.iter().any(|(_, u)| match u {
            Undo::RestartReplica(i) | Undo::Resume(ProcRef::Replica(i)) => REPLICAS[*i] == host,
            Undo::RestartNode(i) | Undo::Resume(ProcRef::Node(i)) => NODES[*i].0 == host,
            Undo::Heal(h, _) => h == host,
        })
    };
    let before = pending.len();
    let kind = rng.below(8);
    let r = rng.below(REPLICAS.len());
    let n = rng.below(NODES.len());
    match kind {
        0..=3 if replicas_faulty < 2 && !busy(pending, REPLICAS[r]) => match kind {
            0 => {
                world.replicas[r].kill9();
                counts.replica_kills += 1;
                pending.push((hold(rng, 300, 2000), Undo::RestartReplica(r)));
            }
            1 => {
                world.replicas[r].signal(libc::SIGSTOP);
                world.replicas[r].stopped = true;
                counts.replica_pauses += 1;
                pending.push((hold(rng, 300, 2500), Undo::Resume(ProcRef::Replica(r))));
            }
            2 => {
                for other in REPLICAS.iter().filter(|h| **h != REPLICAS[r]) {
                    let _ = world.fabric.cut(REPLICAS[r], other, true);
                }
                counts.replica_isolations += 1;
                let undo = Undo::Heal(REPLICAS[r].into(), "isolated (cut both ways)");
                pending.push((hold(rng, 500, 3000), undo));
            }
            _ => {
                let other = REPLICAS[(r + 1 + rng.below(2)) % REPLICAS.len()];
                let _ = world.fabric.cut(REPLICAS[r], other, false);
                counts.one_way_cuts += 1;
                let undo = Undo::Heal(REPLICAS[r].into(), "one-way cut");
                pending.push((hold(rng, 500, 3000), undo));
            }
        },
        4 if !busy(pending, NODES[n].0) => {
            world.nodes[n].kill9();
            counts.node_kills += 1;
            pending.push((hold(rng, 500, 2500), Undo::RestartNode(n)));
        }
        5 if !busy(pending, NODES[n].0) => {
            // Shorter than the node lease: a pause, not a death.
            world.nodes[n].signal(libc::SIGSTOP);
            world.nodes[n].stopped = true;
            counts.node_pauses += 1;
            pending.push((hold(rng, 200, 1300), Undo::Resume(ProcRef::Node(n))));
        }
        6 | 7 => {
            let hosts: Vec<&str> = REPLICAS
                .iter()
                .copied()
                .chain(NODES.iter().map(|(h, _)| *h))
                .collect();
            let h = hosts[rng.below(hosts.len())];
            if busy(pending, h) {
                return;
            }
            let what = if kind == 6 {
                let _ = world.fabric.lose(h, 5 + rng.below(25) as u32);
                counts.loss += 1;
                "packet loss"
            } else {
                // 10–150 ms, each packet by half to one and a half times
                // that: packets overtake each other.
                let ms = 10 + rng.below(141) as u64;
                let share = 20 + rng.below(81) as u32;
                match world.fabric.delay(h, ms, share, rng.next_u64()) {
                    Ok(()) => counts.delay += 1,
                    Err(e) => world.event(&format!("delay on {h} not set: {e}")),
                }
                "packet delay and reordering"
            };
            pending.push((hold(rng, 500, 3000), Undo::Heal(h.into(), what)));
        }
        _ => {}
    }
    if let Some((until, undo)) = pending.get(before) {
        world.event(&format!(
            "fault on {} for {} ms: {}",
            undo.host(),
            until.saturating_duration_since(now).as_millis(),
            undo.fault()
        ));
    }
}

impl Undo {
    fn host(&self) -> &str {
        match self {
            Undo::RestartReplica(i) | Undo::Resume(ProcRef::Replica(i)) => REPLICAS[*i],
            Undo::RestartNode(i) | Undo::Resume(ProcRef::Node(i)) => NODES[*i].0,
            Undo::Heal(h, _) => h,
        }
    }

    fn fault(&self) -> &'static str {
        match self {
            Undo::RestartReplica(_) | Undo::RestartNode(_) => "killed (SIGKILL)",
            Undo::Resume(_) => "paused (SIGSTOP)",
            Undo::Heal(_, what) => what,
        }
    }
}

fn apply_undo(world: &mut World, undo: Undo) {
    world.event(&format!("undo on {}: {}", undo.host(), undo.fault()));
    match undo {
        Undo::RestartReplica(i) => {
            world.check_alive();
            world.replicas[i].kill9();
            world.replicas[i] = world.spawn_replica(i);
        }
        Undo::RestartNode(i) => {
            world.nodes[i].kill9();
            world.nodes[i] = world.spawn_node(i);
        }
        Undo::Resume(p) => {
            let m = world.managed(p);
            m.signal(libc::SIGCONT);
            m.stopped = false;
        }
        Undo::Heal(h, _) => {
            let _ = world.fabric.heal(&h);
        }
    }
}

async fn get_meeting(cp: &Client, id: u64) -> Result<pb::Meeting, tonic::Status> {
    let call = cp.call(|ch| async move {
        pb::meeting_service_client::MeetingServiceClient::new(ch)
            .get_meeting(pb::GetMeetingRequest { id })
            .await
    });
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(r) => r?
            .into_inner()
            .meeting
            .ok_or_else(|| tonic::Status::internal("empty answer")),
        Err(_) => Err(tonic::Status::deadline_exceeded("5 s")),
    }
}

/// The nodes carrying a meeting.
fn carriers(m: &pb::Meeting) -> Vec<String> {
    if m.shares.is_empty() {
        vec![m.node_id.clone()]
    } else {
        m.shares.iter().map(|s| s.node_id.clone()).collect()
    }
}

async fn check_meetings(cp: &Client, acked: &[Acked], anomalies: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for a in acked {
        let m = loop {
            match get_meeting(cp, a.id).await {
                Ok(m)
                    if a.ended
                        || m.state == pb::MeetingState::Placed as i32
                        || Instant::now() > deadline =>
                {
                    break Some(m)
                }
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => break None,
                Err(_) if Instant::now() > deadline => break None,
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let Some(m) = m else {
            anomalies.push(format!("acknowledged meeting {} is missing", a.id));
            continue;
        };
        if m.institution != a.institution {
            anomalies.push(format!(
                "meeting {} belongs to {:?}, scheduled for {}",
                a.id, m.institution, a.institution
            ));
        }
        if a.ended {
            if m.state != pb::MeetingState::Ended as i32 {
                anomalies.push(format!("meeting {} was ended but is {:?}", a.id, m.state));
            }
            continue;
        }
        if m.state != pb::MeetingState::Placed as i32 {
            anomalies.push(format!("meeting {} unplaced 30 s after healing", a.id));
            continue;
        }
        let nodes = carriers(&m);
        let distinct: BTreeSet<&String> = nodes.iter().collect();
        if distinct.len() != nodes.len() {
            anomalies.push(format!(
                "meeting {} placed twice on one node: {nodes:?}",
                a.id
            ));
        }
        for n in &nodes {
            match region_of(n) {
                Some(r) if allowed(a.residency).contains(&r) => {}
                r => anomalies.push(format!(
                    "meeting {} of {} ({} residency) on {n} in {r:?}",
                    a.id, a.institution, a.residency
                )),
            }
        }
    }
}

async fn check_participants(
    cp: &Client,
    sessions: &[(u64, Session)],
    anomalies: &mut Vec<String>,
    report: &mut ScheduleReport,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, (meeting, s)) in sessions.iter().enumerate() {
        if s.ended().is_some() {
            report.participants_ended_with_reason += 1;
            continue;
        }
        // In its meeting: receiving media in its current join, on a node
        // that carries the meeting now.
        let ok = loop {
            let (g, receiving) = s.receiving();
            let carried = match get_meeting(cp, *meeting).await {
                Ok(m) => carriers(&m).contains(&s.node()),
                Err(_) => false,
            };
            if g > 0 && receiving && carried {
                break true;
            }
            if s.ended().is_some() {
                report.participants_ended_with_reason += 1;
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !ok {
            anomalies.push(format!(
                "participant {i} of meeting {meeting} is neither in it (on {:?}) nor ended with a reason",
                s.node()
            ));
        }
    }
}

async fn check_ledger(
    world: &World,
    acked: &[Acked],
    recorded: &BTreeMap<u64, (Duration, u64)>,
    report: &mut ScheduleReport,
) {
    let today = fjord_control_plane::licensing::service_date(fjord_control_plane::raft::now_ms());
    let period = format!(
        "{}..{}",
        today.yesterday().expect("date"),
        today.tomorrow().expect("date")
    );
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for (institution, _) in INSTITUTIONS {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let u = world.ctl_json(&[
                "usage",
                "show",
                "--institution",
                institution,
                "--period",
                &period,
                "--sessions",
            ]);
            let open = u
                .as_ref()
                .and_then(|u| u["sessions"].as_array())
                .map(|s| s.iter().filter(|s| s["end"] == "open").count());
            if open == Some(0) {
                rows.extend(
                    u.expect("some")["sessions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
                break;
            }
            if Instant::now() > deadline {
                report.anomalies.push(format!(
                    "{institution}: ledger sessions still open (or unreadable) 30 s after everyone left: {open:?}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    report.ledger_rows = rows.len() as u64;
    // Kept for a failing seed's post-mortem (with --keep).
    let _ = std::fs::write(
        world.dir.join("ledger.json"),
        serde_json::to_string_pretty(&json!({
            "rows": rows,
            "participants_ms": recorded.iter().map(|(m, (d, joins))| json!({
                "meeting": m, "in_meeting_ms": d.as_millis() as u64, "joins": joins,
            })).collect::<Vec<_>>(),
        }))
        .unwrap_or_default(),
    );
    let mut seen = HashSet::new();
    let mut per_meeting: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in &rows {
        let node = r["node_id"].as_str().unwrap_or_default().to_string();
        for key in ["join_seq", "left_seq"] {
            let seq = r[key].as_u64().unwrap_or(0);
            if seq > 0 && !seen.insert((node.clone(), seq)) {
                report
                    .anomalies
                    .push(format!("{node} sequence number {seq} counted twice"));
            }
        }
        let m = r["meeting_id"].as_u64().unwrap_or(0);
        let ms = r["end_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(r["start_ms"].as_u64().unwrap_or(0));
        let e = per_meeting.entry(m).or_default();
        e.0 += ms;
        if r["end"] == "failure" {
            e.1 += 1;
        }
    }
    let known: BTreeSet<u64> = acked.iter().map(|a| a.id).collect();
    for m in per_meeting.keys() {
        if !known.contains(m) && !recorded.contains_key(m) {
            // A meeting whose schedule was not acknowledged but committed
            // (the answer was lost) has no participants: no rows.
            report
                .anomalies
                .push(format!("ledger rows for meeting {m} nobody joined"));
        }
    }
    for (m, (own, joins)) in recorded {
        let (ledger_ms, failures) = per_meeting.get(m).copied().unwrap_or((0, 0));
        let own_ms = own.as_millis() as u64;
        // Each join and leave agrees within a flush interval (joins
        // counts the re-joins too); a session a node's death closed ends
        // when the node was last heard, at most a summary interval and a
        // beat before the participants' last datagram, plus a second for
        // a busy two-core machine.
        let allowed =
            500 + (2 * joins + 4) * FLUSH_MS + failures * (LEASE_MS / 3 + HEARTBEAT_MS + 1000);
        let gap = ledger_ms.abs_diff(own_ms);
        report.ledger_worst_gap_ms = report.ledger_worst_gap_ms.max(gap);
        if gap > allowed {
            report.anomalies.push(format!(
                "meeting {m}: ledger {ledger_ms} ms, participants recorded {own_ms} ms (allowed ±{allowed} ms)"
            ));
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
