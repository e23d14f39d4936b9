//! Keyed token buckets: shared with media nodes, kept in `fjord-common`.

pub use fjord_common::ratelimit::*;
