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

impl RaftGrpc {
    /// A message from the leader this replica follows (or a newer one) is
    /// contact on arrival, before Raft handles it: a replica busy installing
    /// a large snapshot answers late, and must not take the leader's
    /// patience for its silence and stand against it. A deposed leader's
    /// messages carry an older vote and do not count.
    fn note_leader_contact(&self, vote: &openraft::Vote<super::NodeId>) -> bool {
        let mine = self.replica.raft.metrics().borrow().vote;
        let from_leader = vote.is_committed() && *vote >= mine;
        if from_leader {
            self.replica.leader_contact.touch();
        }
        from_leader
    }
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.authorize(&req, Rpc::RaftAppendEntries)?;
        let rpc: openraft::raft::AppendEntriesRequest<super::TypeConfig> = decode(req.get_ref())?;
        self.note_leader_contact(&rpc.vote);
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
        let from_leader = self.note_leader_contact(&rpc.vote);
        // The last chunk's answer waits until the whole snapshot is decoded
        // and stored (seconds for tens of MiB), and the leader sends this
        // replica nothing else meanwhile: the install itself is contact.
        let install = self.replica.raft.install_snapshot(rpc);
        tokio::pin!(install);
        let mut still_installing = tokio::time::interval(std::time::Duration::from_millis(50));
        let resp = loop {
            tokio::select! {
                resp = &mut install => break resp,
                _ = still_installing.tick() => {
                    if from_leader {
                        self.replica.leader_contact.touch();
                    }
                }
            }
        };
        if resp.is_ok() {
            self.replica.leader_contact.touch();
        }
        encode(&resp)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.authorize(&req, Rpc::RaftForward)?;
        let op: Operation = decode(req.get_ref())?;
        // Run here or answer NotLeader: never forward again, so a stale
        // leader hint cannot bounce a request around the cluster.
        encode(&self.replica.execute_local(&op).await)
    }
}
