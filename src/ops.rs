//! The operations port: Prometheus metrics and health over plain HTTP on
//! loopback or a cluster-internal address (as kubelet probes expect).
//!
//! ```text
//!  GET /metrics  fjord_* metrics (Prometheus text)
//!  GET /healthz  200 while the process runs
//!  GET /readyz   200 when ready (replica: a member that knows its leader;
//!                node: registered and accepting), else 503
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// Whether the process is ready; asked on every `/readyz`.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Installs the metrics recorder, has `describe` give it every metric's
/// HELP text, and serves the operations port on `addr`. `ready` may be set
/// later (the process binds this port before it knows its replica or node);
/// until then `/readyz` answers 503.
pub async fn serve(addr: SocketAddr, describe: fn()) -> anyhow::Result<ReadySlot> {
    // Durations are histograms with buckets (quantiles of one process
    // cannot be aggregated); join times sit around the 2 s objective.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0],
        )
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    // Publishes the descriptions and drains histogram samples; without an
    // exporter thread of its own the handle needs this now and then.
    handle.run_upkeep();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slot = ReadySlot::default();
    let ready = slot.clone();
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics and health on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics and health endpoints up");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics and health server stopped");
        }
    });
    Ok(slot)
}

/// Where the readiness check goes once the process has one.
#[derive(Clone, Default)]
pub struct ReadySlot(Arc<std::sync::Mutex<Option<Readiness>>>);

impl ReadySlot {
    pub fn set(&self, ready: Readiness) {
        *self.0.lock().expect("ready slot lock") = Some(ready);
    }

    fn is_ready(&self) -> bool {
        self.0
            .lock()
            .expect("ready slot lock")
            .as_ref()
            .is_some_and(|f| f())
    }
}
