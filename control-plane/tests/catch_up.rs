//! A large state (≥ 50 MiB encoded: many institutions, nodes and meetings)
//! reaches a replica that has none of it by snapshot: a member added after
//! the log was compacted, and a replica whose disk was wiped. Both end with
//! the leader's state and answer linearizable reads like it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fjord_control_plane::raft::codec;
use fjord_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;

const TARGET_BYTES: usize = 50 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_state_reaches_a_new_member_and_a_wiped_replica_by_snapshot() {
    let config = fjord_control_plane::server::ReplicaConfig {
        node_lease_ms: 3_600_000,
        // Compact early and keep little log, so only a snapshot can help.
        snapshot_every_entries: 200,
        snapshot_keep_entries: 20,
        request_timeout_ms: 60_000,
        ..fast_config()
    };
    let mut cluster = Cluster::start(3, config).await;
    let client = Arc::new(cluster.client());
    let institutions: Vec<String> = (0..200).map(|i| format!("inst-{i:03}")).collect();
    for (i, name) in institutions.iter().enumerate() {
        let residency = if i % 2 == 0 { "eu" } else { "nordic" };
        create_institution(&client, name, residency, 10_000).await;
    }
    for i in 0..100 {
        let region = if i % 2 == 0 { "eu" } else { "nordic" };
        register_node(&cluster, &format!("node-{i:03}"), region, 1_000_000).await;
    }

    // Meetings from 64 writers until the encoded state passes the target.
    let started = Instant::now();
    let mut written = 0usize;
    loop {
        // Encoding tens of MiB is long work: off the async workers, which
        // also run every replica's heartbeats in this process.
        let size = tokio::task::block_in_place(|| {
            cluster.replicas[&cluster.leader().unwrap()]
                .replica
                .local_state(|s| codec::encode(s).unwrap().len())
        });
        if size >= TARGET_BYTES {
            eprintln!(
                "state {size} bytes after {written} meetings in {:?}",
                started.elapsed()
            );
            break;
        }
        let round: Vec<_> = (0..64)
            .map(|w| {
                let client = client.clone();
                let institutions = institutions.clone();
                tokio::spawn(async move {
                    for k in 0..100 {
                        let n = written + w * 100 + k;
                        let inst = &institutions[n % institutions.len()];
                        schedule(&client, inst, 1 + (n % 40) as u32, &format!("m-{n}"))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in round {
            t.await.unwrap();
        }
        written += 64 * 100;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "state did not grow to 50 MiB in 10 minutes"
        );
    }

    // A new member, added after the log it would need is gone.
    let addr = cluster.start_joiner(4).await;
    client
        .call(|ch| {
            let address = addr.clone();
            async move {
                ClusterServiceClient::new(ch)
                    .add_member(pb::AddMemberRequest { id: 4, address })
                    .await
            }
        })
        .await
        .unwrap();

    // A replica that lost its disk: killed, wiped, started again.
    let leader = cluster.leader().unwrap();
    let wiped = *cluster
        .replicas
        .keys()
        .find(|id| **id != leader && **id != 4)
        .unwrap();
    cluster.kill(wiped).await;
    cluster.restart(wiped, true).await;

    // One more write after both: they must get it too. (Retried across a
    // leader change, its first attempt may be the one that committed.)
    let r = client
        .create_institution(pb::CreateInstitutionRequest {
            name: "after-catch-up".into(),
            residency: "eu".into(),
            max_participants: 10,
            home_region: String::new(),
        })
        .await;
    assert!(
        r.is_ok() || r.as_ref().unwrap_err().code() == tonic::Code::AlreadyExists,
        "{r:?}"
    );
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let last = cluster.replicas[&leader]
        .replica
        .status()
        .last_applied_index;
    cluster.wait_applied(last, Duration::from_secs(120)).await;

    let expected = tokio::task::block_in_place(|| {
        cluster.replicas[&leader].replica.local_state(|s| s.clone())
    });
    for id in [4, wiped] {
        let r = &cluster.replicas[&id].replica;
        assert!(
            r.status().snapshot_index > 0,
            "replica {id} caught up without a snapshot"
        );
        assert!(
            tokio::task::block_in_place(|| r.local_state(|s| s == &expected)),
            "replica {id} differs from the leader"
        );
        // A linearizable read through this replica answers like the leader.
        let own = fjord_control_plane::client::Client::from_files(
            std::slice::from_ref(&cluster.addrs[&id]),
            &cluster.ca.operator(OPERATOR).unwrap(),
            Default::default(),
        )
        .unwrap();
        let nodes = list_nodes(&own).await;
        assert_eq!(nodes.len(), 100);
        let inst = own
            .call(|ch| async move {
                pb::institution_service_client::InstitutionServiceClient::new(ch)
                    .get_institution(pb::GetInstitutionRequest {
                        name: "after-catch-up".into(),
                    })
                    .await
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(inst.institution.unwrap().name, "after-catch-up");
    }
}
