//! Billing over gRPC: invoice previews computed by the pure billing
//! functions from a linearizable read of the licence and price tables.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::billing_service_server::BillingService;

use super::authz::{authorize, Rpc};
use super::{finish, validate, ApiError};
use crate::billing::{self, decimal, Invoice};
use crate::raft::Replica;
use crate::state::{ClosePeriod, Command, LedgerCommand, Output, Query, QueryOutput};

pub struct BillingApi {
    replica: Arc<Replica>,
}

fn invoice_out(i: &Invoice) -> pb::Invoice {
    let digits = i.minor_unit_digits;
    pb::Invoice {
        institution: i.institution.clone(),
        first_day: i.first_day.to_string(),
        last_day: i.last_day.to_string(),
        currency: i.currency.clone(),
        minor_unit_digits: u32::from(digits),
        price_table: i.price_table.clone(),
        lines: i
            .lines
            .iter()
            .map(|l| pb::InvoiceLine {
                kind: l.kind.as_str().into(),
                item: l.item.clone(),
                quantity: l.quantity,
                yearly_minor: l.yearly_minor,
                from: l.from.to_string(),
                to: l.to.to_string(),
                days: l.days,
                days_in_year: l.days_in_year,
                amount_minor: l.amount_minor,
                amount: decimal(l.amount_minor, digits),
                unit: l.unit.as_str().into(),
                rate_minor_per_hour: l.rate_minor,
                corrects: l.corrects.clone().unwrap_or_default(),
                reason: l.reason.clone().unwrap_or_default(),
            })
            .collect(),
        total_minor: i.total_minor,
        total: decimal(i.total_minor, digits),
    }
}

fn period(text: &str) -> Result<(jiff::civil::Date, jiff::civil::Date), ApiError> {
    billing::parse_period(text).ok_or_else(|| {
        ApiError::invalid(
            "period",
            "FIRST..LAST, two dates (YYYY-MM-DD), first not after last",
        )
    })
}

impl BillingApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        BillingApi { replica }
    }

    async fn export(
        &self,
        r: pb::ExportRequest,
        own: Option<&str>,
    ) -> Result<pb::ExportResponse, ApiError> {
        let (first, last) = period(&r.period)?;
        let institution = match (r.all, r.institution.as_str()) {
            (true, "") if own.is_none() => None,
            (true, "") => {
                return Err(ApiError::invalid(
                    "all",
                    "only an operator exports every licence",
                ))
            }
            (false, "") => {
                return Err(ApiError::invalid("institution", "name one, or ask for all"))
            }
            (true, _) => return Err(ApiError::invalid("all", "either an institution or all")),
            (false, name) => {
                validate::name("institution", name)?;
                Some(name.to_string())
            }
        };
        let export = match self
            .replica
            .read(Query::BillingExport {
                institution,
                first,
                last,
                as_of: r.as_of,
            })
            .await?
        {
            QueryOutput::BillingExport(e) => e,
            other => unreachable!("export query answered {other:?}"),
        };
        let meta = billing::export::ExportMeta {
            period_first: &first.to_string(),
            period_last: &last.to_string(),
            revision: export.revision,
            closed: export.closed,
        };
        let content = match r.format.as_str() {
            "csv" => billing::export::csv(&meta, &export.invoices),
            "json" => billing::export::json(&meta, &export.invoices),
            _ => return Err(ApiError::invalid("format", "csv or json")),
        }
        .map_err(|e| {
            tracing::error!(error = %e, "billing export failed");
            ApiError::Internal("billing export")
        })?;
        metrics::counter!("fjord_billing_exports_total").increment(1);
        Ok(pb::ExportResponse {
            content,
            revision: export.revision,
            closed: export.closed,
        })
    }

    async fn close(&self, r: pb::ClosePeriodRequest) -> Result<pb::ClosePeriodResponse, ApiError> {
        let (first, last) = period(&r.period)?;
        match self
            .replica
            .write(Command::Ledger(LedgerCommand::ClosePeriod(ClosePeriod {
                first,
                last,
            })))
            .await?
        {
            Output::PeriodClosed {
                period,
                revision,
                invoices,
                adjustments,
            } => Ok(pb::ClosePeriodResponse {
                period,
                revision,
                invoices,
                adjustments,
            }),
            other => unreachable!("close period answered {other:?}"),
        }
    }

    async fn usage(&self, r: pb::UsageRequest) -> Result<pb::UsageResponse, ApiError> {
        validate::name("institution", &r.institution)?;
        let (first, last) = period(&r.period)?;
        let u = match self
            .replica
            .read(Query::Usage {
                institution: r.institution.clone(),
                first,
                last,
                sessions: r.sessions,
            })
            .await?
        {
            QueryOutput::Usage(u) => u,
            other => unreachable!("usage query answered {other:?}"),
        };
        let secs = |ms: u64| (ms + 500) / 1000;
        Ok(pb::UsageResponse {
            institution: r.institution,
            period: format!("{first}..{last}"),
            meetings: u
                .meetings
                .iter()
                .map(|m| pb::MeetingUsage {
                    meeting_id: m.meeting,
                    participant_seconds: secs(m.participant_ms),
                    sessions: m.sessions,
                    closed_by_failure: m.closed_by_failure,
                    open: m.open,
                })
                .collect(),
            participant_seconds: secs(u.participant_ms),
            revision: u.revision,
            rolled_up_seconds: secs(u.rolled_up_ms),
            quality_minutes: u.quality_minutes,
            good_quality_minutes: u.good_quality_minutes,
            sessions: u
                .sessions
                .iter()
                .map(|s| pb::LedgerSession {
                    meeting_id: s.meeting,
                    node_id: s.node.clone(),
                    participant_id: s.participant,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    end: if s.end_ms == 0 && s.revision == 0 {
                        "open".into()
                    } else {
                        s.end.as_str().into()
                    },
                    join_seq: s.join_seq,
                    left_seq: s.left_seq,
                    features: s.features,
                    revision: s.revision,
                })
                .collect(),
        })
    }

    async fn preview(&self, r: pb::PreviewInvoiceRequest) -> Result<pb::Invoice, ApiError> {
        validate::name("institution", &r.institution)?;
        let (first, last) = billing::parse_period(&r.period).ok_or_else(|| {
            ApiError::invalid(
                "period",
                "FIRST..LAST, two dates (YYYY-MM-DD), first not after last",
            )
        })?;
        let (licence, tables) = match self
            .replica
            .read(Query::Billing {
                institution: r.institution,
            })
            .await?
        {
            QueryOutput::Billing(l, t) => (l, t),
            other => unreachable!("billing query answered {other:?}"),
        };
        let invoice = billing::contract_year_invoice(&licence, &tables, first)
            .map_err(|e| ApiError::NotYet(e.to_string()))?;
        if last > invoice.last_day {
            return Err(ApiError::invalid(
                "period",
                format!(
                    "spans more than one contract year (this one ends on {})",
                    invoice.last_day
                ),
            ));
        }
        Ok(invoice_out(&invoice))
    }
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn preview_invoice(
        &self,
        req: Request<pb::PreviewInvoiceRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::PreviewInvoice)?;
            let r = req.into_inner();
            caller.check_institution(&r.institution)?;
            self.preview(r).await
        };
        finish("preview_invoice", r.await).map(Response::new)
    }

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::ExportBilling)?;
            let r = req.into_inner();
            if !r.all {
                caller.check_institution(&r.institution)?;
            }
            self.export(r, caller.own_institution()).await
        };
        finish("export_billing", r.await).map(Response::new)
    }

    async fn close_period(
        &self,
        req: Request<pb::ClosePeriodRequest>,
    ) -> Result<Response<pb::ClosePeriodResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::ClosePeriod)?;
            self.close(req.into_inner()).await
        };
        finish("close_period", r.await).map(Response::new)
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::UsageShow)?;
            let r = req.into_inner();
            caller.check_institution(&r.institution)?;
            self.usage(r).await
        };
        finish("usage_show", r.await).map(Response::new)
    }
}
