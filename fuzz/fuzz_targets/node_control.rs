//! A media node's core under a participant's control stream and
//! datagrams: three participants join with genuine tokens, then the
//! fuzzer's script sends control frames (decoded as the node decodes
//! them: a frame that does not decode is counted, never acted on),
//! datagrams, clock steps, disconnects, rejoins and assignment changes.
//! Nothing may panic, and the node never holds more participants than
//! connections it was given.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use fjord_fuzz::{join_token, Script, MEETING, NODE, NOW};
use fjord_media_node::sfu::{ConnId, Sfu, SfuConfig};
use fjord_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn join(sfu: &mut Sfu<ConnId>, conn: ConnId, now: u64, role: pb::Role) {
    sfu.connect(conn, conn, IpAddr::from([127, 0, 0, 1]));
    let m = pb::ClientMessage {
        msg: Some(pb::client_message::Msg::Join(pb::MediaJoin {
            token: join_token(conn, role),
            meeting_id: MEETING,
            ..Default::default()
        })),
    };
    sfu.control(now, conn, m);
}

/// The node with its first three participants joined. Built once per
/// process: joining verifies a genuine Ed25519 token per participant,
/// which would otherwise be most of every run's cost.
fn prepared() -> &'static Sfu<ConnId> {
    static PREPARED: OnceLock<Sfu<ConnId>> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let mut sfu: Sfu<ConnId> = Sfu::new(SfuConfig::new(NODE));
        sfu.set_join_key(fjord_fuzz::signer().public_key());
        for (conn, role) in FIRST {
            join(&mut sfu, conn, NOW, role);
        }
        assert_eq!(sfu.participants(), FIRST.len(), "the first joins");
        sfu
    })
}

const FIRST: [(ConnId, pb::Role); 3] = [
    (1, pb::Role::Host),
    (2, pb::Role::Participant),
    (3, pb::Role::Participant),
];

fuzz_target!(|data: &[u8]| {
    let mut s = Script::new(data);
    let mut sfu = prepared().clone();
    let mut now = NOW;
    let mut connected: Vec<ConnId> = FIRST.iter().map(|(conn, _)| *conn).collect();
    let mut next_conn: ConnId = 4;
    let mut ops = 0;
    while !s.is_empty() && ops < 256 {
        ops += 1;
        let op = s.byte();
        // Connections 0 (never connected) to the newest.
        let conn = (s.byte() as u64) % next_conn;
        match op % 7 {
            0 | 1 => match pb::ClientMessage::decode(s.chunk()) {
                Ok(m) => {
                    sfu.control(now, conn, m);
                }
                Err(_) => {
                    sfu.malformed_control(conn);
                }
            },
            2 => {
                let _ = sfu.route(conn, s.chunk());
            }
            3 => {
                now += u64::from(s.u16());
                sfu.tick(now);
            }
            4 => {
                sfu.disconnect(now, conn);
                connected.retain(|c| *c != conn);
            }
            // At most eight more joins per run: each verifies a genuine
            // Ed25519 token, and eleven participants reach every path that
            // sixty would, at several times the executions per second.
            5 if next_conn < 12 => {
                let role = if s.byte() % 4 == 0 {
                    pb::Role::Host
                } else {
                    pb::Role::Participant
                };
                join(&mut sfu, next_conn, now, role);
                connected.push(next_conn);
                next_conn += 1;
            }
            _ => {
                let flags = s.byte();
                let assigned: Vec<(u64, Vec<String>)> = if flags & 1 == 0 {
                    vec![(MEETING, Vec::new())]
                } else {
                    Vec::new()
                };
                let moved: Vec<u64> = if flags & 2 == 0 {
                    Vec::new()
                } else {
                    vec![MEETING]
                };
                sfu.sync_assignments(now, &assigned, &moved);
            }
        }
        assert!(
            sfu.participants() <= connected.len(),
            "{} participants on {} connections",
            sfu.participants(),
            connected.len()
        );
    }
});
