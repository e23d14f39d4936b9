//! A participant: joins through the control plane, connects to the media
//! node over QUIC, sends synthetic audio/video and measures what it receives.

pub mod loadgen;
pub mod media;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

use fjord_common::client::Client;
use fjord_proto::v1 as pb;
use pb::client_message::Msg as In;
use pb::server_message::Msg as OutMsg;

use crate::tls;
use crate::wire;
pub use media::{ReceiveStats, StatsSnapshot, StreamProfile, StreamSender};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control plane refused the join: {0}")]
    Refused(tonic::Status),
    #[error("bad node address {0:?}")]
    BadAddress(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("connecting to the media node: {0}")]
    Connect(String),
    #[error("the media node closed the session: {0}")]
    Closed(String),
    /// The node declined for now (shutting down, busy, meeting moved):
    /// asking the control plane again may land elsewhere.
    #[error("the media node asks to join again: {0}")]
    RetryLater(String),
    /// The connection died without a word from the node (node gone,
    /// network cut, idle timeout).
    #[error("lost the connection to the media node")]
    ConnectionLost,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The error for a node's `Closed`.
fn closed(c: pb::Closed) -> ClientError {
    if c.retry {
        ClientError::RetryLater(c.reason)
    } else {
        ClientError::Closed(c.reason)
    }
}

/// How long a QUIC handshake with a media node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often a participant reports what it received.
pub const RECEIVE_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// How to get into a meeting. Exactly one credential is given.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub meeting_id: u64,
    pub passcode: String,
    pub pin: String,
    pub host_key: String,
    pub display_name: String,
    /// As host, admit everyone who waits (for load generation and demos).
    pub auto_admit: bool,
    /// Consent to any recording request automatically.
    pub auto_consent: bool,
}

impl JoinRequest {
    /// Parses `fjord://join/ID?passcode=P`.
    pub fn from_link(link: &str) -> Option<JoinRequest> {
        let rest = link.strip_prefix("fjord://join/")?;
        let (id, query) = rest.split_once('?')?;
        let passcode = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("passcode="))?;
        Some(JoinRequest {
            meeting_id: id.parse().ok()?,
            passcode: passcode.to_string(),
            ..Default::default()
        })
    }
}

/// Where a participant stands after the node's first answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Joined(pb::Joined),
    Waiting(pb::Waiting),
}

pub struct Participant {
    pub participant_id: u64,
    pub role: pb::Role,
    pub node_id: String,
    pub node_address: SocketAddr,
    pub admission: Admission,
    pub stats: Arc<ReceiveStats>,
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    control: mpsc::Sender<pb::ClientMessage>,
    events: mpsc::Receiver<OutMsg>,
    tasks: Vec<JoinHandle<()>>,
}

/// Asks the control plane for a join token, retrying while the meeting has
/// no node (e.g. during a re-placement) or the limit says wait.
pub async fn request_token(
    cp: &Client,
    req: &JoinRequest,
    give_up_after: Duration,
    unreachable: Option<&str>,
) -> Result<pb::JoinMeetingResponse, ClientError> {
    let deadline = Instant::now() + give_up_after;
    loop {
        let r = cp
            .call(|ch| {
                let req = pb::JoinMeetingRequest {
                    meeting_id: req.meeting_id,
                    passcode: req.passcode.clone(),
                    pin: req.pin.clone(),
                    host_key: req.host_key.clone(),
                    display_name: req.display_name.clone(),
                    unreachable_node_id: unreachable.unwrap_or_default().to_string(),
                };
                async move {
                    pb::meeting_service_client::MeetingServiceClient::new(ch)
                        .join_meeting(req)
                        .await
                }
            })
            .await;
        match r {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(ClientError::Refused(s)),
        }
    }
}

/// MTU discovery lifts quinn's datagram limit past its 1,200-byte start
/// within a few round trips; waits for room for `len` bytes (at most a
/// second, then goes on regardless).
pub async fn wait_for_datagram_size(conn: &quinn::Connection, len: usize) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while conn.max_datagram_size().unwrap_or(0) < len && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `pps` single-datagram frames of `len` bytes per second on `track`
/// over `conn` for `duration`, paced in 1 ms bursts (tokio's timer step);
/// the payloads carry send times, so receivers measure latency. Returns how
/// many went out; failed sends are counted in `stats`.
pub async fn send_paced(
    conn: &quinn::Connection,
    stats: &ReceiveStats,
    track: u32,
    len: usize,
    pps: u32,
    duration: Duration,
) -> u64 {
    wait_for_datagram_size(conn, len).await;
    let profile = StreamProfile {
        frames_per_second: pps.max(1),
        frame_bytes: len.saturating_sub(wire::HEADER_LEN),
        keyframe_every: 0,
        keyframe_scale: 1,
    };
    let mut s = StreamSender::new(track, profile, len);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(pps)) as u64;
        while sent < due {
            for d in s.next_frame() {
                if conn.send_datagram(d).is_err() {
                    stats
                        .send_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            sent += 1;
        }
    }
    sent
}

/// Opens a QUIC connection and the control stream to a node, trusting only
/// `certificate`. Used by participants, and by tests that speak raw bytes.
pub async fn connect(
    address: SocketAddr,
    certificate: &[u8],
) -> Result<
    (
        quinn::Endpoint,
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
    ),
    ClientError,
> {
    let bind: SocketAddr = if address.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(tls::client_config(certificate)?);
    let conn = endpoint
        .connect(address, tls::SERVER_NAME)
        .map_err(|e| ClientError::Connect(e.to_string()))?
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    Ok((endpoint, conn, send, recv))
}

impl Participant {
    /// Joins: token from the control plane, QUIC to the node, and the node's
    /// first answer (joined, or waiting).
    pub async fn join(cp: &Client, req: &JoinRequest) -> Result<Participant, ClientError> {
        let started = Instant::now();
        let token = request_token(cp, req, Duration::from_secs(20), None).await?;
        Participant::enter(req, token, Arc::new(ReceiveStats::new(started))).await
    }

    /// Connects to the node a join answer names and joins there; received
    /// media is recorded into `stats` (shared across re-joins).
    pub async fn enter(
        req: &JoinRequest,
        token: pb::JoinMeetingResponse,
        stats: Arc<ReceiveStats>,
    ) -> Result<Participant, ClientError> {
        let address: SocketAddr = tokio::net::lookup_host(&token.node_address)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ClientError::BadAddress(token.node_address.clone()))?;
        // A dead node never answers the handshake: give up well before the
        // idle timeout and let the caller ask the control plane again.
        let (endpoint, conn, mut send, mut recv) =
            tokio::time::timeout(CONNECT_TIMEOUT, connect(address, &token.node_certificate))
                .await
                .map_err(|_| ClientError::Timeout("the media node's handshake"))??;
        let mut tasks = Vec::new();

        // Datagrams in.
        {
            let conn = conn.clone();
            let stats = stats.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(d) = conn.read_datagram().await {
                    stats.record(&d);
                }
            }));
        }
        // Control out.
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<pb::ClientMessage>(256);
        tasks.push(tokio::spawn(async move {
            while let Some(m) = ctl_rx.recv().await {
                if send.write_all(&wire::frame(&m)).await.is_err() {
                    break;
                }
            }
            let _ = send.finish();
        }));
        // Receive reports: what arrived since the last one, so the node can
        // sum per-minute quality (they go out whether or not anyone sends).
        {
            let ctl = ctl_tx.clone();
            let stats = stats.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(RECEIVE_REPORT_INTERVAL);
                tick.tick().await;
                let (mut expected0, mut received0, _) = stats.quality_counters();
                loop {
                    tick.tick().await;
                    let (expected, received, jitter_us) = stats.quality_counters();
                    let report = pb::ReceiveReport {
                        expected: expected.saturating_sub(expected0),
                        received: received.saturating_sub(received0),
                        jitter_us: jitter_us.min(f64::from(u32::MAX)) as u32,
                    };
                    (expected0, received0) = (expected, received);
                    let m = pb::ClientMessage {
                        msg: Some(In::ReceiveReport(report)),
                    };
                    if ctl.send(m).await.is_err() {
                        break;
                    }
                }
            }));
        }
        // Control in, with the automatic host and consent answers.
        let (ev_tx, mut ev_rx) = mpsc::channel::<OutMsg>(4096);
        {
            let ctl = ctl_tx.clone();
            let (auto_admit, auto_consent) = (req.auto_admit, req.auto_consent);
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(frame)) = wire::read_frame(&mut recv).await {
                    let Ok(m) = pb::ServerMessage::decode(frame.as_slice()) else {
                        continue;
                    };
                    let Some(m) = m.msg else { continue };
                    let reply = match &m {
                        OutMsg::WaitingParticipant(w) if auto_admit => Some(In::Admit(pb::Admit {
                            participant_id: w.participant_id,
                        })),
                        OutMsg::ConsentRequested(_) if auto_consent => {
                            Some(In::RecordingConsent(pb::RecordingConsent { consent: true }))
                        }
                        _ => None,
                    };
                    if let Some(r) = reply {
                        let _ = ctl.send(pb::ClientMessage { msg: Some(r) }).await;
                    }
                    // Nobody may be reading events (load generation): drop
                    // rather than block the control stream.
                    let _ = ev_tx.try_send(m);
                }
            }));
        }
        let answer = async {
            ctl_tx
                .send(pb::ClientMessage {
                    msg: Some(In::Join(pb::MediaJoin {
                        token: token.token.clone(),
                        meeting_id: req.meeting_id,
                        traceparent: token.traceparent.clone(),
                    })),
                })
                .await
                .map_err(|_| ClientError::Closed("control stream ended".into()))?;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), ev_rx.recv()).await {
                    Ok(Some(OutMsg::Joined(j))) => return Ok(Admission::Joined(j)),
                    Ok(Some(OutMsg::Waiting(w))) => return Ok(Admission::Waiting(w)),
                    Ok(Some(OutMsg::Closed(c))) => return Err(closed(c)),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(ClientError::ConnectionLost),
                    Err(_) => return Err(ClientError::Timeout("the node's answer to join")),
                }
            }
        };
        let admission = match answer.await {
            Ok(a) => a,
            Err(e) => {
                // Nothing may keep this connection alive once we give up
                // on it: the receive reports would, and a node that let us
                // in late would then count a participant nobody is.
                for t in &tasks {
                    t.abort();
                }
                conn.close(0u32.into(), b"join abandoned");
                return Err(e);
            }
        };
        Ok(Participant {
            participant_id: token.participant_id,
            role: token.role(),
            node_id: token.node_id,
            node_address: address,
            admission,
            stats,
            conn,
            endpoint,
            control: ctl_tx,
            events: ev_rx,
            tasks,
        })
    }

    /// Why the node closed the connection, once it has.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.conn.close_reason()
    }

    pub fn is_admitted(&self) -> bool {
        matches!(self.admission, Admission::Joined(_))
    }

    pub async fn send(&self, m: In) -> Result<(), ClientError> {
        self.control
            .send(pb::ClientMessage { msg: Some(m) })
            .await
            .map_err(|_| ClientError::Closed("control stream ended".into()))
    }

    /// Waits for an event matching `pred`, skipping others.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&OutMsg) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(m)) => {
                    if let Some(t) = pred(&m) {
                        return Ok(t);
                    }
                    if let OutMsg::Closed(c) = m {
                        return Err(closed(c));
                    }
                }
                Ok(None) => return Err(ClientError::ConnectionLost),
                Err(_) => return Err(ClientError::Timeout("an event")),
            }
        }
    }

    /// Waits until admitted (from the waiting room).
    pub async fn wait_admitted(&mut self, timeout: Duration) -> Result<(), ClientError> {
        if self.is_admitted() {
            return Ok(());
        }
        let j = self
            .wait_for(timeout, |m| match m {
                OutMsg::Joined(j) => Some(j.clone()),
                _ => None,
            })
            .await?;
        self.admission = Admission::Joined(j);
        Ok(())
    }

    /// Publishes a track and returns its id.
    pub async fn publish(&mut self, kind: pb::TrackKind) -> Result<u32, ClientError> {
        self.send(In::Publish(pb::Publish { kind: kind as i32 }))
            .await?;
        let me = self.participant_id;
        self.wait_for(Duration::from_secs(10), |m| match m {
            OutMsg::TrackPublished(t) if t.participant_id == me && t.kind() == kind => {
                Some(Ok(t.track_id))
            }
            OutMsg::Refused(r) if r.action == "publish" => Some(Err(r.reason.clone())),
            _ => None,
        })
        .await?
        .map_err(ClientError::Closed)
    }

    /// Sends a synthetic stream on `track` until the returned task is
    /// aborted or the connection closes.
    pub fn send_stream(&self, track: u32, profile: StreamProfile) -> JoinHandle<()> {
        let conn = self.conn.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let max = conn.max_datagram_size().unwrap_or(1200).min(1200);
            let mut s = StreamSender::new(track, profile, max);
            let mut tick = tokio::time::interval(s.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                for d in s.next_frame() {
                    match conn.send_datagram(d) {
                        Ok(()) => stats
                            .sent_datagrams
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        Err(quinn::SendDatagramError::ConnectionLost(_)) => return,
                        Err(_) => stats
                            .send_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    };
                }
            }
        })
    }

    /// Sends `len`-byte datagrams on `track` as fast as the connection's
    /// congestion control allows, for `duration`; returns how many went out.
    /// For forwarding benchmarks.
    pub async fn send_flood(&self, track: u32, len: usize, duration: Duration) -> u64 {
        let mut b = bytes::BytesMut::with_capacity(len.max(wire::HEADER_LEN));
        let mut header = wire::MediaHeader {
            flags: 0,
            frag_index: 0,
            frag_count: 1,
            track,
            seq: 0,
            timestamp: 0,
        };
        wait_for_datagram_size(&self.conn, len).await;
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        while Instant::now() < deadline {
            b.clear();
            header.write(&mut b);
            b.resize(len.max(wire::HEADER_LEN), 0xab);
            header.seq = header.seq.wrapping_add(1);
            if self
                .conn
                .send_datagram_wait(b.split().freeze())
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        sent
    }

    /// Sends `pps` single-datagram frames of `len` bytes per second on
    /// `track` for `duration`, paced in 1 ms bursts; the payloads carry send
    /// times, so receivers measure latency. Returns how many went out.
    pub async fn send_paced(&self, track: u32, len: usize, pps: u32, duration: Duration) -> u64 {
        send_paced(&self.conn, &self.stats, track, len, pps, duration).await
    }

    /// Sends raw bytes as one datagram (for tests of malformed input).
    pub fn send_raw_datagram(&self, d: Bytes) -> bool {
        self.conn.send_datagram(d).is_ok()
    }

    /// Publishes audio and video, unmutes, and starts sending both.
    pub async fn start_media(&mut self) -> Result<Vec<JoinHandle<()>>, ClientError> {
        let audio = self.publish(pb::TrackKind::Audio).await?;
        let video = self.publish(pb::TrackKind::Video).await?;
        self.send(In::SetMuted(pb::SetMuted {
            participant_id: 0,
            muted: false,
        }))
        .await?;
        Ok(vec![
            self.send_stream(audio, StreamProfile::audio()),
            self.send_stream(video, StreamProfile::video()),
        ])
    }

    /// Leaves cleanly (a host hands over first if anyone is left).
    pub async fn leave(mut self) {
        let _ = self.send(In::Leave(pb::Leave {})).await;
        let _ = self
            .wait_for(Duration::from_secs(2), |m| match m {
                OutMsg::Refused(r) if r.action == "leave" => Some(()),
                _ => None,
            })
            .await;
        self.close();
    }

    /// Drops the connection without a word (like a crashed client).
    pub fn close(self) {
        // Drop does the rest.
        let endpoint = self.endpoint.clone();
        drop(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        });
    }
}

/// A participant dropped anywhere (a session aborted mid-join, a test that
/// forgets it) takes its tasks and connection along: nothing it spawned
/// may keep the node counting someone who is gone.
impl Drop for Participant {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"bye");
        for t in &self.tasks {
            t.abort();
        }
    }
}
