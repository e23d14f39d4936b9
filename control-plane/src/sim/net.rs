//! The simulated network between replicas: every RPC is encoded with the
//! replicas' binary codec, delayed by a seeded latency, and delivered to
//! the target's `Raft` handle only if the link (in each direction) is up
//! and the target is running; a lost request or answer is `Unreachable`,
//! as the gRPC network reports it. Nothing here reads a real clock or an
//! unseeded random number, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::placement::SplitMix64;
use crate::raft::{codec, NodeId, Raft, TypeConfig};

/// What the network does to messages right now.
pub(super) struct Fabric {
    /// The running replicas (a crashed one is absent).
    pub running: BTreeMap<NodeId, Raft>,
    /// Links that drop everything, one way: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Chance in 1000 that any one message is lost.
    pub loss_permille: u64,
    /// One-way latency, uniformly in `latency_ms.0..=latency_ms.1`.
    pub latency_ms: (u64, u64),
    /// Paused replicas (SIGSTOP) and when each resumes (simulated ms):
    /// messages to and from one wait in the socket buffers until then.
    pub frozen: BTreeMap<NodeId, u64>,
    /// When each replica last took an append from a leader (simulated ms),
    /// for the election driver.
    pub last_contact: BTreeMap<NodeId, u64>,
    pub rng: SplitMix64,
    pub delivered: u64,
    pub dropped: u64,
}

impl Fabric {
    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.latency_ms;
        Duration::from_millis(lo + self.rng.next_u64() % (hi - lo + 1))
    }

    /// Until when a message between `from` and `to` must wait because one
    /// of them is paused at `now`.
    fn held_until(&self, from: NodeId, to: NodeId, now: u64) -> Option<u64> {
        [from, to]
            .iter()
            .filter_map(|id| self.frozen.get(id).copied())
            .filter(|until| *until > now)
            .max()
    }

    /// Whether a message from `from` to `to` gets through now.
    fn passes(&mut self, from: NodeId, to: NodeId) -> bool {
        let lost = self.rng.next_u64() % 1000 < self.loss_permille;
        let ok = !lost && !self.cut.contains(&(from, to)) && self.running.contains_key(&to);
        if ok {
            self.delivered += 1;
        } else {
            self.dropped += 1;
        }
        ok
    }
}

pub(super) type SharedFabric = Arc<Mutex<Fabric>>;

/// The simulated network as one replica sees it.
#[derive(Clone)]
pub struct SimNetwork {
    pub(super) from: NodeId,
    pub(super) fabric: SharedFabric,
    /// Simulated milliseconds since the start, shared with the driver.
    pub(super) clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> SimConnection {
        SimConnection {
            net: self.clone(),
            target,
        }
    }
}

pub struct SimConnection {
    net: SimNetwork,
    target: NodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimWireError(&'static str);

/// Encodes and decodes like the wire does, so the codec is exercised.
fn through_codec<T: Serialize + DeserializeOwned>(value: &T) -> Result<T, NetworkError> {
    let bytes = codec::encode(value).map_err(|e| NetworkError::new(&e))?;
    codec::decode(&bytes).map_err(|e| NetworkError::new(&e))
}

impl SimConnection {
    /// Delivers a request after a latency if the link and the target allow,
    /// and its answer back the same way.
    async fn deliver<Req, Resp, E, F, Fut>(
        &mut self,
        req: Req,
        call: F,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize + DeserializeOwned + Send + 'static,
        Resp: Serialize + DeserializeOwned + Send + 'static,
        E: std::error::Error + Send + 'static,
        F: FnOnce(Raft, Req) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>> + Send + 'static,
    {
        let (from, to) = (self.net.from, self.target);
        let req = through_codec(&req)?;
        let now = (self.net.clock)();
        let (latency, held) = {
            let mut f = self.net.fabric.lock().expect("fabric lock");
            (f.latency(), f.held_until(from, to, now))
        };
        let answer = match held {
            None => {
                tokio::time::sleep(latency).await;
                let target = {
                    let mut f = self.net.fabric.lock().expect("fabric lock");
                    if !f.passes(from, to) {
                        return Err(Unreachable::new(&SimWireError("request lost")).into());
                    }
                    f.running.get(&to).cloned().expect("passes checks it runs")
                };
                call(target, req).await
            }
            // One end is paused: the request waits in a socket buffer and
            // is handled when the process resumes, even if its sender has
            // given up by then (a stale message, as SIGCONT delivers it).
            Some(until) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let fabric = self.net.fabric.clone();
                tokio::spawn(async move {
                    let wait = Duration::from_millis(until - now) + latency;
                    tokio::time::sleep(wait).await;
                    let target = {
                        let mut f = fabric.lock().expect("fabric lock");
                        if !f.passes(from, to) {
                            return;
                        }
                        f.running.get(&to).cloned().expect("passes checks it runs")
                    };
                    let _ = tx.send(call(target, req).await);
                });
                match rx.await {
                    Ok(answer) => answer,
                    Err(_) => return Err(Unreachable::new(&SimWireError("request lost")).into()),
                }
            }
        };
        let latency = self.net.fabric.lock().expect("fabric lock").latency();
        tokio::time::sleep(latency).await;
        if !self
            .net
            .fabric
            .lock()
            .expect("fabric lock")
            .passes(to, from)
        {
            return Err(Unreachable::new(&SimWireError("answer lost")).into());
        }
        match answer {
            Ok(r) => Ok(through_codec(&r)?),
            Err(e) => Err(openraft::error::RemoteError::new(to, e).into()),
        }
    }
}

impl SimConnection {
    /// `to` took an append or a snapshot from a leader: the election
    /// driver leaves it alone for a while.
    fn heard_from_leader(&self, to: NodeId) {
        let now = (self.net.clock)();
        self.net
            .fabric
            .lock()
            .expect("fabric lock")
            .last_contact
            .insert(to, now);
    }
}

impl RaftNetwork<TypeConfig> for SimConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let to = self.target;
        let r = self
            .deliver(
                rpc,
                |raft, rpc| async move { raft.append_entries(rpc).await },
            )
            .await;
        if matches!(&r, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
            self.heard_from_leader(to);
        }
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let to = self.target;
        let r = self
            .deliver(
                rpc,
                |raft, rpc| async move { raft.install_snapshot(rpc).await },
            )
            .await;
        if r.is_ok() {
            self.heard_from_leader(to);
        }
        r
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let vote = rpc.vote;
        match self
            .deliver(rpc, |raft, rpc| async move { raft.vote(rpc).await })
            .await
        {
            // As the gRPC network does: no answer is "not granted".
            Err(RPCError::Unreachable(_) | RPCError::Network(_)) => {
                Ok(VoteResponse::new(vote, None, false))
            }
            other => other,
        }
    }
}
