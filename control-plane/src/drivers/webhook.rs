//! Signed webhook delivery: one HTTP/1.1 POST per attempt, over TLS
//! (system roots plus an optional extra CA) or plain HTTP to a loopback
//! receiver. The signature header lets a receiver check the body came from
//! this service and is fresh:
//!
//! ```text
//! X-Fjord-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! ```

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// How long one attempt may take, connect to answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

pub const SIGNATURE_HEADER: &str = "x-fjord-signature";
pub const NOTIFICATION_ID_HEADER: &str = "x-fjord-notification-id";

/// The signature header's value for `body` at `unix_s`.
pub fn signature(secret: &str, unix_s: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix_s.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    format!("t={unix_s},v1={}", crate::access::hex(tag.as_ref()))
}

/// Checks a signature header as a receiver would: the HMAC matches and the
/// timestamp is within `tolerance_s` of `now_s`.
pub fn verify(secret: &str, header: &str, body: &[u8], now_s: u64, tolerance_s: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now_s) > tolerance_s {
        return false;
    }
    let expected = signature(secret, t, body);
    let expected = expected.rsplit_once("v1=").map(|(_, h)| h).unwrap_or("");
    // Constant time: the comparison must not say how much matched.
    crate::access::secrets_equal(expected, v1)
}

/// Posts webhooks.
#[derive(Clone)]
pub struct WebhookClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("reading the webhook CA: {0}")]
    Ca(#[from] fjord_common::tls::TlsError),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl WebhookClient {
    /// Trusts the system's roots, and `extra_ca` (PEM) when given.
    pub fn new(extra_ca: Option<&std::path::Path>) -> Result<Self, WebhookError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            for c in fjord_common::tls::read_roots(path)?.roots {
                roots.roots.push(c);
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(fjord_common::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(WebhookClient {
            tls: Arc::new(config),
        })
    }

    /// One attempt: `Ok(status)` when the receiver answered (2xx is a
    /// delivery), `Err(why)` when it could not be reached.
    pub async fn post(
        &self,
        url: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> Result<u16, String> {
        tokio::time::timeout(ATTEMPT_TIMEOUT, self.post_inner(url, body, headers))
            .await
            .map_err(|_| "timed out".to_string())?
    }

    async fn post_inner(
        &self,
        url: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> Result<u16, String> {
        let uri: hyper::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("not an http(s) URL".into()),
        };
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = tokio::net::TcpStream::connect((host_bare.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let mut req = Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("fjord/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        if https {
            let name = rustls::pki_types::ServerName::try_from(host_bare)
                .map_err(|_| "bad server name".to_string())?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(tls), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
    }
}

async fn send<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    // Read (and drop) the answer so the connection closes cleanly.
    let _ = resp.into_body().collect().await;
    driver.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_or_staleness_fails() {
        let secret = "s3cret";
        let h = signature(secret, 1_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1000,v1="));
        assert!(verify(secret, &h, b"{\"a\":1}", 1_010, 300));
        assert!(
            !verify(secret, &h, b"{\"a\":2}", 1_010, 300),
            "body changed"
        );
        assert!(
            !verify("other", &h, b"{\"a\":1}", 1_010, 300),
            "wrong secret"
        );
        assert!(!verify(secret, &h, b"{\"a\":1}", 2_000, 300), "stale");
        assert!(!verify(secret, "t=1000", b"{\"a\":1}", 1_000, 300));
    }
}
