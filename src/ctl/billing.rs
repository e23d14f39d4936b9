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
    }
}
