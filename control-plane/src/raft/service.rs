//! The receiving side of replica-to-replica traffic, served only on the
//! peer port (mutual TLS): every call must come from a replica certificate
//! whose id is a member or learner of this cluster. A replica that has no
//! membership yet (started with `--join`, waiting to be added) accepts any
//! replica of the cluster CA, since it cannot know its cluster before the
//! leader's first append.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1::raft_service_server::RaftService;
use fjord_proto::v1::RaftPayload;

use super::replica::{Operation, Replica};
use crate::api::authz::{authorize, Rpc};

pub struct RaftGrpc {
    replica: Arc<Replica>,
}

impl RaftGrpc {
    pub fn new(replica: Arc<Replica>) -> Self {
        RaftGrpc { replica }
    }

    fn authorize<T>(&self, req: &Request<T>, rpc: Rpc) -> Result<(), Status> {
        let checked =
            authorize(req, rpc).and_then(|caller| caller.check_member(&self.replica.member_ids()));
        crate::api::finish(rpc.name(), checked)
    }
}

fn decode<T: serde::de::DeserializeOwned>(p: &RaftPayload) -> Result<T, Status> {
    super::codec::decode(&p.data).map_err(|e| {
        metrics::counter!("fjord_malformed_messages_total", "source" => "raft").increment(1);
        Status::invalid_argument(format!("malformed raft payload: {e}"))
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    super::codec::encode(v)
        .map(|data| {
            Response::new(RaftPayload {
                data,
                chunk: Vec::new(),
            })
        })
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.authorize(&req, Rpc::RaftAppendEntries)?;
        let rpc = decode(req.get_ref())?;
        let resp = self.replica.raft.append_entries(rpc).await;
        if matches!(&resp, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
        {
            self.replica.leader_contact.touch();
        }
        encode(&resp)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.authorize(&req, Rpc::RaftVote)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.replica.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.authorize(&req, Rpc::RaftInstallSnapshot)?;
        let mut rpc: openraft::raft::InstallSnapshotRequest<super::TypeConfig> =
            decode(req.get_ref())?;
        rpc.data = req.into_inner().chunk;
        encode(&self.replica.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.authorize(&req, Rpc::RaftForward)?;
        let op: Operation = decode(req.get_ref())?;
        // Run here or answer NotLeader: never forward again, so a stale
        // leader hint cannot bounce a request around the cluster.
        encode(&self.replica.execute_local(&op).await)
    }
}
