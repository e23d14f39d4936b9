//! Real `fjord control-plane` and `fjord media-node` processes: a drained
//! node gets no new meeting, SIGTERM lets the running meeting finish before
//! the node exits 0, and `kill -9` of a node carrying part of a cascaded
//! meeting brings every affected participant back (M5).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_benches::{local_ca, operator, with_tls, Proc};

use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_media_node::client::session::Session;
use fjord_media_node::client::{JoinRequest, Participant, StreamProfile};
use fjord_proto::v1 as pb;
use tonic::Code;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_node_takes_no_new_meeting_and_sigterm_waits_for_running_meetings() {
    let dir = tempfile::tempdir().unwrap();
    let (_cp, cp_addr) = control_plane(dir.path(), 200, 3000);
    let cp = operator_client(dir.path(), &cp_addr);
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.sample_licence("uni", &[]).await.unwrap();

    // Returns once the node is registered and serving.
    let mut node = media_node(dir.path(), "n1", &cp_addr, 500);

    let schedule = || async {
        cp.schedule_meeting(pb::ScheduleMeetingRequest {
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
    };
    let running = schedule().await.unwrap();
    let id = running.meeting.as_ref().unwrap().id;
    assert_eq!(running.meeting.unwrap().node_id, "n1");
    let join = |name: &str| JoinRequest {
        meeting_id: id,
        passcode: running.passcode.clone(),
        display_name: name.into(),
        ..Default::default()
    };
    let mut a = Participant::join(&cp, &join("a")).await.unwrap();
    let b = Participant::join(&cp, &join("b")).await.unwrap();
    let video = a.publish(pb::TrackKind::Video).await.unwrap();
    let sending = a.send_stream(video, StreamProfile::video());

    // Drain through the CLI: no new meeting goes to n1 (the only node).
    let out = with_tls(&mut Command::new(FJORD), &operator(&local_ca(dir.path())))
        .args(["ctl", "--endpoints", &cp_addr, "node", "drain", "n1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = schedule().await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // SIGTERM: the node keeps serving the running meeting ...
    // SAFETY: kill(2) on a child this test started and still owns.
    assert_eq!(
        unsafe { libc::kill(node.child().id() as i32, libc::SIGTERM) },
        0
    );
    let before = b.stats.snapshot().received;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        node.child().try_wait().unwrap().is_none(),
        "exited with a meeting running"
    );
    assert!(
        b.stats.snapshot().received > before + 100,
        "media stopped while draining"
    );
    // ... and exits 0 once the meeting is over.
    sending.abort();
    b.leave().await;
    a.leave().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = node.child().try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "node did not exit after the meeting ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

/// A control plane with the given node heartbeat and lease.
fn control_plane(dir: &Path, heartbeat_ms: u64, lease_ms: u64) -> (Proc, String) {
    fjord_benches::control_plane(Path::new(FJORD), dir, heartbeat_ms, lease_ms)
}

/// A nordic media node, once registered and serving.
fn media_node(dir: &Path, id: &str, cp_addr: &str, capacity: u32) -> Proc {
    fjord_benches::media_node(
        Path::new(FJORD),
        &local_ca(dir),
        id,
        "nordic",
        cp_addr,
        capacity,
    )
}

/// The operator's client, as `fjord ctl` would have.
fn operator_client(dir: &Path, cp_addr: &str) -> Client {
    Client::from_files(
        std::slice::from_ref(&cp_addr.to_string()),
        &operator(&local_ca(dir)),
        ClientConfig::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_in_a_cascade_brings_every_affected_participant_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_cp, cp_addr) = control_plane(dir.path(), 250, 1000);
    let cp = Arc::new(operator_client(dir.path(), &cp_addr));
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.sample_licence("uni", &[]).await.unwrap();
    // Three nodes of 3 carry a meeting of 6 (two shares); the third node
    // is the spare the lost share moves to.
    let mut nodes: std::collections::BTreeMap<String, Proc> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| (id.to_string(), media_node(dir.path(), id, &cp_addr, 3)))
        .collect();
    let m = cp
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "uni".into(),
            participants: 6,
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
    let meeting = m.meeting.clone().unwrap();
    assert_eq!(meeting.shares.len(), 2, "{meeting:?}");
    let sessions: Vec<Session> = (0..6)
        .map(|i| {
            let req = JoinRequest {
                meeting_id: meeting.id,
                passcode: m.passcode.clone(),
                display_name: format!("p{i}"),
                ..Default::default()
            };
            // One speaker on each share (the first two to join land on
            // different shares).
            Session::start(cp.clone(), req, i < 2)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions.iter().any(|s| s.stats.tracks_heard().len() < 2) {
        assert!(Instant::now() < deadline, "media did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = sessions[0].node();
    let affected: Vec<&Session> = sessions.iter().filter(|s| s.node() == victim).collect();
    assert_eq!(affected.len(), 3);
    let generations: Vec<u64> = affected
        .iter()
        .map(|s| s.state.generation.load(Ordering::Acquire))
        .collect();

    // kill -9 (SIGKILL) the node carrying the first share.
    let killed = Instant::now();
    nodes.get_mut(&victim).unwrap().kill9();
    let mut recovered = Vec::new();
    for (s, g) in affected.iter().zip(&generations) {
        let back = s
            .wait_media_after(*g, Duration::from_secs(15))
            .await
            .expect("an affected participant did not get media again");
        assert_ne!(s.node(), victim);
        assert_eq!(s.ended(), None);
        recovered.push(back - killed);
    }
    recovered.sort();
    println!(
        "kill -9 to first media again, {} participants: fastest {:?}, slowest {:?}",
        recovered.len(),
        recovered[0],
        recovered[recovered.len() - 1]
    );
    // The meeting lost nothing: re-placed inside the residency, not twice.
    let explained = {
        use pb::meeting_service_client::MeetingServiceClient;
        cp.call(|ch| async move {
            MeetingServiceClient::new(ch)
                .explain_meeting(pb::ExplainMeetingRequest { id: meeting.id })
                .await
        })
        .await
        .unwrap()
        .into_inner()
    };
    let now = explained.meeting.unwrap();
    assert!(!now.shares.iter().any(|s| s.node_id == victim), "{now:?}");
    assert_eq!(now.shares.iter().map(|s| s.participants).sum::<u32>(), 6);
    assert_eq!(
        explained.decisions.last().unwrap().trigger,
        format!("node_down:{victim}")
    );
    // Everyone, moved or not, keeps receiving.
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &sessions {
        let base = s.stats.received();
        while s.stats.received() < base + 50 {
            assert!(Instant::now() < deadline, "a participant stopped receiving");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Planned maintenance through the CLI: a fresh node joins, and
    // `node drain --evacuate` moves the share of the node the first
    // participant is on to it; those participants switch over without
    // losing their connection or leaving.
    nodes.insert("n4".into(), media_node(dir.path(), "n4", &cp_addr, 3));
    let drained = sessions[0].node();
    let out = with_tls(&mut Command::new(FJORD), &operator(&local_ca(dir.path())))
        .args([
            "ctl",
            "--endpoints",
            &cp_addr,
            "-o",
            "json",
            "node",
            "drain",
        ])
        .args([&drained, "--evacuate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["moved"], serde_json::json!([meeting.id]), "{answer}");
    let on_drained: Vec<&Session> = sessions.iter().filter(|s| s.node() == drained).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in &on_drained {
        let lost_before = s.state.rejoins_after_loss.load(Ordering::Relaxed);
        while s.node() != "n4" {
            assert!(Instant::now() < deadline, "no switch-over to n4");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let base = s.stats.received();
        while s.stats.received() < base + 50 {
            assert!(Instant::now() < deadline, "no media on n4");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.state.moves.load(Ordering::Relaxed), 1);
        assert_eq!(
            s.state.rejoins_after_loss.load(Ordering::Relaxed),
            lost_before
        );
        assert_eq!(s.ended(), None);
    }
    for s in sessions {
        s.stop().await;
    }
}
