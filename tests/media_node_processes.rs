//! Real `fjord control-plane` and `fjord media-node` processes: a drained
//! node gets no new meeting, and SIGTERM lets the running meeting finish
//! before the node exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_media_node::client::{JoinRequest, Participant, StreamProfile};
use fjord_proto::v1 as pb;
use tonic::Code;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_node_takes_no_new_meeting_and_sigterm_waits_for_running_meetings() {
    let dir = tempfile::tempdir().unwrap();
    let cp_addr = format!("127.0.0.1:{}", free_port());
    let _cp = Proc(
        Command::new(FJORD)
            .args(["control-plane", "--id", "1", "--listen", &cp_addr])
            .args(["--peers", &format!("1={cp_addr}")])
            .arg("--data-dir")
            .arg(dir.path().join("r1"))
            .args([
                "--election-timeout-min-ms",
                "200",
                "--election-timeout-max-ms",
                "400",
            ])
            .args(["--raft-heartbeat-interval-ms", "50"])
            .args([
                "--node-heartbeat-interval-ms",
                "200",
                "--node-lease-ms",
                "3000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cp = Client::new(std::slice::from_ref(&cp_addr), ClientConfig::default()).unwrap();
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();

    let node_addr = format!("127.0.0.1:{}", free_port());
    let mut node = Proc(
        Command::new(FJORD)
            .args(["media-node", "--region", "nordic", "--id", "n1"])
            .args(["--listen", &node_addr, "--control-plane", &cp_addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The node prints its address once registered and serving.
    let mut line = String::new();
    BufReader::new(node.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line:?}");

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
    let out = Command::new(FJORD)
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
    let pid = node.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let before = b.stats.snapshot().received;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        node.0.try_wait().unwrap().is_none(),
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
        if let Some(s) = node.0.try_wait().unwrap() {
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
