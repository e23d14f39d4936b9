//! SLA notifications through real processes: three `fjord control-plane`
//! replicas, four `fjord media-node`s in two regions, participants in
//! meetings of two institutions, and a real HTTPS webhook receiver
//! (tests/fixtures/webhook_receiver.py, which checks each signature with
//! Python's own hmac module).
//!
//! 1. A media node carrying one institution's meeting is killed, and the
//!    Raft leader right after it: that institution's contact point gets a
//!    signed fault notice and a firing SLO alert, each exactly once; the
//!    other institution gets nothing.
//! 2. Maintenance announced for the node carrying the other institution's
//!    meeting: both contact points hear of it before it starts, the node
//!    drains (its meeting moves) at the start, and stopping the node during
//!    the window raises no alert and no fault notice.
//!
//! 3. Headless Chromium loads the affected institution's dashboard page
//!    through a signed link: the three numbers per SLO, the budget chart
//!    and the firing alert are there, the other institution is not; a page
//!    without a valid link, or another institution's page, is refused. A
//!    screenshot is kept. (The dashboard is HTTPS with the test CA's
//!    certificate; Chromium is told to accept it rather than given the CA.)
//!
//! Also: `promtool check metrics` passes on a replica's and a media node's
//! `/metrics`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_benches::{free_port, http_get, local_ca, media_node_with, operator, FjordCluster, Proc};
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_media_node::client::session::Session;
use fjord_media_node::client::JoinRequest;
use fjord_proto::v1 as pb;
use serde_json::Value;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
const LEASE_MS: u64 = 3000;

/// Everything the receiver got so far.
fn received(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn alertname(e: &Value) -> &str {
    e["body"]["alerts"][0]["labels"]["alertname"]
        .as_str()
        .unwrap_or("")
}

async fn wait_for(
    cluster: &FjordCluster,
    log: &Path,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = received(log).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}: {:#?}\ncluster: {}\nreplica logs:\n{}",
            received(log),
            String::from_utf8_lossy(&cluster.ctl(&["cluster", "status"]).stdout),
            cluster.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(cluster: &FjordCluster, id: &str, region: &str, extra: &[String]) -> Proc {
    media_node_with(
        Path::new(FJORD),
        &cluster.ca,
        id,
        region,
        &cluster.addrs.join(","),
        8,
        extra,
    )
}

fn promtool_check_metrics(page: &str, what: &str) {
    let body = page.split("\r\n\r\n").nth(1).unwrap_or(page);
    assert!(body.contains("# HELP fjord_"), "{what}: {body}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/prereqs.sh)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_alerts_and_maintenance_reach_the_right_contact_points_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = local_ca(dir.path()).ca_path();
    let dashboard = format!("127.0.0.1:{}", free_port());
    let mut cluster = FjordCluster::start_custom(
        Path::new(FJORD),
        dir.path(),
        &[
            "--node-heartbeat-interval-ms",
            "100",
            "--node-lease-ms",
            &LEASE_MS.to_string(),
            "--sla-evaluate-interval-ms",
            "500",
            "--sla-notify-interval-ms",
            "200",
            "--sla-probe-interval-ms",
            "1000",
            "--webhook-ca",
            ca_path.to_str().unwrap(),
        ],
        vec![
            vec!["--dashboard-listen".to_string(), dashboard.clone()],
            vec![],
            vec![],
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
    for (name, residency) in [("uni", "nordic"), ("other", "eu")] {
        cp.create_institution(pb::CreateInstitutionRequest {
            name: name.into(),
            residency: residency.into(),
            home_region: residency.into(),
            max_participants: 100,
        })
        .await
        .unwrap();
    }
    // Each institution's secret, as its admin would fetch it.
    let mut secrets = BTreeMap::new();
    for name in ["uni", "other"] {
        let v = cluster.ctl_json(&["sla", "webhook-secret", "--institution", name]);
        let secret = v["secret"].as_str().unwrap().to_string();
        assert_eq!(secret.len(), 64);
        secrets.insert(format!("/{name}"), secret);
    }
    assert_ne!(secrets["/uni"], secrets["/other"]);

    // The receiver: HTTPS with a certificate from the test CA (the
    // replicas trust it through --webhook-ca).
    let tls = cluster.ca.node("webhooks").unwrap();
    let log = dir.path().join("webhooks.jsonl");
    let mut receiver = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhook_receiver.py"
        ))
        .arg(tls.cert.as_ref().unwrap())
        .arg(tls.key.as_ref().unwrap())
        .arg(&log)
        .arg(serde_json::to_string(&secrets).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut port = String::new();
    BufReader::new(receiver.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().expect("receiver port");
    let _receiver = Proc(Some(receiver));
    for name in ["uni", "other"] {
        let url = format!("https://127.0.0.1:{port}/{name}");
        let out = cluster.ctl(&[
            "licence",
            "set",
            name,
            "--tier",
            "education",
            "--staff-fte",
            "100",
            "--start",
            "2025-10-01",
            "--agreement-contact",
            "agreement@example.org",
            "--technical-contact",
            &url,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The nordic nodes serve /metrics (one of them is stopped for
    // maintenance below; the other's page is checked).
    let node_metrics: HashMap<&str, String> = ["n1", "n2"]
        .into_iter()
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut nodes: HashMap<String, Proc> = HashMap::new();
    for (id, region) in [
        ("n1", "nordic"),
        ("n2", "nordic"),
        ("e1", "eu"),
        ("e2", "eu"),
    ] {
        let extra = match node_metrics.get(id) {
            Some(addr) => vec!["--metrics-listen".to_string(), addr.clone()],
            None => vec![],
        };
        nodes.insert(id.into(), node(&cluster, id, region, &extra));
    }

    // A meeting of four for each institution, two speakers in each.
    let mut sessions: Vec<(String, u64, Session)> = Vec::new();
    for name in ["uni", "other"] {
        let m = cp
            .schedule_meeting(pb::ScheduleMeetingRequest {
                institution: name.into(),
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
                display_name: format!("{name}-{i}"),
                ..Default::default()
            };
            sessions.push((name.into(), id, Session::start(cp.clone(), req, i < 2)));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sessions.iter().any(|(_, _, s)| s.stats.received() == 0) {
        assert!(Instant::now() < deadline, "media did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few probe rounds on a healthy cluster first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        received(&log).is_empty(),
        "nothing to say yet: {:#?}",
        received(&log)
    );

    // ---- 1. A node fails, and the leader right after it. ----
    let victim = sessions
        .iter()
        .find(|(n, _, _)| n == "other")
        .unwrap()
        .2
        .node();
    assert!(
        victim.starts_with('e'),
        "other's meeting is in eu: {victim}"
    );
    let status = cluster.ctl_json(&["cluster", "status"]);
    let leader = status["leader_id"].as_u64().unwrap() as usize;
    nodes.get_mut(&victim).unwrap().kill9();
    cluster.procs[leader - 1].kill9();
    let fault = wait_for(
        &cluster,
        &log,
        "fault notice",
        Duration::from_secs(30),
        |e| alertname(e) == "FjordMediaNodeDown",
    )
    .await;
    cluster.procs[leader - 1] = cluster.spawn(leader);
    // The probes that failed before the lease ran out burn the
    // availability budget of the regions the node served (eu: other's).
    let alert = wait_for(
        &cluster,
        &log,
        "availability alert",
        Duration::from_secs(30),
        |e| {
            alertname(e).starts_with("FjordSloBudgetBurn")
                && e["body"]["alerts"][0]["labels"]["sli"] == "availability"
        },
    )
    .await;
    // Several evaluate and notify rounds more, on the new leader and with
    // the old one back: nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(4)).await;

    assert_eq!(fault["path"], "/other");
    assert_eq!(fault["body"]["status"], "firing");
    assert_eq!(
        fault["body"]["alerts"][0]["labels"]["node"],
        victim.as_str()
    );
    assert_eq!(fault["body"]["alerts"][0]["labels"]["institution"], "other");
    assert_eq!(alert["path"], "/other");
    assert_eq!(alert["body"]["status"], "firing");
    assert_eq!(alert["body"]["alerts"][0]["labels"]["sli"], "availability");
    let before_maintenance = received(&log);
    check_deliveries(&before_maintenance);
    assert!(
        before_maintenance.iter().all(|e| e["path"] == "/other"),
        "uni's meetings and regions were untouched: {before_maintenance:#?}"
    );
    let notes = cluster.ctl_json(&["sla", "notifications", "--institution", "other"]);
    let delivered = notes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["delivery"] == "delivered")
        .count();
    assert_eq!(delivered, before_maintenance.len(), "{notes:#}");
    let status = cluster.ctl_json(&["sla", "status", "--institution", "other"]);
    assert!(
        !status[0]["firing"].as_array().unwrap().is_empty(),
        "{status:#}"
    );

    // ---- 2. Planned maintenance of the node carrying uni's meeting. ----
    let target = sessions
        .iter()
        .find(|(n, _, _)| n == "uni")
        .unwrap()
        .2
        .node();
    let uni_meeting = sessions.iter().find(|(n, _, _)| n == "uni").unwrap().1;
    let now = fjord_control_plane::raft::now_ms();
    let (from, to) = (now + 4_000, now + 16_000);
    let rfc = |ms: u64| fjord_control_plane::sla::notify::rfc3339(ms);
    let announced = cluster.ctl_json(&[
        "maintenance",
        "announce",
        "--region",
        "nordic",
        "--node",
        &target,
        "--from",
        &rfc(from),
        "--to",
        &rfc(to),
        "--reason",
        "firmware upgrade",
    ]);
    let notified: Vec<&str> = announced["notified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(notified, vec!["other", "uni"], "nordic serves both");
    for path in ["/uni", "/other"] {
        let e = wait_for(
            &cluster,
            &log,
            "maintenance notice",
            Duration::from_secs(4),
            |e| e["path"] == path && alertname(e) == "FjordPlannedMaintenance",
        )
        .await;
        assert!(
            (e["at"].as_f64().unwrap() * 1000.0) < from as f64,
            "told ahead of the start"
        );
        assert_eq!(
            e["body"]["alerts"][0]["annotations"]["description"],
            "firmware upgrade"
        );
        assert_eq!(e["body"]["alerts"][0]["labels"]["node"], target.as_str());
    }
    // At the start the node drains and uni's meeting moves to the other
    // nordic node.
    while fjord_control_plane::raft::now_ms() < from + 1_500 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = cluster.ctl_json(&["node", "get", &target]);
    assert_eq!(n["state"], "draining", "{n:#}");
    let m = cluster.ctl_json(&["meeting", "get", &uni_meeting.to_string()]);
    let moved_to = m["node"].as_str().unwrap_or("");
    assert!(moved_to.starts_with('n') && moved_to != target, "{m:#}");
    // The node is stopped for the work; its lease runs out inside the window.
    nodes.get_mut(&target).unwrap().kill9();
    while fjord_control_plane::raft::now_ms() < to {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = cluster.ctl_json(&["node", "get", &target]);
    assert_eq!(n["state"], "down", "{n:#}");
    let during: Vec<Value> = received(&log)
        .into_iter()
        .skip(before_maintenance.len())
        .filter(|e| alertname(e) != "FjordPlannedMaintenance")
        .collect();
    assert!(
        during.iter().all(|e| e["path"] != "/uni"),
        "no alert or fault for the maintained scope: {during:#?}"
    );
    check_deliveries(&received(&log));
    let maint = cluster.ctl_json(&["sla", "status", "--institution", "uni"]);
    assert_eq!(
        maint[0]["maintenance"][0]["reason"], "firmware upgrade",
        "{maint:#}"
    );

    // ---- 3. The dashboard in a real browser. ----
    let link = cluster.ctl_json(&[
        "sla",
        "dashboard-link",
        "--institution",
        "other",
        "--valid-for",
        "10m",
    ]);
    let url = link["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("https://{dashboard}/sla/other?link=")),
        "{url}"
    );
    let dom = chromium(dir.path(), &["--dump-dom", &url]);
    assert!(
        dom.contains("<span id=\"institution\">other</span>"),
        "{dom}"
    );
    for sli in [
        "availability",
        "join_success",
        "join_latency",
        "media_quality",
    ] {
        let row = dom
            .split("<tr class=\"slo\"")
            .find(|r| r.contains(&format!("data-sli=\"{sli}\"")))
            .unwrap_or_else(|| panic!("no {sli} row: {dom}"));
        for cell in ["objective", "measured", "budget"] {
            let value = row
                .split(&format!("class=\"{cell}\">"))
                .nth(1)
                .and_then(|v| v.split('<').next());
            let value = value.unwrap_or_else(|| panic!("no {cell} for {sli}: {row}"));
            assert!(
                value.ends_with('%') || value == "no data",
                "{sli} {cell}: {value}"
            );
        }
    }
    let avail = dom.split("data-sli=\"availability\"").nth(1).unwrap();
    assert!(
        !avail
            .split("</tr>")
            .next()
            .unwrap()
            .contains("class=\"budget\">100%"),
        "the failed probes spent budget: {avail}"
    );
    let chart = dom.split("<div id=\"chart\">").nth(1).expect("chart");
    assert!(
        chart.trim_start().starts_with("<svg") && chart.contains("<polyline"),
        "{chart}"
    );
    assert!(
        dom.contains("class=\"firing\"><td>FjordSloBudgetBurn"),
        "a firing alert: {dom}"
    );
    assert!(
        !dom.contains(">uni<") && !dom.contains("/sla/uni"),
        "another institution's data: {dom}"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sla-dashboard-other.png");
    chromium(
        dir.path(),
        &[
            "--window-size=1280,1800",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    // Refused: no link, a tampered link, another institution's page.
    let token = url.split("link=").nth(1).unwrap();
    let no_link = chromium(
        dir.path(),
        &["--dump-dom", &format!("https://{dashboard}/sla/other")],
    );
    assert!(
        no_link.contains("id=\"refused\"") && !no_link.contains("availability"),
        "{no_link}"
    );
    // The last character changed (to one it is not).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let tampered = format!(
        "https://{dashboard}/sla/other?link={}{last}",
        &token[..token.len() - 1]
    );
    let tampered = chromium(dir.path(), &["--dump-dom", &tampered]);
    assert!(tampered.contains("id=\"refused\""), "{tampered}");
    let foreign = chromium(
        dir.path(),
        &[
            "--dump-dom",
            &format!("https://{dashboard}/sla/uni?link={token}"),
        ],
    );
    assert!(
        foreign.contains("id=\"refused\"") && !foreign.contains("availability"),
        "{foreign}"
    );
    // An operator's overview link opens every page, least budget first.
    let all = cluster.ctl_json(&["sla", "dashboard-link"]);
    let overview = chromium(dir.path(), &["--dump-dom", all["url"].as_str().unwrap()]);
    let (o, u) = (
        overview.find(">other<").expect("other listed"),
        overview.find(">uni<").expect("uni listed"),
    );
    assert!(o < u, "least budget left first: {overview}");

    // Every metric a replica and a media node export has HELP text.
    promtool_check_metrics(
        &http_get(&cluster.metrics_addrs[0], "/metrics"),
        "a replica",
    );
    let survivor = if target == "n1" { "n2" } else { "n1" };
    let node_page = http_get(&node_metrics[survivor], "/metrics");
    promtool_check_metrics(&node_page, "a media node");
    // Joins (the evacuated participants' among them) in the node's latency
    // histogram, with buckets.
    assert!(
        node_page.contains(
            "fjord_media_join_latency_seconds_bucket{outcome=\"reached_media\",le=\"2\"}"
        ),
        "{node_page}"
    );
    let replica_page = http_get(&cluster.metrics_addrs[0], "/metrics");
    assert!(
        replica_page.contains("fjord_sla_events_total{institution=\"other\",sli=\"availability\"}")
    );
    eprintln!(
        "webhooks received: {}",
        received(&log)
            .iter()
            .map(|e| format!("{} {} {}", e["path"], alertname(e), e["body"]["status"]))
            .collect::<Vec<_>>()
            .join("; ")
    );
    drop(sessions);
}

/// Runs headless Chromium (Debian's `chromium`) and returns its stdout.
fn chromium(dir: &Path, args: &[&str]) -> String {
    let profile = dir.join("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed (scripts/prereqs.sh)");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every delivery is signed right, in Alertmanager's format, and no alert
/// state (fingerprint and status) reached a receiver twice.
fn check_deliveries(entries: &[Value]) {
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    for e in entries {
        assert_eq!(e["valid"], true, "signature: {e:#}");
        assert_eq!(e["content_type"], "application/json");
        let b = &e["body"];
        assert_eq!(b["version"], "4");
        for key in [
            "groupKey",
            "receiver",
            "status",
            "groupLabels",
            "commonLabels",
            "externalURL",
        ] {
            assert!(b.get(key).is_some(), "{key} missing: {b:#}");
        }
        let a = &b["alerts"][0];
        for key in [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "fingerprint",
        ] {
            assert!(a.get(key).is_some(), "{key} missing: {a:#}");
        }
        let key = (
            e["path"].to_string(),
            a["fingerprint"].to_string(),
            a["status"].to_string(),
            a["startsAt"].to_string(),
        );
        assert!(seen.insert(key), "delivered twice: {e:#}");
        assert!(
            ids.insert(e["notification_id"].to_string()),
            "same notification twice: {e:#}"
        );
    }
}
