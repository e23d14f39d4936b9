//! The metadata store: where the cloud tier's records live. Two
//! implementations: [`super::embedded::EmbeddedStore`] (the default: the
//! replicated state is the store, nothing to install) and
//! [`super::etcd::EtcdStore`] (`--metadata etcd://HOST:PORT[,…]`).
//!
//! Keys are paths under the store's prefix (`institutions/uio`, see
//! [`crate::state::MetaKey::path`]); values are the JSON of a
//! [`super::MetadataRecord`], the only values the writer ever builds.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// One write: a put of a record's bytes or a delete, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    Put { path: String, value: Vec<u8> },
    Delete { path: String },
}

impl StoreOp {
    pub fn path(&self) -> &str {
        match self {
            StoreOp::Put { path, .. } | StoreOp::Delete { path } => path,
        }
    }
}

/// A change seen by the watch: `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEvent {
    pub path: String,
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

/// What a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Changes up to `revision`.
    Events {
        revision: u64,
        events: Vec<StoreEvent>,
    },
    /// The revision to watch from was compacted away: read everything
    /// again and reconcile.
    Compacted { compact_revision: u64 },
}

/// Every key under the prefix and the revision they were read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreContents {
    pub values: BTreeMap<String, Vec<u8>>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store unreachable: {0}")]
    Unreachable(String),
    #[error("metadata store refused the request: {0}")]
    Refused(String),
    #[error("metadata store configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn id(&self) -> &'static str {
        match self {
            StoreError::Unreachable(_) => "unreachable",
            StoreError::Refused(_) => "refused",
            StoreError::Config(_) => "config",
        }
    }
}

pub type WatchStream = BoxStream<'static, Result<WatchItem, StoreError>>;

pub trait MetadataStore: Send + Sync + 'static {
    /// `embedded` or `etcd`.
    fn kind(&self) -> &'static str;
    /// Where it is (endpoints and prefix), for status and logs.
    fn describe(&self) -> String;
    /// Applies the writes (each idempotent); answers the store's revision
    /// after them.
    fn write<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Every key under the prefix.
    fn read_all(&self) -> BoxFuture<'_, Result<StoreContents, StoreError>>;
    /// Changes after `revision` (exclusive), in order.
    fn watch(&self, after_revision: u64) -> BoxFuture<'_, Result<WatchStream, StoreError>>;
}
