//! `fjord media-node`, `fjord join` and `fjord loadgen`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use fjord_control_plane::client::{Client, ClientConfig};
use fjord_media_node::client::session::Session;
use fjord_media_node::client::{loadgen, ClientError, JoinRequest};
use fjord_media_node::node::{self, MediaNodeConfig};

use crate::tls_args::TlsArgs;

#[derive(Args)]
pub struct MediaNodeArgs {
    /// Region this node serves (e.g. nordic, eu).
    #[arg(long)]
    region: String,
    /// QUIC (UDP) address participants connect to.
    #[arg(long, default_value = "127.0.0.1:7201")]
    listen: SocketAddr,
    /// Control-plane replicas, comma-separated HOST:PORT.
    #[arg(long, value_delimiter = ',', required = true)]
    control_plane: Vec<String>,
    /// Node id (default: the one in the node certificate).
    #[arg(long)]
    id: Option<String>,
    /// Address participants are told to use (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Participants this node carries at once.
    #[arg(long, default_value_t = 500)]
    capacity: u32,
    /// On SIGTERM, wait at most this long for meetings to finish (e.g. 4h, 30m).
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Serve Prometheus metrics, /healthz and /readyz on this address.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Directory for the usage journal and the connection log (keep it
    /// across restarts: usage not yet reported is resent from it). Default:
    /// a fresh temporary directory.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// How often usage is journaled (fsync) and reported to the ledger.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    usage_flush_interval: Duration,
    /// Connection-log entries (name, e-mail, IP; on this node only) are
    /// deleted after this long; at most 365 days.
    #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
    connection_log_retention: Duration,
    /// How often the connection log is swept.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    connection_log_sweep_interval: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

impl MediaNodeArgs {
    pub fn config(&self) -> anyhow::Result<MediaNodeConfig> {
        let tls = self.tls.files(true)?;
        let id = match (&self.id, tls.identity()?) {
            (Some(id), _) => id.clone(),
            (None, Some(fjord_common::Identity::Node { id })) => id,
            (None, other) => anyhow::bail!(
                "the certificate is not a node certificate ({}); issue one with `fjord pki issue node --id ID`",
                other.map_or("none".into(), |i| i.to_string())
            ),
        };
        let mut c = MediaNodeConfig::new(
            &id,
            &self.region,
            self.listen,
            self.control_plane.clone(),
            tls,
        );
        c.advertise = self.advertise.clone();
        c.capacity = self.capacity;
        c.drain_timeout = self.drain_timeout;
        c.usage.data_dir = self.data_dir.clone();
        c.usage.flush_interval = self.usage_flush_interval;
        c.usage.connection_log_retention = self.connection_log_retention;
        c.usage.sweep_interval = self.connection_log_sweep_interval;
        Ok(c)
    }
}

/// Runs a media node until SIGTERM/Ctrl-C, then drains: no new meetings,
/// running ones finish, then exit 0.
pub async fn run_node(args: MediaNodeArgs, config: MediaNodeConfig) -> anyhow::Result<()> {
    let ready = match args.metrics_listen {
        Some(addr) => {
            Some(super::ops::serve(addr, fjord_media_node::telemetry::describe_metrics).await?)
        }
        None => None,
    };
    let handle = node::start(config).await?;
    if let Some(slot) = ready {
        slot.set(std::sync::Arc::new(handle.readiness()));
    }
    println!("media node listening on {}", handle.local_addr());
    super::shutdown_signal().await;
    tracing::info!("signal received: draining, waiting for meetings to finish");
    handle.drain_and_stop().await;
    tracing::info!("drained; exiting");
    Ok(())
}

#[derive(Args)]
pub struct JoinArgs {
    /// Control-plane replicas, comma-separated HOST:PORT.
    #[arg(long, value_delimiter = ',', required = true, env = "FJORD_ENDPOINTS")]
    endpoints: Vec<String>,
    /// Meeting id (or give --link).
    #[arg(long, required_unless_present = "link")]
    meeting: Option<u64>,
    /// Meeting passcode.
    #[arg(long)]
    passcode: Option<String>,
    /// Join as host with the meeting's host key; admits waiting participants.
    #[arg(long)]
    host_key: Option<String>,
    /// The room-system PIN instead of a passcode.
    #[arg(long)]
    pin: Option<String>,
    /// A join link (fjord://join/ID?passcode=P).
    #[arg(long, conflicts_with_all = ["meeting", "passcode"])]
    link: Option<String>,
    /// Name shown to others.
    #[arg(long, default_value = "fjord join")]
    name: String,
    /// Leave after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Print the final statistics as JSON.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run_join(args: JoinArgs) -> anyhow::Result<()> {
    let mut req = match &args.link {
        Some(l) => JoinRequest::from_link(l).context("bad join link")?,
        None => JoinRequest {
            meeting_id: args.meeting.unwrap_or_default(),
            passcode: args.passcode.clone().unwrap_or_default(),
            ..Default::default()
        },
    };
    if let Some(k) = &args.host_key {
        req.passcode.clear();
        req.host_key = k.clone();
        req.auto_admit = true;
    }
    if let Some(p) = &args.pin {
        req.passcode.clear();
        req.pin = p.clone();
    }
    req.display_name = args.name.clone();
    // Participants need no certificate: the CA is enough to verify the
    // control plane, which then names the node's certificate.
    let tls = args.tls.files(false)?;
    let cp = Arc::new(Client::from_files(
        &args.endpoints,
        &tls,
        ClientConfig::default(),
    )?);
    // The session re-joins by itself when its node dies or the meeting moves.
    let session = Session::start(cp, req.clone(), true);
    let until = args
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        if let Some(why) = session.ended() {
            let refused = session.state.refused.lock().expect("session lock").clone();
            if let Some((code, message)) = refused {
                return Err(ClientError::Refused(tonic::Status::new(code, message)).into());
            }
            anyhow::bail!("left the meeting: {why}");
        }
        let s = session.stats.snapshot();
        eprintln!(
            "node {}  sent {:>7}  received {:>8}  lost {:>5}  latency p50 {:.2} ms p99 {:.2} ms  jitter {:.2} ms  tracks {}  re-joins {}  moves {}",
            session.node(),
            s.sent, s.received, s.lost, s.latency_p50_ms, s.latency_p99_ms, s.jitter_ms, s.tracks,
            session.state.rejoins_after_loss.load(Ordering::Relaxed),
            session.state.moves.load(Ordering::Relaxed),
        );
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
    }
    let s = session.stats.snapshot();
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    session.stop().await;
    Ok(())
}

#[derive(Args)]
pub struct LoadgenArgs {
    /// Control-plane replicas, comma-separated HOST:PORT.
    #[arg(long, value_delimiter = ',', required = true, env = "FJORD_ENDPOINTS")]
    endpoints: Vec<String>,
    /// Institution the meetings are scheduled for.
    #[arg(long)]
    institution: String,
    #[arg(long, default_value_t = 1)]
    meetings: u32,
    /// Participants per meeting (one of them the host).
    #[arg(long, default_value_t = 3)]
    participants: u32,
    /// Schedule webinars: the host (panelist) sends, attendees only receive.
    #[arg(long)]
    webinar: bool,
    /// Attendees per webinar (with --webinar).
    #[arg(long, default_value_t = 0)]
    attendees: u32,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
    /// Scheduling needs an operator or the institution's admin certificate.
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run_loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let config = loadgen::LoadgenConfig {
        institution: args.institution.clone(),
        meetings: args.meetings,
        participants: args.participants,
        duration: Duration::from_secs(args.duration_s),
        webinar: args.webinar,
        attendees: args.attendees,
    };
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    let tls = args.tls.files(true)?;
    let cp = Client::from_files(&args.endpoints, &tls, ClientConfig::default())?;
    let r = loadgen::run(&cp, &config, |line| eprintln!("{line}")).await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("kind                {}", r.kind);
        println!("meetings            {}", r.meetings);
        println!("participants        {}", r.participants);
        println!("duration            {:.1} s", r.duration_s);
        println!("packets sent        {}", r.packets_sent);
        println!(
            "packets received    {} of {} expected",
            r.packets_received, r.packets_expected
        );
        println!("loss                {:.3} %", r.loss_ratio * 100.0);
        println!("corrupted           {}", r.corrupted);
        println!(
            "latency p50 / p99   {:.2} / {:.2} ms",
            r.latency_p50_ms, r.latency_p99_ms
        );
        println!("jitter (mean)       {:.2} ms", r.jitter_ms_mean);
        println!(
            "join p50 / p99      {:.1} / {:.1} ms",
            r.join_p50_ms, r.join_p99_ms
        );
        println!(
            "first media p50/p99 {:.1} / {:.1} ms",
            r.first_media_p50_ms, r.first_media_p99_ms
        );
    }
    Ok(())
}
