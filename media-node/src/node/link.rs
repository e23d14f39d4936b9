//! The transport side of cascade links: one QUIC connection per node pair,
//! dialled by the node with the lower id, proven by a control-plane token.
//!
//! After the hello, a link runs the same tasks as a participant connection
//! (control reader, writer, datagram loop); the core decides what crosses.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;

use fjord_proto::v1 as pb;

use super::{forward_datagrams, now_ms, write_control, ConnHandle, Shared, WRITER_QUEUE};
use crate::sfu::ConnId;
use crate::tls;
use crate::wire::{self, FrameError};

/// Gives up on a dial (the next heartbeat answer tries again).
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Links {
    node_id: String,
    endpoint: quinn::Endpoint,
    /// This node's cluster certificate, presented when dialling a link.
    own_cert: Arc<fjord_common::tls::OwnCert>,
    state: Mutex<LinksState>,
}

#[derive(Default)]
struct LinksState {
    /// The latest token proving this node to peers.
    token: Vec<u8>,
    up: HashMap<String, ConnId>,
    dialling: HashSet<String>,
}

impl Links {
    pub(super) fn new(
        node_id: String,
        endpoint: quinn::Endpoint,
        own_cert: Arc<fjord_common::tls::OwnCert>,
    ) -> Self {
        Links {
            node_id,
            endpoint,
            own_cert,
            state: Mutex::new(LinksState::default()),
        }
    }

    /// Peers with a link up.
    pub(super) fn up(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("links lock")
            .up
            .keys()
            .cloned()
            .collect()
    }
}

/// After each heartbeat answer: dial every peer an assigned meeting is
/// cascaded with, when this node is the one to dial and no link is up.
pub(super) fn reconcile(shared: &Arc<Shared>, peers: Vec<pb::PeerNode>, token: Vec<u8>) {
    let wanted = shared.sfu.write().expect("sfu lock").wanted_peers();
    let mut st = shared.links.state.lock().expect("links lock");
    if !token.is_empty() {
        st.token = token;
    }
    for peer in peers {
        let ours = shared.links.node_id < peer.id;
        if !ours
            || !wanted.contains(&peer.id)
            || st.up.contains_key(&peer.id)
            || !st.dialling.insert(peer.id.clone())
        {
            continue;
        }
        let shared = shared.clone();
        let token = st.token.clone();
        tokio::spawn(async move {
            let id = peer.id.clone();
            if let Err(e) = dial(shared.clone(), peer, token).await {
                tracing::warn!(peer = %id, error = %e, "cascade link dial failed");
                metrics::counter!("fjord_media_link_dial_failures_total").increment(1);
            }
            shared
                .links
                .state
                .lock()
                .expect("links lock")
                .dialling
                .remove(&id);
        });
    }
}

async fn dial(shared: Arc<Shared>, peer: pb::PeerNode, token: Vec<u8>) -> Result<(), String> {
    let addr: SocketAddr = tokio::net::lookup_host(&peer.address)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("bad peer address {:?}", peer.address))?;
    let config = tls::link_config(&peer.certificate, shared.links.own_cert.clone())
        .map_err(|e| e.to_string())?;
    let connecting = shared
        .links
        .endpoint
        .connect_with(config, addr, tls::SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = pb::LinkMessage {
        msg: Some(pb::link_message::Msg::Hello(pb::LinkHello {
            node_id: shared.links.node_id.clone(),
            token,
        })),
    };
    send.write_all(&wire::frame(&hello))
        .await
        .map_err(|e| e.to_string())?;
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    run_link(shared, conn, send, recv, id, peer.id).await;
    Ok(())
}

/// A peer dialled in: its first frame must be a valid hello.
pub(super) async fn serve_accepted(shared: Arc<Shared>, conn: quinn::Connection, id: ConnId) {
    let Ok(Ok((send, mut recv))) = tokio::time::timeout(DIAL_TIMEOUT, conn.accept_bi()).await
    else {
        conn.close(1u32.into(), b"no link stream");
        return;
    };
    let hello = match tokio::time::timeout(DIAL_TIMEOUT, wire::read_frame(&mut recv)).await {
        Ok(Ok(Some(f))) => pb::LinkMessage::decode(f.as_slice())
            .ok()
            .and_then(|m| m.msg),
        _ => None,
    };
    // The dialler's node certificate (verified against the cluster CA in
    // the handshake) must name the node its hello claims to be.
    let certified = conn
        .peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| {
            chain
                .first()
                .map(|c| fjord_common::Identity::from_certificate(c))
        });
    let verdict = match (hello, certified) {
        (Some(pb::link_message::Msg::Hello(h)), Some(Ok(fjord_common::Identity::Node { id })))
            if id == h.node_id =>
        {
            shared
                .sfu
                .read()
                .expect("sfu lock")
                .verify_link_hello(now_ms(), &h)
                .map_err(|e| e.to_string())
        }
        (Some(pb::link_message::Msg::Hello(_)), _) => {
            Err("the link needs the dialling node's own certificate".to_string())
        }
        _ => Err("expected a link hello".to_string()),
    };
    match verdict {
        Ok(peer) => run_link(shared, conn, send, recv, id, peer).await,
        Err(reason) => {
            shared
                .sfu
                .write()
                .expect("sfu lock")
                .malformed_link_control();
            tracing::warn!(remote = %conn.remote_address(), %reason, "cascade link refused");
            conn.close(3u32.into(), reason.as_bytes());
        }
    }
}

async fn run_link(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    id: ConnId,
    peer: String,
) {
    tracing::info!(%peer, conn = id, "cascade link up");
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    shared.writers.lock().expect("writers lock").insert(id, tx);
    let outs = shared.sfu.write().expect("sfu lock").connect_link(
        id,
        ConnHandle(conn.clone()),
        conn.remote_address().ip(),
        peer.clone(),
    );
    shared.dispatch(outs);
    let replaced = shared
        .links
        .state
        .lock()
        .expect("links lock")
        .up
        .insert(peer.clone(), id);
    if replaced.is_some() {
        tracing::debug!(%peer, "a newer link replaces the old one");
    }
    let writer = tokio::spawn(write_control(send, rx, conn.clone()));
    let datagrams = tokio::spawn(forward_datagrams(shared.clone(), conn.clone(), id));
    loop {
        match wire::read_frame(&mut recv).await {
            Ok(Some(bytes)) => {
                let outs = match pb::LinkMessage::decode(bytes.as_slice()) {
                    Ok(m) => shared.sfu.write().expect("sfu lock").link_control(id, m),
                    Err(_) => {
                        shared
                            .sfu
                            .write()
                            .expect("sfu lock")
                            .malformed_link_control();
                        Vec::new()
                    }
                };
                shared.dispatch(outs);
            }
            Ok(None) => break,
            Err(FrameError::TooLong(_)) => {
                shared
                    .sfu
                    .write()
                    .expect("sfu lock")
                    .malformed_link_control();
                conn.close(2u32.into(), b"link message too large");
                break;
            }
            Err(_) => break,
        }
    }
    tracing::info!(%peer, conn = id, "cascade link down");
    let outs = shared
        .sfu
        .write()
        .expect("sfu lock")
        .disconnect(now_ms(), id);
    shared.dispatch(outs);
    shared.writers.lock().expect("writers lock").remove(&id);
    {
        let mut st = shared.links.state.lock().expect("links lock");
        if st.up.get(&peer) == Some(&id) {
            st.up.remove(&peer);
        }
    }
    datagrams.abort();
    conn.close(0u32.into(), b"link closed");
    let _ = writer.await;
}
