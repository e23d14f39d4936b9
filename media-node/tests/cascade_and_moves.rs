//! Cascading (M4) and planned moves through the real control plane (gRPC,
//! Raft on disk) and real media nodes on loopback QUIC, with participants
//! that re-join by themselves (`client::session`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{open_settings, Stack};
use fjord_media_node::client::session::Session;
use fjord_media_node::client::JoinRequest;
use fjord_media_node::sfu::TRACK_INDEX_SHIFT;
use fjord_proto::v1 as pb;

fn join_req(m: &pb::ScheduleMeetingResponse, name: String) -> JoinRequest {
    JoinRequest {
        meeting_id: m.meeting.as_ref().unwrap().id,
        passcode: m.passcode.clone(),
        display_name: name,
        auto_consent: true,
        ..Default::default()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node indexes (top bits of track ids) a session has heard tracks from.
fn origins(s: &Session) -> BTreeSet<u32> {
    s.stats
        .tracks_heard()
        .iter()
        .map(|t| t >> TRACK_INDEX_SHIFT)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meeting_two_and_a_half_times_a_node_spans_three_nodes_and_each_datagram_crosses_each_link_once(
) {
    let stack = Stack::start(&[
        ("n1", "nordic", 4),
        ("n2", "nordic", 4),
        ("n3", "nordic", 4),
    ])
    .await;
    // Secure defaults: waiting room, no joining before the host. The host
    // (on one node) admits everyone, on every node, over the links.
    let m = stack.schedule(10, pb::MeetingSettings::default()).await;
    let meeting = m.meeting.clone().unwrap();
    let decision = m.decision.clone().unwrap();
    assert_eq!(meeting.shares.len(), 3, "{meeting:?}");
    assert_eq!(decision.shares.len(), 3);
    assert_eq!(
        meeting.shares.iter().map(|s| s.participants).sum::<u32>(),
        10
    );

    let cp = Arc::new(stack.participant_client());
    // Ten participants; shares fill in proportion to their size, least
    // filled first, so the first three land one on each node: they speak.
    let mut sessions = Vec::new();
    for i in 0..10 {
        let speaker = i < 3;
        let mut req = join_req(&m, format!("p{i}"));
        if i == 0 {
            req.passcode.clear();
            req.host_key = m.host_key.clone();
            req.auto_admit = true;
        }
        let s = Session::start(cp.clone(), req, speaker);
        wait_until("the join answer", Duration::from_secs(10), || {
            s.state.generation.load(Ordering::Acquire) > 0
        })
        .await;
        sessions.push((s, speaker));
    }
    let nodes: BTreeSet<String> = sessions.iter().map(|(s, _)| s.node()).collect();
    assert_eq!(nodes.len(), 3, "participants spread over the three nodes");

    // Every participant hears every other speaker: 2 tracks per speaker,
    // from the node indexes of all three nodes for the listeners.
    for (s, speaker) in &sessions {
        let want = if *speaker { 4 } else { 6 };
        wait_until("every speaker's tracks", Duration::from_secs(15), || {
            s.stats.tracks_heard().len() >= want
        })
        .await;
        if !speaker {
            assert_eq!(origins(s).len(), 3, "a listener hears all three nodes");
        }
    }
    // Measured over a steady window, once every link is up and every room
    // has told its peers it wants the meeting's media.
    let local_and_links = |c: &fjord_media_node::sfu::Counters| {
        let dropped = c.dropped_malformed
            + c.dropped_unknown_track
            + c.dropped_not_owner
            + c.dropped_disabled;
        (
            c.datagrams_in - c.link_datagrams_in - dropped,
            c.link_datagrams_out,
        )
    };
    let before: Vec<_> = stack
        .nodes
        .values()
        .map(|n| local_and_links(&n.counters()))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (s, _) in &sessions {
        let snap = s.stats.snapshot();
        assert_eq!(snap.corrupted, 0);
        assert!(snap.received > 100, "{snap:?}");
    }
    // Each node forwards its own speakers' datagrams once per peer link
    // (two peers), however many listeners sit behind each link; what came
    // over a link is never sent over a link again.
    for ((id, node), (local0, links0)) in stack.nodes.iter().zip(before) {
        assert_eq!(node.linked_peers().len(), 2, "{id} links to both peers");
        let (local1, links1) = local_and_links(&node.counters());
        let local = local1 - local0;
        assert!(local > 100, "{id}: {local}");
        println!(
            "{id}: {local} local datagrams routed, {} sent over links",
            links1 - links0
        );
        // Exactly twice, up to the few datagrams being routed at the
        // moments the counters were read (the node is running meanwhile).
        let sent = links1 - links0;
        assert!(
            sent.abs_diff(2 * local) <= 4,
            "{id}: each local datagram once per link: {sent} vs 2 x {local}"
        );
    }
    let out: u64 = stack
        .nodes
        .values()
        .map(|n| n.counters().link_datagrams_out)
        .sum();
    let inn: u64 = stack
        .nodes
        .values()
        .map(|n| n.counters().link_datagrams_in)
        .sum();
    assert!(inn <= out && inn * 100 >= out * 97, "in {inn} out {out}");

    for (s, _) in sessions {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meeting_move_and_evacuating_drain_switch_participants_over_without_dropping_anyone() {
    let stack = Stack::start(&[("n1", "nordic", 20), ("n2", "nordic", 20)]).await;
    let m = stack.schedule(4, open_settings()).await;
    let meeting = m.meeting.clone().unwrap();
    let first = meeting.node_id.clone();
    let cp = Arc::new(stack.client());
    let sessions: Vec<Session> = (0..4)
        .map(|i| Session::start(cp.clone(), join_req(&m, format!("p{i}")), i < 2))
        .collect();
    for s in &sessions {
        wait_until("media", Duration::from_secs(15), || {
            s.stats.tracks_heard().len() >= 2
        })
        .await;
        assert_eq!(s.node(), first);
    }

    // `meeting move`: everyone ends up on the other node, each by switching
    // over (never by losing the connection), and media keeps coming.
    for s in &sessions {
        s.stats.take_max_gap();
    }
    let moved = cp
        .move_meeting(pb::MoveMeetingRequest {
            id: meeting.id,
            from_node_id: String::new(),
        })
        .await
        .unwrap();
    let second = moved.meeting.unwrap().node_id;
    assert_ne!(second, first);
    assert_eq!(moved.decision.unwrap().trigger, format!("move:{first}"));
    let before: Vec<u64> = sessions.iter().map(|s| s.stats.received()).collect();
    for s in &sessions {
        wait_until(
            "the switch to the new node",
            Duration::from_secs(15),
            || s.node() == second && s.state.moves.load(Ordering::Relaxed) == 1,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report_switch("meeting move", &sessions, &before);

    // `node drain --evacuate` on the new node moves it back.
    for s in &sessions {
        s.stats.take_max_gap();
    }
    let drained = cp
        .drain_node(pb::DrainNodeRequest {
            id: second.clone(),
            undo: false,
            evacuate: true,
        })
        .await
        .unwrap();
    assert_eq!(drained.moved, vec![meeting.id]);
    assert!(drained.kept.is_empty());
    let before: Vec<u64> = sessions.iter().map(|s| s.stats.received()).collect();
    for s in &sessions {
        wait_until("the evacuation", Duration::from_secs(15), || {
            s.node() == first && s.state.moves.load(Ordering::Relaxed) == 2
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report_switch("drain --evacuate", &sessions, &before);
    for s in sessions {
        s.stop().await;
    }
}

/// Nobody lost the connection or left; everyone kept receiving; prints
/// the longest silence any participant saw.
fn report_switch(what: &str, sessions: &[Session], before: &[u64]) {
    let mut worst = Duration::ZERO;
    for (s, b) in sessions.iter().zip(before) {
        assert_eq!(s.ended(), None, "{what}: a participant dropped out");
        assert_eq!(s.state.rejoins_after_loss.load(Ordering::Relaxed), 0);
        assert!(s.stats.received() > b + 20, "{what}: media kept coming");
        assert_eq!(s.stats.snapshot().corrupted, 0);
        worst = worst.max(s.stats.take_max_gap());
    }
    println!("{what}: longest media gap seen by any participant: {worst:?}");
}
