//! A data directory written by the previous storage format (one redb file,
//! JSON entries and snapshot) still loads: `fixtures/log-v0` was made by
//! the release before the WAL with a one-replica cluster (snapshot every 10
//! entries): two institutions, two media nodes (fra-1 draining), 16
//! meetings in the snapshot (meeting 3 ended) and 9 entries after it, three
//! of them schedules with request ids fx-tail-1..3 (from operator "op").

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_common::pki::LocalCa;
use fjord_control_plane::client::{Client, ClientConfig};
use fjord_control_plane::raft::open_stores;
use fjord_control_plane::server::{start_with_listeners, ReplicaConfig};
use fjord_control_plane::state::{Command, MeetingCommand, NodeState, ScheduleMeeting};
use openraft::{EntryPayload, RaftLogReader};

fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v0");
    std::fs::create_dir_all(dir.path().join("r1")).unwrap();
    std::fs::copy(src.join("raft.redb"), dir.path().join("r1/raft.redb")).unwrap();
    std::fs::copy(src.join("kek.key"), dir.path().join("kek.key")).unwrap();
    dir
}

#[tokio::test]
async fn previous_format_log_and_snapshot_load() {
    let dir = fixture_copy();
    let data = dir.path().join("r1");
    {
        let (mut log, sm) = open_stores(&data).expect("migrates and opens");
        let applied = sm.applied.read().unwrap().clone();
        assert_eq!(applied.last_applied.map(|l| l.index), Some(59));
        let s = &applied.state;
        assert_eq!(
            s.institutions.keys().cloned().collect::<Vec<_>>(),
            ["sorbonne", "uio"]
        );
        assert_eq!(s.nodes["fra-1"].state, NodeState::Draining);
        assert_eq!(s.nodes["osl-1"].region, "nordic");
        assert_eq!(s.meetings.len(), 16);
        assert!(s.meetings[&15].access.settings.e2ee);
        assert!(s.access.salt.is_some());
        let entries = log.try_get_log_entries(60..=68).await.unwrap();
        assert_eq!(entries.len(), 9, "the log after the snapshot");
        let tail: Vec<String> = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(p) => Some(&p.requests),
                _ => None,
            })
            .flatten()
            .filter_map(|r| match &r.command {
                Command::Meeting(MeetingCommand::Schedule(ScheduleMeeting {
                    request_id, ..
                })) => request_id.clone(),
                _ => None,
            })
            .collect();
        // Request ids are scoped by the caller that gave them.
        assert_eq!(
            tail,
            ["fx-tail-1", "fx-tail-2", "fx-tail-3"]
                .map(|t| format!("spiffe://fjord/operator/op#{t}"))
        );
    }
    assert!(data.join("wal").is_dir());
    assert!(data.join("raft.redb.migrated").exists());
    assert!(!data.join("raft.redb").exists());

    // Served by a replica: the migrated log replays on top of the snapshot,
    // and what it writes next survives a restart in the new format.
    let ca = LocalCa::open_or_init(&dir.path().join("pki")).unwrap();
    for round in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = l.local_addr().unwrap().to_string();
        let config = ReplicaConfig {
            id: 1,
            listen: l.local_addr().unwrap(),
            peer_listen: pl.local_addr().unwrap(),
            data_dir: data.clone(),
            peers: BTreeMap::from([(1, pl.local_addr().unwrap().to_string())]),
            tls: ca.replica(1).unwrap(),
            kek_file: dir.path().join("kek.key"),
            node_lease_ms: 3_600_000,
            ..common::fast_config()
        };
        let handle = start_with_listeners(config, l, pl).await.unwrap();
        let client = Client::from_files(
            std::slice::from_ref(&endpoint),
            &ca.operator(common::OPERATOR).unwrap(),
            ClientConfig::default(),
        )
        .unwrap();
        let meetings = common::list_meetings(&client).await;
        // Ended meetings are pruned a week after they end, and the fixture's
        // tail meetings end on 2027-12-20.
        if fjord_control_plane::raft::now_ms() < 1_829_000_000_000 {
            assert!(meetings.len() >= 19, "{} meetings", meetings.len());
        }
        let nodes = common::list_nodes(&client).await;
        assert_eq!(nodes.len(), 2);
        if round == 0 {
            common::create_institution(&client, "after-upgrade", "eu", 10).await;
        } else {
            let r = client
                .call(|ch| async move {
                    fjord_proto::v1::institution_service_client::InstitutionServiceClient::new(ch)
                        .list_institutions(fjord_proto::v1::ListInstitutionsRequest {})
                        .await
                })
                .await
                .unwrap()
                .into_inner();
            let names: Vec<_> = r.institutions.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(names, ["after-upgrade", "sorbonne", "uio"]);
        }
        handle.shutdown().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
