//! The usage ledger through real processes: three `fjord control-plane`
//! replicas, three `fjord media-node`s with journals on disk, and
//! participants that stay in their meetings. Mid-run a media node (while
//! every replica is paused) and then the Raft leader are killed with
//! SIGKILL and restarted. Afterwards the
//! ledger's participant-seconds per meeting match what the participants
//! recorded themselves, no node sequence number is counted twice, the
//! billing export (CSV and JSON, through `fjord ctl`) is reproducible and
//! reads the same in Python's csv module and in pandas, the connection
//! logs stay on the nodes and are swept, and no participant name is in
//! any replica's files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_benches::{media_node_with, operator, FjordCluster, Proc};
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_media_node::client::session::{Session, SessionState};
use fjord_media_node::client::JoinRequest;
use fjord_proto::v1 as pb;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
/// Node heartbeats and usage flushes in this test.
const HEARTBEAT_MS: u64 = 100;
const FLUSH_MS: u64 = 100;
/// Long enough that a busy machine's stall does not look like a dead node
/// (a false node-down ends every session there at its last heartbeat).
const LEASE_MS: u64 = 3000;
const NAME: &str = "Ola Nordmann-";

fn node(cluster: &FjordCluster, dir: &Path, id: &str) -> Proc {
    let data = dir.join(format!("node-{id}"));
    media_node_with(
        Path::new(FJORD),
        &cluster.ca,
        id,
        "nordic",
        &cluster.addrs.join(","),
        8,
        &[
            "--data-dir".into(),
            data.display().to_string(),
            "--usage-flush-interval".into(),
            format!("{FLUSH_MS}ms"),
            "--connection-log-retention".into(),
            "6s".into(),
            "--connection-log-sweep-interval".into(),
            "500ms".into(),
        ],
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn connection_logs_mention(dir: &Path, needle: &str) -> bool {
    ["n1", "n2", "n3"].iter().any(|id| {
        std::fs::read(dir.join(format!("node-{id}")).join("connections.log"))
            .is_ok_and(|b| contains(&b, needle.as_bytes()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_nothing_doubled_through_a_node_kill_and_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = FjordCluster::start_with(
        Path::new(FJORD),
        dir.path(),
        &[
            "--node-heartbeat-interval-ms",
            &HEARTBEAT_MS.to_string(),
            "--node-lease-ms",
            &LEASE_MS.to_string(),
            // Snapshots during the run, so their bytes are scanned too.
            "--snapshot-every-entries",
            "20",
            "--snapshot-keep-entries",
            "5",
        ],
    );
    let cp = Arc::new(
        Client::from_files(
            &cluster.addrs,
            &operator(&cluster.ca),
            ClientConfig::default(),
        )
        .unwrap(),
    );
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.sample_licence("uni", &[]).await.unwrap();
    let mut nodes: BTreeMap<String, Proc> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| (id.to_string(), node(&cluster, dir.path(), id)))
        .collect();

    // Three meetings of four; two speakers in each (so everyone receives).
    let mut sessions: Vec<(u64, Session)> = Vec::new();
    for _ in 0..3 {
        let m = cp
            .schedule_meeting(pb::ScheduleMeetingRequest {
                institution: "uni".into(),
                participants: 4,
                request_id: request_id(),
                settings: Some(pb::MeetingSettings {
                    disable_waiting_room: true,
                    allow_join_before_host: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let id = m.meeting.unwrap().id;
        for i in 0..4 {
            let req = JoinRequest {
                meeting_id: id,
                passcode: m.passcode.clone(),
                display_name: format!("{NAME}{}", sessions.len()),
                ..Default::default()
            };
            sessions.push((id, Session::start(cp.clone(), req, i < 2)));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sessions.iter().any(|(_, s)| s.stats.received() == 0) {
        assert!(Instant::now() < deadline, "media did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Written at the next usage flush.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connection_logs_mention(dir.path(), NAME) {
        assert!(Instant::now() < deadline, "the nodes log who connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // kill -9 a media node carrying a meeting; its participants come back
    // on another node.
    let victim = sessions[0].1.node();
    let affected: Vec<usize> = (0..sessions.len())
        .filter(|i| sessions[*i].1.node() == victim)
        .collect();
    let generations: Vec<u64> = affected
        .iter()
        .map(|i| {
            sessions[*i]
                .1
                .state
                .generation
                .load(std::sync::atomic::Ordering::Acquire)
        })
        .collect();
    // The replicas are paused (SIGSTOP, as a long stall) across the kill:
    // whichever holds the node's heartbeat stream reads its last beats
    // late, and must not take them for life at the time it reads them.
    let pids: Vec<i32> = cluster
        .procs
        .iter()
        .map(|p| p.0.as_ref().unwrap().id() as i32)
        .collect();
    for pid in &pids {
        // SAFETY: signals to replicas this test started.
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed_at_ms = fjord_control_plane::raft::now_ms();
    nodes.get_mut(&victim).unwrap().kill9();
    std::thread::sleep(Duration::from_millis(2_000));
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    for (i, g) in affected.iter().zip(&generations) {
        sessions[*i]
            .1
            .wait_media_after(*g, Duration::from_secs(20))
            .await
            .expect("a participant of the killed node came back");
    }

    // kill -9 the Raft leader while the nodes keep reporting.
    let status = cluster.ctl_json(&["cluster", "status"]);
    let leader = status["leader_id"].as_u64().unwrap() as usize;
    assert!((1..=3).contains(&leader), "{status}");
    cluster.procs[leader - 1].kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The node restarts on its disk (resending what it journaled), then
    // the old leader on its own.
    nodes.insert(victim.clone(), node(&cluster, dir.path(), &victim));
    cluster.procs[leader - 1] = cluster.spawn(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stayed = sessions.len() - affected.len();
    // Everyone leaves; the participants' own record of their time.
    let states: Vec<(u64, Arc<SessionState>)> = sessions
        .iter()
        .map(|(m, s)| (*m, s.state.clone()))
        .collect();
    for (_, s) in sessions {
        assert_eq!(s.ended(), None);
        s.stop().await;
    }
    let mut recorded: BTreeMap<u64, Duration> = BTreeMap::new();
    for (m, st) in &states {
        *recorded.entry(*m).or_default() += st.in_meeting();
    }

    // The ledger, once every leave is in.
    let today = fjord_control_plane::licensing::service_date(fjord_control_plane::raft::now_ms());
    let period = format!(
        "{}..{}",
        today.yesterday().unwrap(),
        today.tomorrow().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let usage = loop {
        let u = cluster.ctl_json(&[
            "usage",
            "show",
            "--institution",
            "uni",
            "--period",
            &period,
            "--sessions",
        ]);
        let open = u["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["end"] == "open")
            .count();
        // Rooms close when the last participant leaves, and send their
        // last minute of receive-report quality then: those who stayed on
        // their node all along reported at least once (every 5 s).
        if open == 0 && u["quality_minutes"].as_u64().unwrap_or(0) >= stayed as u64 {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "sessions still open or no quality minutes: {u}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rows = usage["sessions"].as_array().unwrap();
    let (quality, good) = (
        usage["quality_minutes"].as_u64().unwrap(),
        usage["good_quality_minutes"].as_u64().unwrap(),
    );
    assert!(good <= quality);
    println!("quality: {good} of {quality} participant-minutes within the limits");
    let failures = rows.iter().filter(|s| s["end"] == "failure").count();
    assert_eq!(
        failures,
        affected.len(),
        "the killed node's sessions, closed by failure: {usage}"
    );

    // No node sequence number counted twice.
    let mut seen = HashSet::new();
    for r in rows {
        let node = r["node_id"].as_str().unwrap().to_string();
        for key in ["join_seq", "left_seq"] {
            let seq = r[key].as_u64().unwrap();
            if seq > 0 {
                assert!(seen.insert((node.clone(), seq)), "{node} seq {seq} twice");
            }
        }
    }

    // Participant-seconds per meeting: the ledger against the participants.
    // Every join and leave agrees within a flush interval, and the ledger
    // rounds to whole seconds; a killed node's sessions end when it was
    // last heard in the ledger (the gap bounded above) and at the last
    // datagram for the participants.
    let per_meeting: BTreeMap<u64, f64> = usage["meetings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["meeting_id"].as_u64().unwrap(),
                m["participant_seconds"].as_u64().unwrap() as f64,
            )
        })
        .collect();
    // A failure close is when the node was last heard (the replica holding
    // its heartbeat stream commits that when the stream breaks): before
    // the kill, and never more than a summary interval (lease / 3) and a
    // beat before it.
    let mut failure_gap_ms: BTreeMap<u64, u64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["end"] == "failure") {
        let end = r["end_ms"].as_u64().unwrap();
        assert!(
            end <= killed_at_ms && killed_at_ms - end <= LEASE_MS / 3 + HEARTBEAT_MS,
            "closed at {end}, killed at {killed_at_ms}: {r}"
        );
        *failure_gap_ms
            .entry(r["meeting_id"].as_u64().unwrap())
            .or_default() += killed_at_ms - end;
    }
    println!("failure closes before the kill, summed per meeting (ms): {failure_gap_ms:?}");
    // The rows, to the millisecond, add up to the per-meeting figure.
    let mut rows_ms: BTreeMap<u64, u64> = BTreeMap::new();
    for r in rows {
        *rows_ms
            .entry(r["meeting_id"].as_u64().unwrap())
            .or_default() += r["end_ms"].as_u64().unwrap() - r["start_ms"].as_u64().unwrap();
    }
    for (m, ms) in &rows_ms {
        assert_eq!(per_meeting[m], ((ms + 500) / 1000) as f64, "meeting {m}");
    }
    let mut worst = 0f64;
    for (m, own) in &recorded {
        let ledger = rows_ms[m] as f64 / 1000.0;
        let own = own.as_secs_f64();
        let killed_here = affected.iter().filter(|i| states[**i].0 == *m).count() as f64;
        let allowed = (4.0 + killed_here) * FLUSH_MS as f64 / 1000.0
            + failure_gap_ms.get(m).copied().unwrap_or(0) as f64 / 1000.0;
        println!(
            "meeting {m}: ledger {ledger:.3} s, participants {own:.3} s, allowed ±{allowed:.3} s"
        );
        assert!(
            (ledger - own).abs() <= allowed,
            "meeting {m}: ledger {ledger} s, participants recorded {own:.2} s"
        );
        worst = worst.max((ledger - own).abs());
    }
    println!(
        "largest difference: {worst:.3} s over {} meetings",
        recorded.len()
    );

    // The export: reproducible as of a revision, CSV and JSON agreeing.
    let year = "2026-10-01..2027-09-30";
    let revision = usage["revision"].as_u64().unwrap().to_string();
    let export = |format: &str| {
        let out = cluster.ctl(&[
            "billing", "export", "--all", "--period", year, "--format", format, "--as-of",
            &revision,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let csv = export("csv");
    let json = export("json");
    assert_eq!(export("csv"), csv, "the same revision, the same bytes");
    assert_eq!(export("json"), json);
    let csv_path = dir.path().join("export.csv");
    let json_path = dir.path().join("export.json");
    std::fs::write(&csv_path, &csv).unwrap();
    std::fs::write(&json_path, &json).unwrap();
    let check = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(PYTHON_CHECK)
        .arg(&csv_path)
        .arg(&json_path)
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    println!("{}", String::from_utf8_lossy(&check.stdout).trim());

    // Connection logs: swept after their (shortened) retention.
    let deadline = Instant::now() + Duration::from_secs(20);
    while connection_logs_mention(dir.path(), NAME) {
        assert!(
            Instant::now() < deadline,
            "connection-log entries outlived their retention"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // No participant name in any replica's log, snapshot or state files
    // (and snapshots were taken).
    let files: Vec<PathBuf> = (1..=3)
        .flat_map(|id| files_under(&dir.path().join(format!("fjord-{id}"))))
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.display().to_string().contains("snap")),
        "no snapshot was written: {files:?}"
    );
    for id in 1..=3 {
        for f in files_under(&dir.path().join(format!("fjord-{id}"))) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !contains(&bytes, NAME.as_bytes()),
                "a participant name in {}",
                f.display()
            );
        }
    }
    drop(nodes);
}

/// Reads the CSV with Python's csv module and with pandas and checks every
/// row against the JSON export: same lines, same amounts in minor units,
/// totals the sum of their lines.
const PYTHON_CHECK: &str = r#"
import csv, json, sys
from decimal import Decimal
import pandas
csv_path, json_path = sys.argv[1], sys.argv[2]
doc = json.load(open(json_path))
lines = [(inv, l) for inv in doc["invoices"] for l in inv["lines"]]
with open(csv_path, newline="") as f:
    rows = list(csv.DictReader(f))
assert len(rows) == len(lines), (len(rows), len(lines))
assert len(lines) > 0
for r, (inv, l) in zip(rows, lines):
    digits = inv["minor_unit_digits"]
    assert r["institution"] == inv["institution"]
    assert r["kind"] == l["kind"] and r["item"] == l["item"], (r, l)
    assert int(r["quantity"]) == l["quantity"]
    assert Decimal(r["amount"]).scaleb(digits) == l["amount_minor"], (r["amount"], l["amount_minor"])
    assert r["currency"] == inv["currency"]
for inv in doc["invoices"]:
    assert inv["total_minor"] == sum(l["amount_minor"] for l in inv["lines"])
frame = pandas.read_csv(csv_path)
assert list(frame.columns)[:4] == ["institution", "period_first", "period_last", "revision"], list(frame.columns)
assert len(frame) == len(lines)
for amount, (inv, l) in zip(frame["amount"], lines):
    assert round(float(amount) * 10 ** inv["minor_unit_digits"]) == l["amount_minor"], (amount, l)
print(f"csv and pandas read {len(rows)} lines matching the JSON")
"#;

/// A participant that vanishes while its node is stopped (SIGSTOP, a
/// paused VM, a machine too busy to run it) is billed until the node
/// stopped, and its session is closed soon after the node resumes. QUIC's
/// own idle timer would keep it "connected" for seconds more: the resumed
/// node takes what was sent during the stop as round trips of that length,
/// and the timer is at least three probe timeouts (found by the chaos
/// runs; the node's hearing watch closes silent connections itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_gone_while_its_node_was_stopped_is_billed_until_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the stop: the node is not declared down.
    let (_cp_proc, addr) =
        fjord_benches::control_plane(Path::new(FJORD), dir.path(), HEARTBEAT_MS, 30_000);
    let ca = fjord_benches::local_ca(dir.path());
    let op = operator(&ca);
    let cp = Arc::new(
        Client::from_files(std::slice::from_ref(&addr), &op, ClientConfig::default()).unwrap(),
    );
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.sample_licence("uni", &[]).await.unwrap();
    let mut n1 = media_node_with(
        Path::new(FJORD),
        &ca,
        "n1",
        "nordic",
        &addr,
        8,
        &["--usage-flush-interval".into(), format!("{FLUSH_MS}ms")],
    );
    let m = cp
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "uni".into(),
            participants: 2,
            request_id: request_id(),
            settings: Some(pb::MeetingSettings {
                disable_waiting_room: true,
                allow_join_before_host: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = m.meeting.unwrap().id;
    let a = Session::start(
        cp.clone(),
        JoinRequest {
            meeting_id: id,
            passcode: m.passcode.clone(),
            display_name: "a".into(),
            ..Default::default()
        },
        true,
    );
    // The one who vanishes: its own process, killed without a word.
    let mut b = fjord_benches::Proc(Some(
        std::process::Command::new(FJORD)
            .env("FJORD_CA", &op.ca)
            .args(["join", "--endpoints", &addr, "--meeting", &id.to_string()])
            .args(["--passcode", &m.passcode, "--name", "b"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let ctl = |args: &[&str]| -> serde_json::Value {
        let out = fjord_benches::with_tls(&mut Command::new(FJORD), &op)
            .args(["ctl", "-o", "json", "--endpoints", &addr])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let today = fjord_control_plane::licensing::service_date(fjord_control_plane::raft::now_ms());
    let period = format!(
        "{}..{}",
        today.yesterday().unwrap(),
        today.tomorrow().unwrap()
    );
    let sessions = || -> Vec<serde_json::Value> {
        ctl(&[
            "usage",
            "show",
            "--institution",
            "uni",
            "--period",
            &period,
            "--sessions",
        ])["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Both in, hearing each other, and both joins in the ledger.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.stats.received() == 0 || sessions().iter().filter(|s| s["end"] == "open").count() < 2 {
        assert!(Instant::now() < deadline, "both participants in the ledger");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let generation = a
        .state
        .generation
        .load(std::sync::atomic::Ordering::Acquire);
    let node_pid = n1.child().id() as i32;
    let stopped_ms = fjord_control_plane::raft::now_ms();
    // Stopped for less than the idle timeout, so the node's timer has not
    // run out when it reads what arrived meanwhile.
    // SAFETY: signals to the node this test started.
    unsafe { libc::kill(node_pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(300));
    b.kill9();
    std::thread::sleep(Duration::from_millis(900));
    unsafe { libc::kill(node_pid, libc::SIGCONT) };
    let resumed = Instant::now();

    // `b`'s session ends, billed until the node stopped; `a` stays.
    let closed = loop {
        let all = sessions();
        assert_eq!(all.len(), 2, "{all:?}");
        if let Some(c) = all.iter().find(|s| s["end"] != "open") {
            break c.clone();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(3),
            "b's session still open {:?} after the node resumed: {all:?}",
            resumed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "closed {:?} after the node resumed: {closed}",
        resumed.elapsed()
    );
    let end = closed["end_ms"].as_u64().unwrap();
    assert!(
        end + 300 >= stopped_ms && end <= stopped_ms + 300,
        "billed until {end}; the node stopped at {stopped_ms} and b was gone 300 ms later: {closed}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = sessions();
    assert_eq!(
        all.iter().filter(|s| s["end"] == "open").count(),
        1,
        "a stays in its session: {all:?}"
    );
    assert_eq!(
        a.state
            .generation
            .load(std::sync::atomic::Ordering::Acquire),
        generation,
        "a did not need to join again"
    );
    a.stop().await;
}
