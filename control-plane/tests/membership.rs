//! Membership changes at runtime: grow 3 -> 5 voters, remove one, and the
//! cluster keeps committing; a new member catches up on earlier writes.

mod common;

use std::time::Duration;

use common::*;
use fjord_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_two_members_then_remove_one() {
    let mut cluster = Cluster::start(3, silent_nodes_config()).await;
    let client = cluster.client();
    create_institution(&client, "cern", "eu", 100).await;

    for id in [4, 5] {
        let addr = cluster.start_joiner(id).await;
        let members = client
            .call(|ch| {
                let address = addr.clone();
                async move {
                    ClusterServiceClient::new(ch)
                        .add_member(pb::AddMemberRequest { id, address })
                        .await
                }
            })
            .await
            .unwrap()
            .into_inner()
            .members;
        assert!(members.iter().any(|m| m.id == id && m.voter), "{members:?}");
    }
    let status = cluster.replicas[&5].replica.status();
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 5);

    // The newest member has the institution created before it joined.
    let last = cluster.replicas[&1].replica.status().last_applied_index;
    cluster.wait_applied(last, Duration::from_secs(5)).await;
    assert!(cluster.replicas[&5]
        .replica
        .local_state(|s| s.institutions.contains_key("cern")));

    let members = client
        .call(|ch| async move {
            ClusterServiceClient::new(ch)
                .remove_member(pb::RemoveMemberRequest { id: 2 })
                .await
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(!members.iter().any(|m| m.id == 2 && m.voter), "{members:?}");
    cluster.kill(2).await;

    // With 4 voters left, losing one more (a minority) keeps the cluster writing.
    let victim = *cluster
        .replicas
        .keys()
        .find(|id| Some(**id) != cluster.leader())
        .unwrap();
    cluster.kill(victim).await;
    register_node(&cluster, "eu-1", "eu", 100).await;
    assert!(schedule(&cluster.client(), "cern", 10, "after-changes")
        .await
        .is_ok());
}
