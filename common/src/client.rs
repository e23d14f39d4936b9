//! A client for the control plane that tolerates replica loss: it talks to
//! one endpoint at a time and moves to the next when a replica cannot be
//! reached. Any replica serves any request (followers forward to the
//! leader), but every answer names the replica that gave it and the one
//! that leads, so the client learns which endpoint is the leader and sends
//! its next calls there, saving the forwarding hop. Every channel is TLS: replicas are
//! verified against the cluster CA and must present a replica certificate;
//! the caller presents its own certificate when it has one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::grpc::{tls_channel, ChannelOptions};
use crate::{Role, TlsFiles};
use tonic::transport::Channel;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// Per-call deadline, on top of which the client keeps trying other
    /// replicas until `retry_for` has passed.
    pub call_timeout: Duration,
    pub retry_for: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_millis(500),
            call_timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(20),
        }
    }
}

pub struct Client {
    channels: Vec<(String, Channel)>,
    current: AtomicUsize,
    /// The replica id each endpoint answered as (0: not yet known).
    replica_at: Vec<AtomicU64>,
    config: ClientConfig,
}

/// Response header: the id of the replica that answered.
pub const REPLICA_HEADER: &str = "fjord-replica";
/// Response header: the id of the leader that replica knows (0: none).
pub const LEADER_HEADER: &str = "fjord-leader";

/// Answers that carry gRPC metadata (the leader hint headers).
pub trait WithMetadata {
    fn metadata(&self) -> &tonic::metadata::MetadataMap;
}

impl<T> WithMetadata for tonic::Response<T> {
    fn metadata(&self) -> &tonic::metadata::MetadataMap {
        tonic::Response::metadata(self)
    }
}

fn header_id(md: &tonic::metadata::MetadataMap, name: &str) -> u64 {
    md.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A replica that could not be reached, as opposed to one that answered.
fn is_transport_failure(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) || (s.code() == Code::DeadlineExceeded)
}

impl Client {
    /// A client with the trust anchors and (optional) certificate in `files`.
    pub fn from_files(
        endpoints: &[String],
        files: &TlsFiles,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let tls = crate::tls::client_config(files)?;
        Client::new(endpoints, tls, config)
    }

    pub fn new(
        endpoints: &[String],
        tls: Arc<rustls::ClientConfig>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let options = ChannelOptions {
            connect_timeout: config.connect_timeout,
            call_timeout: Some(config.call_timeout),
            keep_alive: None,
            server_role: Role::Replica,
            local_address: None,
        };
        let channels = endpoints
            .iter()
            .map(|e| {
                let ch = tls_channel(e, tls.clone(), options).map_err(|err| {
                    ClientError::BadEndpoint {
                        endpoint: e.clone(),
                        reason: err.to_string(),
                    }
                })?;
                Ok((e.clone(), ch))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Client {
            replica_at: channels.iter().map(|_| AtomicU64::new(0)).collect(),
            channels,
            current: AtomicUsize::new(0),
            config,
        })
    }

    /// Runs `call` against the current replica, moving on to the others while
    /// replicas are unreachable. Answers from a replica (including errors such
    /// as `INVALID_ARGUMENT`) are returned as they are.
    ///
    /// A write that reached a replica which then died may or may not have been
    /// committed; calls that create things carry an idempotency key so this
    /// retry cannot create them twice.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        T: WithMetadata,
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.config.retry_for;
        let mut attempt = 0u32;
        loop {
            let i = self.current.load(Ordering::Relaxed) % self.channels.len();
            let (endpoint, channel) = &self.channels[i];
            match call(channel.clone()).await {
                Err(s) if is_transport_failure(&s) && Instant::now() < deadline => {
                    tracing::debug!(endpoint, status = %s, "replica unreachable, trying the next");
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % self.channels.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    attempt += 1;
                    // A full round without an answer: back off a little.
                    if attempt.is_multiple_of(self.channels.len() as u32) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                other => {
                    let md = match &other {
                        Ok(r) => r.metadata(),
                        Err(s) => s.metadata(),
                    };
                    self.follow_hint(i, md);
                    return other;
                }
            }
        }
    }

    /// Learns which replica endpoint `i` is and, when another replica
    /// leads, points the next call at it: straight there once its endpoint
    /// is known, otherwise at the next endpoint, to find out.
    fn follow_hint(&self, i: usize, md: &tonic::metadata::MetadataMap) {
        let (replica, leader) = (header_id(md, REPLICA_HEADER), header_id(md, LEADER_HEADER));
        if replica == 0 {
            return;
        }
        self.replica_at[i].store(replica, Ordering::Relaxed);
        if leader == 0 || leader == replica {
            return;
        }
        let next = self
            .replica_at
            .iter()
            .position(|r| r.load(Ordering::Relaxed) == leader)
            .unwrap_or((i + 1) % self.channels.len());
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Which endpoint the next call goes to first.
    pub fn current_endpoint(&self) -> &str {
        &self.channels[self.current.load(Ordering::Relaxed) % self.channels.len()].0
    }
}

/// A fresh idempotency key for a request that creates something.
pub fn request_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(Instant::now());
    let b = RandomState::new().hash_one(std::process::id());
    format!("{a:016x}{b:016x}")
}

impl Client {
    pub fn endpoints(&self) -> usize {
        self.channels.len()
    }

    /// The channel to the `i`-th endpoint (modulo the count).
    pub fn channel_at(&self, i: usize) -> (&str, Channel) {
        let (e, c) = &self.channels[i % self.channels.len()];
        (e, c.clone())
    }
}

/// What a media node tells the control plane about itself.
#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub id: String,
    pub region: String,
    pub address: String,
    pub capacity: u32,
    /// QUIC certificate (DER) that participants will be told to trust.
    pub certificate: Vec<u8>,
    /// Random per process start (see `RegisterNodeRequest.boot`).
    pub boot: u64,
}

/// What the control plane tells a node during its session.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// Registration went through: timings and the join-token public key.
    Registered(fjord_proto::v1::RegisterNodeResponse),
    /// The answer to one heartbeat: the node's state and its meetings.
    Beat(fjord_proto::v1::HeartbeatResponse),
}

/// Registers a node, then keeps a heartbeat stream open until `stop` fires,
/// moving to another replica whenever the current one stops answering.
/// `load` is read before every beat; `on_event` hears the registration and
/// every heartbeat answer (state such as draining, and assigned meetings).
pub async fn run_node_session(
    client: &Client,
    reg: NodeRegistration,
    load: impl Fn() -> fjord_proto::v1::HeartbeatRequest,
    mut on_event: impl FnMut(NodeEvent),
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Status> {
    use fjord_proto::v1 as pb;
    use pb::node_service_client::NodeServiceClient;

    let registered = client
        .call(|ch| {
            let reg = reg.clone();
            async move {
                NodeServiceClient::new(ch)
                    .register_node(pb::RegisterNodeRequest {
                        id: reg.id,
                        region: reg.region,
                        address: reg.address,
                        capacity: reg.capacity,
                        certificate: reg.certificate,
                        boot: reg.boot,
                    })
                    .await
            }
        })
        .await?
        .into_inner();
    let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(10));
    // A replica that stops answering (paused, cut off) is left well inside
    // the lease: the next one must commit a beat before the lease ends, or
    // the node is declared down though it is fine.
    let lease = Duration::from_millis(registered.lease_ms.max(100));
    let answer_within = (lease / 4).max(interval * 3).min(lease / 2);
    on_event(NodeEvent::Registered(registered));
    let mut endpoint = client.current.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (name, ch) = client.channel_at(endpoint);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut svc = NodeServiceClient::new(ch);
        let opened = tokio::select! {
            r = svc.heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx)) => r,
            _ = stop.changed() => return Ok(()),
        };
        let mut replies = match opened {
            Ok(r) => r.into_inner(),
            Err(s) => {
                tracing::debug!(endpoint = name, status = %s, "heartbeat stream refused");
                endpoint += 1;
                tokio::time::sleep(interval.min(Duration::from_millis(200))).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return Ok(()),
            }
            let mut hb = load();
            hb.node_id = reg.id.clone();
            if tx.send(hb).await.is_err() {
                break;
            }
            match tokio::time::timeout(answer_within, replies.message()).await {
                Ok(Ok(Some(r))) => on_event(NodeEvent::Beat(r)),
                Ok(Err(s)) if s.code() == Code::InvalidArgument || s.code() == Code::NotFound => {
                    return Err(s)
                }
                _ => break,
            }
        }
        tracing::debug!(endpoint = name, "heartbeat stream lost; switching replica");
        endpoint += 1;
    }
}

/// Typed calls for the requests that set-up code (dev, tests, benchmarks)
/// makes over and over.
impl Client {
    pub async fn create_institution(
        &self,
        req: fjord_proto::v1::CreateInstitutionRequest,
    ) -> Result<fjord_proto::v1::CreateInstitutionResponse, Status> {
        use fjord_proto::v1::institution_service_client::InstitutionServiceClient;
        self.call(|ch| {
            let req = req.clone();
            async move {
                InstitutionServiceClient::new(ch)
                    .create_institution(req)
                    .await
            }
        })
        .await
        .map(|r| r.into_inner())
    }

    pub async fn set_licence(
        &self,
        req: fjord_proto::v1::SetLicenceRequest,
    ) -> Result<fjord_proto::v1::LicenceResponse, Status> {
        use fjord_proto::v1::licence_service_client::LicenceServiceClient;
        self.call(|ch| {
            let req = req.clone();
            async move { LicenceServiceClient::new(ch).set_licence(req).await }
        })
        .await
        .map(|r| r.into_inner())
    }

    /// Gives `institution` an education licence (1,000 staff FTE, 500
    /// student licences, an agreement running since 1 October 2025) with
    /// `add_ons`: what sample and test institutions schedule under.
    pub async fn sample_licence(
        &self,
        institution: &str,
        add_ons: &[&str],
    ) -> Result<fjord_proto::v1::LicenceResponse, Status> {
        self.set_licence(fjord_proto::v1::SetLicenceRequest {
            institution: institution.to_string(),
            terms: Some(fjord_proto::v1::LicenceTerms {
                tier: "education".into(),
                staff_fte: "1000".into(),
                student_licences: 500,
                add_ons: add_ons.iter().map(|a| a.to_string()).collect(),
                agreement_start: "2025-10-01".into(),
                agreement_contact: format!("agreement@{institution}.example"),
                technical_contact: format!("noc@{institution}.example"),
                staff_licences: 0,
                allow_overage: false,
            }),
            effective: String::new(),
        })
        .await
    }

    pub async fn register_node(
        &self,
        req: fjord_proto::v1::RegisterNodeRequest,
    ) -> Result<fjord_proto::v1::RegisterNodeResponse, Status> {
        use fjord_proto::v1::node_service_client::NodeServiceClient;
        self.call(|ch| {
            let req = req.clone();
            async move { NodeServiceClient::new(ch).register_node(req).await }
        })
        .await
        .map(|r| r.into_inner())
    }

    pub async fn schedule_meeting(
        &self,
        req: fjord_proto::v1::ScheduleMeetingRequest,
    ) -> Result<fjord_proto::v1::ScheduleMeetingResponse, Status> {
        use fjord_proto::v1::meeting_service_client::MeetingServiceClient;
        self.call(|ch| {
            let req = req.clone();
            async move { MeetingServiceClient::new(ch).schedule_meeting(req).await }
        })
        .await
        .map(|r| r.into_inner())
    }

    pub async fn move_meeting(
        &self,
        req: fjord_proto::v1::MoveMeetingRequest,
    ) -> Result<fjord_proto::v1::MoveMeetingResponse, Status> {
        use fjord_proto::v1::meeting_service_client::MeetingServiceClient;
        self.call(|ch| {
            let req = req.clone();
            async move { MeetingServiceClient::new(ch).move_meeting(req).await }
        })
        .await
        .map(|r| r.into_inner())
    }

    pub async fn drain_node(
        &self,
        req: fjord_proto::v1::DrainNodeRequest,
    ) -> Result<fjord_proto::v1::DrainNodeResponse, Status> {
        use fjord_proto::v1::node_service_client::NodeServiceClient;
        self.call(|ch| {
            let req = req.clone();
            async move { NodeServiceClient::new(ch).drain_node(req).await }
        })
        .await
        .map(|r| r.into_inner())
    }
}
