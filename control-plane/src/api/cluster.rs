use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::cluster_service_server::ClusterService;

use super::authz::{authorize, Rpc};
use super::{convert, finish, validate, ApiError};
use crate::raft::Replica;

pub struct ClusterApi {
    replica: Arc<Replica>,
}

impl ClusterApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        ClusterApi { replica }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    /// Answered by the replica that receives it: its own view of the cluster.
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let r =
            authorize(&req, Rpc::ClusterStatus).map(|_| convert::status(&self.replica.status()));
        finish("status", r).map(Response::new)
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let result = async {
            authorize(&req, Rpc::AddMember)?;
            let r = req.into_inner();
            validate::id("id", r.id)?;
            validate::address("address", &r.address)?;
            let members = self.replica.add_member(r.id, r.address).await?;
            Ok::<_, ApiError>(pb::AddMemberResponse {
                members: convert::members(&members),
            })
        }
        .await;
        finish("add_member", result).map(Response::new)
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let result = async {
            authorize(&req, Rpc::RemoveMember)?;
            let r = req.into_inner();
            validate::id("id", r.id)?;
            let members = self.replica.remove_member(r.id).await?;
            Ok::<_, ApiError>(pb::RemoveMemberResponse {
                members: convert::members(&members),
            })
        }
        .await;
        finish("remove_member", result).map(Response::new)
    }
}
