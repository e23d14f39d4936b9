//! A media node's cascade links: a dialling node's hello (decoded and
//! checked as the node does), then, on a verified link carrying the
//! meeting, the fuzzer's link messages and datagrams, with participants
//! of the meeting joined locally. Nothing may panic.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use fjord_fuzz::{join_token, link_token, Script, MEETING, NODE, NOW, PEER};
use fjord_media_node::sfu::{ConnId, Sfu, SfuConfig};
use fjord_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const LINK: ConnId = 10_000;

/// The node with a verified link to the peer the meeting is cascaded
/// with and two local participants. Built once per process: the hello and
/// the joins verify genuine Ed25519 tokens, which would otherwise be most
/// of every run's cost.
fn prepared() -> &'static Sfu<ConnId> {
    static PREPARED: OnceLock<Sfu<ConnId>> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let mut sfu: Sfu<ConnId> = Sfu::new(SfuConfig::new(NODE));
        sfu.set_join_key(fjord_fuzz::signer().public_key());
        sfu.set_node_index(1);
        let hello = pb::LinkHello {
            node_id: PEER.into(),
            token: link_token(),
        };
        let peer = sfu.verify_link_hello(NOW, &hello).expect("a genuine hello");
        sfu.sync_assignments(NOW, &[(MEETING, vec![PEER.to_string()])], &[]);
        sfu.connect_link(LINK, LINK, IpAddr::from([127, 0, 0, 1]), peer);
        for (conn, role) in [(1, pb::Role::Host), (2, pb::Role::Participant)] {
            sfu.connect(conn, conn, IpAddr::from([127, 0, 0, 1]));
            sfu.control(
                NOW,
                conn,
                pb::ClientMessage {
                    msg: Some(pb::client_message::Msg::Join(pb::MediaJoin {
                        token: join_token(conn, role),
                        meeting_id: MEETING,
                        ..Default::default()
                    })),
                },
            );
        }
        assert_eq!(sfu.participants(), 2, "the local joins");
        sfu
    })
}

fuzz_target!(|data: &[u8]| {
    let mut s = Script::new(data);
    let mut sfu = prepared().clone();
    let mut now = NOW;
    // The fuzzer's own hello: it must never panic the check, and a hello
    // the node accepts names a node other than itself.
    if let Ok(hello) = pb::LinkHello::decode(s.chunk()) {
        if let Ok(peer) = sfu.verify_link_hello(now, &hello) {
            assert_ne!(peer, NODE);
        }
    }
    let mut ops = 0;
    while !s.is_empty() && ops < 256 {
        ops += 1;
        match s.byte() % 6 {
            0..=2 => match pb::LinkMessage::decode(s.chunk()) {
                Ok(m) => {
                    sfu.link_control(LINK, m);
                }
                Err(_) => sfu.malformed_link_control(),
            },
            3 => {
                let _ = sfu.route(LINK, s.chunk());
            }
            4 => {
                now += u64::from(s.u16());
                sfu.tick(now);
            }
            _ => {
                // A local participant speaks, so the link has traffic to
                // carry the other way too.
                let conn = 1 + u64::from(s.byte() % 2);
                match pb::ClientMessage::decode(s.chunk()) {
                    Ok(m) => {
                        sfu.control(now, conn, m);
                    }
                    Err(_) => {
                        sfu.malformed_control(conn);
                    }
                }
            }
        }
    }
});
