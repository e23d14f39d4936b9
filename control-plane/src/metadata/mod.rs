//! The cloud tier's metadata: what may leave the operator's own machines.
//!
//! Only the records in [`records`] are ever written to the metadata store,
//! and they are built from ids, enums, numbers and dates alone: an
//! identifier is an [`Ident`] (a strict character set, checked when it is
//! made), and no record has a field that could hold free text. Names,
//! e-mail addresses, contact points, display names, IP addresses,
//! passcodes, host keys and PINs cannot reach the store because no type
//! here can carry them.
//!
//! (The store itself — embedded and etcd, the outbox and the watch — builds
//! on these records.)

pub mod records;

pub use records::{Ident, IdentError, MetadataRecord};
