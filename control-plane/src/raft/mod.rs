//! openraft glue: the durable log store, the state-machine adapter, the gRPC
//! network between replicas, and the [`Replica`] handle the API calls.
//!
//! ```text
//!   api ──▶ Replica::write/read ──leader?──▶ openraft ──▶ LogStore (WAL, group fsync)
//!                 │ no                            └──▶ StateMachine ─▶ ClusterState::apply
//!                 └──▶ RaftService.Forward on the leader (gRPC)
//! ```

pub mod codec;
mod migrate;
mod network;
mod replica;
mod service;
mod store;
pub mod wal;
pub mod watchdog;

pub use network::Network;
pub use replica::{
    now_ms, ClusterError, ClusterStatus, MemberInfo, Operation, OperationOutput, Replica,
    ReplicaTuning,
};
pub use service::RaftGrpc;
pub(crate) use store::HardState;
pub use store::{open_stores, open_stores_with, Applied, LogStore, StateMachine, StoreError};
pub use wal::WalIo;

use std::io::Cursor;

use crate::state::{Proposal, Request, Response};

openraft::declare_raft_types!(
    /// Fjord's Raft types: batches of commands in, one state-machine
    /// answer per command out.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Response>,
);

openraft::declare_raft_types!(
    /// How entries looked before proposals were batched (one request per
    /// entry); read from JSON logs and snapshots written then.
    pub LegacyTypeConfig:
        D = Request,
        R = Response,
);

pub type NodeId = u64;

/// The largest message either side of the peer port accepts: bounds the
/// memory a peer can make a replica allocate. Append batches
/// (`max_payload_entries` small entries) and snapshot chunks
/// ([`SNAPSHOT_CHUNK_BYTES`] plus a small header) always fit.
pub const PEER_MESSAGE_LIMIT: usize = 16 << 20;
/// Snapshot bytes per InstallSnapshot call.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;
pub type Raft = openraft::Raft<TypeConfig>;
