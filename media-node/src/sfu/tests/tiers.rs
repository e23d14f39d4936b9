//! What a licence's tier changes on the node: a duration limit (warned,
//! then ended; joining again does not restart it) and webinars (panelists
//! send, attendees only receive and see only panelists).

use super::*;

fn join_terms(
    w: &mut World,
    pid: u64,
    role: pb::Role,
    webinar: bool,
    limit_s: u32,
    warn_s: u32,
) -> ConnId {
    let token = w.signer.sign(&pb::JoinClaims {
        meeting_id: MEETING,
        participant_id: pid,
        role: role as i32,
        node_id: NODE.into(),
        display_name: format!("p{pid}"),
        issued_at_ms: NOW,
        expires_at_ms: NOW + JOIN_TOKEN_TTL_MS,
        settings: Some(open_meeting()),
        webinar,
        time_limit_s: limit_s,
        warn_before_end_s: warn_s,
    });
    let c = w.connect_from([127, 0, 0, 1]);
    w.send(
        c,
        In::Join(pb::MediaJoin {
            token,
            meeting_id: MEETING,
            ..Default::default()
        }),
    );
    c
}

fn tick(w: &mut World, now: u64) {
    let outs = w.sfu.tick(now);
    w.apply(outs);
}

fn warned(w: &mut World, c: ConnId) -> Option<u64> {
    w.take(c).into_iter().find_map(|m| match m {
        OutMsg::TimeLimitWarning(t) => Some(t.ends_in_ms),
        _ => None,
    })
}

#[test]
fn a_time_limited_meeting_is_warned_then_ended_and_does_not_restart() {
    let mut w = World::default();
    let host = join_terms(&mut w, 1, pb::Role::Host, false, 10, 4);
    let guest = join_terms(&mut w, 2, pb::Role::Participant, false, 10, 4);
    w.take(host);
    w.take(guest);
    tick(&mut w, NOW + 5_999);
    assert_eq!(warned(&mut w, host), None);
    tick(&mut w, NOW + 6_000);
    assert_eq!(warned(&mut w, host), Some(4_000));
    assert_eq!(warned(&mut w, guest), Some(4_000));
    // Warned once only.
    tick(&mut w, NOW + 7_000);
    assert_eq!(warned(&mut w, guest), None);
    assert!(w.closed.is_empty());
    tick(&mut w, NOW + 10_000);
    for c in [host, guest] {
        assert!(w.closed.contains(&c));
        assert!(w.take(c).iter().any(|m| matches!(
            m,
            OutMsg::Closed(c) if c.reason == TIME_LIMIT_REASON && !c.retry
        )));
    }
    assert_eq!(w.sfu.counters().time_limit_ends, 1);
    // A fresh join token does not open a fresh room with a fresh clock.
    let again = join_terms(&mut w, 3, pb::Role::Host, false, 10, 4);
    assert!(w.take(again).iter().any(|m| matches!(
        m,
        OutMsg::Closed(c) if c.reason.contains("time limit")
    )));
    // Meetings without a limit never end by time.
    let mut w = World::default();
    let c = join_terms(&mut w, 1, pb::Role::Host, false, 0, 0);
    tick(&mut w, NOW + 365 * 24 * 3_600_000);
    assert!(!w.closed.contains(&c));
}

#[test]
fn webinar_attendees_receive_but_cannot_publish_until_made_panelists() {
    let mut w = World::default();
    let host = join_terms(&mut w, 1, pb::Role::Host, true, 0, 0);
    let a = join_terms(&mut w, 2, pb::Role::Participant, true, 0, 0);
    let b = join_terms(&mut w, 3, pb::Role::Participant, true, 0, 0);
    // Attendees see only the panelists; the host hears of every attendee.
    let host_saw: Vec<u64> = w
        .take(host)
        .into_iter()
        .filter_map(|m| match m {
            OutMsg::ParticipantJoined(p) => Some(p.participant_id),
            _ => None,
        })
        .collect();
    assert_eq!(host_saw, [2, 3]);
    let b_msgs = w.take(b);
    let Some(OutMsg::Joined(j)) = b_msgs.iter().find(|m| matches!(m, OutMsg::Joined(_))) else {
        panic!("b joined")
    };
    assert_eq!(
        j.participants
            .iter()
            .map(|p| p.participant_id)
            .collect::<Vec<_>>(),
        [1]
    );
    assert!(!w
        .take(a)
        .iter()
        .any(|m| matches!(m, OutMsg::ParticipantJoined(p) if p.participant_id == 3)));

    let track = w
        .publish(host, pb::TrackKind::Video)
        .expect("the host publishes");
    assert_eq!(w.publish(a, pb::TrackKind::Audio), None);
    assert!(w
        .last_refusal(a)
        .is_none_or(|r| r.contains("attendees only receive")));
    w.send(
        a,
        In::Publish(pb::Publish {
            kind: pb::TrackKind::Audio as i32,
        }),
    );
    assert!(w
        .last_refusal(a)
        .unwrap()
        .contains("attendees only receive"));
    // Every attendee receives the panelist's media.
    w.send(
        a,
        In::Subscribe(pb::Subscribe {
            track_ids: vec![track],
            unsubscribe: false,
        }),
    );
    let receivers = w.receivers(host, track);
    assert!(
        receivers.contains(&a) && receivers.contains(&b),
        "{receivers:?}"
    );

    // Only the host makes panelists; then the panelist may send.
    w.send(
        b,
        In::SetPanelist(pb::SetPanelist {
            participant_id: 2,
            panelist: true,
        }),
    );
    assert!(w.last_refusal(b).unwrap().contains("only the host"));
    w.send(
        host,
        In::SetPanelist(pb::SetPanelist {
            participant_id: 2,
            panelist: true,
        }),
    );
    assert!(w.take(a).iter().any(|m| matches!(
        m,
        OutMsg::PanelistChanged(p) if p.participant_id == 2 && p.panelist
    )));
    let a_track = w
        .publish(a, pb::TrackKind::Audio)
        .expect("a panelist publishes");
    // Back to attendee: its tracks are withdrawn.
    w.send(
        host,
        In::SetPanelist(pb::SetPanelist {
            participant_id: 2,
            panelist: false,
        }),
    );
    assert!(w.take(b).iter().any(|m| matches!(
        m,
        OutMsg::TrackRemoved(t) if t.track_id == a_track
    )));
    assert_eq!(w.receivers(a, a_track), Vec::<ConnId>::new());
}
