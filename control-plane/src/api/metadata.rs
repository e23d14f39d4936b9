//! The metadata tier's status: the replicated outbox as this replica has
//! applied it, and the writer's own view where this replica leads.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::metadata_service_server::MetadataService;

use super::authz::{authorize, Rpc};
use super::finish;
use crate::drivers::metadata::SyncStatusHandle;
use crate::raft::Replica;

pub struct MetadataApi {
    replica: Arc<Replica>,
    status: SyncStatusHandle,
}

impl MetadataApi {
    pub fn new(replica: Arc<Replica>, status: SyncStatusHandle) -> Self {
        MetadataApi { replica, status }
    }
}

#[tonic::async_trait]
impl MetadataService for MetadataApi {
    async fn get_status(
        &self,
        req: Request<pb::MetadataStatusRequest>,
    ) -> Result<Response<pb::MetadataStatus>, Status> {
        let r = authorize(&req, Rpc::MetadataStatus).map(|_| {
            let now = crate::raft::now_ms();
            let w = self.status.get();
            let (depth, oldest, revision, synced) = self.replica.local_state(|s| {
                let m = &s.metadata;
                (
                    m.outbox.len() as u64,
                    m.oldest_pending_ms(),
                    m.revision,
                    m.synced_total,
                )
            });
            pb::MetadataStatus {
                replica_id: self.replica.id,
                leader: w.active && self.replica.is_leader(),
                backend: w.backend,
                store: w.describe,
                outbox_depth: depth,
                oldest_pending_ms: oldest.unwrap_or(0),
                lag_ms: oldest.map_or(0, |t| now.saturating_sub(t)),
                revision,
                synced_total: synced,
                connected: w.connected,
                last_error: w.last_error.unwrap_or_default(),
                last_success_ms: w.last_success_ms,
                seen_revision: w.seen_revision,
                reconciles: w.reconciles,
                written: w.written,
                restored: w.restored,
                edits_applied: w.edits_applied,
                edits_refused: w.edits_refused,
            }
        });
        finish("metadata_status", r).map(Response::new)
    }
}
