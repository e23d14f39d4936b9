//! Metric descriptions: every `fjord_*` metric a process exports carries
//! HELP text (and its unit where it has one), so `promtool check metrics`
//! passes and a dashboard author knows what a series means without reading
//! the code. Each crate keeps a catalogue of the metrics it emits; a process
//! describes the catalogues of the crates it runs once its recorder exists.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: its name, kind, unit and HELP text.
#[derive(Debug, Clone, Copy)]
pub struct MetricDescription {
    pub name: &'static str,
    pub kind: MetricKind,
    /// `None` for plain counts.
    pub unit: Option<Unit>,
    pub help: &'static str,
}

impl MetricDescription {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: MetricKind::Counter,
            unit: None,
            help,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: MetricKind::Gauge,
            unit: None,
            help,
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: MetricKind::Histogram,
            unit: None,
            help,
        }
    }

    pub const fn unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }
}

/// Hands every description to the installed recorder.
pub fn describe(catalogue: &[MetricDescription]) {
    for m in catalogue {
        match (m.kind, m.unit) {
            (MetricKind::Counter, Some(u)) => metrics::describe_counter!(m.name, u, m.help),
            (MetricKind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (MetricKind::Gauge, Some(u)) => metrics::describe_gauge!(m.name, u, m.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (MetricKind::Histogram, Some(u)) => metrics::describe_histogram!(m.name, u, m.help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The metrics this crate emits.
pub const CATALOGUE: &[MetricDescription] = &[
    MetricDescription::counter(
        "fjord_tls_handshake_failures_total",
        "TLS handshakes refused on a gRPC port, by port and reason (no client certificate, unknown CA, ...).",
    ),
    MetricDescription::counter(
        "fjord_tls_reloads_total",
        "Certificate and key reloads from disk, by outcome (ok or error; on error the old pair stays in use).",
    ),
];

/// Every `"fjord_..."` string literal in the Rust sources under `dir` that
/// `catalogue` does not describe, for each crate's completeness test.
/// Test files (`tests.rs`, `*_tests.rs`) and test modules are skipped.
pub fn undescribed_metric_names(
    dir: &std::path::Path,
    catalogue: &[MetricDescription],
) -> Vec<String> {
    let mut missing = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // A file's own test module may name metrics that do not exist.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for (i, _) in text.match_indices("\"fjord_") {
                let rest = &text[i + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                // A literal that is a whole metric name ends at its quote.
                if !rest[end..].starts_with('"') || end == "fjord_".len() {
                    continue;
                }
                let metric = &rest[..end];
                if !catalogue.iter().any(|m| m.name == metric)
                    && !missing.iter().any(|m| m == metric)
                {
                    missing.push(metric.to_string());
                }
            }
        }
    }
    missing.sort();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_this_crate_emits_is_described() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let missing = undescribed_metric_names(&dir, CATALOGUE);
        assert!(missing.is_empty(), "undescribed metrics: {missing:?}");
    }

    #[test]
    fn the_scan_finds_a_name_missing_from_the_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.rs"),
            "metrics::counter!(\"fjord_known_total\"); metrics::gauge!(\"fjord_unknown\");",
        )
        .unwrap();
        let known = [MetricDescription::counter("fjord_known_total", "known")];
        assert_eq!(
            undescribed_metric_names(dir.path(), &known),
            vec!["fjord_unknown"]
        );
    }
}
