//! The cloud tier's metadata: what may leave the operator's own machines,
//! and how it gets there.
//!
//! ```text
//!   apply() marks keys ──▶ outbox (replicated) ──▶ writer (leader) ──▶ MetadataStore
//!                                                      ▲                 │ embedded | etcd
//!   SetLicence ◀── sync::judge ◀── watch / full read ──┴─────────────────┘
//! ```
//!
//! Only the records in [`records`] are ever written to the metadata store,
//! and they are built from ids, enums, numbers and dates alone: an
//! identifier is an [`Ident`] (a strict character set, checked when it is
//! made), and no record has a field that could hold free text. Names,
//! e-mail addresses, contact points, display names, IP addresses,
//! passcodes, host keys and PINs cannot reach the store because no type
//! here can carry them.
//!
//! [`sync`] is the pure half (what the store should hold, what to do about
//! what it holds); [`store`] the trait with its two implementations; the
//! loops that carry it out are in `drivers::metadata`.

pub mod embedded;
pub mod etcd;
pub mod records;
pub mod store;
pub mod sync;

pub use records::{Ident, IdentError, MetadataRecord};
pub use store::{MetadataStore, StoreContents, StoreError, StoreEvent, StoreOp, WatchItem};
