//! Denial of service against a media node over real sockets: a participant
//! flooding control messages (mute and rename at line rate) is closed, and
//! only it: the others keep receiving media and are not disconnected.

mod common;

use std::time::{Duration, Instant};

use common::Stack;
use fjord_media_node::client::{JoinRequest, Participant};
use fjord_proto::v1 as pb;
use pb::client_message::Msg as In;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_flood_closes_only_the_offender_and_the_others_keep_receiving() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let m = stack
        .schedule(
            3,
            pb::MeetingSettings {
                disable_waiting_room: true,
                allow_join_before_host: true,
                ..Default::default()
            },
        )
        .await;
    let id = m.meeting.unwrap().id;
    let cp = stack.participant_client();
    let mut people = Vec::new();
    for name in ["ann", "bob", "mallory"] {
        let p = Participant::join(
            &cp,
            &JoinRequest {
                meeting_id: id,
                passcode: m.passcode.clone(),
                display_name: name.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        people.push(p);
    }
    let mallory = people.pop().unwrap();
    let mut senders = Vec::new();
    for p in people.iter_mut() {
        senders.extend(p.start_media().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Mallory toggles her mute and renames herself as fast as the stream
    // takes it; each would be broadcast to everyone.
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u32;
        for i in 0..20_000u32 {
            let m = if i % 2 == 0 {
                In::SetMuted(pb::SetMuted {
                    participant_id: 0,
                    muted: i % 4 == 0,
                })
            } else {
                In::Rename(pb::Rename {
                    display_name: format!("m{i}"),
                })
            };
            if mallory.send(m).await.is_err() || mallory.close_reason().is_some() {
                break;
            }
            sent += 1;
            if started.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        // The node closes her connection.
        let deadline = Instant::now() + Duration::from_secs(5);
        while mallory.close_reason().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sent, mallory.close_reason())
    });
    let before: Vec<u64> = people.iter().map(|p| p.stats.snapshot().received).collect();
    let (sent, reason) = flood.await.unwrap();
    assert!(
        reason.is_some(),
        "the flooder was not closed after {sent} messages"
    );
    let c = stack.nodes["nordic-1"].counters();
    assert_eq!(c.control_flood_closed, 1, "{c:?}");
    // The others are still connected and keep receiving each other's media.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, p) in people.iter().enumerate() {
        assert!(
            p.close_reason().is_none(),
            "participant {i} was disconnected"
        );
        let now = p.stats.snapshot().received;
        assert!(
            now > before[i] + 100,
            "participant {i} stopped receiving: {} -> {now}",
            before[i]
        );
    }
    eprintln!("flooder closed after {sent} control messages: {reason:?}");
    for s in senders {
        s.abort();
    }
}
