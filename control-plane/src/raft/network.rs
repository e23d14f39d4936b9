//! Replica-to-replica RPCs over gRPC with mutual TLS on the peer port.
//! openraft's messages travel in the binary codec inside a `RaftPayload`
//! (snapshot bytes beside it, as bytes); the channel to each peer is created
//! lazily and reused, and a peer that cannot be reached is reported
//! `Unreachable` so openraft backs off instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use fjord_common::grpc::{tls_channel, ChannelError, ChannelOptions};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::codec;

use fjord_proto::v1::raft_service_client::RaftServiceClient;
use fjord_proto::v1::RaftPayload;

use super::{NodeId, TypeConfig, PEER_MESSAGE_LIMIT};

/// A peer client with explicit message limits both ways.
pub(crate) fn peer_client(channel: Channel) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(channel)
        .max_decoding_message_size(PEER_MESSAGE_LIMIT)
        .max_encoding_message_size(PEER_MESSAGE_LIMIT)
}

/// A lazily connecting mutual-TLS channel to a peer's `addr` (host:port),
/// which must present a replica certificate.
pub(crate) fn channel(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Channel, ChannelError> {
    tls_channel(
        addr,
        tls.clone(),
        ChannelOptions {
            connect_timeout: Duration::from_millis(500),
            call_timeout: None,
            keep_alive: Some(Duration::from_secs(5)),
            server_role: fjord_common::Role::Replica,
            local_address: None,
        },
    )
}

/// Opens peer connections with this replica's certificate.
#[derive(Clone)]
pub struct Network {
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            client: channel(&node.addr, &self.tls).ok().map(peer_client),
            failing: false,
        }
    }
}

pub struct Connection {
    target: NodeId,
    client: Option<RaftServiceClient<Channel>>,
    /// The last append or snapshot RPC to this peer failed: the next
    /// failure logs at debug, the next success says the peer is back.
    failing: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WireError(String);

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        chunk: Vec<u8>,
        option: &RPCOption,
        method: Method,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(Unreachable::new(&WireError("bad peer address".into())).into());
        };
        let data = codec::encode(req).map_err(|e| NetworkError::new(&e))?;
        let mut request = tonic::Request::new(RaftPayload { data, chunk });
        // A vote's deadline falls before openraft's own (three quarters of
        // it), so a late peer ends here as "not granted", not as openraft's
        // timeout error.
        request.set_timeout(match method {
            Method::Vote => option.soft_ttl(),
            _ => option.hard_ttl(),
        });
        let fut = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let rpc = match method {
            Method::Append => "append_entries",
            Method::Vote => "vote",
            Method::Snapshot => "install_snapshot",
        };
        if fut.is_err() {
            metrics::counter!("fjord_raft_peer_rpc_errors_total", "rpc" => rpc).increment(1);
        }
        // openraft logs every failed replication RPC at ERROR (and the same
        // at WARN just before); a peer restarting or a late answer on a
        // loaded machine is not an error. The process filters openraft's
        // duplicate out and says it here, once per outage. (Votes have
        // their own answer below.)
        if !matches!(method, Method::Vote) {
            match (&fut, self.failing) {
                (Err(status), false) => {
                    tracing::warn!(peer = self.target, rpc, code = ?status.code(), message = status.message(), "peer RPC failed; replication retries")
                }
                (Err(status), true) => {
                    tracing::debug!(peer = self.target, rpc, code = ?status.code(), "peer RPC failed again")
                }
                (Ok(_), true) => tracing::info!(peer = self.target, rpc, "peer answers again"),
                (Ok(_), false) => {}
            }
            self.failing = fut.is_err();
        }
        let reply = fut.map_err(|status| match status.code() {
            // Slow, not gone (a big batch on a busy machine): openraft
            // retries at once rather than backing off for half a second.
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Network(NetworkError::new(&WireError(status.message().to_string())))
            }
            // A peer that is down, restarting or unreachable: back off.
            _ => Unreachable::new(&WireError(status.message().to_string())).into(),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&reply.into_inner().data).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| RemoteError::new(self.target, e).into())
    }
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, Vec::new(), &option, Method::Append).await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let chunk = std::mem::take(&mut rpc.data);
        self.call(&rpc, chunk, &option, Method::Snapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let vote = rpc.vote;
        match self.call(&rpc, Vec::new(), &option, Method::Vote).await {
            // A peer that is down or not yet started cannot grant a vote:
            // answer "not granted" (exactly what a lost request amounts to)
            // instead of an error, which openraft logs at ERROR on every
            // start and every failover.
            // So is a peer that answers too late.
            Err(e @ (RPCError::Unreachable(_) | RPCError::Network(_))) => {
                tracing::debug!(target = self.target, error = %e, "vote request: no answer");
                metrics::counter!("fjord_raft_peer_unreachable_total", "rpc" => "vote")
                    .increment(1);
                Ok(VoteResponse::new(vote, None, false))
            }
            other => other,
        }
    }
}
