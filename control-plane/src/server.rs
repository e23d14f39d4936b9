//! One control-plane replica: configuration, start-up and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use fjord_proto::v1::account_service_server::AccountServiceServer;
use fjord_proto::v1::billing_service_server::BillingServiceServer;
use fjord_proto::v1::cluster_service_server::ClusterServiceServer;
use fjord_proto::v1::institution_service_server::InstitutionServiceServer;
use fjord_proto::v1::licence_service_server::LicenceServiceServer;
use fjord_proto::v1::meeting_service_server::MeetingServiceServer;
use fjord_proto::v1::metadata_service_server::MetadataServiceServer;
use fjord_proto::v1::node_service_server::NodeServiceServer;
use fjord_proto::v1::raft_service_server::RaftServiceServer;
use fjord_proto::v1::sla_service_server::SlaServiceServer;

use fjord_common::grpc::{tls_incoming, HandshakeLimits};
use fjord_common::{ClientAuth, Identity, TlsFiles};

use crate::api::{
    AccountApi, BillingApi, ClusterApi, InstitutionApi, LicenceApi, MeetingApi, MetadataApi,
    NodeApi, SignInLimiter, SigningKeys, SlaApi,
};
use crate::join_guard::JoinLimits;
use crate::placement::Strategy;
use crate::raft::{open_stores, Network, NodeId, RaftGrpc, Replica, ReplicaTuning};
use crate::state::{Command, ExpireLeases, NodeCommand, NodeState};

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: NodeId,
    /// The public port: clients, operators, media nodes (TLS, client
    /// certificates optional and verified).
    pub listen: SocketAddr,
    /// The peer port: Raft and forwarding between replicas (mutual TLS,
    /// replica certificates only).
    pub peer_listen: SocketAddr,
    /// Address other replicas use to reach this one; defaults to `listen`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// The initial voters and their peer-port addresses. Empty with `join`:
    /// wait to be added.
    pub peers: BTreeMap<NodeId, String>,
    /// CA, and this replica's certificate (`spiffe://fjord/replica/ID`).
    pub tls: TlsFiles,
    /// The key-encryption key file (the same on every replica; never in
    /// the log): meeting secrets and the join-signing key derive from it.
    pub kek_file: PathBuf,
    /// Bounds on TLS handshakes in progress, per port.
    pub handshake: HandshakeLimits,
    /// Start without initialising a cluster; `cluster add-member` adds it.
    pub join: bool,
    pub raft_heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot, so a replica that lags by less
    /// catches up from the log instead of a whole snapshot.
    pub snapshot_keep_entries: u64,
    /// How often media nodes are told to heartbeat.
    pub node_heartbeat_interval_ms: u64,
    /// A node silent this long is declared down and its meetings re-placed.
    pub node_lease_ms: u64,
    pub placement: Strategy,
    /// How long a request waits through an election before UNAVAILABLE.
    pub request_timeout_ms: u64,
    /// Rate limits on meeting joins (floods, passcode guessing).
    pub join_limits: JoinLimits,
    /// How often the leader looks for host accounts to disable for
    /// inactivity, and for ledger rows past the audit window.
    pub account_sweep_interval_ms: u64,
    /// Raw usage-ledger rows are kept this many days (once billed); daily
    /// totals stay.
    pub usage_audit_window_days: u32,
    /// How often the leader evaluates SLOs (burn rates, alerts,
    /// maintenance starts and ends).
    pub sla_evaluate_interval_ms: u64,
    /// How often the leader probes every ready node with a join.
    pub sla_probe_interval_ms: u64,
    /// How often the leader looks for notifications to deliver.
    pub sla_notify_interval_ms: u64,
    /// An extra CA (PEM) webhook receivers' certificates may chain to,
    /// besides the system's roots.
    pub webhook_ca: Option<PathBuf>,
    /// How probe joins reach nodes (the binary supplies the media client);
    /// without one, no probes run.
    pub prober: Option<ProberHandle>,
    /// Serve the SLA dashboard (HTTPS, the replica's certificate) here.
    pub dashboard_listen: Option<SocketAddr>,
    /// The dashboard's address as browsers reach it, for links (default:
    /// `https://` and the listen address).
    pub dashboard_url: Option<String>,
    /// Where the cloud tier's metadata goes.
    pub metadata: MetadataBackend,
    /// How often the leader drains the metadata outbox.
    pub metadata_sync_interval_ms: u64,
    /// How often the leader compares the whole store with the state.
    pub metadata_reconcile_interval_ms: u64,
}

/// The metadata store a replica writes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetadataBackend {
    /// The replicated state is the store (nothing to install).
    #[default]
    Embedded,
    Etcd(crate::metadata::etcd::EtcdConfig),
}

/// The probe client, shareable and printable in a config.
#[derive(Clone)]
pub struct ProberHandle(pub Arc<dyn crate::drivers::sla::Prober>);

impl std::fmt::Debug for ProberHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prober")
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 7201)),
            advertise: None,
            data_dir: PathBuf::from("fjord-data"),
            peers: BTreeMap::new(),
            tls: TlsFiles::with_cert("ca.pem", "replica.pem", "replica.key"),
            kek_file: PathBuf::from("kek.key"),
            handshake: HandshakeLimits::default(),
            join: false,
            raft_heartbeat_interval_ms: 100,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_every_entries: 5000,
            snapshot_keep_entries: 1000,
            node_heartbeat_interval_ms: 500,
            node_lease_ms: 1500,
            placement: Strategy::LeastLoaded,
            request_timeout_ms: 10_000,
            join_limits: JoinLimits::default(),
            account_sweep_interval_ms: 3_600_000,
            usage_audit_window_days: crate::state::DEFAULT_AUDIT_WINDOW_DAYS,
            sla_evaluate_interval_ms: 30_000,
            sla_probe_interval_ms: 30_000,
            sla_notify_interval_ms: 1_000,
            webhook_ca: None,
            prober: None,
            dashboard_listen: None,
            dashboard_url: None,
            metadata: MetadataBackend::Embedded,
            metadata_sync_interval_ms: 200,
            metadata_reconcile_interval_ms: 600_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("id must be at least 1")]
    ZeroId,
    #[error("--peers must list this replica ({0}) unless --join is given")]
    NotInPeers(NodeId),
    #[error("--peers and --join exclude each other")]
    PeersWithJoin,
    #[error("peer {id}: bad address {addr:?}")]
    BadPeer { id: NodeId, addr: String },
    #[error("timing: {0}")]
    Timing(&'static str),
    #[error("{0}")]
    JoinLimits(String),
    #[error("TLS: {0}")]
    Tls(#[from] fjord_common::TlsError),
    #[error("the certificate says {found}, but this is replica {id}: issue one with `fjord pki issue replica --id {id}`")]
    WrongIdentity { id: NodeId, found: String },
    #[error("--listen and --peer-listen must differ (the peer port serves replicas only)")]
    SamePorts,
    #[error("key-encryption key: {0}")]
    Kek(#[from] crate::access::KekError),
    #[error("{0} must be 100 ms to 1 hour")]
    SlaInterval(&'static str),
    #[error("webhook client: {0}")]
    Webhook(String),
    #[error("metadata store: {0}")]
    Metadata(String),
}

impl ReplicaConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.join && !self.peers.is_empty() {
            return Err(ConfigError::PeersWithJoin);
        }
        if !self.join && !self.peers.contains_key(&self.id) {
            return Err(ConfigError::NotInPeers(self.id));
        }
        for (id, addr) in &self.peers {
            if *id == 0 || crate::api::validate_address("peers", addr).is_err() {
                return Err(ConfigError::BadPeer {
                    id: *id,
                    addr: addr.clone(),
                });
            }
        }
        if self.raft_heartbeat_interval_ms == 0
            || self.raft_heartbeat_interval_ms * 2 > self.election_timeout_min_ms
        {
            return Err(ConfigError::Timing(
                "raft heartbeat interval must be non-zero and at most half the election timeout",
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(ConfigError::Timing(
                "election timeout min must be below max",
            ));
        }
        if self.node_heartbeat_interval_ms == 0
            || self.node_lease_ms < 3 * self.node_heartbeat_interval_ms
        {
            return Err(ConfigError::Timing(
                "node lease must be at least three node heartbeat intervals",
            ));
        }
        if self.usage_audit_window_days == 0
            || self.usage_audit_window_days > crate::state::MAX_AUDIT_WINDOW_DAYS
        {
            return Err(ConfigError::Timing(
                "the usage audit window must be 1 to 3660 days",
            ));
        }
        if self.account_sweep_interval_ms < 1000 {
            return Err(ConfigError::Timing(
                "account sweep interval must be at least 1000 ms",
            ));
        }
        if self.snapshot_every_entries < 10 {
            return Err(ConfigError::Timing(
                "snapshot_every_entries must be at least 10",
            ));
        }
        self.join_limits
            .validate()
            .map_err(ConfigError::JoinLimits)?;
        if self.listen == self.peer_listen && self.listen.port() != 0 {
            return Err(ConfigError::SamePorts);
        }
        self.tls.validate()?;
        crate::access::Kek::load(&self.kek_file)?;
        match self.tls.identity()? {
            Some(Identity::Replica { id }) if id == self.id => {}
            found => {
                return Err(ConfigError::WrongIdentity {
                    id: self.id,
                    found: found.map_or("no certificate".into(), |i| i.to_string()),
                })
            }
        }
        for (what, ms) in [
            ("sla_evaluate_interval_ms", self.sla_evaluate_interval_ms),
            ("sla_probe_interval_ms", self.sla_probe_interval_ms),
            ("sla_notify_interval_ms", self.sla_notify_interval_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return Err(ConfigError::SlaInterval(what));
            }
        }
        if !(10..=60_000).contains(&self.metadata_sync_interval_ms) {
            return Err(ConfigError::Timing(
                "the metadata sync interval must be 10 ms to 1 minute",
            ));
        }
        if !(1_000..=86_400_000).contains(&self.metadata_reconcile_interval_ms) {
            return Err(ConfigError::Timing(
                "the metadata reconcile interval must be 1 s to 1 day",
            ));
        }
        if let MetadataBackend::Etcd(etcd) = &self.metadata {
            etcd.validate()
                .map_err(|e| ConfigError::Metadata(e.to_string()))?;
            if !cfg!(feature = "etcd") {
                return Err(ConfigError::Metadata(
                    "this binary was built without etcd support (cargo feature `etcd`)".into(),
                ));
            }
        }
        if let Some(ca) = &self.webhook_ca {
            fjord_common::tls::read_roots(ca)?;
        }
        if self.request_timeout_ms < self.election_timeout_max_ms {
            return Err(ConfigError::Timing(
                "request timeout must outlast an election",
            ));
        }
        Ok(())
    }

    fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "fjord".into(),
            heartbeat_interval: self.raft_heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Snapshot chunks of several MiB over TLS on a busy machine; the
            // last chunk's answer waits until the receiver has decoded and
            // stored the whole snapshot (seconds for tens of MiB).
            install_snapshot_timeout: 30_000,
            snapshot_max_chunk_size: crate::raft::SNAPSHOT_CHUNK_BYTES as u64,
            // Entries per AppendEntries: each carries up to
            // MAX_PROPOSAL_WRITES writes of well under 1 KiB, so a batch
            // stays a few MiB, under the peer message limit and well inside
            // openraft's append timeout (one heartbeat interval).
            max_payload_entries: 16,
            // Elections are the watchdog's (raft/watchdog.rs): openraft's
            // timer stood whenever a loaded machine delayed heartbeats.
            enable_elect: false,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            // Keep enough log after a snapshot that a briefly lagging replica
            // catches up from the log instead of a full snapshot.
            max_in_snapshot_log_to_keep: self.snapshot_keep_entries,
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] crate::raft::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

/// A running replica. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct ReplicaHandle {
    pub replica: Arc<Replica>,
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    peer_server: JoinHandle<()>,
    lease_checker: JoinHandle<()>,
    account_sweeper: JoinHandle<()>,
    ledger_sweeper: JoinHandle<()>,
}

impl ReplicaHandle {
    /// Stops serving and shuts Raft down.
    pub async fn shutdown(mut self) {
        self.lease_checker.abort();
        self.account_sweeper.abort();
        self.ledger_sweeper.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.replica.raft.shutdown().await;
        // Open streams (node heartbeats) would hold a graceful stop forever.
        self.server.abort();
        self.peer_server.abort();
    }

    /// Waits until the server task ends (it only ends on shutdown or error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Validates the config, binds both ports, opens the store and starts the replica.
pub async fn start(config: ReplicaConfig) -> Result<ReplicaHandle, StartError> {
    config.validate()?;
    let public = bind(config.listen).await?;
    let peer = bind(config.peer_listen).await?;
    start_with_listeners(config, public, peer).await
}

/// As [`start`], on listeners the caller already bound (tests bind port 0).
pub async fn start_with_listeners(
    config: ReplicaConfig,
    listener: TcpListener,
    peer_listener: TcpListener,
) -> Result<ReplicaHandle, StartError> {
    config.validate()?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let peer_addr = peer_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.peer_listen,
            source,
        })?;
    let (public_tls, _) = fjord_common::tls::server_config(&config.tls, ClientAuth::Optional)
        .map_err(ConfigError::Tls)?;
    let (peer_tls, _) = fjord_common::tls::server_config(&config.tls, ClientAuth::Required)
        .map_err(ConfigError::Tls)?;
    let peer_client_tls =
        fjord_common::tls::client_config(&config.tls).map_err(ConfigError::Tls)?;
    let raft_config = Arc::new(
        config
            .raft_config()
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
    );
    let (log_store, state_machine) = open_stores(&config.data_dir)?;
    let applied = state_machine.applied.clone();
    let network = Network {
        tls: peer_client_tls.clone(),
    };
    let raft = openraft::Raft::new(config.id, raft_config, network, log_store, state_machine)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let replica = Arc::new(Replica::new(
        config.id,
        raft,
        applied,
        ReplicaTuning {
            strategy: config.placement,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            attempt_timeout: Duration::from_millis((config.election_timeout_max_ms * 3).max(1000)),
        },
        peer_client_tls,
        config.join_limits,
    ));

    let initialized = replica
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if !initialized && !config.join {
        // Every initial voter initialises with the same membership; openraft
        // accepts identical initialisations, and this way any one of them may
        // be the first to come up. Done before the peer port serves, so no
        // vote request can arrive first (openraft refuses to initialise a
        // replica that has voted, and says so at ERROR).
        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        if let Err(e) = replica.raft.initialize(members).await {
            tracing::warn!(error = %e, "initialise skipped");
        }
    }
    let heartbeat = Duration::from_millis(config.node_heartbeat_interval_ms);
    let lease = Duration::from_millis(config.node_lease_ms);
    let kek = Arc::new(crate::access::Kek::load(&config.kek_file).map_err(ConfigError::Kek)?);
    let keys = Arc::new(SigningKeys::new(replica.clone(), kek.clone()));
    let webhooks = crate::drivers::webhook::WebhookClient::new(config.webhook_ca.as_deref())
        .map_err(|e| ConfigError::Webhook(e.to_string()))?;
    let sli_sink = crate::drivers::sla::SliSink::default();
    let metadata_store = metadata_store(&config.metadata, &replica).await?;
    let metadata_status = crate::drivers::metadata::SyncStatusHandle::default();
    let dashboard_url = match config.dashboard_listen {
        Some(addr) => {
            let listener = bind(addr).await?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            let (tls, _) = fjord_common::tls::server_config(&config.tls, ClientAuth::Optional)
                .map_err(ConfigError::Tls)?;
            crate::api::http::dashboard::serve(
                crate::api::http::dashboard::Dashboard::new(
                    replica.clone(),
                    kek.dashboard_link_key(),
                ),
                listener,
                tls,
            );
            tracing::info!(addr = %bound, "SLA dashboard up");
            Some(
                config
                    .dashboard_url
                    .clone()
                    .unwrap_or_else(|| format!("https://{bound}")),
            )
        }
        // A replica without its own listener still makes links to the
        // cluster's dashboard when told where it is.
        None => config.dashboard_url.clone(),
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let peer_router = limits(tonic::transport::Server::builder(), &config).add_service(
        RaftServiceServer::new(RaftGrpc::new(replica.clone()))
            .max_decoding_message_size(crate::raft::PEER_MESSAGE_LIMIT)
            .max_encoding_message_size(crate::raft::PEER_MESSAGE_LIMIT),
    );
    let peer_incoming = tls_incoming(peer_listener, peer_tls, "peer", config.handshake);
    let peer_server = tokio::spawn(async move {
        // Stopped by abort on shutdown, after Raft itself.
        if let Err(e) = peer_router.serve_with_incoming(peer_incoming).await {
            tracing::error!(error = %e, "peer gRPC server stopped");
        }
    });
    // gRPC health, for load balancers and probes (no certificate needed):
    // "" is SERVING while this replica knows a leader.
    let (health, health_service) = tonic_health::server::health_reporter();
    // The public port never serves the peer service.
    let hints = replica.clone();
    let sign_ins = Arc::new(SignInLimiter::default());
    let router = limits(tonic::transport::Server::builder(), &config)
        .layer(tower::util::MapResponseLayer::new(
            move |mut resp: tonic::codegen::http::Response<tonic::body::Body>| {
                leader_hint(&hints, resp.headers_mut());
                resp
            },
        ))
        .add_service(health_service)
        .add_service(InstitutionServiceServer::new(InstitutionApi::new(
            replica.clone(),
        )))
        .add_service(LicenceServiceServer::new(LicenceApi::new(replica.clone())))
        .add_service(BillingServiceServer::new(BillingApi::new(replica.clone())))
        .add_service(AccountServiceServer::new(AccountApi::new(
            replica.clone(),
            kek.clone(),
            sign_ins.clone(),
        )))
        .add_service(NodeServiceServer::new(NodeApi::new(
            replica.clone(),
            keys.clone(),
            heartbeat,
            lease,
        )))
        .add_service(SlaServiceServer::new(SlaApi::new(
            replica.clone(),
            kek.clone(),
            dashboard_url.clone(),
        )))
        .add_service(MeetingServiceServer::new(MeetingApi::new(
            replica.clone(),
            keys.clone(),
            kek.clone(),
            // Normal age of a committed heartbeat is up to a commit interval
            // (a third of the lease) plus one beat; more means overdue.
            (lease / 3 + heartbeat).as_millis() as u64 + 250,
            sign_ins,
            sli_sink.clone(),
        )))
        .add_service(MetadataServiceServer::new(MetadataApi::new(
            replica.clone(),
            metadata_status.clone(),
        )))
        .add_service(ClusterServiceServer::new(ClusterApi::new(replica.clone())));
    let incoming = tls_incoming(listener, public_tls, "public", config.handshake);
    let server = tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await
        {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });

    tracing::info!(replica = config.id, addr = %local_addr, peer_addr = %peer_addr, data_dir = %config.data_dir.display(), "control-plane replica started");

    let lease_checker = tokio::spawn(lease_loop(replica.clone(), lease));
    let account_sweeper = tokio::spawn(crate::drivers::account_sweep_loop(
        replica.clone(),
        Duration::from_millis(config.account_sweep_interval_ms),
    ));
    let ledger_sweeper = tokio::spawn(crate::drivers::ledger_sweep_loop(
        replica.clone(),
        Duration::from_millis(config.account_sweep_interval_ms),
        config.usage_audit_window_days,
    ));
    tokio::spawn(crate::raft::watchdog::run(
        replica.clone(),
        crate::raft::watchdog::WatchdogTiming {
            heartbeat: Duration::from_millis(config.raft_heartbeat_interval_ms),
            election_min: Duration::from_millis(config.election_timeout_min_ms),
            lease: Duration::from_millis(config.election_timeout_max_ms),
            hung_leader: Duration::from_millis(config.raft_heartbeat_interval_ms * 30),
        },
    ));
    tokio::spawn(health_loop(replica.clone(), health));
    tokio::spawn(crate::drivers::sla::evaluate_loop(
        replica.clone(),
        Duration::from_millis(config.sla_evaluate_interval_ms),
    ));
    tokio::spawn(crate::drivers::sla::notify_loop(
        replica.clone(),
        kek.clone(),
        webhooks,
        Duration::from_millis(config.sla_notify_interval_ms),
    ));
    tokio::spawn(crate::drivers::sla::sli_flush_loop(
        replica.clone(),
        sli_sink.clone(),
        Duration::from_secs(5),
    ));
    tokio::spawn(crate::drivers::metadata::sync_loop(
        replica.clone(),
        metadata_store,
        metadata_status,
        crate::drivers::metadata::MetadataTiming {
            sync: Duration::from_millis(config.metadata_sync_interval_ms),
            reconcile: Duration::from_millis(config.metadata_reconcile_interval_ms),
        },
    ));
    if let Some(prober) = &config.prober {
        tokio::spawn(crate::drivers::sla::probe_loop(
            replica.clone(),
            keys.clone(),
            prober.0.clone(),
            Duration::from_millis(config.sla_probe_interval_ms),
        ));
    }
    Ok(ReplicaHandle {
        replica,
        local_addr,
        peer_addr,
        stop: Some(stop_tx),
        server,
        peer_server,
        lease_checker,
        account_sweeper,
        ledger_sweeper,
    })
}

/// The store the metadata writer drains into.
async fn metadata_store(
    backend: &MetadataBackend,
    replica: &Arc<Replica>,
) -> Result<Arc<dyn crate::metadata::MetadataStore>, ConfigError> {
    match backend {
        MetadataBackend::Embedded => Ok(Arc::new(crate::metadata::embedded::EmbeddedStore::new(
            replica.clone(),
        ))),
        #[cfg(feature = "etcd")]
        MetadataBackend::Etcd(c) => crate::metadata::etcd::EtcdStore::connect(c.clone())
            .await
            .map(|s| Arc::new(s) as Arc<dyn crate::metadata::MetadataStore>)
            .map_err(|e| ConfigError::Metadata(e.to_string())),
        #[cfg(not(feature = "etcd"))]
        MetadataBackend::Etcd(_) => Err(ConfigError::Metadata(
            "this binary was built without etcd support (cargo feature `etcd`)".into(),
        )),
    }
}

/// Every answer on the public port says which replica gave it and which one
/// leads (`fjord-replica`, `fjord-leader`; 0 when none is known), so
/// clients send their next calls to the leader instead of paying a
/// forwarding hop.
fn leader_hint(replica: &Replica, headers: &mut tonic::codegen::http::HeaderMap) {
    let leader = replica.raft.metrics().borrow().current_leader.unwrap_or(0);
    headers.insert(fjord_common::client::REPLICA_HEADER, replica.id.into());
    headers.insert(fjord_common::client::LEADER_HEADER, leader.into());
}

/// Explicit limits on every gRPC server: concurrent streams per connection,
/// a deadline on every request, keep-alives that find dead clients. Message
/// sizes stay at tonic's 4 MiB decode limit.
fn limits(b: tonic::transport::Server, config: &ReplicaConfig) -> tonic::transport::Server {
    b.tcp_nodelay(true)
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .timeout(Duration::from_millis(config.request_timeout_ms + 5_000))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// Streams one client connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Keeps gRPC health in step with Raft: SERVING while this replica is a
/// member that knows its leader. Ends when Raft shuts down.
async fn health_loop(replica: Arc<Replica>, health: tonic_health::server::HealthReporter) {
    let mut m = replica.raft.metrics();
    loop {
        let status = if replica.is_ready() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        if m.changed().await.is_err() {
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            return;
        }
    }
}

/// On the leader: declare down the nodes whose lease expired. A fresh leader
/// waits one lease first, so nodes that were beating to the old leader's
/// cluster get a fair chance to show up in the log.
async fn lease_loop(replica: Arc<Replica>, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this replica's current leadership began to count: (term, since).
    let mut leader_since: Option<(u64, tokio::time::Instant)> = None;
    let mut last_tick = tokio::time::Instant::now();
    let lease_ms = lease.as_millis() as u64;
    loop {
        tick.tick().await;
        // A replica that did not run for a while (paused, starved of CPU)
        // committed no heartbeat meanwhile, so the nodes' silence is its
        // own: like a new leader, it waits a whole lease of running again
        // before it declares anyone down. Otherwise a leader resumed after
        // a long pause failed every node at once.
        // A leader cut off from its quorum (partitioned, its peers paused)
        // committed no beat meanwhile either: the same.
        let cut_off = replica
            .millis_since_quorum_ack()
            .is_some_and(|ms| ms > lease_ms / 2);
        let stalled = last_tick.elapsed() > lease / 2 || cut_off;
        last_tick = tokio::time::Instant::now();
        if stalled {
            leader_since = None;
        }
        let status = replica.status();
        metrics::gauge!("fjord_raft_term").set(status.term as f64);
        metrics::gauge!("fjord_raft_last_applied_index").set(status.last_applied_index as f64);
        let leading = replica.is_leader();
        metrics::gauge!("fjord_raft_is_leader").set(if leading { 1.0 } else { 0.0 });
        if !leading {
            leader_since = None;
            continue;
        }
        // Leadership lost and won again between two ticks starts afresh.
        if leader_since.is_some_and(|(term, _)| term != status.term) {
            leader_since = None;
        }
        let (_, since) =
            *leader_since.get_or_insert_with(|| (status.term, tokio::time::Instant::now()));
        let now = crate::raft::now_ms();
        let (counts, expired) = replica.local_state(|s| {
            let mut counts = [0usize; 3];
            let mut expired = false;
            for n in s.nodes.values() {
                counts[n.state as usize] += 1;
                expired |= n.state != NodeState::Down
                    && now.saturating_sub(n.last_heartbeat_ms) >= lease_ms;
            }
            (counts, expired)
        });
        for (state, count) in [NodeState::Ready, NodeState::Draining, NodeState::Down]
            .iter()
            .zip(counts)
        {
            metrics::gauge!("fjord_media_nodes", "state" => state.as_str()).set(count as f64);
        }
        if !expired || since.elapsed() < lease {
            continue;
        }
        let span = tracing::info_span!(
            "node_failover",
            node.ids = tracing::field::Empty,
            meetings.replaced = tracing::field::Empty
        );
        let expired = replica
            .write(Command::Node(NodeCommand::ExpireLeases(ExpireLeases {
                lease_ms,
            })))
            .instrument(span.clone())
            .await;
        match expired {
            Ok(crate::state::Output::NodesDown { nodes, replaced }) => {
                span.record("node.ids", nodes.join(",").as_str());
                span.record("meetings.replaced", replaced.len());
                tracing::warn!(
                    ?nodes,
                    replaced = replaced.len(),
                    "media node lease expired; meetings re-placed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lease expiry not committed"),
        }
    }
}
