//! The etcd metadata store (`--metadata etcd://HOST:PORT[,…]`): TLS with a
//! client certificate, writes in transactions that fit etcd's default
//! limit of 128 operations, reads paged at one revision (a large prefix
//! would pass gRPC's message limit in one answer), and a prefix watch.

//!
//! The store itself is built with the `etcd` feature (its client's build
//! needs protoc); the configuration is always there, so a binary without
//! it says so clearly.

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "etcd")]
pub use client::EtcdStore;

/// etcd's default `--max-txn-ops`.
pub const MAX_OPS_PER_TXN: usize = 128;
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/fjord/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Keys live under `prefix/`.
    pub prefix: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Per request.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdConfigError {
    #[error("--metadata must be embedded or etcd://HOST:PORT[,HOST:PORT...]")]
    Url,
    #[error("etcd endpoint {0:?} is not HOST:PORT")]
    Endpoint(String),
    #[error("the metadata prefix starts with '/', does not end with one and has only letters, digits, '-', '_', '.' and '/'")]
    Prefix,
}

impl EtcdConfig {
    /// `etcd://h1:2379,h2:2379` → endpoints; `None` for `embedded`.
    pub fn parse_url(url: &str) -> Result<Option<Vec<String>>, EtcdConfigError> {
        if url == "embedded" {
            return Ok(None);
        }
        let rest = url.strip_prefix("etcd://").ok_or(EtcdConfigError::Url)?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::to_string)
            .collect();
        for e in &endpoints {
            fjord_common::validate::address(e).map_err(|_| EtcdConfigError::Endpoint(e.clone()))?;
        }
        Ok(Some(endpoints))
    }

    pub fn validate(&self) -> Result<(), EtcdConfigError> {
        if self.endpoints.is_empty() {
            return Err(EtcdConfigError::Url);
        }
        for e in &self.endpoints {
            fjord_common::validate::address(e).map_err(|_| EtcdConfigError::Endpoint(e.clone()))?;
        }
        let p = &self.prefix;
        let ok = p.len() > 1
            && p.starts_with('/')
            && !p.ends_with('/')
            && !p.contains("//")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !ok {
            return Err(EtcdConfigError::Prefix);
        }
        Ok(())
    }
}

#[cfg(feature = "etcd")]
mod client {
    use std::path::PathBuf;
    use std::time::Duration;

    use etcd_client::{
        Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, Txn,
        TxnOp, WatchOptions,
    };
    use futures::future::BoxFuture;
    use futures::{FutureExt, StreamExt};

    use super::super::store::{
        MetadataStore, StoreContents, StoreError, StoreEvent, StoreOp, WatchItem, WatchStream,
    };
    use super::{EtcdConfig, MAX_OPS_PER_TXN};

    /// Keys per page of a full read.
    const READ_PAGE: i64 = 1_000;

    pub struct EtcdStore {
        config: EtcdConfig,
        client: Client,
    }

    fn unreachable(e: etcd_client::Error) -> StoreError {
        match e {
            etcd_client::Error::GRpcStatus(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::PermissionDenied
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::OutOfRange
                ) =>
            {
                StoreError::Refused(s.message().to_string())
            }
            e => StoreError::Unreachable(e.to_string()),
        }
    }

    impl EtcdStore {
        /// Builds the client; connections are made on first use, so the
        /// control plane starts (and schedules meetings) while etcd is away.
        pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
            config
                .validate()
                .map_err(|e| StoreError::Config(e.to_string()))?;
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| StoreError::Config(format!("{}: {e}", p.display())))
            };
            let tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&config.ca)?))
                .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
            let options = ConnectOptions::new()
                .with_tls(tls)
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(config.timeout)
                .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
                .with_keep_alive_while_idle(true);
            let client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(unreachable)?;
            Ok(EtcdStore { config, client })
        }

        fn full(&self, path: &str) -> String {
            format!("{}/{path}", self.config.prefix)
        }

        /// The prefix with its trailing slash (what every key starts with).
        fn dir(&self) -> String {
            format!("{}/", self.config.prefix)
        }

        fn strip<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
            std::str::from_utf8(key)
                .ok()?
                .strip_prefix(self.config.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    impl MetadataStore for EtcdStore {
        fn kind(&self) -> &'static str {
            "etcd"
        }

        fn describe(&self) -> String {
            format!(
                "etcd://{} (prefix {})",
                self.config.endpoints.join(","),
                self.config.prefix
            )
        }

        fn write<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<u64, StoreError>> {
            async move {
                let mut revision = 0;
                for chunk in ops.chunks(MAX_OPS_PER_TXN) {
                    let txn_ops: Vec<TxnOp> = chunk
                        .iter()
                        .map(|op| match op {
                            StoreOp::Put { path, value } => {
                                TxnOp::put(self.full(path), value.clone(), None)
                            }
                            StoreOp::Delete { path } => TxnOp::delete(self.full(path), None),
                        })
                        .collect();
                    let mut client = self.client.clone();
                    let resp = client
                        .txn(Txn::new().and_then(txn_ops))
                        .await
                        .map_err(unreachable)?;
                    if let Some(h) = resp.header() {
                        revision = revision.max(h.revision().max(0) as u64);
                    }
                }
                Ok(revision)
            }
            .boxed()
        }

        fn read_all(&self) -> BoxFuture<'_, Result<StoreContents, StoreError>> {
            async move {
                let mut client = self.client.clone();
                let dir = self.dir();
                // The end of the prefix range: the prefix with its last byte + 1
                // ('/' + 1 = '0').
                let end = format!("{}0", self.config.prefix);
                let mut contents = StoreContents::default();
                let mut from = dir.clone().into_bytes();
                loop {
                    let mut options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(READ_PAGE);
                    if contents.revision > 0 {
                        options = options.with_revision(contents.revision as i64);
                    }
                    let resp = client
                        .get(from.clone(), Some(options))
                        .await
                        .map_err(unreachable)?;
                    if contents.revision == 0 {
                        contents.revision = resp.header().map_or(0, |h| h.revision().max(0) as u64);
                    }
                    let kvs = resp.kvs();
                    for kv in kvs {
                        if let Some(path) = self.strip(kv.key()) {
                            contents
                                .values
                                .insert(path.to_string(), kv.value().to_vec());
                        }
                    }
                    match (resp.more(), kvs.last()) {
                        (true, Some(last)) => {
                            from = last.key().to_vec();
                            from.push(0);
                        }
                        _ => return Ok(contents),
                    }
                }
            }
            .boxed()
        }

        fn watch(&self, after_revision: u64) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
            async move {
                let mut client = self.client.clone();
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(after_revision as i64 + 1)
                    .with_progress_notify();
                let stream = client
                    .watch(self.dir(), Some(options))
                    .await
                    .map_err(unreachable)?;
                let prefix = self.config.prefix.clone();
                let items = stream.filter_map(move |r| {
                    let prefix = prefix.clone();
                    async move {
                        let resp = match r {
                            Ok(resp) => resp,
                            Err(e) => return Some(Err(unreachable(e))),
                        };
                        if resp.compact_revision() > 0 {
                            return Some(Ok(WatchItem::Compacted {
                                compact_revision: resp.compact_revision() as u64,
                            }));
                        }
                        if resp.canceled() {
                            return Some(Err(StoreError::Unreachable(format!(
                                "watch cancelled: {}",
                                resp.cancel_reason()
                            ))));
                        }
                        let revision = resp.header().map_or(0, |h| h.revision().max(0) as u64);
                        let events: Vec<StoreEvent> = resp
                            .events()
                            .iter()
                            .filter_map(|e| {
                                let kv = e.kv()?;
                                let path = std::str::from_utf8(kv.key())
                                    .ok()?
                                    .strip_prefix(prefix.as_str())?
                                    .strip_prefix('/')?
                                    .to_string();
                                Some(StoreEvent {
                                    path,
                                    value: match e.event_type() {
                                        EventType::Put => Some(kv.value().to_vec()),
                                        EventType::Delete => None,
                                    },
                                    revision: kv.mod_revision().max(0) as u64,
                                })
                            })
                            .collect();
                        if revision == 0 && events.is_empty() {
                            return None;
                        }
                        Some(Ok(WatchItem::Events { revision, events }))
                    }
                });
                Ok(items.boxed())
            }
            .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_and_prefixes_are_checked() {
        assert_eq!(EtcdConfig::parse_url("embedded"), Ok(None));
        assert_eq!(
            EtcdConfig::parse_url("etcd://127.0.0.1:2379,127.0.0.2:2379"),
            Ok(Some(vec!["127.0.0.1:2379".into(), "127.0.0.2:2379".into()]))
        );
        assert_eq!(
            EtcdConfig::parse_url("http://127.0.0.1:2379"),
            Err(EtcdConfigError::Url)
        );
        assert!(matches!(
            EtcdConfig::parse_url("etcd://127.0.0.1"),
            Err(EtcdConfigError::Endpoint(_))
        ));
        let mut c = EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            prefix: DEFAULT_PREFIX.into(),
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "c.key".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(c.validate(), Ok(()));
        for bad in ["", "/", "fjord", "/fjord/", "/fj ord", "/a//b"] {
            c.prefix = bad.into();
            assert_eq!(c.validate(), Err(EtcdConfigError::Prefix), "{bad:?}");
        }
    }
}
