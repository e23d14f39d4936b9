//! The failover-aware control-plane client and the node heartbeat session:
//! used by ctl, dev, media nodes and tests, kept in `fjord-common` so a
//! media node needs nothing of the control plane's own crate.

pub use fjord_common::client::*;
