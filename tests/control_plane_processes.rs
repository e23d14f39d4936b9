//! Real `fjord control-plane` processes on loopback: nodes register through
//! the node gRPC API, meetings are scheduled through `fjord ctl`, the leader
//! is killed with SIGKILL, scheduling goes on, and the restarted replica
//! catches up from its own disk (snapshot + log) and the cluster.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fjord_benches::{free_port, local_ca, operator, with_kek, with_tls};
use fjord_control_plane::client::{Client, ClientConfig};
use fjord_proto::v1 as pb;
use serde_json::Value;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

struct Replica {
    id: u64,
    addr: String,
    peer: String,
    child: Option<Child>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(r: &Replica, peers: &str, dir: &Path) -> Child {
    let ca = local_ca(dir);
    let tls = ca.replica(r.id).unwrap();
    with_tls(with_kek(&mut Command::new(FJORD), &ca), &tls)
        .args([
            "control-plane",
            "--id",
            &r.id.to_string(),
            "--listen",
            &r.addr,
            "--peer-listen",
            &r.peer,
            "--peers",
            peers,
        ])
        .arg("--data-dir")
        .arg(dir.join(format!("r{}", r.id)))
        .args([
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
        ])
        .args([
            "--raft-heartbeat-interval-ms",
            "50",
            "--snapshot-every-entries",
            "20",
        ])
        .args(["--node-lease-ms", "600000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fjord control-plane")
}

/// `fjord ctl` as the operator, TLS files from the environment.
fn ctl(dir: &Path, endpoints: &str, args: &[&str]) -> Result<Value, String> {
    let out = with_tls(&mut Command::new(FJORD), &operator(&local_ca(dir)))
        .args([
            "ctl",
            "--endpoints",
            endpoints,
            "-o",
            "json",
            "--timeout-s",
            "20",
        ])
        .args(args)
        .output()
        .expect("run fjord ctl");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("ctl -o json prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_the_leader_keep_scheduling_restart_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = (1..=3)
        .map(|id| Replica {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            child: None,
        })
        .collect();
    let peers = replicas
        .iter()
        .map(|r| format!("{}={}", r.id, r.peer))
        .collect::<Vec<_>>()
        .join(",");
    let endpoints = replicas
        .iter()
        .map(|r| r.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    for r in &mut replicas {
        r.child = Some(spawn(r, &peers, dir.path()));
    }
    let mut leader = 0;
    wait_for("a leader", Duration::from_secs(15), || {
        leader = ctl(dir.path(), &endpoints, &["cluster", "status"])
            .ok()
            .and_then(|s| s["leader_id"].as_u64())
            .unwrap_or(0);
        leader != 0
    });

    ctl(
        dir.path(),
        &endpoints,
        &[
            "institution",
            "create",
            "uio",
            "--residency",
            "nordic",
            "--max-participants",
            "300",
        ],
    )
    .unwrap();
    ctl(
        dir.path(),
        &endpoints,
        &[
            "institution",
            "create",
            "cern",
            "--residency",
            "eu",
            "--max-participants",
            "300",
        ],
    )
    .unwrap();

    // Licences through the real CLI: what scheduling is checked against.
    for inst in ["uio", "cern"] {
        let r = ctl(
            dir.path(),
            &endpoints,
            &[
                "licence",
                "set",
                inst,
                "--tier",
                "education",
                "--staff-fte",
                "1200.5",
                "--start",
                "2025-10-01",
                "--agreement-contact",
                "agreement@example.org",
                "--technical-contact",
                "https://noc.example.org/hook",
            ],
        )
        .unwrap();
        assert_eq!(r["in_force"]["terms"]["staff_licences"], 1201, "{r}");
        assert_eq!(r["staff_limits"]["meeting_participants"], 300, "{r}");
    }
    let r = ctl(dir.path(), &endpoints, &["licence", "get", "uio"]).unwrap();
    assert_eq!(
        r["status"]["renewal_date"].as_str().unwrap().get(5..),
        Some("10-01"),
        "{r}"
    );

    // Register nodes through the node API, as media nodes do.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (id, region) in [("no-1", "nordic"), ("no-2", "nordic"), ("eu-1", "eu")] {
            // Each node registers with its own certificate.
            let client = Client::from_files(
                &endpoints.split(',').map(String::from).collect::<Vec<_>>(),
                &local_ca(dir.path()).node(id).unwrap(),
                ClientConfig::default(),
            )
            .unwrap();
            client
                .call(|ch| async move {
                    pb::node_service_client::NodeServiceClient::new(ch)
                        .register_node(pb::RegisterNodeRequest {
                            id: id.into(),
                            region: region.into(),
                            address: "127.0.0.1:7999".into(),
                            capacity: 10_000,
                            ..Default::default()
                        })
                        .await
                })
                .await
                .unwrap();
        }
    });

    let mut ids = Vec::new();
    let schedule = |ids: &mut Vec<u64>, inst: &str| {
        let r = ctl(
            dir.path(),
            &endpoints,
            &[
                "meeting",
                "schedule",
                "--institution",
                inst,
                "--participants",
                "10",
            ],
        )
        .unwrap();
        let m = &r["meeting"];
        if inst == "uio" {
            assert!(
                m["node"].as_str().unwrap().starts_with("no-"),
                "nordic residency kept: {m}"
            );
        }
        ids.push(m["id"].as_u64().unwrap());
    };
    for i in 0..15 {
        schedule(&mut ids, if i % 2 == 0 { "uio" } else { "cern" });
    }

    // kill -9 the leader.
    let victim = replicas.iter_mut().find(|r| r.id == leader).unwrap();
    let mut child = victim.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let victim_addr = victim.addr.clone();

    for i in 0..15 {
        schedule(&mut ids, if i % 2 == 0 { "uio" } else { "cern" });
    }
    let new_leader = ctl(dir.path(), &endpoints, &["cluster", "status"]).unwrap()["leader_id"]
        .as_u64()
        .unwrap();
    assert_ne!(new_leader, leader);

    let all = ctl(dir.path(), &endpoints, &["meeting", "list", "--all"]).unwrap();
    let listed: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed.len(), 30);
    for id in &ids {
        assert!(listed.contains(id), "acknowledged meeting {id} lost");
    }

    // Restart the old leader on the same data dir; it catches up.
    let target = ctl(dir.path(), &endpoints, &["cluster", "status"]).unwrap()["last_applied_index"]
        .as_u64()
        .unwrap();
    let victim = replicas.iter_mut().find(|r| r.id == leader).unwrap();
    victim.child = Some(spawn(victim, &peers, dir.path()));
    wait_for(
        "the restarted replica to catch up",
        Duration::from_secs(20),
        || {
            // Status is answered by the replica itself, from its own state.
            ctl(dir.path(), &victim_addr, &["cluster", "status"])
                .ok()
                .is_some_and(|s| {
                    s["replica_id"].as_u64() == Some(leader)
                        && s["last_applied_index"].as_u64().unwrap_or(0) >= target
                })
        },
    );
    let s = ctl(dir.path(), &victim_addr, &["cluster", "status"]).unwrap();
    assert!(
        s["snapshot_index"].as_u64().unwrap() > 0,
        "log was compacted into a snapshot: {s}"
    );

    // And with it back, losing another replica still leaves a quorum.
    let other = replicas
        .iter_mut()
        .find(|r| r.id != leader && r.child.is_some())
        .unwrap();
    let mut c = other.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    schedule(&mut ids, "cern");
    let m = ctl(
        dir.path(),
        &victim_addr,
        &["meeting", "get", &ids.last().unwrap().to_string()],
    )
    .unwrap();
    assert_eq!(m["institution"], "cern");
}

/// SIGSTOP/SIGCONT of replicas, as a long GC-like stall or a paused
/// container would do: a healthy node must not be declared down for it.
/// The whole cluster paused beyond the node lease (its leader must not
/// fail every node on resuming: it heard no beat because it did not
/// run), then each replica alone (a node beating to a paused replica
/// moves to another well inside its lease). Found by `scripts/chaos.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replicas_do_not_fail_healthy_nodes() {
    const LEASE_MS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let cluster = fjord_benches::FjordCluster::start_with(
        Path::new(FJORD),
        dir.path(),
        &[
            "--node-heartbeat-interval-ms",
            "100",
            "--node-lease-ms",
            &LEASE_MS.to_string(),
        ],
    );
    let cp = Client::from_files(
        &cluster.addrs,
        &operator(&cluster.ca),
        ClientConfig::default(),
    )
    .unwrap();
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.sample_licence("uni", &[]).await.unwrap();
    let _nodes: Vec<fjord_benches::Proc> = ["n1", "n2"]
        .iter()
        .map(|id| {
            fjord_benches::media_node_with(
                Path::new(FJORD),
                &cluster.ca,
                id,
                "nordic",
                &cluster.addrs.join(","),
                8,
                &[],
            )
        })
        .collect();
    // `fjord ctl -o json`, retried while an election is under way.
    let ctl_json = |args: &[&str]| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut all = vec!["-o", "json"];
            all.extend_from_slice(args);
            let out = cluster.ctl(&all);
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).expect("ctl -o json");
            }
            assert!(
                Instant::now() < deadline,
                "fjord ctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let ready = || {
        ctl_json(&["node", "list"])
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["state"] == "ready").count())
    };
    wait_for("both nodes ready", Duration::from_secs(20), || ready() == 2);
    let mut meetings = Vec::new();
    for _ in 0..4 {
        let m = cp
            .schedule_meeting(pb::ScheduleMeetingRequest {
                institution: "uni".into(),
                participants: 2,
                request_id: fjord_control_plane::client::request_id(),
                ..Default::default()
            })
            .await
            .unwrap();
        meetings.push(m.meeting.unwrap().id);
    }
    let pids: Vec<i32> = cluster
        .procs
        .iter()
        .map(|p| p.0.as_ref().unwrap().id() as i32)
        .collect();
    let pause = |which: &[i32]| {
        for pid in which {
            // SAFETY: signals to replicas this test started.
            unsafe { libc::kill(*pid, libc::SIGSTOP) };
        }
        std::thread::sleep(Duration::from_millis(LEASE_MS + 1500));
        for pid in which {
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
    };
    // Every meeting still on its first placement: no node was failed.
    let check = |after: &str| {
        for id in &meetings {
            let m = ctl_json(&["meeting", "get", &id.to_string()]);
            assert_eq!(
                m["placements"],
                1,
                "meeting {id} re-placed after {after}: a healthy node was declared down\n{}",
                cluster.log_tails(20)
            );
        }
        assert_eq!(ready(), 2, "after {after}");
    };
    pause(&pids);
    std::thread::sleep(Duration::from_millis(LEASE_MS + 1000));
    check("pausing the whole cluster");
    for (i, pid) in pids.iter().enumerate() {
        pause(&[*pid]);
        std::thread::sleep(Duration::from_millis(1500));
        check(&format!("pausing replica {}", i + 1));
    }
}
