//! Licence tiers where they bite on real media nodes: a basic-tier meeting
//! ends at its time limit after warning every participant, and a webinar
//! of 500 attendees carries the panelist's media to every attendee while
//! no attendee may publish. Real control plane, real QUIC.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fjord_common::ratelimit::Rate;
use fjord_control_plane::join_guard::JoinLimits;
use fjord_control_plane::server::ReplicaConfig;
use fjord_media_node::client::{JoinRequest, Participant};
use fjord_proto::v1 as pb;
use pb::licence_service_client::LicenceServiceClient;
use pb::server_message::Msg as OutMsg;

fn join_req(id: u64, passcode: &str, name: &str) -> JoinRequest {
    JoinRequest {
        meeting_id: id,
        passcode: passcode.into(),
        display_name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_tier_meeting_ends_at_its_limit_after_warning_everyone() {
    let stack = Stack::start(&[("n1", "nordic", 100)]).await;
    let ops = stack.client();
    // A price table whose basic tier ends meetings after 4 s, warning 2 s before.
    let table = fjord_control_plane::licensing::price_table::BUILTIN_PRICE_TABLE
        .replace("version = \"builtin-1\"", "version = \"short-basic\"")
        .replace(
            "max_duration_s = 2400\nwarn_before_end_s = 300",
            "max_duration_s = 4\nwarn_before_end_s = 2",
        );
    ops.call(|ch| {
        let toml = table.clone();
        async move {
            LicenceServiceClient::new(ch)
                .load_price_table(pb::LoadPriceTableRequest { toml })
                .await
        }
    })
    .await
    .unwrap();
    ops.set_licence(pb::SetLicenceRequest {
        institution: "uni".into(),
        terms: Some(pb::LicenceTerms {
            tier: "basic".into(),
            staff_fte: "10".into(),
            agreement_start: "2025-10-01".into(),
            agreement_contact: "agreement@uni.example".into(),
            technical_contact: "noc@uni.example".into(),
            ..Default::default()
        }),
        effective: String::new(),
    })
    .await
    .unwrap();
    let m = stack.schedule(3, open_settings()).await;
    let meeting = m.meeting.clone().unwrap();
    assert_eq!((meeting.time_limit_s, meeting.warn_before_end_s), (4, 2));

    let cp = stack.participant_client();
    let mut ps = Vec::new();
    for i in 0..3 {
        ps.push(
            Participant::join(&cp, &join_req(meeting.id, &m.passcode, &format!("p{i}")))
                .await
                .unwrap(),
        );
    }
    let opened = Instant::now();
    for p in &mut ps {
        let ends_in = p
            .wait_for(Duration::from_secs(10), |m| match m {
                OutMsg::TimeLimitWarning(w) => Some(w.ends_in_ms),
                _ => None,
            })
            .await
            .expect("every participant is warned first");
        assert!(ends_in > 0 && ends_in <= 2_000, "{ends_in}");
    }
    let warned_after = opened.elapsed();
    for p in &mut ps {
        let reason = p
            .wait_for(Duration::from_secs(10), |m| match m {
                OutMsg::Closed(c) => Some(c.reason.clone()),
                _ => None,
            })
            .await
            .expect("then the node ends the meeting");
        assert_eq!(reason, "time_limit");
    }
    let ended_after = opened.elapsed();
    assert!(
        ended_after > warned_after && ended_after < Duration::from_secs(8),
        "warned {warned_after:?}, ended {ended_after:?}"
    );
    // Joining again does not restart the clock.
    let again = Participant::join(&cp, &join_req(meeting.id, &m.passcode, "late")).await;
    assert!(again.is_err(), "the meeting stays ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webinar_of_500_reaches_every_attendee_and_no_attendee_publishes() {
    const ATTENDEES: u32 = 500;
    // 500 viewers join from one loopback address: raise the per-source limits.
    let unlimited = Rate {
        burst: 100_000,
        per_second: 100_000.0,
    };
    let mut stack = Stack::start_with(
        ReplicaConfig {
            join_limits: JoinLimits {
                per_source: unlimited,
                per_meeting: unlimited,
                ..JoinLimits::default()
            },
            ..ReplicaConfig::default()
        },
        &[],
    )
    .await;
    stack
        .add_node_with("n1", "nordic", 1000, |c| {
            c.sfu.joins_per_source = unlimited;
            c.sfu.joins_per_meeting = unlimited;
        })
        .await;
    let ops = stack.client();
    let r = ops
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "uni".into(),
            participants: ATTENDEES + 1,
            settings: Some(open_settings()),
            webinar: true,
            request_id: fjord_control_plane::client::request_id(),
            ..Default::default()
        })
        .await
        .unwrap();
    let meeting = r.meeting.clone().unwrap();
    assert_eq!(meeting.kind, "webinar");

    let cp = stack.participant_client();
    let mut host = Participant::join(
        &cp,
        &JoinRequest {
            meeting_id: meeting.id,
            host_key: r.host_key.clone(),
            display_name: "panelist".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let track = host.publish(pb::TrackKind::Audio).await.unwrap();
    host.send(pb::client_message::Msg::SetMuted(pb::SetMuted {
        participant_id: 0,
        muted: false,
    }))
    .await
    .unwrap();

    // Joined 20 at a time; a handshake that times out on a busy machine is
    // tried again, as a real client would.
    let mut attendees = Vec::new();
    for batch in 0..ATTENDEES / 20 {
        let joins = (0..20).map(|i| {
            let cp = &cp;
            let req = join_req(meeting.id, &r.passcode, &format!("a{}", batch * 20 + i));
            async move {
                let mut last = None;
                for _ in 0..5 {
                    match Participant::join(cp, &req).await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(last.expect("tried"))
            }
        });
        for p in futures::future::join_all(joins).await {
            attendees.push(p.expect("attendee joins"));
        }
    }
    assert_eq!(attendees.len(), ATTENDEES as usize);
    // An attendee sees the panelist only, not 499 other attendees.
    let last = attendees.last().unwrap();
    let fjord_media_node::client::Admission::Joined(j) = &last.admission else {
        panic!("attendees are admitted")
    };
    assert_eq!(j.participants.len(), 1, "{:?}", j.participants);

    // The panelist speaks; every attendee hears it.
    host.send_paced(track, 120, 20, Duration::from_secs(3))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let silent: Vec<usize> = attendees
        .iter()
        .enumerate()
        .filter(|(_, a)| a.stats.received() == 0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        silent.is_empty(),
        "attendees that heard nothing: {silent:?}"
    );

    // No attendee may publish.
    let attendee = attendees.first_mut().unwrap();
    match attendee.publish(pb::TrackKind::Audio).await {
        Err(e) => assert!(e.to_string().contains("attendees only receive"), "{e}"),
        Ok(t) => panic!("an attendee published track {t}"),
    }
    for a in attendees {
        a.close();
    }
}
