//! The security defaults (S3–S9) and routing rules, one named test each,
//! against the core directly. `tests/` repeats the important ones through
//! real QUIC sockets and the real control plane.

use std::net::IpAddr;

use fjord_common::token::{generate_signing_key, TokenSigner, JOIN_TOKEN_TTL_MS};
use fjord_proto::v1 as pb;
use pb::client_message::Msg as In;
use pb::link_message::Msg as LinkMsg;
use pb::server_message::Msg as OutMsg;

use super::*;

const NODE: &str = "node-a";
const MEETING: u64 = 42;
const NOW: u64 = 1_000_000;

struct World {
    sfu: Sfu<ConnId>,
    signer: TokenSigner,
    next_conn: ConnId,
    /// Everything sent so far, per connection.
    inbox: HashMap<ConnId, Vec<OutMsg>>,
    closed: BTreeSet<ConnId>,
    /// Messages for cascade links, in order.
    link_out: Vec<(ConnId, pb::LinkMessage)>,
}

impl World {
    fn new(settings: pb::MeetingSettings) -> (Self, pb::MeetingSettings) {
        let signer = TokenSigner::from_pkcs8(&generate_signing_key()).unwrap();
        let mut sfu = Sfu::new(SfuConfig::new(NODE));
        sfu.set_join_key(signer.public_key());
        (
            World {
                sfu,
                signer,
                next_conn: 1,
                inbox: HashMap::new(),
                closed: BTreeSet::new(),
                link_out: Vec::new(),
            },
            settings,
        )
    }

    fn default() -> Self {
        World::new(pb::MeetingSettings::default()).0
    }

    fn token(&self, pid: u64, role: pb::Role, settings: pb::MeetingSettings) -> Vec<u8> {
        self.signer.sign(&pb::JoinClaims {
            meeting_id: MEETING,
            participant_id: pid,
            role: role as i32,
            node_id: NODE.into(),
            display_name: format!("p{pid}"),
            issued_at_ms: NOW,
            expires_at_ms: NOW + JOIN_TOKEN_TTL_MS,
            settings: Some(settings),
            ..Default::default()
        })
    }

    fn apply(&mut self, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send(c, m) => self.inbox.entry(c).or_default().push(m.msg.unwrap()),
                Output::Close(c, _) => {
                    self.closed.insert(c);
                }
                Output::SendLink(c, m) => self.link_out.push((c, m)),
            }
        }
    }

    fn connect_from(&mut self, source: [u8; 4]) -> ConnId {
        let c = self.next_conn;
        self.next_conn += 1;
        self.sfu.connect(c, c, IpAddr::from(source));
        c
    }

    fn send(&mut self, conn: ConnId, m: In) {
        let outs = self
            .sfu
            .control(NOW, conn, pb::ClientMessage { msg: Some(m) });
        self.apply(outs);
    }

    fn join_with(&mut self, pid: u64, role: pb::Role, settings: pb::MeetingSettings) -> ConnId {
        let c = self.connect_from([127, 0, 0, 1]);
        let token = self.token(pid, role, settings);
        self.send(
            c,
            In::Join(pb::MediaJoin {
                token,
                meeting_id: MEETING,
                ..Default::default()
            }),
        );
        c
    }

    fn join(&mut self, pid: u64, role: pb::Role) -> ConnId {
        self.join_with(pid, role, pb::MeetingSettings::default())
    }

    fn take(&mut self, conn: ConnId) -> Vec<OutMsg> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    fn last_refusal(&mut self, conn: ConnId) -> Option<String> {
        self.take(conn).into_iter().rev().find_map(|m| match m {
            OutMsg::Refused(r) => Some(r.reason),
            _ => None,
        })
    }

    fn was_admitted(&mut self, conn: ConnId) -> bool {
        self.take(conn)
            .iter()
            .any(|m| matches!(m, OutMsg::Joined(_)))
    }

    fn publish(&mut self, conn: ConnId, kind: pb::TrackKind) -> Option<u32> {
        self.take(conn);
        self.send(conn, In::Publish(pb::Publish { kind: kind as i32 }));
        self.take(conn).into_iter().find_map(|m| match m {
            OutMsg::TrackPublished(t) => Some(t.track_id),
            _ => None,
        })
    }

    fn datagram(track: u32) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        crate::wire::MediaHeader {
            flags: 0,
            frag_index: 0,
            frag_count: 1,
            track,
            seq: 1,
            timestamp: 0,
        }
        .write(&mut b);
        b.extend_from_slice(b"opaque ciphertext");
        b.to_vec()
    }

    fn receivers(&mut self, from: ConnId, track: u32) -> Vec<ConnId> {
        match self.sfu.route(from, &Self::datagram(track)) {
            Ok(v) => {
                let mut v = v.to_vec();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }
}

fn open_meeting() -> pb::MeetingSettings {
    pb::MeetingSettings {
        disable_waiting_room: true,
        allow_join_before_host: true,
        ..Default::default()
    }
}

#[test]
fn forged_expired_wrong_meeting_and_wrong_node_tokens_are_refused() {
    let mut w = World::default();
    let good = pb::JoinClaims {
        meeting_id: MEETING,
        participant_id: 1,
        role: pb::Role::Host as i32,
        node_id: NODE.into(),
        display_name: "x".into(),
        issued_at_ms: NOW,
        expires_at_ms: NOW + 1000,
        settings: None,
        ..Default::default()
    };
    let forger = TokenSigner::from_pkcs8(&generate_signing_key()).unwrap();
    let cases: Vec<(Vec<u8>, u64, &str)> = vec![
        (forger.sign(&good), MEETING, "not valid"),
        (
            w.signer.sign(&pb::JoinClaims {
                expires_at_ms: NOW,
                ..good.clone()
            }),
            MEETING,
            "expired",
        ),
        (w.signer.sign(&good), MEETING + 1, "another meeting"),
        (
            w.signer.sign(&pb::JoinClaims {
                node_id: "node-b".into(),
                ..good.clone()
            }),
            MEETING,
            "another node",
        ),
        (b"random bytes".to_vec(), MEETING, "not valid"),
    ];
    for (token, meeting_id, why) in cases {
        let c = w.connect_from([127, 0, 0, 1]);
        w.send(
            c,
            In::Join(pb::MediaJoin {
                token,
                meeting_id,
                ..Default::default()
            }),
        );
        let msgs = w.take(c);
        assert!(
            matches!(&msgs[..], [OutMsg::Closed(cl)] if cl.reason.contains(why)),
            "{why}: {msgs:?}"
        );
        assert!(w.closed.contains(&c));
    }
    assert_eq!(w.sfu.counters().joins_refused, 5);
    assert_eq!(w.sfu.participants(), 0);
    // The genuine token still works.
    let c = w.connect_from([127, 0, 0, 1]);
    let token = w.signer.sign(&good);
    w.send(
        c,
        In::Join(pb::MediaJoin {
            token,
            meeting_id: MEETING,
            ..Default::default()
        }),
    );
    assert!(w.was_admitted(c));
}

#[test]
fn s3_waiting_room_holds_participants_until_the_host_admits() {
    let mut w = World::default();
    let host = w.join(1, pb::Role::Host);
    assert!(w.was_admitted(host));
    let p = w.join(2, pb::Role::Participant);
    let msgs = w.take(p);
    assert!(
        matches!(&msgs[..], [OutMsg::Waiting(wt)] if wt.reason == "waiting_room"),
        "{msgs:?}"
    );
    // The host hears who waits.
    assert!(w
        .take(host)
        .iter()
        .any(|m| matches!(m, OutMsg::WaitingParticipant(wp) if wp.participant_id == 2)));
    // Waiting participants can neither publish nor receive.
    let t = w.publish(host, pb::TrackKind::Video).unwrap();
    assert!(w.receivers(host, t).is_empty());
    assert!(w.publish(p, pb::TrackKind::Audio).is_none());
    // Only the host admits.
    let q = w.join_with(3, pb::Role::Participant, pb::MeetingSettings::default());
    w.take(q);
    w.send(q, In::Admit(pb::Admit { participant_id: 2 }));
    assert!(w.last_refusal(q).is_some());
    w.send(host, In::Admit(pb::Admit { participant_id: 2 }));
    assert!(w.was_admitted(p));
    assert_eq!(w.receivers(host, t), vec![p]);
}

#[test]
fn s3_a_locked_meeting_refuses_everyone_including_operators_and_host_key_holders() {
    let mut w = World::default();
    let host = w.join(1, pb::Role::Host);
    w.send(host, In::SetLocked(pb::SetLocked { locked: true }));
    for (pid, role) in [
        (2, pb::Role::Participant),
        (3, pb::Role::Operator),
        (4, pb::Role::Host),
    ] {
        let c = w.join(pid, role);
        let msgs = w.take(c);
        assert!(
            matches!(&msgs[..], [OutMsg::Closed(cl)] if cl.reason.contains("locked")),
            "{role:?}: {msgs:?}"
        );
    }
    // Unlocked, people can join again.
    w.send(host, In::SetLocked(pb::SetLocked { locked: false }));
    let c = w.join(5, pb::Role::Participant);
    assert!(matches!(&w.take(c)[..], [OutMsg::Waiting(_)]));
}

#[test]
fn s4_no_join_before_host_unless_the_meeting_allows_it() {
    let mut w = World::default();
    let p = w.join(2, pb::Role::Participant);
    let msgs = w.take(p);
    assert!(matches!(&msgs[..], [OutMsg::Waiting(wt)] if wt.reason == "host_absent"));
    // The host arrives: with the default waiting room, the early comer moves there.
    let host = w.join(1, pb::Role::Host);
    assert!(w.was_admitted(host));
    assert!(matches!(&w.take(p)[..], [OutMsg::Waiting(wt)] if wt.reason == "waiting_room"));

    // A meeting configured to allow it lets people in before the host.
    let (mut w, open) = World::new(open_meeting());
    let p = w.join_with(2, pb::Role::Participant, open);
    assert!(w.was_admitted(p));
}

#[test]
fn s4_participants_enter_muted_and_muted_audio_is_not_forwarded() {
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    let b = w.join_with(2, pb::Role::Participant, open);
    let joined = w.take(a).into_iter().find_map(|m| match m {
        OutMsg::Joined(j) => Some(j),
        _ => None,
    });
    assert!(joined.unwrap().you.unwrap().muted, "entered unmuted");
    let audio = w.publish(a, pb::TrackKind::Audio).unwrap();
    let video = w.publish(a, pb::TrackKind::Video).unwrap();
    assert!(w.receivers(a, audio).is_empty(), "muted audio forwarded");
    assert_eq!(w.receivers(a, video), vec![b]);
    assert_eq!(w.sfu.counters().dropped_disabled, 1);
    w.send(
        a,
        In::SetMuted(pb::SetMuted {
            participant_id: 0,
            muted: false,
        }),
    );
    assert_eq!(w.receivers(a, audio), vec![b]);
    // Nobody unmutes someone else, not even by accident.
    w.send(
        b,
        In::SetMuted(pb::SetMuted {
            participant_id: 1,
            muted: true,
        }),
    );
    assert!(w.last_refusal(b).is_some());
}

#[test]
fn s5_screen_sharing_is_host_only_until_granted() {
    let (mut w, open) = World::new(open_meeting());
    let host = w.join_with(1, pb::Role::Host, open);
    let p = w.join_with(2, pb::Role::Participant, open);
    w.take(p);
    assert!(w.publish(p, pb::TrackKind::Screen).is_none());
    assert!(w.publish(host, pb::TrackKind::Screen).is_some());
    w.send(
        host,
        In::GrantScreenShare(pb::GrantScreenShare {
            participant_id: 2,
            granted: true,
        }),
    );
    let screen = w.publish(p, pb::TrackKind::Screen).unwrap();
    assert_eq!(w.receivers(p, screen), vec![host]);
    // Revoking stops the share at once.
    w.send(
        host,
        In::GrantScreenShare(pb::GrantScreenShare {
            participant_id: 2,
            granted: false,
        }),
    );
    assert!(w.receivers(p, screen).is_empty());
}

fn recording_states(msgs: &[OutMsg]) -> Vec<pb::RecordingState> {
    msgs.iter()
        .filter_map(|m| match m {
            OutMsg::RecordingChanged(r) => Some(r.state()),
            _ => None,
        })
        .collect()
}

#[test]
fn s6_recording_needs_host_confirmation_and_everyones_consent_and_everyone_is_told() {
    let (mut w, open) = World::new(open_meeting());
    let host = w.join_with(1, pb::Role::Host, open);
    let a = w.join_with(2, pb::Role::Participant, open);
    let b = w.join_with(3, pb::Role::Participant, open);
    for c in [host, a, b] {
        w.take(c);
    }
    w.send(
        a,
        In::RequestRecording(pb::RequestRecording { local: true }),
    );
    assert_eq!(
        w.sfu.room(MEETING).unwrap().recording,
        Recording::AwaitingHost { requested_by: 2 }
    );
    // Consent before the host confirmed counts for nothing.
    w.send(
        b,
        In::RecordingConsent(pb::RecordingConsent { consent: true }),
    );
    assert!(w.last_refusal(b).is_some());
    w.send(
        host,
        In::ConfirmRecording(pb::ConfirmRecording {
            participant_id: 2,
            confirm: true,
        }),
    );
    assert!(w
        .take(b)
        .iter()
        .any(|m| matches!(m, OutMsg::ConsentRequested(_))));
    w.send(
        host,
        In::RecordingConsent(pb::RecordingConsent { consent: true }),
    );
    assert!(matches!(
        w.sfu.room(MEETING).unwrap().recording,
        Recording::AwaitingConsent { .. }
    ));
    w.take(host);
    w.send(
        b,
        In::RecordingConsent(pb::RecordingConsent { consent: true }),
    );
    // Everyone, recorder included, is told that recording is on.
    for c in [host, a, b] {
        assert!(
            recording_states(&w.take(c)).contains(&pb::RecordingState::On),
            "conn {c} not told"
        );
    }
    // A newcomer must consent too: the recording pauses until they do.
    let late = w.join_with(4, pb::Role::Participant, open);
    assert!(w
        .take(late)
        .iter()
        .any(|m| matches!(m, OutMsg::ConsentRequested(_))));
    assert!(matches!(
        w.sfu.room(MEETING).unwrap().recording,
        Recording::AwaitingConsent { .. }
    ));
    w.send(
        late,
        In::RecordingConsent(pb::RecordingConsent { consent: false }),
    );
    assert_eq!(w.sfu.room(MEETING).unwrap().recording, Recording::Off);
}

#[test]
fn s6_there_is_no_server_side_recording() {
    let (mut w, open) = World::new(open_meeting());
    let host = w.join_with(1, pb::Role::Host, open);
    w.take(host);
    w.send(
        host,
        In::RequestRecording(pb::RequestRecording { local: false }),
    );
    assert!(w.last_refusal(host).unwrap().contains("cloud recording"));
    assert_eq!(w.sfu.room(MEETING).unwrap().recording, Recording::Off);
}

#[test]
fn s7_a_leaving_host_must_hand_over() {
    let (mut w, open) = World::new(open_meeting());
    let host = w.join_with(1, pb::Role::Host, open);
    let p = w.join_with(2, pb::Role::Participant, open);
    w.take(host);
    w.send(host, In::Leave(pb::Leave {}));
    assert!(w.last_refusal(host).unwrap().contains("hand"));
    assert!(!w.closed.contains(&host));
    w.send(
        host,
        In::HandOverHost(pb::HandOverHost { participant_id: 2 }),
    );
    assert!(w
        .take(p)
        .iter()
        .any(|m| matches!(m, OutMsg::HostChanged(h) if h.participant_id == 2)));
    w.send(host, In::Leave(pb::Leave {}));
    assert!(w.closed.contains(&host));
    assert_eq!(w.sfu.room(MEETING).unwrap().host, Some(2));
}

#[test]
fn s7_a_vanished_host_passes_the_role_on() {
    let (mut w, open) = World::new(open_meeting());
    let host = w.join_with(1, pb::Role::Host, open);
    let _p = w.join_with(2, pb::Role::Participant, open);
    let outs = w.sfu.disconnect(0, host);
    w.apply(outs);
    assert_eq!(w.sfu.room(MEETING).unwrap().host, Some(2));
}

#[test]
fn s7_self_rename_can_be_disabled() {
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    w.take(a);
    w.send(
        a,
        In::Rename(pb::Rename {
            display_name: "new name".into(),
        }),
    );
    assert!(w.last_refusal(a).is_none());
    let locked_names = pb::MeetingSettings {
        disable_self_rename: true,
        ..open
    };
    let (mut w, _) = World::new(locked_names);
    let a = w.join_with(1, pb::Role::Participant, locked_names);
    w.take(a);
    w.send(
        a,
        In::Rename(pb::Rename {
            display_name: "someone else".into(),
        }),
    );
    assert!(w.last_refusal(a).unwrap().contains("disabled"));
    assert_eq!(w.sfu.room(MEETING).unwrap().members[&1].name, "p1");
}

#[test]
fn s9_a_join_flood_from_one_source_is_rate_limited() {
    let mut w = World::default();
    let burst = SfuConfig::new(NODE).joins_per_source.burst as u64;
    let mut refused = 0;
    for pid in 1..=burst + 20 {
        let c = w.connect_from([127, 0, 0, 9]);
        let token = w.token(pid, pb::Role::Participant, Default::default());
        w.send(
            c,
            In::Join(pb::MediaJoin {
                token,
                meeting_id: MEETING,
                ..Default::default()
            }),
        );
        if w.take(c)
            .iter()
            .any(|m| matches!(m, OutMsg::Closed(cl) if cl.reason.contains("too many")))
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 20);
    // Another source is not affected.
    let c = w.connect_from([127, 0, 0, 10]);
    let token = w.token(1000, pb::Role::Host, Default::default());
    w.send(
        c,
        In::Join(pb::MediaJoin {
            token,
            meeting_id: MEETING,
            ..Default::default()
        }),
    );
    assert!(w.was_admitted(c));
}

#[test]
fn every_admitted_participant_gets_every_other_track_and_leavers_are_unsubscribed() {
    let (mut w, open) = World::new(open_meeting());
    let conns: Vec<ConnId> = (1..=3)
        .map(|p| w.join_with(p, pb::Role::Participant, open))
        .collect();
    let tracks: Vec<u32> = conns
        .iter()
        .map(|c| w.publish(*c, pb::TrackKind::Video).unwrap())
        .collect();
    for (i, (c, t)) in conns.iter().zip(&tracks).enumerate() {
        let mut expected: Vec<ConnId> = conns.clone();
        expected.remove(i);
        assert_eq!(w.receivers(*c, *t), expected);
    }
    // Someone else's track id cannot be used to inject media.
    assert!(w.receivers(conns[0], tracks[1]).is_empty());
    assert_eq!(w.sfu.counters().dropped_not_owner, 1);
    let outs = w.sfu.disconnect(0, conns[2]);
    w.apply(outs);
    assert_eq!(w.receivers(conns[0], tracks[0]), vec![conns[1]]);
    assert!(w.receivers(conns[2], tracks[2]).is_empty());
}

#[test]
fn malformed_datagrams_and_control_messages_are_dropped_and_counted() {
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    let _b = w.join_with(2, pb::Role::Participant, open);
    let t = w.publish(a, pb::TrackKind::Video).unwrap();
    for d in [
        &b""[..],
        &b"short"[..],
        &[0x20; 40][..],
        &[0x10, 0, 3, 2, 0, 0, 0, 1][..],
    ] {
        assert!(matches!(w.sfu.route(a, d), Err(DropReason::Malformed(_))));
    }
    assert!(matches!(
        w.sfu.route(a, &World::datagram(9999)),
        Err(DropReason::UnknownTrack)
    ));
    let outs = w.sfu.control(NOW, a, pb::ClientMessage { msg: None });
    w.apply(outs);
    let outs = w.sfu.malformed_control(a);
    w.apply(outs);
    let c = w.sfu.counters();
    assert_eq!(c.dropped_malformed, 4);
    assert_eq!(c.dropped_unknown_track, 1);
    assert_eq!(c.control_malformed, 2);
    // And it still forwards.
    assert_eq!(w.receivers(a, t).len(), 1);
}

#[test]
fn a_copied_core_carries_on_like_the_original_and_apart_from_it() {
    let (mut w, open) = World::new(open_meeting());
    let conns: Vec<ConnId> = (1..=3)
        .map(|p| w.join_with(p, pb::Role::Participant, open))
        .collect();
    let t = w.publish(conns[0], pb::TrackKind::Video).unwrap();
    assert!(w.sfu.route(conns[0], b"short").is_err());
    let mut copy = w.sfu.clone();
    let before = w.sfu.counters();
    assert_eq!(copy.participants(), 3);
    assert_eq!(copy.counters(), before);
    let routed = copy.route(conns[0], &World::datagram(t)).unwrap();
    let mut routed = routed.to_vec();
    routed.sort();
    assert_eq!(routed, vec![conns[1], conns[2]]);
    // What happens to the copy leaves the original alone.
    copy.disconnect(NOW, conns[2]);
    assert_eq!(copy.participants(), 2);
    assert_eq!(w.sfu.participants(), 3);
    assert_eq!(w.sfu.counters(), before);
    assert_eq!(copy.counters().datagrams_in, before.datagrams_in + 1);
    assert_eq!(w.receivers(conns[0], t), vec![conns[1], conns[2]]);
}

#[test]
fn receive_reports_with_counts_near_u64_max_are_judged_without_overflow() {
    // Found by the node_control fuzz target: a report claiming u64::MAX
    // packets expected overflowed the loss check.
    let mut q = usage::QualityAccumulator::default();
    q.record(1, u64::MAX, u64::MAX, 0);
    q.record(2, u64::MAX, 0, 0);
    q.record(3, u64::MAX, u64::MAX - u64::MAX / 50, 0);
    q.record(4, u64::MAX, u64::MAX - u64::MAX / 49, 0);
    let good: Vec<bool> = (1..=4).map(|p| q.good[&p]).collect();
    assert_eq!(good, vec![true, false, true, false]);
    // And through the node's control path, as the fuzzer sent it.
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    w.send(
        a,
        In::ReceiveReport(pb::ReceiveReport {
            expected: u64::MAX,
            ..Default::default()
        }),
    );
    assert_eq!(w.sfu.participants(), 1);
}

#[test]
fn an_ended_meeting_closes_its_room_after_two_missing_assignments() {
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    let outs = w.sfu.sync_assignments(NOW, &[(MEETING, vec![])], &[]);
    w.apply(outs);
    let outs = w.sfu.sync_assignments(NOW, &[], &[]);
    w.apply(outs);
    assert!(
        !w.closed.contains(&a),
        "one stale answer must not end a meeting"
    );
    // A burst of stale answers (a replica working through a backlog of
    // beats) does not either.
    for ms in [1, 2, ENDED_AFTER_MS - 1] {
        let outs = w.sfu.sync_assignments(NOW + ms, &[], &[]);
        w.apply(outs);
    }
    assert!(!w.closed.contains(&a), "a burst must not end a meeting");
    let outs = w.sfu.sync_assignments(NOW + ENDED_AFTER_MS, &[], &[]);
    w.apply(outs);
    assert!(w.closed.contains(&a));
    assert_eq!(w.sfu.rooms(), 0);
}

#[test]
fn a_node_shutting_down_keeps_open_rooms_and_opens_no_new_one() {
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    assert!(w.was_admitted(a));
    w.sfu.shut_down();
    // The running meeting still takes joins ...
    let b = w.join_with(2, pb::Role::Participant, open);
    assert!(w.was_admitted(b));
    // ... another meeting does not open here.
    let c = w.connect_from([127, 0, 0, 1]);
    let token = w.signer.sign(&pb::JoinClaims {
        meeting_id: MEETING + 1,
        participant_id: 3,
        role: pb::Role::Host as i32,
        node_id: NODE.into(),
        display_name: "x".into(),
        issued_at_ms: NOW,
        expires_at_ms: NOW + 1000,
        settings: None,
        ..Default::default()
    });
    w.send(
        c,
        In::Join(pb::MediaJoin {
            token,
            meeting_id: MEETING + 1,
            ..Default::default()
        }),
    );
    assert!(matches!(&w.take(c)[..], [OutMsg::Closed(cl)] if cl.reason.contains("shutting down")));
    assert_eq!(w.sfu.rooms(), 1);
}

#[test]
fn a_moved_room_tells_everyone_to_rejoin_and_keeps_forwarding_through_the_grace() {
    let (mut w, open) = World::new(open_meeting());
    let a = w.join_with(1, pb::Role::Participant, open);
    let b = w.join_with(2, pb::Role::Participant, open);
    let t = w.publish(a, pb::TrackKind::Video).unwrap();
    w.take(a);
    w.take(b);
    let outs = w.sfu.sync_assignments(NOW, &[], &[MEETING]);
    w.apply(outs);
    for c in [a, b] {
        assert!(w.take(c).iter().any(|m| matches!(m, OutMsg::Moved(_))));
    }
    // During the grace the room still forwards and is not closed.
    let outs = w
        .sfu
        .sync_assignments(NOW + MOVE_GRACE_MS - 1, &[], &[MEETING]);
    w.apply(outs);
    assert!(w.closed.is_empty());
    assert_eq!(w.receivers(a, t), vec![b]);
    // Then it closes, saying why.
    let outs = w.sfu.sync_assignments(NOW + MOVE_GRACE_MS, &[], &[]);
    w.apply(outs);
    assert!(w.closed.contains(&a) && w.closed.contains(&b));
    assert_eq!(w.sfu.rooms(), 0);
}

/// Two cores joined by one link, with messages pumped between them.
struct Cascade {
    a: World,
    b: World,
}

const LINK: ConnId = 10_000;

impl Cascade {
    fn new() -> (Cascade, pb::MeetingSettings) {
        let (mut a, open) = World::new(open_meeting());
        let (mut b, _) = World::new(open_meeting());
        // Same control plane (signer), different nodes and indexes.
        b.signer = TokenSigner::from_pkcs8(&generate_signing_key()).unwrap();
        b.sfu = Sfu::new(SfuConfig::new(NODE));
        b.sfu.set_join_key(b.signer.public_key());
        a.sfu.set_node_index(1);
        b.sfu.set_node_index(2);
        b.next_conn = 500;
        for (w, peer) in [(&mut a, "peer-b"), (&mut b, "peer-a")] {
            let outs = w
                .sfu
                .sync_assignments(NOW, &[(MEETING, vec![peer.to_string()])], &[]);
            w.apply(outs);
            let outs = w
                .sfu
                .connect_link(LINK, LINK, IpAddr::from([127, 0, 0, 1]), peer.into());
            w.apply(outs);
        }
        (Cascade { a, b }, open)
    }

    /// Delivers link messages both ways until none are left.
    fn pump(&mut self) {
        loop {
            let from_a = std::mem::take(&mut self.a.link_out);
            let from_b = std::mem::take(&mut self.b.link_out);
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for (_, m) in from_a {
                let outs = self.b.sfu.link_control(LINK, m);
                self.b.apply(outs);
            }
            for (_, m) in from_b {
                let outs = self.a.sfu.link_control(LINK, m);
                self.a.apply(outs);
            }
        }
    }
}

#[test]
fn a_cascade_sends_each_datagram_over_the_link_once_and_never_back() {
    let (mut c, open) = Cascade::new();
    let speaker = c.a.join_with(1, pb::Role::Participant, open);
    c.pump();
    let listeners: Vec<ConnId> = (0..3)
        .map(|i| c.b.join_with(10 + i, pb::Role::Participant, open))
        .collect();
    c.pump();
    let t = c.a.publish(speaker, pb::TrackKind::Video).unwrap();
    c.pump();
    assert_eq!(t >> TRACK_INDEX_SHIFT, 1, "track ids carry the node index");
    // On A the speaker's datagram goes to the link once, not per listener.
    assert_eq!(c.a.receivers(speaker, t), vec![LINK]);
    // On B it arrives over the link and goes to the three listeners only.
    let mut on_b = c.b.receivers(LINK, t);
    on_b.sort();
    assert_eq!(on_b, listeners);
    // Listeners on B know the speaker and the track.
    for l in &listeners {
        let seen = c.b.take(*l);
        assert!(seen
            .iter()
            .any(|m| matches!(m, OutMsg::TrackPublished(i) if i.track_id == t)));
    }
    // A listener on B publishes: it reaches A's speaker, and never returns.
    let t2 = c.b.publish(listeners[0], pb::TrackKind::Video).unwrap();
    c.pump();
    assert_eq!(t2 >> TRACK_INDEX_SHIFT, 2);
    let mut from_b = c.b.receivers(listeners[0], t2);
    from_b.sort();
    assert_eq!(from_b, vec![listeners[1], listeners[2], LINK]);
    assert_eq!(c.a.receivers(LINK, t2), vec![speaker]);
    assert_eq!(c.a.sfu.counters().link_datagrams_out, 1);
    assert_eq!(c.b.sfu.counters().link_datagrams_in, 1);
    // The speaker leaves A: B's listeners hear of it and the track goes.
    let outs = c.a.sfu.disconnect(0, speaker);
    c.a.apply(outs);
    c.pump();
    assert!(c.b.receivers(LINK, t).is_empty());
    assert!(c
        .b
        .take(listeners[1])
        .iter()
        .any(|m| matches!(m, OutMsg::ParticipantLeft(p) if p.participant_id == 1)));
}

#[test]
fn losing_a_link_removes_everyone_behind_it() {
    let (mut c, open) = Cascade::new();
    let speaker = c.a.join_with(1, pb::Role::Participant, open);
    let listener = c.b.join_with(2, pb::Role::Participant, open);
    c.pump();
    let t = c.a.publish(speaker, pb::TrackKind::Audio).unwrap();
    c.pump();
    c.b.take(listener);
    let outs = c.b.sfu.disconnect(0, LINK);
    c.b.apply(outs);
    let seen = c.b.take(listener);
    assert!(seen
        .iter()
        .any(|m| matches!(m, OutMsg::TrackRemoved(r) if r.track_id == t)));
    assert!(seen
        .iter()
        .any(|m| matches!(m, OutMsg::ParticipantLeft(p) if p.participant_id == 1)));
    assert_eq!(c.b.sfu.tracks(), 0);
}

#[test]
fn a_link_hello_needs_a_node_token_from_the_control_plane() {
    let w = World::default();
    let node_token = |role: pb::Role, node: &str| {
        w.signer.sign(&pb::JoinClaims {
            meeting_id: 0,
            participant_id: 0,
            role: role as i32,
            node_id: node.into(),
            display_name: String::new(),
            issued_at_ms: NOW,
            expires_at_ms: NOW + JOIN_TOKEN_TTL_MS,
            settings: None,
            ..Default::default()
        })
    };
    let hello = |node: &str, token: Vec<u8>| pb::LinkHello {
        node_id: node.into(),
        token,
    };
    assert_eq!(
        w.sfu
            .verify_link_hello(NOW, &hello("peer", node_token(pb::Role::Node, "peer"))),
        Ok("peer".to_string())
    );
    // A participant token, a token for another node, an expired one, junk.
    assert!(w
        .sfu
        .verify_link_hello(
            NOW,
            &hello("peer", node_token(pb::Role::Participant, "peer"))
        )
        .is_err());
    assert!(w
        .sfu
        .verify_link_hello(NOW, &hello("peer", node_token(pb::Role::Node, "other")))
        .is_err());
    assert!(w
        .sfu
        .verify_link_hello(
            NOW + JOIN_TOKEN_TTL_MS + 1,
            &hello("peer", node_token(pb::Role::Node, "peer"))
        )
        .is_err());
    assert!(w
        .sfu
        .verify_link_hello(NOW, &hello("peer", vec![1, 2, 3]))
        .is_err());
}

#[test]
fn a_host_on_one_node_admits_and_locks_out_participants_on_another() {
    // Secure defaults: waiting room on, no joining before the host.
    let (mut c, _) = Cascade::new();
    let secure = pb::MeetingSettings::default();
    let host = c.a.join_with(1, pb::Role::Host, secure);
    c.pump();
    let guest = c.b.join_with(2, pb::Role::Participant, secure);
    c.pump();
    // The guest on B waits; the host on A hears of it.
    assert!(c
        .b
        .take(guest)
        .iter()
        .any(|m| matches!(m, OutMsg::Waiting(_))));
    let heard = c.a.take(host);
    assert!(
        heard
            .iter()
            .any(|m| matches!(m, OutMsg::WaitingParticipant(w) if w.participant_id == 2)),
        "{heard:?}"
    );
    // The host admits across the link.
    c.a.send(host, In::Admit(pb::Admit { participant_id: 2 }));
    c.pump();
    assert!(c.b.was_admitted(guest));
    assert!(c
        .a
        .take(host)
        .iter()
        .any(|m| matches!(m, OutMsg::ParticipantJoined(p) if p.participant_id == 2)));
    // Locking on A holds on B too (S3), for host-key holders as well.
    c.a.send(host, In::SetLocked(pb::SetLocked { locked: true }));
    c.pump();
    assert!(c
        .b
        .take(guest)
        .iter()
        .any(|m| matches!(m, OutMsg::LockChanged(l) if l.locked)));
    let late = c.b.join_with(3, pb::Role::Host, secure);
    assert!(
        c.b.closed.contains(&late),
        "a locked cascade refuses everyone"
    );
}

#[test]
fn a_host_mutes_and_grants_screen_sharing_to_someone_on_another_node() {
    let (mut c, open) = Cascade::new();
    let host = c.a.join_with(1, pb::Role::Host, open);
    c.pump();
    let guest = c.b.join_with(2, pb::Role::Participant, open);
    c.pump();
    let audio = c.b.publish(guest, pb::TrackKind::Audio).unwrap();
    c.b.send(
        guest,
        In::SetMuted(pb::SetMuted {
            participant_id: 0,
            muted: false,
        }),
    );
    c.pump();
    // The self-unmute on B is reported to A's host.
    assert!(c
        .a
        .take(host)
        .iter()
        .any(|m| matches!(m, OutMsg::MuteChanged(x) if x.participant_id == 2 && !x.muted)));
    assert_eq!(c.b.receivers(guest, audio), vec![LINK]);
    // The host on A mutes the guest on B: B stops forwarding their audio.
    c.a.send(
        host,
        In::SetMuted(pb::SetMuted {
            participant_id: 2,
            muted: true,
        }),
    );
    c.pump();
    assert!(c.b.receivers(guest, audio).is_empty());
    assert!(c
        .b
        .take(guest)
        .iter()
        .any(|m| matches!(m, OutMsg::MuteChanged(x) if x.participant_id == 2 && x.muted)));
    assert!(c
        .a
        .take(host)
        .iter()
        .any(|m| matches!(m, OutMsg::MuteChanged(x) if x.participant_id == 2 && x.muted)));
    // Nobody can unmute someone else across the link either.
    c.a.send(
        host,
        In::SetMuted(pb::SetMuted {
            participant_id: 2,
            muted: false,
        }),
    );
    assert!(c.a.last_refusal(host).is_some());
    // A screen-share grant reaches B, and the guest may then share.
    assert!(c.b.publish(guest, pb::TrackKind::Screen).is_none());
    c.a.send(
        host,
        In::GrantScreenShare(pb::GrantScreenShare {
            participant_id: 2,
            granted: true,
        }),
    );
    c.pump();
    assert!(c.b.publish(guest, pb::TrackKind::Screen).is_some());
}

#[test]
fn a_peer_may_speak_only_of_meetings_the_control_plane_gave_both_nodes() {
    let (mut c, _) = Cascade::new();
    // On B, the meeting is not cascaded with A (A is not among its peers).
    let outs = c.b.sfu.sync_assignments(NOW, &[(MEETING, vec![])], &[]);
    c.b.apply(outs);
    let secure = pb::MeetingSettings::default();
    let host = c.b.join_with(1, pb::Role::Host, secure);
    let guest = c.b.join_with(2, pb::Role::Participant, secure);
    c.b.send(host, In::SetLocked(pb::SetLocked { locked: true }));
    c.b.take(host);
    c.b.take(guest);
    c.b.link_out.clear();
    // A (a real, verified node) tries to unlock, admit, fake a host, inject a
    // track and read the roster of a meeting it does not carry.
    let fake = pb::ParticipantInfo {
        participant_id: 99,
        display_name: "the host".into(),
        role: pb::Role::Host as i32,
        ..Default::default()
    };
    let attacks = [
        LinkMsg::Lock(pb::LinkLock {
            meeting_id: MEETING,
            locked: false,
        }),
        LinkMsg::Admit(pb::LinkAdmit {
            meeting_id: MEETING,
            participant_id: 2,
        }),
        LinkMsg::ParticipantJoined(pb::LinkParticipant {
            meeting_id: MEETING,
            info: Some(fake),
        }),
        LinkMsg::TrackPublished(pb::LinkTrack {
            meeting_id: MEETING,
            track: Some(pb::TrackInfo {
                track_id: (1 << TRACK_INDEX_SHIFT) | 5,
                participant_id: 99,
                kind: pb::TrackKind::Video as i32,
            }),
        }),
        LinkMsg::Room(pb::LinkRoom {
            meeting_id: MEETING,
            open: true,
        }),
    ];
    for m in attacks {
        let outs = c.b.sfu.link_control(LINK, pb::LinkMessage { msg: Some(m) });
        c.b.apply(outs);
    }
    assert_eq!(c.b.sfu.counters().link_control_unassigned, 5);
    assert!(c.b.link_out.is_empty(), "the roster went to a stranger");
    assert!(c.b.take(guest).is_empty(), "the guest heard of the attack");
    assert!(c.b.take(host).is_empty(), "the host heard of the attack");
    assert_eq!(c.b.sfu.tracks(), 0);
    // Still locked: a newcomer with the host's role is refused.
    let late = c.b.join_with(3, pb::Role::Host, secure);
    assert!(c.b.closed.contains(&late));

    // Once the control plane cascades the meeting with A, the room A opened
    // earlier is acted on: B tells A its state.
    let outs =
        c.b.sfu
            .sync_assignments(NOW, &[(MEETING, vec!["peer-a".into()])], &[]);
    c.b.apply(outs);
    assert!(c
        .b
        .link_out
        .iter()
        .any(|(_, m)| matches!(&m.msg, Some(LinkMsg::Lock(l)) if l.locked)));
}

#[test]
fn join_garbage_for_a_meeting_does_not_keep_valid_tokens_out() {
    let (mut w, open) = World::new(open_meeting());
    let burst = SfuConfig::new(NODE).joins_per_meeting.burst;
    // Twice the meeting's whole join budget of garbage, from many sources
    // (so the per-source limit is not what stops it).
    for i in 0..burst * 2 {
        let c = w.connect_from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        w.send(
            c,
            In::Join(pb::MediaJoin {
                token: vec![0xde, 0xad, 0xbe, 0xef],
                meeting_id: MEETING,
                ..Default::default()
            }),
        );
        assert!(w.closed.contains(&c), "garbage join {i} not refused");
        // The shell drops the refused connection.
        let outs = w.sfu.disconnect(0, c);
        w.apply(outs);
    }
    assert_eq!(w.sfu.counters().joins_refused, u64::from(burst) * 2);
    // A participant with a real token still gets in.
    let p = w.join_with(1, pb::Role::Participant, open);
    assert!(w.was_admitted(p), "a valid token was kept out by garbage");
}

#[test]
fn connections_that_never_join_are_capped() {
    let mut w = World::default();
    let cap = 5;
    w.sfu.config.max_unjoined_connections = cap;
    let idle: Vec<ConnId> = (0..cap).map(|_| w.connect_from([10, 0, 0, 1])).collect();
    assert!(idle.iter().all(|c| !w.closed.contains(c)));
    // One more is closed at once, and counted.
    let c = w.next_conn;
    w.next_conn += 1;
    let outs = w.sfu.connect(c, c, IpAddr::from([10, 0, 0, 2]));
    w.apply(outs);
    assert!(w.closed.contains(&c));
    assert_eq!(w.sfu.counters().connections_refused, 1);
    // A connection that joins frees its place.
    let token = w.token(7, pb::Role::Participant, pb::MeetingSettings::default());
    w.send(
        idle[0],
        In::Join(pb::MediaJoin {
            token,
            meeting_id: MEETING,
            ..Default::default()
        }),
    );
    let d = w.next_conn;
    w.next_conn += 1;
    let outs = w.sfu.connect(d, d, IpAddr::from([10, 0, 0, 3]));
    w.apply(outs);
    assert!(!w.closed.contains(&d));
}

mod tiers;

#[test]
fn usage_records_joins_leaves_and_a_minute_of_quality_with_names_only_in_connection_records() {
    let mut w = World::default();
    let settings = open_meeting();
    let a = w.join_with(1, pb::Role::Participant, settings);
    let b = w.join_with(2, pb::Role::Participant, settings);
    // Each reports what it received: a is fine, b lost 5 % in one report.
    let report = |expected, received, jitter_us| {
        In::ReceiveReport(pb::ReceiveReport {
            expected,
            received,
            jitter_us,
        })
    };
    w.send(a, report(1000, 995, 4_000));
    w.send(b, report(1000, 1000, 4_000));
    w.send(b, report(1000, 950, 4_000));
    let minute = NOW / 60_000;
    // Nothing for the minute until it is over.
    assert!(w.sfu.take_usage().iter().all(|u| u.quality.is_none()));
    let outs = w.sfu.tick((minute + 1) * 60_000 + 1);
    w.apply(outs);
    let usage = w.sfu.take_usage();
    let q: Vec<_> = usage
        .iter()
        .filter_map(|u| u.quality.map(|q| (u.at_ms, q)))
        .collect();
    assert_eq!(
        q,
        [(
            minute * 60_000,
            usage::QualityMinute {
                minutes: 2,
                good_minutes: 1
            }
        )]
    );
    // Leaving is recorded with its reason; the first take had the joins.
    w.send(a, In::Leave(pb::Leave {}));
    let left: Vec<_> = w
        .sfu
        .take_usage()
        .into_iter()
        .filter(|u| !u.joined)
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].participant, left[0].reason), (1, usage::LEFT));
    let connections = w.sfu.take_connections();
    assert_eq!(connections.len(), 2);
    assert_eq!(connections[0].display_name, "p1");
}

#[test]
fn a_timed_out_stay_ends_when_last_heard_never_before_admission() {
    let mut w = World::default();
    let settings = open_meeting();
    let _a = w.join_with(1, pb::Role::Participant, settings);
    let b = w.join_with(2, pb::Role::Participant, settings);
    let c = w.join_with(3, pb::Role::Participant, settings);
    let admitted: std::collections::HashMap<u64, u64> = w
        .sfu
        .take_usage()
        .iter()
        .filter(|u| u.joined)
        .map(|u| (u.participant, u.at_ms))
        .collect();
    // b went silent 1.5 s before the node noticed (a node resumed from a
    // pause notices late): its stay ends when it was last heard.
    let noticed = NOW + 10_000;
    let outs = w.sfu.disconnect_at(noticed, noticed - 1_500, b);
    w.apply(outs);
    // c's silence began before it was let in: its stay is empty, never
    // negative.
    let outs = w.sfu.disconnect_at(noticed, admitted[&3] - 5_000, c);
    w.apply(outs);
    let left: Vec<(u64, u64)> = w
        .sfu
        .take_usage()
        .iter()
        .filter(|u| !u.joined && u.quality.is_none())
        .map(|u| (u.participant, u.at_ms))
        .collect();
    assert_eq!(left, [(2, noticed - 1_500), (3, admitted[&3])]);
}
