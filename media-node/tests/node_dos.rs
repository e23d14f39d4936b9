//! Attacks on a media node over real sockets: a participant flooding
//! control messages (mute and rename at line rate) is closed, and only it
//! (the others keep receiving media); a cascade link is accepted only from
//! the node whose certificate it presents, even with a valid token.

mod common;

use std::time::{Duration, Instant};

use common::{open_settings, Stack};
use fjord_media_node::client::{JoinRequest, Participant};
use fjord_proto::v1 as pb;
use pb::client_message::Msg as In;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_flood_closes_only_the_offender_and_the_others_keep_receiving() {
    let stack = Stack::start(&[("nordic-1", "nordic", 100)]).await;
    let m = stack.schedule(3, open_settings()).await;
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

/// Dials `node`'s QUIC endpoint as a cascade link presenting `own` (or no
/// certificate) and a hello for `claimed` carrying `token`; answers why the
/// node closed the link, or `None` if it stayed up.
async fn dial_link(
    stack: &Stack,
    node: &str,
    own: Option<fjord_common::TlsFiles>,
    claimed: &str,
    token: Vec<u8>,
) -> Option<String> {
    let (address, certificate) = stack.replica.replica.local_state(|s| {
        (
            s.nodes[node].address.clone(),
            s.nodes[node].certificate.clone(),
        )
    });
    let own: std::sync::Arc<dyn rustls::client::ResolvesClientCert> = match own {
        Some(f) => std::sync::Arc::new(
            fjord_common::tls::OwnCert::new(f.cert.unwrap(), f.key.unwrap()).unwrap(),
        ),
        None => std::sync::Arc::new(NoCert),
    };
    let config = fjord_media_node::tls::link_config(&certificate, own).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(address.parse().unwrap(), fjord_media_node::tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let hello = pb::LinkMessage {
        msg: Some(pb::link_message::Msg::Hello(pb::LinkHello {
            node_id: claimed.into(),
            token,
        })),
    };
    let _ = send.write_all(&fjord_media_node::wire::frame(&hello)).await;
    let closed = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    match closed {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        Ok(other) => Some(other.to_string()),
        Err(_) => None,
    }
}

/// A client that has no certificate to present.
#[derive(Debug)]
struct NoCert;

impl rustls::client::ResolvesClientCert for NoCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_link_needs_the_dialling_nodes_own_certificate() {
    let stack = Stack::start(&[("n-a", "nordic", 10), ("n-b", "nordic", 10)]).await;
    // A valid link token for n-b, as if stolen from it: signed with the
    // cluster's join key (derived from the salt in the state and the KEK).
    let kek = fjord_control_plane::access::Kek::load(&stack.ca.kek().unwrap()).unwrap();
    let salt = stack
        .replica
        .replica
        .local_state(|s| s.access.salt.clone())
        .expect("registration created the join key");
    let signer = kek.join_signer(&salt).unwrap();
    let now = fjord_media_node::node::now_ms();
    let token = signer.sign(&pb::JoinClaims {
        meeting_id: 0,
        participant_id: 0,
        role: pb::Role::Node as i32,
        node_id: "n-b".into(),
        display_name: String::new(),
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
        ..Default::default()
    });
    // Without a certificate, and with another node's: refused.
    let refused = dial_link(&stack, "n-a", None, "n-b", token.clone()).await;
    assert!(
        refused
            .as_deref()
            .is_some_and(|r| r.contains("own certificate")),
        "{refused:?}"
    );
    let other = stack.ca.node("n-c").unwrap();
    let refused = dial_link(&stack, "n-a", Some(other), "n-b", token.clone()).await;
    assert!(
        refused
            .as_deref()
            .is_some_and(|r| r.contains("own certificate")),
        "{refused:?}"
    );
    assert!(stack.nodes["n-a"].linked_peers().is_empty());
    // With n-b's own certificate the same hello is accepted.
    let own = stack.ca.node("n-b").unwrap();
    let accepted = dial_link(&stack, "n-a", Some(own), "n-b", token).await;
    assert_eq!(accepted, None, "the genuine node was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_join_storm_new_addresses_are_validated_with_a_retry_first() {
    let mut stack = Stack::start(&[]).await;
    // Storm mode from the first handshake: every unvalidated address gets
    // a Retry, and a real participant (which answers it) still gets in.
    stack
        .add_node_with("n-a", "nordic", 10, |c| c.retry_above_handshakes = 0)
        .await;
    let m = stack.schedule(2, open_settings()).await;
    let p = Participant::join(
        &stack.participant_client(),
        &JoinRequest {
            meeting_id: m.meeting.unwrap().id,
            passcode: m.passcode,
            display_name: "ann".into(),
            ..Default::default()
        },
    )
    .await
    .expect("a participant answering the Retry gets in");
    assert!(p.is_admitted());
    assert!(stack.nodes["n-a"].retries_sent() >= 1);
}
