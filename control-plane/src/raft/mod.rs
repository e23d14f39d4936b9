//! openraft glue: the durable log store, the state-machine adapter, the gRPC
//! network between replicas, and the [`Replica`] handle the API calls.
//!
//! ```text
//!   api ──▶ Replica::write/read ──leader?──▶ openraft ──▶ LogStore (redb, fsync)
//!                 │ no                            └──▶ StateMachine ─▶ ClusterState::apply
//!                 └──▶ RaftService.Forward on the leader (gRPC)
//! ```

mod network;
mod replica;
mod service;
mod store;

pub use network::Network;
pub use replica::{now_ms, ClusterError, ClusterStatus, MemberInfo, Replica, ReplicaTuning};
pub use service::RaftGrpc;
pub use store::{open_stores, LogStore, StateMachine, StoreError};

use std::io::Cursor;

use crate::state::{Request, Response};

openraft::declare_raft_types!(
    /// Fjord's Raft types: commands in, state-machine responses out.
    pub TypeConfig:
        D = Request,
        R = Response,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
