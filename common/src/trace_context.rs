//! W3C trace context across process boundaries that are not gRPC calls:
//! the control plane's join span travels in the join answer to the client,
//! and from the client in `MediaJoin` to the media node, so one join is one
//! trace. With no OpenTelemetry exporter configured the global propagator
//! is a no-op: nothing is injected and nothing is extracted.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The `traceparent` of `span` (empty when tracing is off).
pub fn traceparent(span: &tracing::Span) -> String {
    let mut c = Carrier(HashMap::new());
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut c));
    c.0.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the trace `traceparent` names (nothing when it
/// is empty or malformed).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() || traceparent.len() > 128 {
        return;
    }
    let c = Carrier(HashMap::from([(
        TRACEPARENT.to_string(),
        traceparent.to_string(),
    )]));
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&c));
    let _ = span.set_parent(cx);
}
