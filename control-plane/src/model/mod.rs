//! The data model that placement and the state machine share: media nodes,
//! their reservations, and the node table placement scans.
//!
//! `placement` imports only this module; `state` owns the values and keeps
//! them in step with the log. Neither depends on the other's internals.

mod node;
mod node_table;
mod profile;
mod reservations;

pub use node::{Node, NodeState, Reservation};
pub use node_table::{NodeMut, NodeRow, NodeTable, RegionMask};
pub use profile::{SLOTS, SLOT_MS};
pub use reservations::Reservations;
