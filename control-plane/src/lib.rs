//! Fjord control plane.
//!
//! ```text
//!            gRPC (api/)                      replicas (raft/)
//!  ctl / nodes ──▶ validate ──▶ Replica ──▶ openraft ──▶ WAL (group fsync)
//!                                  │             └──▶ StateMachine
//!                                  │                    └─ state::ClusterState::apply
//!                                  │                         └─ placement::place
//!                                  └──▶ forward to leader (RaftService.Forward)
//! ```
//!
//! `state` and `placement` are pure cores (no clock, no socket, no tokio);
//! `raft`, `api` and `server` are the shells around them.

pub mod access;
pub mod api;
pub mod billing;
pub mod client;
pub mod drivers;
pub mod join_guard;
pub mod k8s;
pub mod licensing;
pub mod login;
pub mod metadata;
pub mod model;
pub mod placement;
pub mod raft;
pub mod ratelimit;
pub mod server;
pub mod sim;
pub mod sla;
pub mod state;
pub mod telemetry;
