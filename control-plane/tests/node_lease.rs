//! A node whose heartbeats stop is marked down and its meetings re-placed on
//! nodes the institution's residency allows, each with a new decision.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fjord_control_plane::client::{run_node_session, NodeRegistration};
use fjord_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_marked_down_and_its_meetings_replaced_within_residency() {
    let cluster = Cluster::start(3, fast_config()).await;
    let client = cluster.client();
    create_institution(&client, "uio", "nordic", 300).await;

    // Three node agents beating through the real heartbeat stream.
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for (id, region, cap) in [
        ("no-1", "nordic", 200),
        ("no-2", "nordic", 200),
        ("eu-1", "eu", 1000),
    ] {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let c = cluster.node_client(id);
        let reg = NodeRegistration {
            id: id.into(),
            region: region.into(),
            address: "127.0.0.1:7999".into(),
            capacity: cap,
            certificate: Vec::new(),
            boot: 1,
        };
        tasks.push(tokio::spawn(async move {
            run_node_session(&c, reg, pb::HeartbeatRequest::default, |_| {}, rx).await
        }));
        stops.push((id, tx));
    }
    // Wait until all three registered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while list_nodes(&client).await.len() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fill no-1 first: least-loaded alternates, so schedule until no-1 has two.
    let mut on_victim = Vec::new();
    for i in 0..4 {
        let r = schedule(&client, "uio", 40, &format!("m{i}"))
            .await
            .unwrap();
        let m = r.meeting.unwrap();
        if m.node_id == "no-1" {
            on_victim.push(m.id);
        }
    }
    assert_eq!(
        on_victim.len(),
        2,
        "least-loaded spreads 4 meetings over the two nordic nodes"
    );

    // no-1 stops beating (its process died).
    let killed_at = Instant::now();
    stops[0].1.send(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = list_nodes(&client).await;
        let down =
            nodes.iter().find(|n| n.id == "no-1").unwrap().state == pb::NodeState::Down as i32;
        let meetings = list_meetings(&client).await;
        let moved = on_victim.iter().all(|id| {
            let m = meetings.iter().find(|m| m.id == *id).unwrap();
            m.node_id == "no-2"
        });
        if down && moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node not declared down / meetings not moved: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "lease expiry to re-placement: {:?} (lease 1 s)",
        killed_at.elapsed()
    );

    // Each moved meeting carries a second decision that names the dead node
    // and never considered the eu node acceptable.
    for id in &on_victim {
        let r = client
            .call(|ch| async move {
                pb::meeting_service_client::MeetingServiceClient::new(ch)
                    .explain_meeting(pb::ExplainMeetingRequest { id: *id })
                    .await
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.decisions.len(), 2);
        let d = &r.decisions[1];
        assert_eq!(d.trigger, "node_down:no-1");
        assert_eq!(d.chosen_node, "no-2");
        assert!(d
            .rejections
            .iter()
            .any(|r| r.node_id == "eu-1" && r.reason == "outside_residency"));
        assert!(d
            .rejections
            .iter()
            .any(|r| r.node_id == "no-1" && r.reason == "down"));
    }
    for (_, tx) in &stops[1..] {
        tx.send(true).unwrap();
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
