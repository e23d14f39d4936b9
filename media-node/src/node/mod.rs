//! The media node process: a quinn endpoint around the [`Sfu`] core, and the
//! node's session with the control plane.
//!
//! Per participant connection there are three tasks: the control reader
//! (length-prefixed protobuf in, core outputs dispatched), the writer (the
//! only one touching the control send stream) and the datagram loop (route
//! through the core, then `send_datagram` to each subscriber outside the lock).
//! Cascade links to peer nodes (`link.rs`) run the same three tasks on a
//! connection with the link ALPN.

mod hearing;
mod link;
mod load;
mod stalls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use fjord_common::client::{run_node_session, Client, ClientConfig, NodeEvent, NodeRegistration};
use fjord_proto::v1 as pb;

use crate::sfu::{ConnId, Counters, Output, Sfu, SfuConfig};
use crate::tls;
use crate::wire::{self, FrameError};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct MediaNodeConfig {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    /// Address participants use; defaults to the bound listen address.
    pub advertise: Option<String>,
    /// Participants this node carries at once.
    pub capacity: u32,
    pub control_plane: Vec<String>,
    /// How long a shutdown waits for meetings to finish before closing them.
    pub drain_timeout: Duration,
    /// How long to wait for the first registration with the control plane.
    pub register_timeout: Duration,
    /// With more QUIC handshakes than this in progress (a join storm), new
    /// connections from unvalidated addresses get a Retry first: a spoofed
    /// source never answers it, so it costs the node no handshake.
    pub retry_above_handshakes: usize,
    pub sfu: SfuConfig,
    /// The usage journal, its reports and the connection log.
    pub usage: crate::agent::UsageConfig,
    /// The cluster CA and this node's certificate (`spiffe://fjord/node/ID`),
    /// presented to the control plane.
    pub tls: fjord_common::TlsFiles,
}

impl MediaNodeConfig {
    pub fn new(
        id: &str,
        region: &str,
        listen: SocketAddr,
        control_plane: Vec<String>,
        tls: fjord_common::TlsFiles,
    ) -> Self {
        MediaNodeConfig {
            id: id.into(),
            region: region.into(),
            listen,
            advertise: None,
            capacity: 500,
            control_plane,
            drain_timeout: Duration::from_secs(4 * 3600),
            register_timeout: Duration::from_secs(30),
            retry_above_handshakes: 64,
            sfu: SfuConfig::new(id),
            usage: crate::agent::UsageConfig::default(),
            tls,
        }
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |s: String| Err(NodeError::Config(s));
        if fjord_common::validate::name(&self.id).is_err() {
            return bad(format!(
                "bad node id {:?}: 1-63 of a-z A-Z 0-9 - _ .",
                self.id
            ));
        }
        if fjord_common::validate::name(&self.region).is_err() {
            return bad(format!("bad region {:?}", self.region));
        }
        if self.capacity == 0 || self.capacity > fjord_common::validate::MAX_CAPACITY {
            return bad(format!(
                "capacity must be 1..={}",
                fjord_common::validate::MAX_CAPACITY
            ));
        }
        if self.control_plane.is_empty() {
            return bad("at least one control-plane endpoint is needed".into());
        }
        if let Some(a) = &self.advertise {
            if fjord_common::validate::address(a).is_err() {
                return bad(format!("bad advertise address {a:?}"));
            }
        }
        if self.sfu.node_id != self.id {
            return bad("sfu node id must equal the node id".into());
        }
        self.tls
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        match self.tls.identity() {
            Ok(Some(fjord_common::Identity::Node { id })) if id == self.id => {}
            Ok(found) => {
                return bad(format!(
                    "the certificate says {}, but this is node {:?}: issue one with `fjord pki issue node --id {}`",
                    found.map_or("nothing".into(), |i| i.to_string()),
                    self.id,
                    self.id
                ))
            }
            Err(e) => return bad(e.to_string()),
        }
        self.usage.validate().map_err(NodeError::Config)?;
        self.sfu.validate().map_err(NodeError::Config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("usage journal: {0}")]
    Journal(std::io::Error),
}

#[derive(Clone)]
pub struct ConnHandle(quinn::Connection);

enum WriterCmd {
    Frame(Vec<u8>),
    Close(String),
}

/// Control messages queued for one participant before it counts as stuck.
const WRITER_QUEUE: usize = 1024;

struct Shared {
    /// Read-locked to route datagrams (in parallel on every core), write-
    /// locked for control messages, joins and heartbeat answers.
    sfu: RwLock<Sfu<ConnHandle>>,
    writers: Mutex<HashMap<ConnId, mpsc::Sender<WriterCmd>>>,
    send_errors: AtomicU64,
    next_conn: AtomicU64,
    links: link::Links,
    /// QUIC handshakes in progress.
    handshaking: std::sync::atomic::AtomicUsize,
    /// Retries sent to unvalidated addresses during storms.
    retries_sent: AtomicU64,
    /// When this process was not running (ticked every 50 ms).
    stalls: Mutex<stalls::Stalls>,
}

impl Shared {
    fn dispatch(&self, outs: Vec<Output>) {
        if outs.is_empty() {
            return;
        }
        let writers = self.writers.lock().expect("writers lock");
        for o in outs {
            let (conn, cmd) = match o {
                Output::Send(c, m) => (c, WriterCmd::Frame(wire::frame(&m))),
                Output::SendLink(c, m) => (c, WriterCmd::Frame(wire::frame(&m))),
                Output::Close(c, reason) => (c, WriterCmd::Close(reason)),
            };
            if let Some(w) = writers.get(&conn) {
                if w.try_send(cmd).is_err() {
                    // A participant that does not read its control stream
                    // does not get to hold memory here.
                    let _ = w.try_send(WriterCmd::Close("control stream backed up".into()));
                }
            }
        }
    }
}

pub struct MediaNodeHandle {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    client: Arc<Client>,
    id: String,
    drain_timeout: Duration,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    usage: Arc<crate::agent::UsageAgent>,
    reporter: Option<JoinHandle<()>>,
}

/// Starts the node: binds the QUIC endpoint, registers with the control
/// plane (waiting for the first registration) and starts serving.
pub async fn start(config: MediaNodeConfig) -> Result<MediaNodeHandle, NodeError> {
    config.validate()?;
    let tls_err = |e: fjord_common::TlsError| NodeError::Config(e.to_string());
    let verifier = fjord_common::tls::client_verifier(
        config.tls.ca.clone(),
        fjord_common::ClientAuth::Optional,
    )
    .map_err(tls_err)?;
    let (cert, key) = (
        config
            .tls
            .cert
            .clone()
            .ok_or(NodeError::Config("a node certificate is required".into()))?,
        config
            .tls
            .key
            .clone()
            .ok_or(NodeError::Config("a node key is required".into()))?,
    );
    let own_cert = Arc::new(fjord_common::tls::OwnCert::new(cert, key).map_err(tls_err)?);
    let identity = tls::node_identity(verifier)?;
    let endpoint = quinn::Endpoint::server(identity.server_config, config.listen).map_err(|e| {
        NodeError::Bind {
            addr: config.listen,
            source: e,
        }
    })?;
    let local_addr = endpoint.local_addr().map_err(|e| NodeError::Bind {
        addr: config.listen,
        source: e,
    })?;
    let shared = Arc::new(Shared {
        sfu: RwLock::new(Sfu::new(config.sfu.clone())),
        writers: Mutex::new(HashMap::new()),
        send_errors: AtomicU64::new(0),
        next_conn: AtomicU64::new(1),
        links: link::Links::new(config.id.clone(), endpoint.clone(), own_cert),
        handshaking: Default::default(),
        retries_sent: AtomicU64::new(0),
        stalls: Mutex::new(stalls::Stalls::default()),
    });
    let client = Arc::new(
        Client::from_files(&config.control_plane, &config.tls, ClientConfig::default())
            .map_err(|e| NodeError::Config(e.to_string()))?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let usage = Arc::new(
        crate::agent::UsageAgent::open(&config.id, config.usage.clone())
            .map_err(NodeError::Journal)?,
    );
    // The ledger's mark for this node, learned at registration.
    let (acked_tx, acked_rx) = watch::channel(None::<u64>);
    let reporter = {
        let shared = shared.clone();
        tokio::spawn(crate::agent::run_reporter(
            usage.clone(),
            client.clone(),
            config.id.clone(),
            move || {
                let mut sfu = shared.sfu.write().expect("sfu lock");
                (sfu.take_usage(), sfu.take_connections())
            },
            acked_rx,
            stop_rx.clone(),
        ))
    };

    // Load sampling: metrics every second, and what heartbeats report.
    let load = Arc::new(Mutex::new(pb::HeartbeatRequest::default()));
    tasks.push(tokio::spawn(load::sample(
        shared.clone(),
        load.clone(),
        stop_rx.clone(),
    )));

    // The core's clock input: time limits warn and end meetings.
    {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(crate::sfu::TICK_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let outs = shared.sfu.write().expect("sfu lock").tick(now_ms());
                if !outs.is_empty() {
                    shared.dispatch(outs);
                }
            }
        }));
    }

    // The control-plane session.
    let (registered_tx, mut registered_rx) = watch::channel(false);
    let reg = NodeRegistration {
        id: config.id.clone(),
        region: config.region.clone(),
        address: config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string()),
        capacity: config.capacity,
        certificate: identity.certificate,
        boot: usage.boot,
    };
    {
        let shared = shared.clone();
        let client = client.clone();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let on_event = |e: NodeEvent| match e {
                NodeEvent::Registered(r) => {
                    let mut sfu = shared.sfu.write().expect("sfu lock");
                    sfu.set_join_key(r.join_public_key);
                    sfu.set_node_index(r.node.map_or(0, |n| n.index));
                    drop(sfu);
                    let _ = acked_tx.send(Some(r.usage_acked_seq));
                    let _ = registered_tx.send(true);
                }
                NodeEvent::Beat(b) => {
                    let assignments: Vec<(u64, Vec<String>)> = b
                        .assignments
                        .iter()
                        .map(|a| (a.meeting_id, a.peer_node_ids.clone()))
                        .collect();
                    let outs = shared.sfu.write().expect("sfu lock").sync_assignments(
                        now_ms(),
                        &assignments,
                        &b.moved,
                    );
                    shared.dispatch(outs);
                    link::reconcile(&shared, b.peers, b.link_token);
                }
            };
            let beat = || {
                let mut b = load.lock().expect("load lock").clone();
                b.rooms = shared.sfu.read().expect("sfu lock").room_ids();
                b.sent_at_ms = now_ms();
                b
            };
            if let Err(e) = run_node_session(&client, reg, beat, on_event, stop).await {
                tracing::error!(error = %e, "control-plane session ended");
            }
        }));
    }
    match tokio::time::timeout(config.register_timeout, registered_rx.wait_for(|r| *r)).await {
        Ok(Ok(_)) => {}
        _ => {
            let _ = stop_tx.send(true);
            return Err(NodeError::ControlPlane(format!(
                "could not register within {:?}",
                config.register_timeout
            )));
        }
    }

    tasks.push(tokio::spawn(accept_loop(
        endpoint.clone(),
        shared.clone(),
        config.retry_above_handshakes,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(tick_stalls(shared.clone(), stop_rx.clone())));
    tracing::info!(id = %config.id, region = %config.region, addr = %local_addr, "media node serving");
    Ok(MediaNodeHandle {
        shared,
        endpoint,
        local_addr,
        client,
        id: config.id,
        drain_timeout: config.drain_timeout,
        stop_tx,
        tasks,
        usage,
        reporter: Some(reporter),
    })
}

/// Ticks the stall record every 50 ms until the node stops.
async fn tick_stalls(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => shared.stalls.lock().expect("stalls lock").tick(now_ms()),
            _ = stop.changed() => return,
        }
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    retry_above_handshakes: usize,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => return },
            _ = stop.changed() => return,
        };
        if shared.handshaking.load(Ordering::Relaxed) >= retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            // Address validation first: only a source that can receive
            // the Retry comes back, with a token, and is then served.
            if incoming.retry().is_ok() {
                shared.retries_sent.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("fjord_media_retries_sent_total").increment(1);
            }
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve_connection(shared.clone(), incoming, id));
    }
}

async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming, id: ConnId) {
    shared.handshaking.fetch_add(1, Ordering::Relaxed);
    let handshake = incoming.await;
    shared.handshaking.fetch_sub(1, Ordering::Relaxed);
    let conn = match handshake {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            metrics::counter!("fjord_media_handshakes_failed_total").increment(1);
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    if alpn.as_deref() == Some(tls::ALPN_LINK) {
        return link::serve_accepted(shared, conn, id).await;
    }
    let (send, mut recv) =
        match tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            _ => {
                conn.close(1u32.into(), b"no control stream");
                return;
            }
        };
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    shared.writers.lock().expect("writers lock").insert(id, tx);
    let outs = shared.sfu.write().expect("sfu lock").connect(
        id,
        ConnHandle(conn.clone()),
        conn.remote_address().ip(),
    );
    shared.dispatch(outs);
    let writer = tokio::spawn(write_control(send, rx, conn.clone()));
    let datagrams = tokio::spawn(forward_datagrams(shared.clone(), conn.clone(), id));
    let hearing = Arc::new(Mutex::new(hearing::Hearing::new(
        now_ms(),
        conn.stats().udp_rx.datagrams,
    )));
    let watch = tokio::spawn(watch_hearing(conn.clone(), hearing.clone()));

    loop {
        match wire::read_frame(&mut recv).await {
            Ok(Some(bytes)) => {
                let outs = match pb::ClientMessage::decode(bytes.as_slice()) {
                    Ok(m) => shared
                        .sfu
                        .write()
                        .expect("sfu lock")
                        .control(now_ms(), id, m),
                    Err(_) => shared.sfu.write().expect("sfu lock").malformed_control(id),
                };
                shared.dispatch(outs);
            }
            Ok(None) => break,
            Err(FrameError::TooLong(n)) => {
                // The stream cannot be resynchronised after a bad length.
                let outs = shared.sfu.write().expect("sfu lock").malformed_control(id);
                shared.dispatch(outs);
                tracing::debug!(conn = id, len = n, "oversized control frame; closing");
                conn.close(2u32.into(), b"control message too large");
                break;
            }
            Err(_) => break,
        }
    }
    watch.abort();
    // A connection that fell silent (QUIC's idle timer, or the hearing
    // watch first) ends the stay when the participant was last heard — or,
    // if this process was stopped then, when it stopped (found by the
    // chaos runs).
    let now = now_ms();
    let (silenced, heard) = {
        let h = hearing.lock().expect("hearing lock");
        (h.silenced(), h.heard_ms())
    };
    let timed_out = matches!(conn.close_reason(), Some(quinn::ConnectionError::TimedOut));
    let last_heard = if timed_out || silenced {
        shared
            .stalls
            .lock()
            .expect("stalls lock")
            .served_until(heard, now)
    } else {
        now
    };
    let outs = shared
        .sfu
        .write()
        .expect("sfu lock")
        .disconnect_at(now, last_heard, id);
    shared.dispatch(outs);
    shared.writers.lock().expect("writers lock").remove(&id);
    datagrams.abort();
    let _ = writer.await;
}

/// Samples what the connection has received every [`hearing::SAMPLE_MS`]
/// and closes it once it has been silent too long (see [`hearing`]).
async fn watch_hearing(conn: quinn::Connection, hearing: Arc<Mutex<hearing::Hearing>>) {
    let mut every = tokio::time::interval(Duration::from_millis(hearing::SAMPLE_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let received = conn.stats().udp_rx.datagrams;
        let verdict = hearing
            .lock()
            .expect("hearing lock")
            .sample(now_ms(), received);
        if let hearing::Verdict::Silent { .. } = verdict {
            metrics::counter!("fjord_media_silent_closes_total").increment(1);
            conn.close(4u32.into(), b"silent");
            return;
        }
    }
}

async fn write_control(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<WriterCmd>,
    conn: quinn::Connection,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Frame(f) => {
                if send.write_all(&f).await.is_err() {
                    break;
                }
            }
            WriterCmd::Close(reason) => {
                let _ = send.finish();
                // Give the final frames a moment to leave before closing.
                let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
                conn.close(0u32.into(), reason.as_bytes());
                break;
            }
        }
    }
}

async fn forward_datagrams(shared: Arc<Shared>, conn: quinn::Connection, id: ConnId) {
    while let Ok(d) = conn.read_datagram().await {
        let routed = shared.sfu.read().expect("sfu lock").route(id, &d);
        if let Ok(subscribers) = routed {
            for s in subscribers.iter() {
                if s.0.send_datagram(Bytes::clone(&d)).is_err() {
                    shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl MediaNodeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn counters(&self) -> Counters {
        self.shared.sfu.read().expect("sfu lock").counters()
    }

    /// Retries sent to unvalidated addresses during join storms.
    pub fn retries_sent(&self) -> u64 {
        self.shared.retries_sent.load(Ordering::Relaxed)
    }

    /// Ready for participants: registered (a handle exists only after
    /// registration) and not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.shared.sfu.read().expect("sfu lock").is_shutting_down()
    }

    /// [`is_ready`](Self::is_ready) as a check that outlives the handle.
    pub fn readiness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || !shared.sfu.read().expect("sfu lock").is_shutting_down()
    }

    pub fn participants(&self) -> usize {
        self.shared.sfu.read().expect("sfu lock").participants()
    }

    /// Peer nodes this node has a cascade link with.
    pub fn linked_peers(&self) -> Vec<String> {
        self.shared.links.up()
    }

    /// The orderly shutdown behind SIGTERM: ask the control plane to place
    /// nothing new here, open no new rooms, let running meetings finish
    /// (up to the drain timeout), then stop.
    pub async fn drain_and_stop(self) {
        self.shared.sfu.write().expect("sfu lock").shut_down();
        let id = self.id.clone();
        let drained = self
            .client
            .call(|ch| {
                let id = id.clone();
                async move {
                    pb::node_service_client::NodeServiceClient::new(ch)
                        .drain_node(pb::DrainNodeRequest {
                            id,
                            undo: false,
                            evacuate: false,
                        })
                        .await
                }
            })
            .await;
        if let Err(e) = drained {
            tracing::warn!(error = %e, "could not mark this node draining; stopping anyway");
        }
        let deadline = Instant::now() + self.drain_timeout;
        let mut last_log = Instant::now();
        loop {
            let n = self.participants();
            if n == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    participants = n,
                    "drain timeout reached; closing remaining meetings"
                );
                break;
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                tracing::info!(participants = n, "draining: waiting for meetings to finish");
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.stop().await;
    }

    /// Usage events journaled and not yet acknowledged by the ledger.
    pub fn usage_pending(&self) -> usize {
        self.usage.pending()
    }

    /// Where the usage journal and the connection log are.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.usage.data_dir().to_path_buf()
    }

    /// Stops at once: closes every connection, then reports the usage
    /// that closing recorded (briefly; the journal keeps the rest).
    pub async fn stop(mut self) {
        self.endpoint.close(0u32.into(), b"node stopping");
        {
            // Everyone still here leaves now: record it before the last report.
            let conns: Vec<ConnId> = self
                .shared
                .writers
                .lock()
                .expect("writers lock")
                .keys()
                .copied()
                .collect();
            let mut sfu = self.shared.sfu.write().expect("sfu lock");
            for c in conns {
                let _ = sfu.disconnect(now_ms(), c);
            }
        }
        let _ = self.stop_tx.send(true);
        if let Some(r) = self.reporter.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), r).await;
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.usage.cleanup();
    }
}
