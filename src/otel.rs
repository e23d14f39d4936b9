//! OpenTelemetry traces over OTLP/gRPC, off unless an endpoint is given
//! (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`). Spans from the
//! `tracing` instrumentation (schedule, join, node failover on replicas;
//! the join on media nodes) are batched and exported; the W3C trace context
//! travels in join answers and join messages, so a join is one trace across
//! the control plane and the node.
//!
//! The endpoint must be plain `http://` on loopback: a collector agent next
//! to the process (the usual deployment) forwards with its own TLS. The
//! exporter runs on a runtime of its own, because the SDK's batch processor
//! exports from its own thread and tonic needs a Tokio reactor there.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// Keeps the exporter alive; dropping it flushes what is batched.
pub struct Guard {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing traces: {e}");
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Checks the endpoint: `http://` with a loopback host and a port.
pub fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or("the OTLP endpoint must be http://HOST:PORT on loopback (a local collector)")?;
    let host_port = rest.split('/').next().unwrap_or("");
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or("the OTLP endpoint needs a port")?;
    port.parse::<u16>().map_err(|_| "bad OTLP endpoint port")?;
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err("the OTLP endpoint must be on loopback (a local collector forwards with TLS)".into())
    }
}

/// The tracing layer exporting to `endpoint` as `service`.
pub fn layer<S>(
    service: &'static str,
    endpoint: &str,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Guard,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    validate_endpoint(endpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the trace exporter: {e}"))?;
    let exporter = runtime
        .block_on(async {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
        })
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer("fjord");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        layer,
        Guard {
            provider,
            runtime: Some(runtime),
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_http_endpoints_are_taken() {
        for ok in [
            "http://127.0.0.1:4317",
            "http://localhost:4317",
            "http://[::1]:4317",
        ] {
            assert!(super::validate_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://collector.example:4317",
            "http://10.0.0.1:4317",
            "http://127.0.0.1",
            "127.0.0.1:4317",
        ] {
            assert!(super::validate_endpoint(bad).is_err(), "{bad}");
        }
    }
}
