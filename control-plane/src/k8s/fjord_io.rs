//! The operator's control-plane side: Fjord's media nodes and Raft
//! members as the cluster reports them, and the actions that are the
//! control plane's to carry out (drain with evacuation, membership).

use tonic::Status;

use fjord_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::node_service_client::NodeServiceClient;

use super::decide::{Action, FjordNode, FjordNodeState, Member};
use crate::client::Client;

pub struct FjordSide {
    client: Client,
}

impl FjordSide {
    pub fn new(client: Client) -> Self {
        FjordSide { client }
    }

    pub async fn observe(&self) -> Result<(Vec<FjordNode>, Vec<Member>), Status> {
        let nodes = self
            .client
            .call(|ch| async move {
                NodeServiceClient::new(ch)
                    .list_nodes(pb::ListNodesRequest {})
                    .await
            })
            .await?
            .into_inner()
            .nodes
            .into_iter()
            .map(|n| FjordNode {
                state: match pb::NodeState::try_from(n.state) {
                    Ok(pb::NodeState::Ready) => FjordNodeState::Ready,
                    Ok(pb::NodeState::Draining) => FjordNodeState::Draining,
                    _ => FjordNodeState::Down,
                },
                id: n.id,
                capacity: n.capacity,
                reserved_next_hour: n.reserved_next_hour,
                load_participants: n.load_participants,
            })
            .collect();
        let members = self.status().await?.members;
        let members = members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                voter: m.voter,
                // Adding a member waits for the learner to catch up before
                // it is made a voter (one call): a learner seen here is one
                // whose addition was interrupted, and adding it again
                // finishes the job.
                caught_up: true,
            })
            .collect();
        Ok((nodes, members))
    }

    async fn status(&self) -> Result<pb::StatusResponse, Status> {
        Ok(self
            .client
            .call(|ch| async move {
                ClusterServiceClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            })
            .await?
            .into_inner())
    }

    /// Carries out a control-plane action; `Ok(false)` for the others.
    pub async fn apply(&self, action: &Action) -> Result<bool, Status> {
        match action {
            Action::DrainNode { node_id, .. } => {
                let id = node_id.clone();
                self.client
                    .call(|ch| {
                        let id = id.clone();
                        async move {
                            NodeServiceClient::new(ch)
                                .drain_node(pb::DrainNodeRequest {
                                    id,
                                    undo: false,
                                    evacuate: true,
                                })
                                .await
                        }
                    })
                    .await?;
            }
            Action::AddLearner { id, peer_address } => self.add(*id, peer_address).await?,
            Action::PromoteVoter { id } => {
                let address = self
                    .status()
                    .await?
                    .members
                    .into_iter()
                    .find(|m| m.id == *id)
                    .map(|m| m.address)
                    .ok_or_else(|| Status::not_found(format!("member {id}")))?;
                self.add(*id, &address).await?
            }
            Action::RemoveMember { id } => {
                let id = *id;
                self.client
                    .call(|ch| async move {
                        ClusterServiceClient::new(ch)
                            .remove_member(pb::RemoveMemberRequest { id })
                            .await
                    })
                    .await?;
            }
            Action::SetDeletionCost { .. }
            | Action::ScalePool { .. }
            | Action::ScaleControlPlane { .. } => return Ok(false),
        }
        Ok(true)
    }

    async fn add(&self, id: u64, address: &str) -> Result<(), Status> {
        let address = address.to_string();
        self.client
            .call(|ch| {
                let address = address.clone();
                async move {
                    ClusterServiceClient::new(ch)
                        .add_member(pb::AddMemberRequest { id, address })
                        .await
                }
            })
            .await?;
        Ok(())
    }
}
