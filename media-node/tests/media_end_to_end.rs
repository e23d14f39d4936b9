//! Participants join through the real control plane and exchange media
//! through a real media node over QUIC on loopback.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tonic::Code;

use fjord_media_node::client::{self, JoinRequest, Participant};
use fjord_media_node::wire::{self, MediaHeader};
use fjord_proto::v1 as pb;
use pb::client_message::Msg as In;
use pb::server_message::Msg as OutMsg;

use common::{open_settings, Stack};

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_receive_each_others_audio_and_video_unchanged() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let m = stack.schedule(3, pb::MeetingSettings::default()).await;
    let id = m.meeting.unwrap().id;
    let cp = stack.client();
    // The join link carries the passcode.
    let from_link = JoinRequest::from_link(&m.join_link).unwrap();
    assert_eq!(from_link.meeting_id, id);
    assert_eq!(from_link.passcode, m.passcode);

    let host = Participant::join(
        &cp,
        &JoinRequest {
            meeting_id: id,
            host_key: m.host_key.clone(),
            display_name: "host".into(),
            auto_admit: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(host.role, pb::Role::Host);
    assert!(host.is_admitted());
    let mut people = vec![host];
    for name in ["ann", "bob"] {
        let mut p = Participant::join(
            &cp,
            &JoinRequest {
                display_name: name.into(),
                ..from_link.clone()
            },
        )
        .await
        .unwrap();
        // Waiting room by default; the host's client admits.
        p.wait_admitted(Duration::from_secs(10)).await.unwrap();
        people.push(p);
    }
    let mut senders = Vec::new();
    let mut tracks = Vec::new();
    for p in people.iter_mut() {
        senders.extend(p.start_media().await.unwrap());
        tracks.push(p.stats.clone());
    }
    // Every participant hears both others' audio and video: 4 tracks.
    wait_until("everyone to hear 4 tracks", Duration::from_secs(10), || {
        tracks.iter().all(|s| s.tracks_heard().len() == 4)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in &senders {
        s.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, p) in people.iter().enumerate() {
        let s = p.stats.snapshot();
        assert_eq!(s.corrupted, 0, "participant {i}: payload bytes changed");
        assert_eq!(s.malformed, 0);
        // ~2 s of 2 x (50 audio + ~200 video) datagrams per second.
        assert!(
            s.received > 500,
            "participant {i} received only {}",
            s.received
        );
        assert!(s.lost * 100 <= s.received, "participant {i}: {s:?}");
    }
    let c = stack.nodes["nordic-1"].counters();
    assert!(c.datagrams_out >= 2 * c.datagrams_in - c.dropped_disabled * 2 - 100);
    for p in people.into_iter().rev() {
        p.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_s9_wrong_passcode_and_unknown_meeting_look_the_same_and_guessing_is_rate_limited() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let m = stack.schedule(3, open_settings()).await;
    let id = m.meeting.unwrap().id;
    // S1: the passcode has at least 64 bits of entropy.
    assert!(m.passcode.len() * 4 >= 64, "passcode {:?}", m.passcode);
    let cp = stack.client();
    let attempt = |meeting_id: u64, passcode: &str| {
        let req = JoinRequest {
            meeting_id,
            passcode: passcode.into(),
            display_name: "x".into(),
            ..Default::default()
        };
        let cp = &cp;
        async move {
            client::request_token(cp, &req, Duration::ZERO, None)
                .await
                .err()
                .map(|e| match e {
                    client::ClientError::Refused(s) => (s.code(), s.message().to_string()),
                    other => panic!("{other}"),
                })
        }
    };
    let wrong = attempt(id, "0000000000000000000a").await.unwrap();
    let unknown = attempt(id + 1000, &m.passcode).await.unwrap();
    assert_eq!(wrong.0, Code::PermissionDenied);
    assert_eq!(
        wrong, unknown,
        "an unknown meeting must look like a wrong passcode"
    );
    // Keep guessing: the per-meeting failure budget (10) runs out and the
    // meeting takes no attempts for a while, right passcode included.
    let mut limited = false;
    for i in 0..12 {
        if let Some((code, _)) = attempt(id, &format!("{i:020}")).await {
            if code == Code::ResourceExhausted {
                limited = true;
                break;
            }
        }
    }
    assert!(limited, "passcode guessing was never rate-limited");
    assert_eq!(
        attempt(id, &m.passcode).await.map(|e| e.0),
        Some(Code::ResourceExhausted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_pin_is_revealed_five_minutes_before_start_and_only_opens_its_own_meeting() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let cp = stack.client();
    let now = fjord_control_plane::raft::now_ms();
    let later = cp
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "uni".into(),
            participants: 2,
            start_ms: now + 3_600_000,
            request_id: "later".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let soon = stack.schedule(2, open_settings()).await;
    let pin = |id: u64, host_key: String| {
        let cp = &cp;
        async move {
            cp.call(|ch| {
                let host_key = host_key.clone();
                async move {
                    pb::meeting_service_client::MeetingServiceClient::new(ch)
                        .get_meeting_pin(pb::GetMeetingPinRequest { id, host_key })
                        .await
                }
            })
            .await
            .map(|r| r.into_inner().pin)
        }
    };
    let later_id = later.meeting.unwrap().id;
    let soon_id = soon.meeting.unwrap().id;
    let early = pin(later_id, later.host_key.clone()).await.unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    assert_eq!(
        pin(soon_id, later.host_key.clone())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied,
        "another meeting's host key revealed the PIN"
    );
    let soon_pin = pin(soon_id, soon.host_key.clone()).await.unwrap();
    assert_eq!(soon_pin.len(), 8);
    let join_with_pin = |meeting_id: u64, pin: String| {
        let cp = &cp;
        async move {
            client::request_token(
                cp,
                &JoinRequest {
                    meeting_id,
                    pin,
                    display_name: "room system".into(),
                    ..Default::default()
                },
                Duration::ZERO,
                None,
            )
            .await
        }
    };
    // The PIN opens its own meeting ...
    assert!(join_with_pin(soon_id, soon_pin.clone()).await.is_ok());
    // ... and no other.
    match join_with_pin(later_id, soon_pin).await {
        Err(client::ClientError::Refused(s)) => assert_eq!(s.code(), Code::PermissionDenied),
        other => panic!("PIN of another meeting accepted: {:?}", other.is_ok()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_s4_waiting_room_and_muted_entry_over_real_sockets() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let m = stack.schedule(3, pb::MeetingSettings::default()).await;
    let id = m.meeting.unwrap().id;
    let cp = stack.client();
    let guest = JoinRequest {
        meeting_id: id,
        passcode: m.passcode.clone(),
        display_name: "guest".into(),
        ..Default::default()
    };
    // S4: before the host, a participant waits.
    let mut early = Participant::join(&cp, &guest).await.unwrap();
    assert!(matches!(&early.admission, client::Admission::Waiting(w) if w.reason == "host_absent"));
    let mut host = Participant::join(
        &cp,
        &JoinRequest {
            meeting_id: id,
            host_key: m.host_key.clone(),
            display_name: "host".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // S3: the host sees them in the waiting room and admits them.
    let waiting = host
        .wait_for(Duration::from_secs(5), |e| match e {
            OutMsg::WaitingParticipant(w) => Some(w.participant_id),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(waiting, early.participant_id);
    assert!(!early.is_admitted());
    host.send(In::Admit(pb::Admit {
        participant_id: waiting,
    }))
    .await
    .unwrap();
    early.wait_admitted(Duration::from_secs(5)).await.unwrap();
    // S4: entered muted; their audio does not reach the host until they unmute.
    let client::Admission::Joined(j) = &early.admission else {
        unreachable!()
    };
    assert!(j.you.as_ref().unwrap().muted);
    let audio = early.publish(pb::TrackKind::Audio).await.unwrap();
    let sender = early.send_stream(audio, client::StreamProfile::audio());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        host.stats.snapshot().received,
        0,
        "muted audio was forwarded"
    );
    early
        .send(In::SetMuted(pb::SetMuted {
            participant_id: 0,
            muted: false,
        }))
        .await
        .unwrap();
    wait_until("unmuted audio", Duration::from_secs(5), || {
        host.stats.snapshot().received > 5
    })
    .await;
    // S3: once locked, nobody else gets in.
    host.send(In::SetLocked(pb::SetLocked { locked: true }))
        .await
        .unwrap();
    host.wait_for(Duration::from_secs(5), |e| {
        matches!(e, OutMsg::LockChanged(l) if l.locked).then_some(())
    })
    .await
    .unwrap();
    match Participant::join(&cp, &guest).await {
        Err(client::ClientError::Closed(reason)) => assert!(reason.contains("locked"), "{reason}"),
        other => panic!("joined a locked meeting: {}", other.is_ok()),
    }
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_node_is_refused_by_another() {
    let mut stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let m = stack.schedule(2, open_settings()).await;
    let id = m.meeting.unwrap().id;
    let token = client::request_token(
        &stack.client(),
        &JoinRequest {
            meeting_id: id,
            passcode: m.passcode.clone(),
            display_name: "x".into(),
            ..Default::default()
        },
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    stack.add_node("nordic-2", "nordic", 100).await;
    let other = &stack.nodes["nordic-2"];
    // Connect to nordic-2 with nordic-1's token.
    let (_ep, conn, mut send, mut recv) = client::connect(
        other.local_addr(),
        &node_certificate(&stack, "nordic-2").await,
    )
    .await
    .unwrap();
    send.write_all(&wire::frame(&pb::ClientMessage {
        msg: Some(In::Join(pb::MediaJoin {
            token: token.token,
            meeting_id: id,
            ..Default::default()
        })),
    }))
    .await
    .unwrap();
    let answer = wire::read_frame(&mut recv).await.unwrap().unwrap();
    let answer = <pb::ServerMessage as prost::Message>::decode(answer.as_slice()).unwrap();
    assert!(
        matches!(&answer.msg, Some(OutMsg::Closed(c)) if c.reason.contains("another node")),
        "{answer:?}"
    );
    conn.close(0u32.into(), b"");
}

/// A node's certificate as the control plane hands it out (via a join).
async fn node_certificate(stack: &Stack, node: &str) -> Vec<u8> {
    // Schedule until a meeting lands on `node` and take the certificate
    // from its join answer.
    for _ in 0..20 {
        let m = stack.schedule(1, open_settings()).await;
        let meeting = m.meeting.unwrap();
        if meeting.node_id == node {
            let t = client::request_token(
                &stack.client(),
                &JoinRequest {
                    meeting_id: meeting.id,
                    passcode: m.passcode,
                    display_name: "probe".into(),
                    ..Default::default()
                },
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
            return t.node_certificate;
        }
    }
    panic!("no meeting landed on {node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_and_control_messages_are_dropped_counted_and_the_node_keeps_serving() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let node = &stack.nodes["nordic-1"];
    let m = stack.schedule(3, open_settings()).await;
    let id = m.meeting.unwrap().id;
    let cp = stack.client();
    let join = |name: &str| JoinRequest {
        meeting_id: id,
        passcode: m.passcode.clone(),
        display_name: name.into(),
        ..Default::default()
    };
    let mut sender = Participant::join(&cp, &join("sender")).await.unwrap();
    let receiver = Participant::join(&cp, &join("receiver")).await.unwrap();
    let video = sender.publish(pb::TrackKind::Video).await.unwrap();

    // Malformed datagrams: truncated, unknown version, bad fragment fields,
    // random bytes, an unknown track, and someone else's track id.
    let mut bad: Vec<Bytes> = vec![
        Bytes::from_static(b""),
        Bytes::from_static(b"\x10\x00"),
        Bytes::from(vec![0x70; 64]),
        Bytes::from(vec![
            0x10, 0, 4, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2,
        ]),
    ];
    let mut state = 0x1234_5678u32;
    for _ in 0..50 {
        let len = 1 + (state % 1100) as usize;
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            v.push(state as u8);
        }
        bad.push(Bytes::from(v));
    }
    let with_track = |track: u32| {
        let mut b = BytesMut::new();
        MediaHeader {
            flags: 0,
            frag_index: 0,
            frag_count: 1,
            track,
            seq: 0,
            timestamp: 0,
        }
        .write(&mut b);
        b.put_slice(b"x");
        b.freeze()
    };
    bad.push(with_track(999_999));
    let before = node.counters();
    for d in &bad {
        receiver.send_raw_datagram(d.clone());
    }
    // The receiver sends on the sender's track: not theirs.
    receiver.send_raw_datagram(with_track(video));

    // Malformed control frames on a raw connection: undecodable bytes and an
    // empty message, then an oversized length that ends that connection.
    let cert = node_certificate(&stack, "nordic-1").await;
    let (_ep, conn, mut send, mut recv) = client::connect(node.local_addr(), &cert).await.unwrap();
    let mut garbage = (7u32).to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    send.write_all(&garbage).await.unwrap();
    send.write_all(&wire::frame(&pb::ClientMessage { msg: None }))
        .await
        .unwrap();
    for _ in 0..2 {
        let f = wire::read_frame(&mut recv).await.unwrap().unwrap();
        let m = <pb::ServerMessage as prost::Message>::decode(f.as_slice()).unwrap();
        assert!(matches!(m.msg, Some(OutMsg::Refused(_))), "{m:?}");
    }
    send.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "oversized frame did not close the connection"
    );

    wait_until("drops to be counted", Duration::from_secs(5), || {
        let c = node.counters();
        c.dropped_malformed - before.dropped_malformed >= 54
            && c.dropped_unknown_track > before.dropped_unknown_track
            && c.dropped_not_owner > before.dropped_not_owner
            && c.control_malformed - before.control_malformed >= 3
    })
    .await;
    // Still serving: media flows and new participants get in.
    let s = sender.send_stream(video, client::StreamProfile::video());
    wait_until("media after garbage", Duration::from_secs(5), || {
        receiver.stats.snapshot().received > 50
    })
    .await;
    s.abort();
    assert_eq!(receiver.stats.snapshot().corrupted, 0);
    let late = Participant::join(&cp, &join("late")).await.unwrap();
    assert!(late.is_admitted());
}
