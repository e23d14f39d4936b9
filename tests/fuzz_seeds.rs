//! The fuzz targets' seed corpus (`fuzz/seeds/TARGET/`): inputs in each
//! target's own format, made here with the real encoders, so the fuzzers
//! start from traffic that gets past the parsers instead of bouncing off
//! them. The test keeps the committed seeds equal to what today's encoders
//! write (a changed wire format shows up here); run it with
//! `FJORD_WRITE_FUZZ_SEEDS=1` to write them anew.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use fjord_control_plane::raft::codec;
use fjord_control_plane::state::{
    Command, CreateInstitution, ExpireLeases, Heartbeat, InstitutionCommand, NodeCommand, Proposal,
    Request,
};
use fjord_media_node::wire::{flags, MediaHeader};
use fjord_proto::v1 as pb;
use prost::Message;

/// One op of the scripted targets: an op byte, a connection byte, then a
/// u16-length-prefixed chunk.
fn op(out: &mut Vec<u8>, op: u8, conn: u8, chunk: &[u8]) {
    out.extend_from_slice(&[op, conn]);
    out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
    out.extend_from_slice(chunk);
}

fn chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
    out.extend_from_slice(chunk);
}

fn datagram(track: u32, seq: u32, keyframe: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    MediaHeader {
        flags: if keyframe { flags::KEYFRAME } else { 0 },
        frag_index: 0,
        frag_count: 1,
        track,
        seq,
        timestamp: seq * 3000,
    }
    .write(&mut out);
    out.extend_from_slice(payload);
    out.to_vec()
}

fn client(m: pb::client_message::Msg) -> Vec<u8> {
    pb::ClientMessage { msg: Some(m) }.encode_to_vec()
}

fn link(m: pb::link_message::Msg) -> Vec<u8> {
    pb::LinkMessage { msg: Some(m) }.encode_to_vec()
}

fn request(command: Command) -> Request {
    Request {
        now_ms: 1_700_000_000_000,
        seed: 7,
        strategy: Default::default(),
        op_id: 9,
        command,
    }
}

fn seeds() -> BTreeMap<&'static str, Vec<(&'static str, Vec<u8>)>> {
    use pb::client_message::Msg as In;
    use pb::link_message::Msg as L;
    let mut all = BTreeMap::new();

    all.insert(
        "datagram_header",
        vec![
            ("keyframe", datagram(1, 1, true, b"opaque media")),
            ("delta", datagram(7, 99, false, &[0; 32])),
        ],
    );

    // Participant 1 is the host, 2 and 3 participants (the harness joins
    // them); these scripts publish, send media, mute and leave.
    let mut speak = Vec::new();
    op(
        &mut speak,
        0,
        2,
        &client(In::Publish(pb::Publish {
            kind: pb::TrackKind::Audio as i32,
        })),
    );
    op(&mut speak, 2, 2, &datagram(1, 1, true, b"hello"));
    op(
        &mut speak,
        0,
        3,
        &client(In::Subscribe(pb::Subscribe {
            track_ids: vec![1],
            unsubscribe: false,
        })),
    );
    op(&mut speak, 2, 2, &datagram(1, 2, false, b"again"));
    op(&mut speak, 3, 0, &[]);
    let mut host = Vec::new();
    op(
        &mut host,
        0,
        1,
        &client(In::SetMuted(pb::SetMuted {
            participant_id: 2,
            muted: true,
        })),
    );
    op(
        &mut host,
        0,
        1,
        &client(In::SetLocked(pb::SetLocked { locked: true })),
    );
    op(
        &mut host,
        0,
        1,
        &client(In::RequestRecording(Default::default())),
    );
    op(
        &mut host,
        0,
        2,
        &client(In::Rename(pb::Rename {
            display_name: "Ny".into(),
        })),
    );
    op(
        &mut host,
        0,
        1,
        &client(In::HandOverHost(Default::default())),
    );
    op(&mut host, 0, 3, &client(In::Leave(pb::Leave {})));
    op(&mut host, 4, 2, &[]);
    op(&mut host, 5, 0, &[0]);
    all.insert("node_control", vec![("speak", speak), ("host", host)]);

    // An empty first chunk (no hello of the fuzzer's own), then link
    // traffic about meeting 42.
    let mut peer = Vec::new();
    chunk(&mut peer, &[]);
    for m in [
        L::Room(pb::LinkRoom {
            meeting_id: 42,
            open: true,
        }),
        L::ParticipantJoined(pb::LinkParticipant {
            meeting_id: 42,
            info: Some(pb::ParticipantInfo {
                participant_id: 77,
                display_name: "far".into(),
                role: pb::Role::Participant as i32,
                ..Default::default()
            }),
        }),
        L::TrackPublished(pb::LinkTrack {
            meeting_id: 42,
            track: Some(pb::TrackInfo {
                track_id: 9,
                participant_id: 77,
                kind: pb::TrackKind::Video as i32,
            }),
        }),
        L::MemberState(pb::LinkMemberState {
            meeting_id: 42,
            participant_id: 1,
            change: Some(pb::link_member_state::Change::Muted(true)),
            apply: true,
        }),
    ] {
        peer.push(0);
        chunk(&mut peer, &link(m));
    }
    peer.push(3);
    chunk(&mut peer, &datagram(9, 1, true, b"from afar"));
    all.insert("link_control", vec![("peer", peer)]);

    let proposal = Proposal {
        requests: vec![
            request(Command::Institution(InstitutionCommand::Create(
                CreateInstitution {
                    name: "uio".into(),
                    residency: "nordic".into(),
                    home_region: None,
                    max_participants: 300,
                },
            ))),
            request(Command::Node(NodeCommand::Heartbeat(Heartbeat {
                id: "nordic-1".into(),
                participants: 12,
                seen_ms: None,
                sent_ms: Some(5),
            }))),
            request(Command::Node(NodeCommand::ExpireLeases(ExpireLeases {
                lease_ms: 3000,
            }))),
        ],
    };
    let entry = openraft::Entry::<fjord_control_plane::raft::TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 17),
        payload: openraft::EntryPayload::Normal(proposal.clone()),
    };
    // Logs written before proposals were batched hold one request per
    // entry, in JSON.
    let legacy = openraft::Entry::<fjord_control_plane::raft::LegacyTypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), 5),
        payload: openraft::EntryPayload::Normal(proposal.requests[0].clone()),
    };
    let tagged = |tag: u8, bytes: Vec<u8>| [vec![tag], bytes].concat();
    all.insert(
        "raft_payload",
        vec![
            ("entry", tagged(0, codec::encode(&entry).unwrap())),
            (
                "entry_json",
                tagged(0, serde_json::to_vec(&legacy).unwrap()),
            ),
            ("proposal", tagged(7, codec::encode(&proposal).unwrap())),
        ],
    );

    all.insert(
        "metadata_record",
        vec![
            (
                "licence_edit",
                [
                    &[1u8][..],
                    br#"{"kind":"licence","institution":"uio","version":1,"tier":"education","staff_fte_centi":200000,"student_licences":10,"add_ons":[],"agreement_start":"2023-10-01","effective":"2026-11-01"}"#,
                ]
                .concat(),
            ),
            (
                "meeting",
                [
                    &[2u8][..],
                    br#"{"kind":"meeting","id":1,"institution":"uio","start_ms":1,"end_ms":2,"participants":4,"regions":["nordic"],"ended_ms":null}"#,
                ]
                .concat(),
            ),
        ],
    );

    all.insert(
        "join_link",
        vec![("link", b"fjord://join/1234567?passcode=83920175".to_vec())],
    );
    all.insert(
        "tokens",
        vec![
            (
                "id_token",
                [&[1u8][..], b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"].concat(),
            ),
            (
                "link",
                [&[4u8][..], b"7363616c65.1700000000000.00ff"].concat(),
            ),
            ("webhook", {
                let mut w = vec![5u8];
                chunk(&mut w, b"t=1700000000,v1=00");
                w.extend_from_slice(br#"{"status":"firing"}"#);
                w
            }),
        ],
    );
    all.insert(
        "config_files",
        vec![
            ("kek", [&[0u8][..], "ab".repeat(32).as_bytes(), b"\n"].concat()),
            (
                "pools",
                [
                    &[3u8][..],
                    br#"[{"name":"nordic-a","min_replicas":1,"max_replicas":4,"node_capacity":200,"headroom_pct":25}]"#,
                ]
                .concat(),
            ),
            ("metadata_url", [&[4u8][..], b"etcd://127.0.0.1:2379,127.0.0.2:2379"].concat()),
        ],
    );
    // 100 licences shifted by 3, an amount of 9000 minor units, the table.
    let mut price = vec![0, 100, 3, 0, 0, 0, 0, 0, 0, 0x23, 0x28];
    price.extend_from_slice(
        fjord_control_plane::licensing::price_table::BUILTIN_PRICE_TABLE.as_bytes(),
    );
    all.insert("price_table", vec![("builtin", price)]);
    all.insert(
        "billing_arguments",
        vec![
            ("period", [&[0u8][..], b"2026-01-01..2026-12-31"].concat()),
            ("month", [&[1u8][..], b"2026-11"].concat()),
            ("fte", [&[3u8][..], b"1234.5"].concat()),
            ("objective", [&[5u8][..], b"99.95%"].concat()),
        ],
    );
    all
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

#[test]
fn the_committed_fuzz_seeds_are_what_todays_encoders_write() {
    let write = std::env::var_os("FJORD_WRITE_FUZZ_SEEDS").is_some();
    let targets: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
            .expect("fuzz/fuzz_targets")
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    let seeds = seeds();
    for t in &targets {
        assert!(
            seeds.contains_key(t.as_str()),
            "fuzz target {t} has no seeds"
        );
    }
    for (target, files) in seeds {
        let dir = seed_dir().join(target);
        for (name, bytes) in files {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
                continue;
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; run with FJORD_WRITE_FUZZ_SEEDS=1", path.display())
            });
            assert!(
                committed == bytes,
                "{} differs from what the encoders write today; run with FJORD_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}

/// Seeds that reach past the parsers: each decodes (or parses) as what it
/// stands for, through the real code.
#[test]
fn the_fuzz_seeds_get_past_the_parsers() {
    let seeds = seeds();
    let find = |t: &str, n: &str| -> Vec<u8> {
        seeds[t]
            .iter()
            .find(|(name, _)| *name == n)
            .unwrap()
            .1
            .clone()
    };
    assert!(MediaHeader::parse(&find("datagram_header", "delta")).is_ok());
    let entry = find("raft_payload", "entry");
    assert!(codec::decode_entry(&entry[1..]).is_ok());
    let json = find("raft_payload", "entry_json");
    assert!(codec::decode_entry(&json[1..]).is_ok());
    for n in ["licence_edit", "meeting"] {
        let r = find("metadata_record", n);
        fjord_control_plane::metadata::MetadataRecord::decode(&r[1..]).unwrap();
    }
    let link = String::from_utf8(find("join_link", "link")).unwrap();
    assert!(fjord_media_node::client::JoinRequest::from_link(&link).is_some());
    let pools = find("config_files", "pools");
    fjord_control_plane::k8s::pools::parse_pools(std::str::from_utf8(&pools[1..]).unwrap())
        .unwrap();
    let kek = find("config_files", "kek");
    assert!(fjord_control_plane::access::Kek::from_file_contents(
        std::str::from_utf8(&kek[1..]).unwrap()
    )
    .is_some());
    let price = find("price_table", "builtin");
    fjord_control_plane::licensing::PriceTable::from_toml(
        std::str::from_utf8(&price[11..]).unwrap(),
    )
    .unwrap();
    let period = find("billing_arguments", "period");
    assert!(
        fjord_control_plane::billing::parse_period(std::str::from_utf8(&period[1..]).unwrap())
            .is_some()
    );
    let fte = find("billing_arguments", "fte");
    assert_eq!(
        fjord_control_plane::licensing::parse_fte(std::str::from_utf8(&fte[1..]).unwrap()),
        Ok(123_450)
    );
}
