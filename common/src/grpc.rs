//! gRPC over TLS with tonic, without tonic's own TLS features (which bring
//! other crypto providers): a listener that performs rustls handshakes and
//! hands tonic connections that know who is calling, and a channel whose
//! connector dials TCP, performs the handshake and checks the server's
//! identity.
//!
//! ```text
//!  TcpListener ─accept─> handshake task (bounded, timed) ─> TlsConn{PeerInfo} ─> tonic
//!  handler: caller(&request) -> Option<Identity>   (None: no client certificate)
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::{Identity, Role};

/// Who is on the other end of a server connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// From the verified client certificate; `None` without one.
    pub identity: Option<Identity>,
}

/// The caller of a request served over [`tls_incoming`].
pub fn peer_info<T>(req: &tonic::Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

/// A server-side TLS connection, with the caller's identity for tonic.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    /// Set when the server that accepted it stopped: the next read or
    /// write fails, so the connection closes instead of being served by a
    /// stopped server (connection tasks outlive the accept loop).
    server_stopped: Arc<AtomicBool>,
}

impl TlsConn {
    fn check_open(&self) -> io::Result<()> {
        if self.server_stopped.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server stopped",
            ));
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_open()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_open()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Bounds on connections that have not finished their handshake.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    pub timeout: Duration,
    /// Handshakes in progress at once; more are closed at accept.
    pub max_pending: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            timeout: Duration::from_secs(10),
            max_pending: 512,
        }
    }
}

fn refused(port: &'static str, reason: &'static str) {
    metrics::counter!("fjord_tls_handshake_failures_total", "port" => port, "reason" => reason)
        .increment(1);
}

/// Accepts TCP connections on `listener` and yields those whose TLS
/// handshake succeeds. Handshakes run concurrently (a slow client holds up
/// nobody) under `limits`. A client certificate that verifies but carries no
/// Fjord identity is refused. The accept task ends when the stream is
/// dropped (the server stopped), which closes the listener.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    port: &'static str,
    limits: HandshakeLimits,
) -> impl Stream<Item = Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel::<TlsConn>(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    let server_stopped = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => {
                    server_stopped.store(true, Ordering::Relaxed);
                    return;
                }
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                refused(port, "too_many_pending");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, server_stopped) =
                (acceptor.clone(), tx.clone(), server_stopped.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(limits.timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        refused(port, "handshake");
                        tracing::debug!(port, %remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        refused(port, "timeout");
                        return;
                    }
                };
                let identity = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => match Identity::from_certificate(leaf) {
                        Ok(id) => Some(id),
                        Err(e) => {
                            refused(port, "no_identity");
                            tracing::info!(port, %remote, error = %e, "client certificate refused");
                            return;
                        }
                    },
                    _ => None,
                };
                let _ = tx
                    .send(TlsConn {
                        stream,
                        info: PeerInfo { remote, identity },
                        server_stopped,
                    })
                    .await;
            });
        }
    });
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
}

/// Settings of a client channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    /// Deadline for every call on the channel (calls may set a shorter one).
    pub call_timeout: Option<Duration>,
    /// HTTP/2 keep-alive pings, so a dead peer is noticed on idle channels.
    pub keep_alive: Option<Duration>,
    /// The role the server's certificate must carry.
    pub server_role: Role,
    /// Source address to connect from (default: the system's choice).
    pub local_address: Option<std::net::IpAddr>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_millis(500),
            call_timeout: None,
            keep_alive: None,
            server_role: Role::Replica,
            local_address: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("server certificate identity: {0}")]
    Identity(String),
}

/// Splits `host:port`, `[v6]:port` or `scheme://host:port`.
fn host_port(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok().filter(|p| *p > 0)?))
}

/// A lazily connecting TLS channel to `endpoint` (`host:port`). The server
/// certificate must chain to the client's CA, name the host (DNS or IP SAN)
/// and carry an identity of `opts.server_role`.
pub fn tls_channel(
    endpoint: &str,
    tls: Arc<rustls::ClientConfig>,
    opts: ChannelOptions,
) -> Result<Channel, ChannelError> {
    let bad = |reason: &str| ChannelError::BadEndpoint {
        endpoint: endpoint.into(),
        reason: reason.into(),
    };
    let (host, port) = host_port(endpoint).ok_or_else(|| bad("expected host:port"))?;
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| bad("host is not a DNS name or IP"))?;
    // tonic sees plain http: the connector below does the TLS, and tonic's
    // own TLS (which would claim an https URI) stays out of the way.
    let uri_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let mut ep = Endpoint::from_shared(format!("http://{uri_host}:{port}"))
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true);
    if let Some(t) = opts.call_timeout {
        ep = ep.timeout(t);
    }
    if let Some(k) = opts.keep_alive {
        ep = ep
            .http2_keep_alive_interval(k)
            .keep_alive_timeout(k)
            .keep_alive_while_idle(true);
    }
    let connector = tokio_rustls::TlsConnector::from(tls);
    let role = opts.server_role;
    let local = opts.local_address;
    let connect = tower::service_fn(move |_: Uri| {
        let (connector, server_name, host) = (connector.clone(), server_name.clone(), host.clone());
        async move {
            let tcp = match local {
                None => TcpStream::connect((host.as_str(), port)).await?,
                Some(ip) => {
                    let remote = tokio::net::lookup_host((host.as_str(), port))
                        .await?
                        .find(|a| a.is_ipv4() == ip.is_ipv4())
                        .ok_or_else(|| {
                            io::Error::other("no address of the local address's family")
                        })?;
                    let socket = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(remote).await?
                }
            };
            let _ = tcp.set_nodelay(true);
            let stream = connector.connect(server_name, tcp).await?;
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| Identity::from_certificate(leaf));
            match identity {
                Some(Ok(id)) if id.role() == role => Ok(TokioIo::new(stream)),
                Some(Ok(id)) => Err(ConnectError::Identity(format!(
                    "server is {id}, expected a {} certificate",
                    role.as_str()
                ))),
                Some(Err(e)) => Err(ConnectError::Identity(e.to_string())),
                None => Err(ConnectError::Identity("no server certificate".into())),
            }
        }
    });
    Ok(ep.connect_with_connector_lazy(connect))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(
            host_port("127.0.0.1:7101"),
            Some(("127.0.0.1".into(), 7101))
        );
        assert_eq!(host_port("http://a.b:1/"), Some(("a.b".into(), 1)));
        assert_eq!(host_port("[::1]:7101"), Some(("::1".into(), 7101)));
        assert_eq!(host_port("a.b"), None);
        assert_eq!(host_port("a.b:0"), None);
        assert_eq!(host_port(":80"), None);
    }
}
