//! Prometheus recording and alerting rules for the same SLOs the control
//! plane evaluates (`fjord sla rules`), for operators who page from their
//! own Prometheus and Alertmanager.
//!
//! Every replica exports the SLA counters from the replicated state, so
//! each has the same values: the rules take `max` over replicas, never
//! `sum`. The counters leave out events inside announced maintenance, as
//! the control plane's own evaluation does. Objectives come from the
//! `fjord_sla_objective_ratio` gauge, so an institution's own objectives
//! need no new rules.
//!
//! The output is JSON, which is YAML too: Prometheus, `promtool` and
//! Kubernetes' PrometheusRule read it as it is.

use serde_json::{json, Value};

use super::{Severity, SloConfig, BURN_WINDOWS, DAY_MS, HOUR_MS, MINUTE_MS};

/// A Prometheus duration for a window ("5m", "1h", "3d").
pub fn prom_duration(ms: u64) -> String {
    if ms.is_multiple_of(DAY_MS) {
        format!("{}d", ms / DAY_MS)
    } else if ms.is_multiple_of(HOUR_MS) {
        format!("{}h", ms / HOUR_MS)
    } else {
        format!("{}m", ms / MINUTE_MS)
    }
}

/// Every window the alerts read, shortest first, plus the SLO window.
fn windows(cfg: &SloConfig) -> Vec<u64> {
    let mut w: Vec<u64> = BURN_WINDOWS
        .iter()
        .flat_map(|b| [b.long_ms, b.short_ms])
        .chain([cfg.window_ms()])
        .collect();
    w.sort_unstable();
    w.dedup();
    w
}

fn error_ratio(window: &str) -> String {
    format!("fjord:sla_error_ratio:rate{window}")
}

/// Renders the factor in thousandths as a decimal ("14.4").
fn factor(milli: u64) -> String {
    let s = format!("{}.{:03}", milli / 1000, milli % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The rule groups as a JSON value.
pub fn rules(cfg: &SloConfig) -> Value {
    let mut recording = Vec::new();
    for w in windows(cfg) {
        let d = prom_duration(w);
        recording.push(json!({
            "record": error_ratio(&d),
            "expr": format!(
                "max by (institution, sli) (rate(fjord_sla_bad_events_total[{d}]))\n/\nmax by (institution, sli) (rate(fjord_sla_events_total[{d}]))"
            ),
        }));
    }
    recording.push(json!({
        "record": "fjord:sla_objective:ratio",
        "expr": "max by (institution, sli) (fjord_sla_objective_ratio)",
    }));
    let slo_window = prom_duration(cfg.window_ms());
    recording.push(json!({
        "record": "fjord:sla_error_budget_remaining:ratio",
        "expr": format!(
            "1 - {} / on (institution, sli) (1 - fjord:sla_objective:ratio)",
            error_ratio(&slo_window)
        ),
    }));

    let mut alerts = Vec::new();
    for severity in [Severity::Page, Severity::Ticket] {
        let mut pairs = Vec::new();
        for w in BURN_WINDOWS.iter().filter(|w| w.severity == severity) {
            let f = factor(w.factor_milli(cfg.window_ms()));
            let long = prom_duration(w.long_ms);
            let short = prom_duration(w.short_ms);
            let mut pair = format!(
                "(\n  {} > on (institution, sli) ({f} * (1 - fjord:sla_objective:ratio))\n  and on (institution, sli)\n  {} > on (institution, sli) ({f} * (1 - fjord:sla_objective:ratio))",
                error_ratio(&long),
                error_ratio(&short),
            );
            if severity == Severity::Page {
                pair.push_str(&format!(
                    "\n  and on (institution, sli)\n  max by (institution, sli) (increase(fjord_sla_events_total[{long}])) >= {}",
                    cfg.min_events_to_page
                ));
            }
            pair.push_str("\n)");
            pairs.push(pair);
        }
        let (name, speed) = match severity {
            Severity::Page => ("FjordSloBudgetBurnPage", "fast"),
            Severity::Ticket => ("FjordSloBudgetBurnTicket", "steadily"),
        };
        alerts.push(json!({
            "alert": name,
            "expr": pairs.join("\nor\n"),
            "labels": { "severity": severity.as_str() },
            "annotations": {
                "summary": format!("{{{{ $labels.institution }}}}: the {{{{ $labels.sli }}}} error budget is burning {speed}"),
                "description": format!(
                    "The {{{{ $labels.sli }}}} SLO of {{{{ $labels.institution }}}} is consuming its {slo_window} error budget faster than the {} threshold allows.",
                    severity.as_str()
                ),
            },
        }));
    }
    json!({
        "groups": [
            { "name": "fjord-sla-recording", "interval": "30s", "rules": recording },
            { "name": "fjord-sla-alerts", "interval": "30s", "rules": alerts },
        ]
    })
}

/// The rule file as text: a comment header and the JSON body.
pub fn render(cfg: &SloConfig) -> String {
    let body = serde_json::to_string_pretty(&rules(cfg)).expect("rules serialise");
    format!(
        "# Fjord SLO rules: multiwindow, multi-burn-rate alerts over a {}-day window.\n# Generated by `fjord sla rules`; JSON is YAML, so Prometheus reads this file as it is.\n{body}\n",
        cfg.window_days
    )
}
