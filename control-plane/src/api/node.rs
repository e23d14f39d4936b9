use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use fjord_proto::v1 as pb;
use fjord_proto::v1::node_service_server::NodeService;

use super::authz::{authorize, Grant, Rpc};
use super::{convert, finish, validate, ApiError, SigningKeys};
use crate::access::JOIN_TOKEN_TTL_MS;
use crate::raft::{now_ms, Replica};
use crate::state::{
    ClusterState, Command, Heartbeat, LedgerCommand, MeetingState, NodeCommand, NodeState, Output,
    Query, QueryOutput, RecordUsage, RegisterNode, SessionEnd, SetNodeDraining, UsageEvent,
    UsageEventKind, MAX_USAGE_EVENTS_PER_REPORT,
};

pub struct NodeApi {
    replica: Arc<Replica>,
    keys: Arc<SigningKeys>,
    heartbeat_interval: Duration,
    lease: Duration,
    /// The newest heartbeat stream per node identity: a node opening a new
    /// stream (reconnecting) ends its older ones on this replica, so one
    /// identity never holds more than one.
    streams: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

/// Largest node certificate accepted (DER).
const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

impl NodeApi {
    pub fn new(
        replica: Arc<Replica>,
        keys: Arc<SigningKeys>,
        heartbeat_interval: Duration,
        lease: Duration,
    ) -> Self {
        NodeApi {
            replica,
            keys,
            heartbeat_interval,
            lease,
            streams: Default::default(),
        }
    }

    /// Heartbeats are soft state: a replica commits a summary for a node at
    /// most once per third of the lease, whatever the load figures do, so
    /// a node beating every 500 ms costs the Raft log a write every 500 ms
    /// at most (and flapping load figures cost nothing more).
    fn commit_interval(&self) -> Duration {
        self.lease / 3
    }

    async fn register(
        &self,
        r: pb::RegisterNodeRequest,
    ) -> Result<pb::RegisterNodeResponse, ApiError> {
        validate::name("id", &r.id)?;
        validate::name("region", &r.region)?;
        validate::address("address", &r.address)?;
        validate::range_u32("capacity", r.capacity, 1, validate::MAX_CAPACITY)?;
        if r.certificate.len() > MAX_CERTIFICATE_LEN {
            return Err(ApiError::invalid(
                "certificate",
                format!("larger than {MAX_CERTIFICATE_LEN} bytes"),
            ));
        }
        let signer = self.keys.signer().await?;
        let out = self
            .replica
            .write(Command::Node(NodeCommand::Register(RegisterNode {
                id: r.id,
                region: r.region,
                address: r.address,
                capacity: r.capacity,
                certificate: r.certificate,
                boot: r.boot,
            })))
            .await?;
        match out {
            Output::Node(n) => Ok(pb::RegisterNodeResponse {
                usage_acked_seq: self.replica.local_state(|s| s.ledger.acked_seq(&n.id)),
                node: Some(convert::node(&n)),
                heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
                lease_ms: self.lease.as_millis() as u64,
                join_public_key: signer.public_key(),
            }),
            other => unreachable!("register answered {other:?}"),
        }
    }

    /// Commits a batch of the node's usage events; answers the ledger's
    /// high-water mark for the node.
    async fn report_usage(
        &self,
        node: String,
        r: pb::ReportUsageRequest,
    ) -> Result<pb::ReportUsageResponse, ApiError> {
        if r.events.len() > MAX_USAGE_EVENTS_PER_REPORT {
            return Err(ApiError::invalid(
                "events",
                format!("at most {MAX_USAGE_EVENTS_PER_REPORT} per report"),
            ));
        }
        let mut events = Vec::with_capacity(r.events.len());
        for e in r.events {
            let kind = match pb::UsageKind::try_from(e.kind) {
                Ok(pb::UsageKind::Joined) => UsageEventKind::Joined,
                Ok(pb::UsageKind::Left) => UsageEventKind::Left,
                Ok(pb::UsageKind::Quality) => UsageEventKind::Quality,
                Ok(pb::UsageKind::JoinAttempt) => UsageEventKind::JoinAttempt,
                _ => {
                    return Err(ApiError::invalid(
                        "events.kind",
                        "joined, left, quality or join_attempt",
                    ))
                }
            };
            if e.seq == 0 || e.meeting_id == 0 || e.reason.len() > 32 {
                return Err(ApiError::invalid(
                    "events",
                    "seq and meeting_id are 1 or more; a reason is at most 32 bytes",
                ));
            }
            events.push(UsageEvent {
                seq: e.seq,
                boot: e.boot,
                at_ms: e.at_ms,
                meeting: e.meeting_id,
                participant: e.participant_id,
                kind,
                features: e.features,
                reason: SessionEnd::parse(&e.reason),
                minutes: e.minutes,
                good_minutes: e.good_minutes,
                join_ok: e.join_ok,
                join_latency_ms: e.join_latency_ms,
            });
        }
        if events.is_empty() {
            return Ok(pb::ReportUsageResponse {
                acked_seq: self.replica.local_state(|s| s.ledger.acked_seq(&node)),
            });
        }
        metrics::counter!("fjord_usage_events_received_total").increment(events.len() as u64);
        match self
            .replica
            .write(Command::Ledger(LedgerCommand::Record(RecordUsage {
                node,
                events,
            })))
            .await?
        {
            Output::UsageAcked { acked_seq } => Ok(pb::ReportUsageResponse { acked_seq }),
            other => unreachable!("report usage answered {other:?}"),
        }
    }

    async fn drain(&self, r: pb::DrainNodeRequest) -> Result<pb::DrainNodeResponse, ApiError> {
        validate::name("id", &r.id)?;
        let out = self
            .replica
            .write(Command::Node(NodeCommand::SetDraining(SetNodeDraining {
                id: r.id,
                draining: !r.undo,
                evacuate: r.evacuate && !r.undo,
            })))
            .await?;
        match out {
            Output::Node(n) => Ok(pb::DrainNodeResponse {
                node: Some(convert::node(&n)),
                moved: Vec::new(),
                kept: Vec::new(),
            }),
            Output::Evacuated { node, moved, kept } => Ok(pb::DrainNodeResponse {
                node: Some(convert::node(&node)),
                moved,
                kept,
            }),
            other => unreachable!("drain answered {other:?}"),
        }
    }

    async fn get(&self, id: String) -> Result<pb::GetNodeResponse, ApiError> {
        validate::name("id", &id)?;
        match self.replica.read(Query::Node { id }).await? {
            QueryOutput::Node(n) => Ok(pb::GetNodeResponse {
                node: Some(convert::node(&n)),
            }),
            other => unreachable!("node query answered {other:?}"),
        }
    }

    async fn list(&self) -> Result<pb::ListNodesResponse, ApiError> {
        match self.replica.read(Query::Nodes).await? {
            QueryOutput::Nodes(v) => Ok(pb::ListNodesResponse {
                nodes: v.iter().map(convert::node).collect(),
            }),
            other => unreachable!("nodes query answered {other:?}"),
        }
    }
}

/// How much later than the beats before it a beat may be read and still
/// count as a sign of life now (a busy replica reads late too).
const STALE_BEAT_MS: u64 = 1_000;
/// Late beats that keep coming for this long are not a backlog (one
/// drains in a burst) but a node whose clock stepped back: the stream's
/// reckoning starts again from them.
const STALE_RUN_MS: u64 = 2 * STALE_BEAT_MS;

/// When a node sent its beats, on this replica's clock. The node stamps
/// each beat with its own clock; the smallest difference between reading
/// and sending seen on the stream is the delivery delay plus the clocks'
/// offset, so a beat's `sent_at_ms` plus that minimum is when it was sent
/// here, whatever the two clocks say. A replica paused or stalled (SIGSTOP,
/// a long GC-like stall, a full run queue) reads the beats that waited in
/// its socket late: they are evidence of when the node was alive, never of
/// life at the time they were read (found by the chaos runs: a dead node's
/// sessions were billed for as long as the replica that held its stream
/// was paused). The stream's last word, when it breaks, carries when the
/// last beat was sent. A node clock stepped back (an NTP correction) makes
/// its beats look late too, but they keep coming at the node's pace
/// instead of in a burst: after [`STALE_RUN_MS`] of them the reckoning
/// starts again, so such a node is never taken for dead.
#[derive(Debug, Default)]
struct BeatClock {
    min_offset_ms: Option<i64>,
    /// When the current run of late beats began to be read.
    late_since_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BeatSent {
    /// When the node sent the beat, on this replica's clock.
    at_ms: u64,
    /// Read more than [`STALE_BEAT_MS`] after it was sent.
    stale: bool,
}

impl BeatClock {
    fn observe(&mut self, read_ms: u64, sent_at_ms: u64) -> BeatSent {
        if sent_at_ms == 0 {
            // An older node: reading is all there is to go by.
            return BeatSent {
                at_ms: read_ms,
                stale: false,
            };
        }
        let offset = read_ms as i64 - sent_at_ms as i64;
        let mut min = self.min_offset_ms.map_or(offset, |m| m.min(offset));
        let late = |min: i64| {
            let at_ms = (sent_at_ms as i64)
                .saturating_add(min)
                .clamp(0, read_ms as i64) as u64;
            (at_ms, read_ms - at_ms > STALE_BEAT_MS)
        };
        let (mut at_ms, mut stale) = late(min);
        if stale {
            let since = *self.late_since_ms.get_or_insert(read_ms);
            if read_ms.saturating_sub(since) > STALE_RUN_MS {
                min = offset;
                (at_ms, stale) = late(min);
            }
        }
        if !stale {
            self.late_since_ms = None;
        }
        self.min_offset_ms = Some(min);
        BeatSent { at_ms, stale }
    }
}

/// One heartbeat: validate, commit a summary when due, answer the node's state.
#[allow(clippy::too_many_arguments)]
async fn beat(
    replica: &Replica,
    keys: &SigningKeys,
    hb: pb::HeartbeatRequest,
    sent: BeatSent,
    last: &mut Option<(Instant, u32)>,
    last_committed_ms: &mut u64,
    commit_interval: Duration,
) -> Result<pb::HeartbeatResponse, ApiError> {
    validate::name("node_id", &hb.node_id)?;
    validate::range_u32("cpu_permille", hb.cpu_permille, 0, 1000)?;
    if hb.rooms.len() > 100_000 {
        return Err(ApiError::invalid("rooms", "more than 100000 rooms"));
    }
    let due = match last {
        None => true,
        Some((at, _)) => at.elapsed() >= commit_interval,
    };
    let state = if sent.stale {
        // Not life now: it neither revives a node declared down nor
        // reports load. Answered from the local state without a write, so
        // a backlog of late beats drains at once instead of growing (each
        // write would make the next beats later still); when the beat was
        // sent is kept for the stream's last word.
        metrics::counter!("fjord_heartbeats_stale_total").increment(1);
        replica
            .local_state(|s| s.nodes.get(&hb.node_id).map(|n| n.state))
            .unwrap_or(NodeState::Ready)
    } else if due {
        let out = replica
            .write(Command::Node(NodeCommand::Heartbeat(Heartbeat {
                id: hb.node_id.clone(),
                participants: hb.participants,
                seen_ms: None,
                sent_ms: Some(sent.at_ms),
            })))
            .await?;
        *last = Some((Instant::now(), hb.participants));
        *last_committed_ms = now_ms();
        match out {
            Output::Node(n) => n.state,
            other => unreachable!("heartbeat answered {other:?}"),
        }
    } else {
        replica
            .local_state(|s| s.nodes.get(&hb.node_id).map(|n| n.state))
            .unwrap_or(NodeState::Ready)
    };
    let mut answer = replica.local_state(|s| placement_for(s, &hb.node_id, &hb.rooms));
    answer.state = convert::node_state(state) as i32;
    // Only a node with cascade peers dials links; the others need no token
    // (and the control plane no signature per beat for them).
    if !answer.peers.is_empty() {
        let now = now_ms();
        answer.link_token = keys.signer().await?.sign(&pb::JoinClaims {
            meeting_id: 0,
            participant_id: 0,
            role: pb::Role::Node as i32,
            node_id: hb.node_id.clone(),
            display_name: String::new(),
            issued_at_ms: now,
            expires_at_ms: now + JOIN_TOKEN_TTL_MS,
            settings: None,
            ..Default::default()
        });
    }
    Ok(answer)
}

/// What a node carries: its meetings, the peers each is cascaded with,
/// how to reach those peers, and which of its open rooms moved away.
fn placement_for(s: &ClusterState, node_id: &str, rooms: &[u64]) -> pb::HeartbeatResponse {
    let Some(node) = s.nodes.get(node_id) else {
        return pb::HeartbeatResponse::default();
    };
    let mut peers = std::collections::BTreeSet::new();
    let assignments: Vec<pb::MeetingAssignment> = node
        .reservations
        .keys()
        .map(|id| {
            let peer_node_ids: Vec<String> = s.meetings.get(id).map_or(Vec::new(), |m| {
                m.shares
                    .iter()
                    .filter(|sh| sh.node != node_id)
                    .map(|sh| sh.node.clone())
                    .collect()
            });
            peers.extend(peer_node_ids.iter().cloned());
            pb::MeetingAssignment {
                meeting_id: *id,
                peer_node_ids,
            }
        })
        .collect();
    let moved = rooms
        .iter()
        .copied()
        .filter(|id| !node.reservations.contains_key(id))
        .filter(|id| {
            s.meetings
                .get(id)
                .is_some_and(|m| m.state != MeetingState::Ended)
        })
        .collect();
    pb::HeartbeatResponse {
        state: 0,
        meetings: node.reservations.keys().copied().collect(),
        assignments,
        peers: peers
            .iter()
            .filter_map(|p| s.nodes.get(p))
            .map(|p| pb::PeerNode {
                id: p.id.clone(),
                address: p.address.clone(),
                certificate: p.certificate.clone(),
            })
            .collect(),
        moved,
        link_token: Vec::new(),
    }
}

type HeartbeatStream = Pin<Box<dyn Stream<Item = Result<pb::HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::RegisterNode)?;
            let mut r = req.into_inner();
            // The node id is the one in the certificate, never the request's.
            r.id = caller.own_node(&r.id)?;
            self.register(r).await
        };
        finish("register_node", r.await).map(Response::new)
    }

    async fn report_usage(
        &self,
        req: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::ReportUsage)?;
            let r = req.into_inner();
            let node = caller.own_node(&r.node_id)?;
            self.report_usage(node, r).await
        };
        finish("report_usage", r.await).map(Response::new)
    }

    type HeartbeatStream = HeartbeatStream;

    async fn heartbeat(
        &self,
        req: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<HeartbeatStream>, Status> {
        let caller = finish("heartbeat", authorize(&req, Rpc::Heartbeat))?;
        let node_id = finish("heartbeat", caller.own_node(""))?;
        let generation = {
            let mut streams = self.streams.lock().expect("streams lock");
            let g = streams.get(&node_id).map_or(1, |g| g + 1);
            streams.insert(node_id.clone(), g);
            g
        };
        let streams = self.streams.clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let replica = self.replica.clone();
        let keys = self.keys.clone();
        let commit_interval = self.commit_interval();
        tokio::spawn(async move {
            let mut last = None;
            let mut last_committed_ms = 0u64;
            // When this stream last heard the node, if later than the last
            // summary committed.
            let mut heard: Option<u64> = None;
            let mut clock = BeatClock::default();
            while let Some(msg) = inbound.next().await {
                let Ok(hb) = msg else { break };
                let sent = clock.observe(now_ms(), hb.sent_at_ms);
                heard = Some(sent.at_ms);
                let superseded = streams
                    .lock()
                    .expect("streams lock")
                    .get(&node_id)
                    .is_some_and(|g| *g != generation);
                if superseded {
                    metrics::counter!("fjord_heartbeat_streams_superseded_total").increment(1);
                    let _ = tx
                        .send(Err(Status::aborted(
                            "a newer heartbeat stream of this node replaced this one",
                        )))
                        .await;
                    break;
                }
                let r = match caller.own_node(&hb.node_id) {
                    Ok(_) => {
                        let hb = pb::HeartbeatRequest {
                            node_id: node_id.clone(),
                            ..hb
                        };
                        beat(
                            &replica,
                            &keys,
                            hb,
                            sent,
                            &mut last,
                            &mut last_committed_ms,
                            commit_interval,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                let r = finish("heartbeat", r);
                let stop = r.is_err();
                if tx.send(r).await.is_err() || stop {
                    break;
                }
            }
            // The stream broke (a node that died closes it at once): the
            // ledger closes a dead node's sessions at its last heartbeat,
            // so commit when it was last heard, not a commit interval ago.
            if let (Some(seen), Some((_, participants))) = (heard, last) {
                if seen > last_committed_ms {
                    let _ = replica
                        .write(Command::Node(NodeCommand::Heartbeat(Heartbeat {
                            id: node_id.clone(),
                            participants,
                            seen_ms: Some(seen),
                            sent_ms: None,
                        })))
                        .await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::DrainNode)?;
            let r = req.into_inner();
            if caller.grant == Grant::OwnNode {
                // A node drains itself (it never puts itself back in
                // service: that is an operator's call).
                caller.own_node(&r.id)?;
                if r.undo {
                    return Err(ApiError::invalid(
                        "undo",
                        "a node may drain itself, not undrain",
                    ));
                }
            }
            self.drain(r).await
        };
        finish("drain_node", r.await).map(Response::new)
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::GetNode)?;
            let id = req.into_inner().id;
            if caller.grant == Grant::OwnNode {
                caller.own_node(&id)?;
            }
            self.get(id).await
        };
        finish("get_node", r.await).map(Response::new)
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::ListNodes)?;
            self.list().await
        };
        finish("list_nodes", r.await).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_read_on_time_are_life_now_whatever_the_node_s_clock_says() {
        // The node's clock is 7 s behind this replica's; beats take 5 ms.
        let mut clock = BeatClock::default();
        for i in 0..5u64 {
            let read = 100_000 + i * 500;
            let sent = clock.observe(read, read - 7_000 - 5);
            assert_eq!(
                sent,
                BeatSent {
                    at_ms: read,
                    stale: false
                }
            );
        }
        // Ahead by an hour: the same.
        let mut clock = BeatClock::default();
        let sent = clock.observe(100_000, 3_700_000);
        assert_eq!(
            sent,
            BeatSent {
                at_ms: 100_000,
                stale: false
            }
        );
        assert!(!clock.observe(100_500, 3_700_500).stale);
    }

    #[test]
    fn beats_read_after_a_pause_count_from_when_they_were_sent() {
        let mut clock = BeatClock::default();
        assert!(!clock.observe(10_000, 9_990).stale);
        assert!(!clock.observe(10_500, 10_490).stale);
        // The replica was paused from 10.6 s to 14.9 s: two beats waited.
        let first = clock.observe(14_900, 10_990);
        assert_eq!(
            first,
            BeatSent {
                at_ms: 11_000,
                stale: true
            }
        );
        let second = clock.observe(14_901, 11_490);
        assert_eq!(
            second,
            BeatSent {
                at_ms: 11_500,
                stale: true
            }
        );
        // And then on time again.
        assert!(!clock.observe(15_000, 14_990).stale);
    }

    #[test]
    fn a_node_clock_stepped_back_is_late_for_a_moment_then_on_time_again() {
        let mut clock = BeatClock::default();
        for i in 0..4u64 {
            assert!(!clock.observe(10_000 + i * 500, 9_995 + i * 500).stale);
        }
        // From 12,000 on the node's clock runs 5 s behind; beats keep
        // coming every 500 ms.
        let mut stale_for = 0;
        for i in 4..12u64 {
            let read = 10_000 + i * 500;
            if clock.observe(read, read - 5 - 5_000).stale {
                stale_for += 500;
            }
        }
        assert!(
            (1..=STALE_RUN_MS + 500).contains(&stale_for),
            "late for {stale_for} ms"
        );
        assert_eq!(
            clock.observe(16_000, 10_995),
            BeatSent {
                at_ms: 16_000,
                stale: false
            }
        );
    }

    #[test]
    fn beats_of_older_nodes_count_when_read() {
        let mut clock = BeatClock::default();
        assert_eq!(
            clock.observe(50_000, 0),
            BeatSent {
                at_ms: 50_000,
                stale: false
            }
        );
    }
}
