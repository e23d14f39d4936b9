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
use crate::state::{Query, QueryOutput};

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
            })
            .collect(),
        total_minor: i.total_minor,
        total: decimal(i.total_minor, digits),
    }
}

impl BillingApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        BillingApi { replica }
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
}
