//! `fjord ctl sla ...` and `fjord ctl maintenance ...`: service levels,
//! the notification log, objectives, webhook secrets and planned work.

use clap::Subcommand;
use serde_json::{json, Value};

use fjord_control_plane::client::Client;
use fjord_control_plane::sla::{format_ppm, parse_percent_ppm};
use fjord_proto::v1 as pb;
use pb::sla_service_client::SlaServiceClient;

use super::{parse_start, usage, Failure};

#[derive(Subcommand)]
pub enum SlaCmd {
    /// Per SLO the objective, the measured value and the error budget left
    /// (raw and with maintenance left out), firing alerts and region states.
    /// Without --institution: every institution (operators), least budget
    /// left first; institution admins see their own.
    Status {
        #[arg(long)]
        institution: Option<String>,
    },
    /// The notification log: alerts, fault notices and maintenance notices
    /// sent to contact points, with every delivery attempt.
    Notifications {
        #[arg(long)]
        institution: Option<String>,
        /// Most entries shown, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Also print each webhook body as sent.
        #[arg(long)]
        bodies: bool,
    },
    /// The secret the institution's webhook receiver checks the
    /// X-Fjord-Signature header with (HMAC-SHA256 over "<t>.<body>").
    WebhookSecret {
        #[arg(long)]
        institution: String,
    },
    /// Set an institution's own objectives, as percentages (unnamed ones
    /// keep the service's defaults); --reset goes back to the defaults.
    Objectives {
        #[arg(long)]
        institution: String,
        #[arg(long)]
        availability: Option<String>,
        #[arg(long)]
        join_success: Option<String>,
        #[arg(long)]
        join_latency: Option<String>,
        #[arg(long)]
        media_quality: Option<String>,
        #[arg(long)]
        reset: bool,
    },
    /// A short-lived signed link to the SLA dashboard: an institution's
    /// page, or (operators, without --institution) the overview.
    DashboardLink {
        #[arg(long)]
        institution: Option<String>,
        /// How long the link works, e.g. 1h, 7days (at most 31 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
    },
    /// A calendar month's figures per SLO as CSV: raw and with maintenance
    /// left out, and whether the objective was met.
    Report {
        #[arg(long)]
        institution: String,
        /// YYYY-MM, in Europe/Oslo.
        #[arg(long)]
        month: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum MaintenanceCmd {
    /// Announce planned work: the contact points of every institution the
    /// region serves are told now; alerts for the scope are held during the
    /// window; a named node is drained (with evacuation) at the start and
    /// back in service at the end.
    Announce {
        #[arg(long)]
        region: String,
        /// One node of the region (default: the whole region).
        #[arg(long)]
        node: Option<String>,
        /// Start, RFC 3339 (e.g. 2026-12-01T22:00:00Z).
        #[arg(long)]
        from: String,
        /// End, RFC 3339.
        #[arg(long)]
        to: String,
        /// What the work is, for the notices.
        #[arg(long)]
        reason: String,
    },
    /// Every maintenance window, upcoming and past.
    List,
}

fn ms_text(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    fjord_control_plane::sla::notify::rfc3339(ms)
}

fn window_json(m: &pb::MaintenanceWindow) -> Value {
    json!({"id": m.id, "region": m.region, "node": m.node_id, "from": ms_text(m.from_ms),
        "to": ms_text(m.to_ms), "reason": m.reason, "announced": ms_text(m.announced_ms),
        "started": m.started, "ended": m.ended})
}

fn window_text(m: &pb::MaintenanceWindow) -> String {
    let scope = if m.node_id.is_empty() {
        format!("region {}", m.region)
    } else {
        format!("node {} ({})", m.node_id, m.region)
    };
    let state = match (m.started, m.ended) {
        (_, true) => "ended",
        (true, false) => "in progress",
        _ => "upcoming",
    };
    format!(
        "#{:<4} {} .. {}  {:<28} {:<11} {}\n",
        m.id,
        ms_text(m.from_ms),
        ms_text(m.to_ms),
        scope,
        state,
        m.reason
    )
}

fn pct(ppm: u32) -> String {
    format!("{}%", format_ppm(i64::from(ppm)))
}

fn report_text(r: &pb::InstitutionSla) -> String {
    let mut t = format!("{} (rolling {} days)\n", r.institution, r.window_days);
    t += &format!(
        "  {:<14} {:>10} {:>10} {:>12} {:>10} {:>10}  {}\n",
        "SLO", "OBJECTIVE", "MEASURED", "BUDGET LEFT", "EVENTS", "BAD", "BURNING"
    );
    for s in &r.slos {
        let measured = if s.measured {
            pct(s.measured_ppm)
        } else {
            "-".into()
        };
        t += &format!(
            "  {:<14} {:>10} {:>10} {:>11}% {:>10} {:>10}  {}\n",
            s.sli,
            pct(s.objective_ppm),
            measured,
            format_ppm(s.budget_left_ppm),
            s.total,
            s.bad,
            s.burning.join(",")
        );
    }
    for a in &r.firing {
        t += &format!(
            "  FIRING {} {} ({}) since {} [{}]\n",
            a.alert,
            a.sli,
            a.severity,
            ms_text(a.started_ms),
            a.windows.join(",")
        );
    }
    for g in &r.regions {
        t += &format!(
            "  region {:<8} {:<18} ready {} draining {} down {}\n",
            g.region, g.state, g.nodes_ready, g.nodes_draining, g.nodes_down
        );
    }
    for m in &r.maintenance {
        t += &format!("  maintenance {}", window_text(m));
    }
    t
}

fn report_json(r: &pb::InstitutionSla) -> Value {
    json!({
        "institution": r.institution,
        "window_days": r.window_days,
        "slos": r.slos.iter().map(|s| json!({
            "sli": s.sli, "objective_percent": format_ppm(i64::from(s.objective_ppm)),
            "measured_percent": s.measured.then(|| format_ppm(i64::from(s.measured_ppm))),
            "raw_measured_percent": (s.total > 0).then(|| format_ppm(i64::from(s.raw_measured_ppm))),
            "budget_left_percent": format_ppm(s.budget_left_ppm),
            "raw_budget_left_percent": format_ppm(s.raw_budget_left_ppm),
            "events": s.total, "bad": s.bad,
            "maintenance_events": s.maintenance_total, "maintenance_bad": s.maintenance_bad,
            "burning": s.burning,
        })).collect::<Vec<_>>(),
        "firing": r.firing.iter().map(|a| json!({"alert": a.alert, "sli": a.sli,
            "severity": a.severity, "started": ms_text(a.started_ms), "windows": a.windows}))
            .collect::<Vec<_>>(),
        "recent": r.recent.iter().map(|a| json!({"alert": a.alert, "sli": a.sli,
            "severity": a.severity, "started": ms_text(a.started_ms), "ended": ms_text(a.ended_ms)}))
            .collect::<Vec<_>>(),
        "regions": r.regions.iter().map(|g| json!({"region": g.region, "state": g.state,
            "ready": g.nodes_ready, "draining": g.nodes_draining, "down": g.nodes_down}))
            .collect::<Vec<_>>(),
        "maintenance": r.maintenance.iter().map(window_json).collect::<Vec<_>>(),
    })
}

fn objective(flag: &str, v: &Option<String>, default: u32) -> Result<u32, Failure> {
    match v {
        None => Ok(default),
        Some(s) => parse_percent_ppm(s)
            .ok_or_else(|| usage(format!("--{flag} {s:?}: a percentage such as 99.9"))),
    }
}

pub async fn sla(client: &Client, c: SlaCmd) -> Result<(Value, String), Failure> {
    match c {
        SlaCmd::Status { institution } => {
            let r = client
                .call(|ch| {
                    let req = pb::SlaStatusRequest {
                        institution: institution.clone().unwrap_or_default(),
                    };
                    async move { SlaServiceClient::new(ch).get_status(req).await }
                })
                .await?
                .into_inner();
            let json = json!(r.institutions.iter().map(report_json).collect::<Vec<_>>());
            let text = r.institutions.iter().map(report_text).collect();
            Ok((json, text))
        }
        SlaCmd::Notifications {
            institution,
            limit,
            bodies,
        } => {
            let r = client
                .call(|ch| {
                    let req = pb::ListNotificationsRequest {
                        institution: institution.clone().unwrap_or_default(),
                        limit,
                    };
                    async move { SlaServiceClient::new(ch).list_notifications(req).await }
                })
                .await?
                .into_inner();
            let json = json!(r
                .notifications
                .iter()
                .map(|n| {
                    let mut v = json!({"id": n.id, "institution": n.institution, "kind": n.kind,
                        "status": n.status, "summary": n.summary, "created": ms_text(n.created_ms),
                        "contact": n.contact, "delivery": n.delivery,
                        "next_attempt": ms_text(n.next_attempt_ms),
                        "attempts": n.attempts.iter().map(|a| json!({"at": ms_text(a.at_ms),
                            "ok": a.ok, "outcome": a.outcome})).collect::<Vec<_>>()});
                    if bodies {
                        v["body"] = serde_json::from_str(&n.body).unwrap_or(Value::Null);
                    }
                    v
                })
                .collect::<Vec<_>>());
            let mut text = String::new();
            for n in &r.notifications {
                text += &format!(
                    "#{:<5} {} {:<12} {:<11} {:<8} {:<10} {}\n",
                    n.id,
                    ms_text(n.created_ms),
                    n.institution,
                    n.kind,
                    n.status,
                    n.delivery,
                    n.summary
                );
                for a in &n.attempts {
                    text += &format!(
                        "        attempt {} {} {}\n",
                        ms_text(a.at_ms),
                        if a.ok { "ok" } else { "failed" },
                        a.outcome
                    );
                }
                if bodies {
                    text += &format!("        body {}\n", n.body);
                }
            }
            Ok((json, text))
        }
        SlaCmd::DashboardLink {
            institution,
            valid_for,
        } => {
            let r = client
                .call(|ch| {
                    let req = pb::DashboardLinkRequest {
                        institution: institution.clone().unwrap_or_default(),
                        valid_for_s: valid_for.as_secs().max(1),
                    };
                    async move { SlaServiceClient::new(ch).dashboard_link(req).await }
                })
                .await?
                .into_inner();
            Ok((
                json!({"url": r.url, "expires": ms_text(r.expires_ms)}),
                format!("{}\n", r.url),
            ))
        }
        SlaCmd::WebhookSecret { institution } => {
            let r = client
                .call(|ch| {
                    let req = pb::WebhookSecretRequest {
                        institution: institution.clone(),
                    };
                    async move { SlaServiceClient::new(ch).get_webhook_secret(req).await }
                })
                .await?
                .into_inner();
            Ok((
                json!({"institution": institution, "secret": r.secret}),
                format!("{}\n", r.secret),
            ))
        }
        SlaCmd::Objectives {
            institution,
            availability,
            join_success,
            join_latency,
            media_quality,
            reset,
        } => {
            let d = fjord_control_plane::sla::Objectives::default();
            let req = pb::SetObjectivesRequest {
                institution: institution.clone(),
                reset,
                availability_ppm: objective("availability", &availability, d.availability_ppm)?,
                join_success_ppm: objective("join-success", &join_success, d.join_success_ppm)?,
                join_latency_ppm: objective("join-latency", &join_latency, d.join_latency_ppm)?,
                media_quality_ppm: objective("media-quality", &media_quality, d.media_quality_ppm)?,
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move { SlaServiceClient::new(ch).set_objectives(req).await }
                })
                .await?
                .into_inner();
            let json = json!({"institution": institution,
                "availability_percent": format_ppm(i64::from(r.availability_ppm)),
                "join_success_percent": format_ppm(i64::from(r.join_success_ppm)),
                "join_latency_percent": format_ppm(i64::from(r.join_latency_ppm)),
                "media_quality_percent": format_ppm(i64::from(r.media_quality_ppm))});
            let text = format!(
                "{institution}: availability {}, join success {}, joins fast {}, media quality {}\n",
                pct(r.availability_ppm),
                pct(r.join_success_ppm),
                pct(r.join_latency_ppm),
                pct(r.media_quality_ppm)
            );
            Ok((json, text))
        }
        SlaCmd::Report {
            institution,
            month,
            out,
        } => {
            let r = client
                .call(|ch| {
                    let req = pb::MonthlyReportRequest {
                        institution: institution.clone(),
                        month: month.clone(),
                    };
                    async move { SlaServiceClient::new(ch).monthly_report(req).await }
                })
                .await?
                .into_inner();
            match out {
                Some(path) => {
                    std::fs::write(&path, &r.csv).map_err(|e| Failure {
                        code: 1,
                        message: format!("writing {}: {e}", path.display()),
                    })?;
                    Ok((
                        json!({"file": path.display().to_string(), "bytes": r.csv.len()}),
                        format!("wrote {} bytes to {}\n", r.csv.len(), path.display()),
                    ))
                }
                None => Ok((
                    Value::Null,
                    String::from_utf8(r.csv).map_err(|_| Failure {
                        code: 1,
                        message: "the report is not UTF-8".into(),
                    })?,
                )),
            }
        }
    }
}

pub async fn maintenance(client: &Client, c: MaintenanceCmd) -> Result<(Value, String), Failure> {
    match c {
        MaintenanceCmd::Announce {
            region,
            node,
            from,
            to,
            reason,
        } => {
            let req = pb::AnnounceMaintenanceRequest {
                region,
                node_id: node.unwrap_or_default(),
                from_ms: parse_start(&from)?,
                to_ms: parse_start(&to)?,
                reason,
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move { SlaServiceClient::new(ch).announce_maintenance(req).await }
                })
                .await?
                .into_inner();
            let m = r.maintenance.unwrap_or_default();
            let json = json!({"maintenance": window_json(&m), "notified": r.notified});
            let text = format!(
                "{}notified: {}\n",
                window_text(&m),
                if r.notified.is_empty() {
                    "nobody".to_string()
                } else {
                    r.notified.join(", ")
                }
            );
            Ok((json, text))
        }
        MaintenanceCmd::List => {
            let r = client
                .call(|ch| async move {
                    SlaServiceClient::new(ch)
                        .list_maintenance(pb::ListMaintenanceRequest {})
                        .await
                })
                .await?
                .into_inner();
            let json = json!(r.maintenance.iter().map(window_json).collect::<Vec<_>>());
            let text = r.maintenance.iter().map(window_text).collect();
            Ok((json, text))
        }
    }
}
