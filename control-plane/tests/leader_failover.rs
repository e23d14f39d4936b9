//! Kill the leader while schedule calls stream in: a new leader takes over,
//! and no acknowledged meeting is lost or duplicated.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = Cluster::start(3, silent_nodes_config()).await;
    let client = cluster.client();
    create_institution(&client, "cern", "eu", 1000).await;
    register_node(&cluster, "eu-1", "eu", 1_000_000).await;

    let first_leader = cluster.leader().unwrap();
    let writer = {
        let client = cluster.client();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                // Each call carries its own idempotency key, as `fjord ctl` does.
                match schedule(&client, "cern", 1, &format!("req-{i}")).await {
                    Ok(r) => acked.push((format!("req-{i}"), r.meeting.unwrap().id)),
                    Err(s) => panic!("schedule {i} failed: {s}"),
                }
            }
            acked
        })
    };
    // Let part of the stream commit, then kill the leader mid-stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(first_leader).await;
    let acked = writer.await.unwrap();
    assert_eq!(acked.len(), 150, "every call is eventually acknowledged");

    let new_leader = cluster.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(new_leader, first_leader);

    let meetings = list_meetings(&cluster.client()).await;
    let ids: BTreeSet<u64> = meetings.iter().map(|m| m.id).collect();
    let acked_ids: BTreeSet<u64> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        acked_ids.len(),
        150,
        "no two requests were answered with the same meeting"
    );
    assert!(
        acked_ids.is_subset(&ids),
        "every acknowledged meeting is in the new leader's state"
    );
    assert_eq!(ids.len(), 150, "no request created two meetings");
}

/// Answers carry leader hints: a client that starts at a follower sends its
/// next calls to the leader, and follows the new leader after a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_the_leader_hint() {
    let mut cluster = Cluster::start(3, silent_nodes_config()).await;
    let leader = cluster.leader().unwrap();
    // Followers first, the leader last.
    let mut endpoints: Vec<String> = cluster
        .addrs
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .collect();
    endpoints.push(cluster.addrs[&leader].clone());
    let client = fjord_control_plane::client::Client::from_files(
        &endpoints,
        &cluster.ca.operator(OPERATOR).unwrap(),
        Default::default(),
    )
    .unwrap();
    for i in 0..4 {
        create_institution(&client, &format!("inst-{i}"), "eu", 10).await;
    }
    // (A fresh cluster may still change leader once; compare with the
    // leader now.)
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    assert_eq!(
        client.current_endpoint(),
        cluster.addrs[&leader],
        "calls go to the leader once it is known"
    );

    cluster.kill(leader).await;
    let new_leader = cluster.wait_leader(Duration::from_secs(5)).await;
    for i in 4..10 {
        create_institution(&client, &format!("inst-{i}"), "eu", 10).await;
    }
    assert_eq!(client.current_endpoint(), cluster.addrs[&new_leader]);
}
