//! The metadata tier against a real etcd server (Debian's `etcd`, TLS with
//! client certificates): three `fjord control-plane` replicas write
//! institutions, licences, meetings, nodes and daily usage under
//! `/fjord/v1/`; a licence version written in etcd comes back as a new
//! version; stopping etcd for 30 s during a loadgen run loses no meeting
//! and etcd converges afterwards; and after 1,000 meeting lifecycles with
//! names, e-mail addresses, client addresses and meeting secrets in play,
//! no key or value in etcd holds any of them.

#![cfg(feature = "etcd")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, TlsOptions};
use fjord_benches::{media_node_with, operator, with_tls, EtcdTls, FjordCluster, Proc};
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_media_node::client::session::Session;
use fjord_media_node::client::JoinRequest;
use fjord_proto::v1 as pb;
use serde_json::Value;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
const PREFIX: &str = "/fjord/v1/";

fn cluster(dir: &Path, etcd: &EtcdTls) -> FjordCluster {
    let metadata = format!("etcd://{}", etcd.addr);
    FjordCluster::start_with(
        Path::new(FJORD),
        dir,
        &[
            "--node-heartbeat-interval-ms",
            "200",
            "--node-lease-ms",
            "3000",
            "--metadata",
            &metadata,
            "--metadata-sync-interval-ms",
            "100",
        ],
    )
}

async fn etcd_client(e: &EtcdTls) -> etcd_client::Client {
    let f = e.client_files();
    let read = |p: &Path| std::fs::read(p).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&f.ca)))
        .identity(Identity::from_pem(
            read(f.cert.as_ref().unwrap()),
            read(f.key.as_ref().unwrap()),
        ));
    etcd_client::Client::connect(
        [e.addr.clone()],
        Some(
            ConnectOptions::new()
                .with_tls(tls)
                .with_timeout(Duration::from_secs(5)),
        ),
    )
    .await
    .unwrap()
}

/// Every key under the prefix (without it) and its raw value.
async fn dump(c: &mut etcd_client::Client) -> BTreeMap<String, Vec<u8>> {
    let r = c
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .expect("etcd answers");
    r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str()
                    .unwrap()
                    .strip_prefix(PREFIX)
                    .unwrap()
                    .to_string(),
                kv.value().to_vec(),
            )
        })
        .collect()
}

fn json(v: &[u8]) -> Value {
    serde_json::from_slice(v).expect("a JSON record")
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn operator_client(cluster: &FjordCluster) -> Arc<Client> {
    Arc::new(
        Client::from_files(
            &cluster.addrs,
            &operator(&cluster.ca),
            ClientConfig::default(),
        )
        .unwrap(),
    )
}

async fn institution(cp: &Client, name: &str) {
    cp.create_institution(pb::CreateInstitutionRequest {
        name: name.into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.set_licence(pb::SetLicenceRequest {
        institution: name.into(),
        terms: Some(pb::LicenceTerms {
            tier: "education".into(),
            staff_fte: "1000".into(),
            student_licences: 500,
            agreement_start: "2025-10-01".into(),
            agreement_contact: format!("kari.nordmann@{name}.no"),
            technical_contact: format!("https://alerts.{name}.no/fjord"),
            ..Default::default()
        }),
        effective: String::new(),
    })
    .await
    .unwrap();
}

fn node(cluster: &FjordCluster, id: &str, capacity: u32) -> Proc {
    media_node_with(
        Path::new(FJORD),
        &cluster.ca,
        id,
        "nordic",
        &cluster.addrs.join(","),
        capacity,
        &["--usage-flush-interval".into(), "200ms".into()],
    )
}

async fn schedule(
    cp: &Client,
    institution: &str,
    participants: u32,
) -> pb::ScheduleMeetingResponse {
    cp.schedule_meeting(pb::ScheduleMeetingRequest {
        institution: institution.into(),
        participants,
        request_id: request_id(),
        duration_ms: 10 * 60 * 1000,
        settings: Some(pb::MeetingSettings {
            disable_waiting_room: true,
            allow_join_before_host: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("scheduled")
}

async fn end(cp: &Client, id: u64) {
    use pb::meeting_service_client::MeetingServiceClient;
    cp.call(|ch| async move {
        MeetingServiceClient::new(ch)
            .end_meeting(pb::EndMeetingRequest { id })
            .await
    })
    .await
    .expect("ended");
}

/// The etcd keys of every meeting the control plane knows, against its
/// own list: the same set, the same schedule, ended exactly when ended.
fn assert_meetings_converged(cluster: &FjordCluster, stored: &BTreeMap<String, Vec<u8>>) {
    let listed = cluster.ctl_json(&["meeting", "list", "--all"]);
    let listed = listed.as_array().expect("a list");
    let keys: BTreeSet<&str> = stored
        .keys()
        .filter(|k| k.starts_with("meetings/"))
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), listed.len(), "one record per meeting: {keys:?}");
    for m in listed {
        let id = m["id"].as_u64().unwrap();
        let r = json(&stored[&format!("meetings/{id:020}")]);
        assert_eq!(r["institution"], m["institution"], "{r}");
        assert_eq!(r["start_ms"], m["start_ms"], "{r}");
        assert_eq!(r["end_ms"], m["end_ms"], "{r}");
        assert_eq!(r["participants"], m["participants"], "{r}");
        let ended = m["state"] == "ended";
        assert_eq!(r["ended_ms"].is_u64(), ended, "{r} vs {m}");
        if !ended {
            assert_eq!(r["regions"], serde_json::json!(["nordic"]), "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_holds_the_metadata_takes_licence_edits_and_converges_after_a_30s_outage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = fjord_benches::local_ca(dir.path());
    let mut etcd = EtcdTls::start(dir.path(), &ca);
    let cluster = cluster(dir.path(), &etcd);
    let cp = operator_client(&cluster);
    institution(&cp, "uio").await;
    let _nodes = [node(&cluster, "n1", 60), node(&cluster, "n2", 60)];
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(schedule(&cp, "uio", 4).await.meeting.unwrap().id);
    }
    let mut kv = etcd_client(&etcd).await;

    // Institutions, licences, schedules and nodes appear under their keys.
    wait_for("the first records in etcd", 30, || {
        let mut kv = kv.clone();
        let ids = ids.clone();
        async move {
            let d = dump(&mut kv).await;
            [
                "institutions/uio",
                "licences/uio/0000000001",
                "nodes/n1",
                "nodes/n2",
            ]
            .iter()
            .all(|k| d.contains_key(*k))
                && ids
                    .iter()
                    .all(|id| d.contains_key(&format!("meetings/{id:020}")))
        }
    })
    .await;
    let d = dump(&mut kv).await;
    let inst = json(&d["institutions/uio"]);
    assert_eq!(inst["residency"], "nordic");
    assert_eq!(inst["max_participants"], 100);
    let lic = json(&d["licences/uio/0000000001"]);
    assert_eq!(lic["tier"], "education");
    assert_eq!(lic["staff_fte_centi"], 100_000);
    assert_eq!(lic["student_licences"], 500);
    let node = json(&d["nodes/n1"]);
    assert_eq!(
        (node["region"].as_str(), node["capacity"].as_u64()),
        (Some("nordic"), Some(60))
    );
    let meeting = json(&d[&format!("meetings/{:020}", ids[0])]);
    assert_eq!(meeting["participants"], 4);
    assert_eq!(meeting["regions"], serde_json::json!(["nordic"]));

    // A licence version written in etcd (2,500 FTE from the same date)
    // becomes version 2 in the control plane, contact points kept.
    let mut edited = lic.clone();
    edited["version"] = 2.into();
    edited["staff_fte_centi"] = 250_000.into();
    kv.put(
        format!("{PREFIX}licences/uio/0000000002"),
        serde_json::to_vec(&edited).unwrap(),
        None,
    )
    .await
    .unwrap();
    wait_for(
        "the licence edited in etcd to reach the control plane",
        20,
        || async {
            let h = cluster.ctl_json(&["licence", "history", "uio"]);
            h["versions"].as_array().unwrap().len() == 2
        },
    )
    .await;
    let h = cluster.ctl_json(&["licence", "history", "uio"]);
    let v2 = &h["versions"][1]["terms"];
    assert_eq!(v2["staff_fte"], "2500", "{h}");
    assert_eq!(v2["agreement_contact"], "kari.nordmann@uio.no");
    let status = cluster.ctl_json(&["metadata", "status"]);
    assert_eq!(status["status"]["backend"], "etcd", "{status}");
    assert!(
        status["status"]["edits_applied"].as_u64().unwrap() >= 1,
        "{status}"
    );

    // etcd away for 30 s while loadgen runs: meetings are still scheduled,
    // joined and carried; the outbox holds the changes.
    let mut loadgen = Proc(Some(
        with_tls(&mut Command::new(FJORD), &operator(&cluster.ca))
            .args(["loadgen", "--endpoints", &cluster.addrs.join(",")])
            .args([
                "--institution",
                "uio",
                "--meetings",
                "3",
                "--participants",
                "3",
            ])
            .args(["--duration-s", "40", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // History the writer's watch has not reached is compacted away before
    // etcd goes down, so when it comes back the watch cannot resume where
    // it was: the writer must read the store again and reconcile.
    let reconciles_before = cluster.ctl_json(&["metadata", "status"])["status"]["reconciles"]
        .as_u64()
        .unwrap();
    let mut revision = 0;
    for i in 0..5 {
        let r = kv.put(format!("/other/{i}"), "x", None).await.unwrap();
        revision = r.header().unwrap().revision();
    }
    kv.compact(
        revision,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    etcd.stop();
    let outage = Instant::now();
    let mut during = Vec::new();
    for i in 0..6 {
        let m = schedule(&cp, "uio", 2).await.meeting.unwrap();
        if i % 2 == 0 {
            end(&cp, m.id).await;
        }
        during.push(m.id);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let status = cluster.ctl_json(&["metadata", "status"]);
    assert!(
        status["status"]["outbox_depth"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(status["status"]["connected"], false, "{status}");
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    etcd.restart();

    let out = loadgen.child().wait_with_output_ref();
    let report: Value = serde_json::from_slice(&out).expect("loadgen -o json");
    assert_eq!(report["meetings"], 3, "{report}");
    assert!(report["packets_received"].as_u64().unwrap() > 0, "{report}");
    assert!(report["loss_ratio"].as_f64().unwrap() < 0.05, "{report}");

    // Every meeting is there, in the control plane and, once the outbox
    // drained, in etcd.
    let listed = cluster.ctl_json(&["meeting", "list", "--all"]);
    let listed_ids: BTreeSet<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed_ids.len(), 3 + 6 + 3, "{listed}");
    for id in ids.iter().chain(&during) {
        assert!(listed_ids.contains(id), "meeting {id} lost");
    }
    wait_for("the outbox to drain into etcd", 60, || async {
        let s = cluster.ctl_json(&["metadata", "status"]);
        s["status"]["outbox_depth"] == 0 && s["status"]["connected"] == true
    })
    .await;
    let status = cluster.ctl_json(&["metadata", "status"]);
    assert!(
        status["status"]["reconciles"].as_u64().unwrap() > reconciles_before,
        "the compacted watch led to a full read: {status}"
    );
    let mut kv = etcd_client(&etcd).await;
    let d = dump(&mut kv).await;
    assert_meetings_converged(&cluster, &d);
    assert_eq!(
        json(&d["licences/uio/0000000002"])["staff_fte_centi"],
        250_000
    );
    // A day's usage totals reach etcd once the nodes' last reports (the
    // leaves at loadgen's end) are in the ledger, which can be after the
    // outbox first ran dry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = dump(&mut kv).await;
        if d.keys().any(|k| k.starts_with("usage/uio/")) {
            break;
        }
        assert!(Instant::now() < deadline, "daily usage: {:?}", d.keys());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What a pool's preStop hook runs: the node drains itself with
    // evacuation and waits until it carries nothing; its state reaches
    // etcd. It may not drain another node.
    let n2 = cluster.ca.node("n2").unwrap();
    let as_n2 = |args: &[&str]| {
        with_tls(&mut Command::new(FJORD), &n2)
            .args(["ctl", "--endpoints", &cluster.addrs.join(",")])
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_n2(&["node", "drain", "n1", "--evacuate"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As the preStop hook runs it: no id, the certificate says which.
    let out = as_n2(&[
        "node",
        "drain",
        "--evacuate",
        "--wait",
        "--wait-timeout-s",
        "60",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("n2 draining in etcd", 20, || {
        let mut kv = kv.clone();
        async move { json(&dump(&mut kv).await["nodes/n2"])["state"] == "draining" }
    })
    .await;
}

trait WaitOutput {
    fn wait_with_output_ref(&mut self) -> Vec<u8>;
}

impl WaitOutput for std::process::Child {
    fn wait_with_output_ref(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        self.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        assert!(self.wait().unwrap().success(), "loadgen failed");
        out
    }
}

/// Whether `needle` occurs in `hay` as a whole token (not inside a longer
/// run of letters and digits: an 8-digit PIN inside a 13-digit timestamp
/// is not a PIN).
fn has_token(hay: &str, needle: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric();
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back().is_none_or(|c| !word(c));
        let after = hay[i + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !word(c));
        before && after
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_reaches_etcd_after_a_thousand_meeting_lifecycles() {
    let dir = tempfile::tempdir().unwrap();
    let ca = fjord_benches::local_ca(dir.path());
    let etcd = EtcdTls::start(dir.path(), &ca);
    let cluster = cluster(dir.path(), &etcd);
    let cp = operator_client(&cluster);
    for name in ["uio", "ntnu"] {
        institution(&cp, name).await;
    }
    // Room for the meetings left running (10-minute reservations).
    let _nodes = [node(&cluster, "n1", 5000), node(&cluster, "n2", 5000)];

    // What must never reach the cloud tier.
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    // PINs are 8 digits, unique only with their meeting: two of 1,000
    // meetings share one about once in 200 runs.
    let mut pins: Vec<String> = Vec::new();
    let mut text: BTreeSet<String> = [
        "kari.nordmann@uio.no",
        "kari.nordmann@ntnu.no",
        "https://alerts.uio.no/fjord",
        "127.0.0.1",
        "Ola Nordmann",
        "@",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // 1,000 lifecycles: scheduled (each with its secrets), some with real
    // participants joining under names that are e-mail addresses, ended
    // early or left to run.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut joined = 0;
    for i in 0..1000u32 {
        let inst = if next() % 2 == 0 { "uio" } else { "ntnu" };
        let r = schedule(&cp, inst, 2 + (next() % 4) as u32).await;
        let id = r.meeting.as_ref().unwrap().id;
        secrets.insert(r.passcode.clone());
        secrets.insert(r.host_key.clone());
        let pin = {
            use pb::meeting_service_client::MeetingServiceClient;
            // PIN reads are rate limited per source: wait when told to.
            let mut tries = 0;
            loop {
                let host_key = r.host_key.clone();
                let answer = cp
                    .call(|ch| {
                        let host_key = host_key.clone();
                        async move {
                            MeetingServiceClient::new(ch)
                                .get_meeting_pin(pb::GetMeetingPinRequest { id, host_key })
                                .await
                        }
                    })
                    .await;
                match answer {
                    Ok(a) => break a.into_inner().pin,
                    Err(e) if e.code() == tonic::Code::ResourceExhausted && tries < 200 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(e) => panic!("the host reads the PIN: {e}"),
                }
            }
        };
        assert!(!pin.is_empty());
        pins.push(pin);
        if i % 50 == 0 {
            // Two participants, so each receives the other's media.
            let mut sessions = Vec::new();
            for who in ["a", "b"] {
                let name = format!("Ola Nordmann {i}{who} <ola.nordmann{i}{who}@{inst}.no>");
                text.insert(format!("ola.nordmann{i}{who}@{inst}.no"));
                sessions.push(Session::start(
                    cp.clone(),
                    JoinRequest {
                        meeting_id: id,
                        passcode: r.passcode.clone(),
                        display_name: name,
                        ..Default::default()
                    },
                    true,
                ));
            }
            for s in &sessions {
                s.wait_media_after(0, Duration::from_secs(20))
                    .await
                    .expect("a participant joined and received media");
            }
            for s in sessions {
                s.stop().await;
            }
            joined += 1;
        }
        if next() % 3 != 0 {
            end(&cp, id).await;
        }
    }
    assert_eq!(joined, 20);

    wait_for("the outbox to drain into etcd", 60, || async {
        let s = cluster.ctl_json(&["metadata", "status"]);
        s["status"]["outbox_depth"] == 0 && s["status"]["connected"] == true
    })
    .await;
    let mut kv = etcd_client(&etcd).await;
    // Everything in etcd, not only our prefix.
    let all = kv
        .get(vec![0u8], Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    let mut scanned = 0;
    for entry in all.kvs() {
        let key = String::from_utf8_lossy(entry.key()).to_string();
        let value = String::from_utf8_lossy(entry.value()).to_string();
        for hay in [&key, &value] {
            for t in &text {
                assert!(!hay.contains(t.as_str()), "{t:?} in etcd at {key}: {value}");
            }
            for s in secrets.iter().chain(&pins) {
                assert!(
                    !has_token(hay, s),
                    "a meeting secret in etcd at {key}: {value}"
                );
            }
        }
        scanned += 1;
    }
    // 1,000 meetings, 2 institutions with a licence each, 2 nodes, usage.
    assert!(scanned >= 1000 + 2 + 2 + 2, "{scanned} keys");
    assert_eq!(
        secrets.len(),
        2000,
        "every passcode and host key is distinct and was checked"
    );
    assert_eq!(pins.len(), 1000, "every PIN was checked");
    assert!(has_token("pin 12345678.", "12345678"));
    assert!(!has_token("1795512345678", "12345678"));
}
