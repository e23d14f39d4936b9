//! `fjord`: one binary, several roles. Only argument parsing and start-up
//! live here; everything else is in the workspace libraries.

mod ctl;
mod dev;
mod dev_idp;
mod media;
mod operator;
mod ops;
mod otel;
mod pki;
mod probe;
mod sla;
mod tls_args;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use fjord_control_plane::metadata::etcd::EtcdConfig;
use fjord_control_plane::placement::Strategy;
use fjord_control_plane::server::{self, MetadataBackend, ReplicaConfig};

#[derive(Parser)]
#[command(
    name = "fjord",
    version,
    about = "Fjord: video-meeting infrastructure for research-and-education networks"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FJORD_LOG_FORMAT")]
    log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector, http://HOST:PORT on
    /// loopback (off by default).
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Run one control-plane replica.
    ControlPlane(ControlPlaneArgs),
    /// Operator and institution commands over gRPC.
    Ctl(ctl::CtlArgs),
    /// Run a whole cluster on this machine: 3 control-plane replicas, media nodes and sample data.
    Dev(dev::DevArgs),
    /// The development identity provider: ID tokens for hosts of the sample institutions.
    DevIdp(dev_idp::DevIdpArgs),
    /// The cluster CA and certificates for replicas, nodes, operators and institution admins.
    Pki(pki::PkiArgs),
    /// Run one media node (QUIC selective forwarding unit).
    MediaNode(media::MediaNodeArgs),
    /// Join a meeting as a participant: sends synthetic audio/video, prints what arrives.
    Join(media::JoinArgs),
    /// Schedule meetings, join many participants, report loss, latency and join times.
    Loadgen(media::LoadgenArgs),
    /// SLO tooling: Prometheus rules for the service-level objectives.
    Sla(sla::SlaArgs),
    /// The Kubernetes controller: drains media nodes on cordoned machines,
    /// sizes media pools, keeps Raft membership with the StatefulSet.
    Operator(operator::OperatorArgs),
}

#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// This replica's id (1, 2, 3, ...).
    #[arg(
        long,
        required_unless_present = "pod_index",
        conflicts_with = "pod_index"
    )]
    id: Option<u64>,
    /// A StatefulSet pod's index (0, 1, ...): this replica is id index + 1
    /// (the Helm chart passes the pod's `apps.kubernetes.io/pod-index`).
    #[arg(long)]
    pod_index: Option<u64>,
    /// Public gRPC address (TLS): operators, institution admins, media nodes, participants.
    #[arg(long, default_value = "127.0.0.1:7101")]
    listen: SocketAddr,
    /// Peer gRPC address (mutual TLS, replica certificates only): Raft and forwarding.
    #[arg(long, default_value = "127.0.0.1:7111")]
    peer_listen: SocketAddr,
    /// Address other replicas reach this one at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for the Raft log and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// Initial voters and their peer addresses: ID=HOST:PORT,... (must include this replica).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, String)>,
    /// Start without initialising; wait for `fjord ctl cluster add-member`.
    #[arg(long)]
    join: bool,
    /// Placement strategy: least-loaded or power-of-two.
    #[arg(long, default_value = "least-loaded")]
    placement: Strategy,
    /// A media node silent this long is declared down (its meetings move).
    #[arg(long, default_value_t = 1500)]
    node_lease_ms: u64,
    /// How often media nodes are asked to heartbeat.
    #[arg(long, default_value_t = 500)]
    node_heartbeat_interval_ms: u64,
    /// Raft heartbeat interval (also how long one AppendEntries may take).
    #[arg(long, default_value_t = 100)]
    raft_heartbeat_interval_ms: u64,
    /// Raft election timeout, lower bound. A follower stands after the
    /// leader lease (the upper bound) plus its own timeout without a
    /// heartbeat, or, when the leader's process is gone (its peer port
    /// refuses connections), right after the lease.
    #[arg(long, default_value_t = 200)]
    election_timeout_min_ms: u64,
    /// Raft election timeout, upper bound (also the leader lease).
    #[arg(long, default_value_t = 400)]
    election_timeout_max_ms: u64,
    /// Threads for the replica's async work: 1 runs it all on one thread,
    /// 0 starts one worker per core. A write passes through about a dozen
    /// tasks (API, proposer, Raft core, replication, state machine); on one
    /// thread each hand-off is a queue push, on a multi-thread runtime it
    /// may wake a parked worker on another core, which costs more CPU per
    /// write than the work itself on a small machine. Snapshots and the log
    /// writer have threads of their own either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    worker_threads: u16,
    /// Build a snapshot and compact the log after this many entries.
    #[arg(long, default_value_t = 5000)]
    snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot: a replica lagging by less
    /// catches up from the log rather than a whole snapshot.
    #[arg(long, default_value_t = 1000)]
    snapshot_keep_entries: u64,
    /// How often the leader looks for host accounts without a meeting for
    /// twelve months (and disables them).
    #[arg(long, default_value_t = 3_600_000)]
    account_sweep_interval_ms: u64,
    /// Raw usage-ledger sessions are kept this many days once a closed
    /// billing period has billed them (daily totals stay).
    #[arg(long, default_value_t = fjord_control_plane::state::DEFAULT_AUDIT_WINDOW_DAYS)]
    usage_audit_window_days: u32,
    /// How often the leader evaluates SLOs: burn rates, alerts, and the
    /// start and end of maintenance windows.
    #[arg(long, default_value_t = 30_000)]
    sla_evaluate_interval_ms: u64,
    /// How often the leader probes every ready media node with a join
    /// (the availability SLI).
    #[arg(long, default_value_t = 30_000)]
    sla_probe_interval_ms: u64,
    /// How often the leader delivers pending notifications (webhooks).
    #[arg(long, default_value_t = 1_000)]
    sla_notify_interval_ms: u64,
    /// An extra CA (PEM) for webhook receivers, besides the system's roots.
    #[arg(long)]
    webhook_ca: Option<PathBuf>,
    /// Serve the SLA dashboard (HTTPS, this replica's certificate) here.
    #[arg(long)]
    dashboard_listen: Option<SocketAddr>,
    /// The dashboard's address as browsers reach it, for the links `fjord
    /// ctl sla dashboard-link` makes (default: https:// and
    /// --dashboard-listen). Give it to every replica, also those that
    /// serve no dashboard themselves.
    #[arg(long)]
    dashboard_url: Option<String>,
    /// Serve Prometheus metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9101).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Where the cloud tier's metadata goes: `embedded` (the replicated
    /// state; nothing to install) or etcd://HOST:PORT[,HOST:PORT...]
    /// (TLS with a client certificate).
    #[arg(long, default_value = "embedded", value_parser = parse_metadata)]
    metadata: MetadataUrl,
    /// Key prefix in etcd.
    #[arg(long, default_value = fjord_control_plane::metadata::etcd::DEFAULT_PREFIX)]
    metadata_prefix: String,
    /// CA (PEM) etcd's server certificate chains to (default: --ca).
    #[arg(long)]
    metadata_ca: Option<PathBuf>,
    /// Client certificate for etcd (default: --cert).
    #[arg(long)]
    metadata_cert: Option<PathBuf>,
    /// Its key (default: --key).
    #[arg(long)]
    metadata_key: Option<PathBuf>,
    /// How often the leader writes changed records to the metadata store.
    #[arg(long, default_value_t = 200)]
    metadata_sync_interval_ms: u64,
    /// How often the leader compares the whole store with its state (and
    /// repairs it); also done whenever it becomes leader.
    #[arg(long, default_value_t = 600_000)]
    metadata_reconcile_interval_ms: u64,
    #[command(flatten)]
    tls: tls_args::TlsArgs,
    /// Key-encryption key file, the same on every replica (`fjord pki kek`):
    /// meeting secrets and the join-signing key derive from it.
    #[arg(long, env = "FJORD_KEK")]
    kek: PathBuf,
}

/// `--metadata`: `None` for embedded, etcd's endpoints otherwise.
#[derive(Debug, Clone)]
struct MetadataUrl(Option<Vec<String>>);

fn parse_metadata(s: &str) -> Result<MetadataUrl, String> {
    fjord_control_plane::metadata::etcd::EtcdConfig::parse_url(s)
        .map(MetadataUrl)
        .map_err(|e| e.to_string())
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=HOST:PORT, got {s:?}"))?;
    let id = id
        .parse()
        .map_err(|_| format!("bad replica id {id:?} in {s:?}"))?;
    Ok((id, addr.to_string()))
}

impl ControlPlaneArgs {
    fn config(&self) -> Result<ReplicaConfig, tls_args::TlsArgsError> {
        let tls = self.tls.files(true)?;
        let id = self
            .id
            .or(self.pod_index.map(|i| i.saturating_add(1)))
            .unwrap_or(0);
        let mut peers: BTreeMap<u64, String> = self.peers.iter().cloned().collect();
        let mut join = self.join;
        // A StatefulSet pod beyond the initial voters (the operator grew
        // it) waits to be added instead of initialising a cluster.
        if self.pod_index.is_some() && !peers.contains_key(&id) {
            join = true;
            peers.clear();
        }
        let metadata = match &self.metadata.0 {
            None => MetadataBackend::Embedded,
            Some(endpoints) => MetadataBackend::Etcd(EtcdConfig {
                endpoints: endpoints.clone(),
                prefix: self.metadata_prefix.clone(),
                ca: self.metadata_ca.clone().unwrap_or_else(|| tls.ca.clone()),
                cert: self
                    .metadata_cert
                    .clone()
                    .or_else(|| tls.cert.clone())
                    .unwrap_or_default(),
                key: self
                    .metadata_key
                    .clone()
                    .or_else(|| tls.key.clone())
                    .unwrap_or_default(),
                timeout: std::time::Duration::from_secs(5),
            }),
        };
        Ok(ReplicaConfig {
            id,
            listen: self.listen,
            peer_listen: self.peer_listen,
            tls,
            kek_file: self.kek.clone(),
            handshake: Default::default(),
            advertise: self.advertise.clone(),
            data_dir: self.data_dir.clone(),
            peers,
            join,
            raft_heartbeat_interval_ms: self.raft_heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_every_entries: self.snapshot_every_entries,
            snapshot_keep_entries: self.snapshot_keep_entries,
            node_heartbeat_interval_ms: self.node_heartbeat_interval_ms,
            node_lease_ms: self.node_lease_ms,
            placement: self.placement,
            request_timeout_ms: ReplicaConfig::default().request_timeout_ms,
            join_limits: Default::default(),
            account_sweep_interval_ms: self.account_sweep_interval_ms,
            usage_audit_window_days: self.usage_audit_window_days,
            sla_evaluate_interval_ms: self.sla_evaluate_interval_ms,
            sla_probe_interval_ms: self.sla_probe_interval_ms,
            sla_notify_interval_ms: self.sla_notify_interval_ms,
            webhook_ca: self.webhook_ca.clone(),
            prober: Some(probe::handle()),
            dashboard_listen: self.dashboard_listen,
            dashboard_url: self.dashboard_url.clone(),
            metadata,
            metadata_sync_interval_ms: self.metadata_sync_interval_ms,
            metadata_reconcile_interval_ms: self.metadata_reconcile_interval_ms,
        })
    }
}

/// Logs to stderr, and traces to the OTLP endpoint when there is one; the
/// guard flushes traces when dropped.
fn init_logging(
    format: LogFormat,
    service: &'static str,
    otlp: Option<&str>,
) -> Result<Option<otel::Guard>, ExitCode> {
    use tracing_subscriber::prelude::*;
    let (otel_layer, guard) = match otlp {
        Some(endpoint) => match otel::layer(service, endpoint) {
            Ok((l, g)) => (Some(l), Some(g)),
            Err(e) => {
                eprintln!("error: --otlp-endpoint: {e}");
                return Err(ExitCode::from(2));
            }
        },
        None => (None, None),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error,h2=warn"));
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::filter::filter_fn(|meta| {
            !is_openraft_replication_rpc_error(meta)
        }))
        .with(output)
        .with(otel_layer)
        .init();
    Ok(guard)
}

/// openraft 0.9 logs every failed replication RPC twice, at WARN and then
/// at ERROR ("RPCError", field `err`); a peer that restarts or answers late
/// is not an error. The replica's network layer reports such failures
/// itself (WARN once per outage, `fjord_raft_peer_rpc_errors_total`), so
/// this event is dropped. openraft's storage errors (field `error`) stay.
fn is_openraft_replication_rpc_error(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "openraft::replication"
        && *meta.level() == tracing::Level::ERROR
        && meta.fields().field("err").is_some()
}

/// Exit codes: 0 ok, 1 runtime failure, 2 usage or invalid configuration
/// (clap uses 2 as well), 3 the cluster refused or could not be reached.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker_threads = match &cli.command {
        Command::ControlPlane(args) => usize::from(args.worker_threads),
        _ => 0,
    };
    let runtime = match async_runtime(worker_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Ctl(args) => runtime.block_on(ctl::run(args)),
        Command::DevIdp(args) => match dev_idp::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Operator(args) => match runtime.block_on(operator::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Sla(args) => match sla::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Pki(args) => match pki::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::ControlPlane(args) => {
            let _traces = match init_logging(
                cli.log_format,
                "fjord-control-plane",
                cli.otlp_endpoint.as_deref(),
            ) {
                Ok(g) => g,
                Err(code) => return code,
            };
            let config = match valid_config(args.config(), |c| c.validate()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime.block_on(control_plane(config, args.metrics_listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Dev(args) => {
            let _traces =
                match init_logging(cli.log_format, "fjord-dev", cli.otlp_endpoint.as_deref()) {
                    Ok(g) => g,
                    Err(code) => return code,
                };
            exit(runtime.block_on(dev::run(args)))
        }
        Command::MediaNode(args) => {
            let _traces = match init_logging(
                cli.log_format,
                "fjord-media-node",
                cli.otlp_endpoint.as_deref(),
            ) {
                Ok(g) => g,
                Err(code) => return code,
            };
            let config = match valid_config(args.config(), |c| c.validate()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            exit(runtime.block_on(media::run_node(args, config)))
        }
        Command::Join(args) => {
            let _traces =
                match init_logging(cli.log_format, "fjord-join", cli.otlp_endpoint.as_deref()) {
                    Ok(g) => g,
                    Err(code) => return code,
                };
            exit(runtime.block_on(media::run_join(args)))
        }
        Command::Loadgen(args) => {
            let _traces = match init_logging(
                cli.log_format,
                "fjord-loadgen",
                cli.otlp_endpoint.as_deref(),
            ) {
                Ok(g) => g,
                Err(code) => return code,
            };
            exit(runtime.block_on(media::run_loadgen(args)))
        }
    }
}

/// The async runtime: one thread for `1`, that many workers for more, one
/// worker per core for `0`.
fn async_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        0 => tokio::runtime::Runtime::new(),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// A configuration built from flags and validated, or exit code 2 with the
/// reason (before any port is bound).
fn valid_config<C, E: std::fmt::Display, V: std::fmt::Display>(
    built: Result<C, E>,
    validate: impl FnOnce(&C) -> Result<(), V>,
) -> Result<C, ExitCode> {
    let invalid = |e: &dyn std::fmt::Display| {
        eprintln!("error: invalid configuration: {e}");
        ExitCode::from(2)
    };
    let config = built.map_err(|e| invalid(&e))?;
    validate(&config).map_err(|e| invalid(&e))?;
    Ok(config)
}

/// Exit code for a finished role: 0, or 3 when the control plane refused
/// or was unreachable, else 1.
fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let refused = e.chain().any(|c| {
                c.downcast_ref::<fjord_media_node::client::ClientError>()
                    .is_some_and(|c| matches!(c, fjord_media_node::client::ClientError::Refused(_)))
                    || c.downcast_ref::<fjord_media_node::node::NodeError>()
                        .is_some_and(|n| {
                            matches!(n, fjord_media_node::node::NodeError::ControlPlane(_))
                        })
            });
            ExitCode::from(if refused { 3 } else { 1 })
        }
    }
}

async fn control_plane(config: ReplicaConfig, metrics: Option<SocketAddr>) -> anyhow::Result<()> {
    let ready = match metrics {
        Some(addr) => {
            Some(ops::serve(addr, fjord_control_plane::telemetry::describe_metrics).await?)
        }
        None => None,
    };
    let mut handle = server::start(config).await?;
    if let Some(slot) = ready {
        let replica = handle.replica.clone();
        slot.set(std::sync::Arc::new(move || replica.is_ready()));
    }
    let replica = handle.replica.clone();
    let fatal = replica.fatal();
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            handle.shutdown().await;
        }
        _ = handle.wait() => anyhow::bail!("gRPC server stopped"),
        // A storage error stops Raft: exit instead of serving stale answers.
        why = fatal => {
            tracing::error!(reason = %why, "raft stopped on a fatal error; exiting");
            anyhow::bail!("raft stopped: {why}");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
