//! `fjord ctl billing ...`: what a licence is billed.

use clap::Subcommand;
use serde_json::{json, Value};

use fjord_control_plane::client::Client;
use fjord_proto::v1 as pb;
use pb::billing_service_client::BillingServiceClient;

use super::Failure;

#[derive(Subcommand)]
pub enum BillingCmd {
    /// The invoice lines of the contract year holding the period: annual
    /// fee, student licences, extra licences and add-ons, prorated by days.
    Preview {
        #[arg(long)]
        institution: String,
        /// FIRST..LAST, e.g. 2026-10-01..2027-09-30 (within one contract year).
        #[arg(long)]
        period: String,
    },
    /// A period's invoice lines as CSV (RFC 4180) or JSON: licence lines
    /// starting in the period, consumption, and adjustments for closed
    /// periods. The same period and revision give the same bytes.
    Export {
        /// One institution (institution admins: their own).
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        institution: Option<String>,
        /// Every licence (operators).
        #[arg(long)]
        all: bool,
        /// FIRST..LAST, dates in Europe/Oslo.
        #[arg(long)]
        period: String,
        #[arg(long, value_parser = ["csv", "json"])]
        format: String,
        /// The ledger revision to export as of (default: the current one).
        #[arg(long)]
        as_of: Option<u64>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Close a billing period (once; periods close in order): its lines
    /// never change again, and later corrections become adjustment lines
    /// in the next period.
    Close {
        /// FIRST..LAST, ended before today.
        #[arg(long)]
        period: String,
    },
}

#[derive(Subcommand)]
pub enum UsageCmd {
    /// Participant-seconds per meeting and in total for a period, from the
    /// usage ledger (sessions still running count up to now).
    Show {
        #[arg(long)]
        institution: String,
        /// FIRST..LAST, dates in Europe/Oslo.
        #[arg(long)]
        period: String,
        /// Also list the ledger's rows: each participant's time on a node,
        /// how it ended and the node's event sequence numbers.
        #[arg(long)]
        sessions: bool,
    },
}

pub async fn usage(client: &Client, c: UsageCmd) -> Result<(Value, String), Failure> {
    let UsageCmd::Show {
        institution,
        period,
        sessions,
    } = c;
    let u = client
        .call(|ch| {
            let req = pb::UsageRequest {
                institution: institution.clone(),
                period: period.clone(),
                sessions,
            };
            async move { BillingServiceClient::new(ch).usage(req).await }
        })
        .await?
        .into_inner();
    let meetings: Vec<Value> = u
        .meetings
        .iter()
        .map(|m| {
            json!({"meeting_id": m.meeting_id, "participant_seconds": m.participant_seconds,
                   "sessions": m.sessions, "closed_by_failure": m.closed_by_failure,
                   "open": m.open})
        })
        .collect();
    let rows: Vec<Value> = u
        .sessions
        .iter()
        .map(|s| {
            json!({"meeting_id": s.meeting_id, "node_id": s.node_id,
                   "participant_id": s.participant_id, "start_ms": s.start_ms,
                   "end_ms": s.end_ms, "end": s.end, "join_seq": s.join_seq,
                   "left_seq": s.left_seq, "features": s.features, "revision": s.revision})
        })
        .collect();
    let mut json = json!({"institution": u.institution, "period": u.period,
        "meetings": meetings, "participant_seconds": u.participant_seconds,
        "rolled_up_seconds": u.rolled_up_seconds, "revision": u.revision,
        "quality_minutes": u.quality_minutes, "good_quality_minutes": u.good_quality_minutes});
    if sessions {
        json["sessions"] = Value::Array(rows);
    }
    let mut text = format!(
        "{} {} (ledger revision {})\n{:<20} {:>20} {:>9} {:>8} {:>5}\n",
        u.institution,
        u.period,
        u.revision,
        "MEETING",
        "PARTICIPANT_SECONDS",
        "SESSIONS",
        "FAILURE",
        "OPEN"
    );
    for m in &u.meetings {
        text += &format!(
            "{:<20} {:>20} {:>9} {:>8} {:>5}\n",
            m.meeting_id, m.participant_seconds, m.sessions, m.closed_by_failure, m.open
        );
    }
    if u.rolled_up_seconds > 0 {
        text += &format!(
            "{:<20} {:>20}   (daily totals; raw rows past the audit window)\n",
            "older", u.rolled_up_seconds
        );
    }
    text += &format!("{:<20} {:>20}\n", "total", u.participant_seconds);
    text += &format!(
        "quality: {} of {} participant-minutes within the limits\n",
        u.good_quality_minutes, u.quality_minutes
    );
    if sessions {
        text += &format!(
            "\n{:<20} {:<12} {:>20} {:>14} {:>14} {:<10} {:>8} {:>8}\n",
            "MEETING", "NODE", "PARTICIPANT", "START_MS", "END_MS", "END", "JOIN_SEQ", "LEFT_SEQ"
        );
        for s in &u.sessions {
            text += &format!(
                "{:<20} {:<12} {:>20} {:>14} {:>14} {:<10} {:>8} {:>8}\n",
                s.meeting_id,
                s.node_id,
                s.participant_id,
                s.start_ms,
                s.end_ms,
                s.end,
                s.join_seq,
                s.left_seq
            );
        }
    }
    Ok((json, text))
}

pub async fn billing(client: &Client, c: BillingCmd) -> Result<(Value, String), Failure> {
    match c {
        BillingCmd::Preview {
            institution,
            period,
        } => {
            let i = client
                .call(|ch| {
                    let req = pb::PreviewInvoiceRequest {
                        institution: institution.clone(),
                        period: period.clone(),
                    };
                    async move { BillingServiceClient::new(ch).preview_invoice(req).await }
                })
                .await?
                .into_inner();
            let lines: Vec<Value> = i
                .lines
                .iter()
                .map(|l| {
                    json!({"kind": l.kind, "item": l.item, "quantity": l.quantity,
                           "yearly_minor": l.yearly_minor, "from": l.from, "to": l.to,
                           "days": l.days, "days_in_year": l.days_in_year,
                           "amount_minor": l.amount_minor, "amount": l.amount})
                })
                .collect();
            let json = json!({"institution": i.institution, "first_day": i.first_day,
                "last_day": i.last_day, "currency": i.currency,
                "minor_unit_digits": i.minor_unit_digits, "price_table": i.price_table,
                "lines": lines, "total_minor": i.total_minor, "total": i.total});
            let mut text = format!(
                "{} {}..{} (price table {}, {})\n{:<17} {:<16} {:>8} {:<23} {:>9} {:>16}\n",
                i.institution,
                i.first_day,
                i.last_day,
                i.price_table,
                i.currency,
                "KIND",
                "ITEM",
                "QUANTITY",
                "PERIOD",
                "DAYS",
                "AMOUNT"
            );
            for l in &i.lines {
                text += &format!(
                    "{:<17} {:<16} {:>8} {}..{} {:>4}/{} {:>16}\n",
                    l.kind, l.item, l.quantity, l.from, l.to, l.days, l.days_in_year, l.amount
                );
            }
            text += &format!("{:>96}\n", format!("total {} {}", i.currency, i.total));
            Ok((json, text))
        }
        BillingCmd::Export {
            institution,
            all,
            period,
            format,
            as_of,
            out,
        } => {
            let e = client
                .call(|ch| {
                    let req = pb::ExportRequest {
                        institution: institution.clone().unwrap_or_default(),
                        all,
                        period: period.clone(),
                        format: format.clone(),
                        as_of: as_of.unwrap_or(0),
                    };
                    async move { BillingServiceClient::new(ch).export(req).await }
                })
                .await?
                .into_inner();
            match out {
                Some(path) => {
                    std::fs::write(&path, &e.content).map_err(|err| Failure {
                        code: 1,
                        message: format!("writing {}: {err}", path.display()),
                    })?;
                    let json = json!({"file": path.display().to_string(), "bytes": e.content.len(),
                        "revision": e.revision, "closed": e.closed});
                    let text = format!(
                        "wrote {} bytes to {} (ledger revision {}{})\n",
                        e.content.len(),
                        path.display(),
                        e.revision,
                        if e.closed { ", closed period" } else { "" }
                    );
                    Ok((json, text))
                }
                None => Ok((
                    Value::Null,
                    String::from_utf8(e.content).map_err(|_| Failure {
                        code: 1,
                        message: "the export is not UTF-8".into(),
                    })?,
                )),
            }
        }
        BillingCmd::Close { period } => {
            let c = client
                .call(|ch| {
                    let req = pb::ClosePeriodRequest {
                        period: period.clone(),
                    };
                    async move { BillingServiceClient::new(ch).close_period(req).await }
                })
                .await?
                .into_inner();
            let json = json!({"period": c.period, "revision": c.revision,
                "invoices": c.invoices, "adjustments": c.adjustments});
            let text = format!(
                "closed {} at ledger revision {}: {} invoices, {} adjustment lines\n",
                c.period, c.revision, c.invoices, c.adjustments
            );
            Ok((json, text))
        }
    }
}
