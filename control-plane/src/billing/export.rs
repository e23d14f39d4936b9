//! Billing exports: CSV (RFC 4180, a fixed header, one row per line) and
//! JSON, byte for byte the same for the same invoices. Nothing here reads a
//! clock or iterates a hash map: what goes in decides every byte.

use serde::Serialize;

use super::{decimal, Invoice, InvoiceLine};

/// The CSV header, fixed: columns are only ever added at the end.
pub const CSV_HEADER: [&str; 20] = [
    "institution",
    "period_first",
    "period_last",
    "revision",
    "line",
    "kind",
    "item",
    "quantity",
    "unit",
    "yearly_price",
    "rate_per_unit",
    "from",
    "to",
    "days",
    "days_in_year",
    "amount",
    "currency",
    "price_table",
    "corrects",
    "reason",
];

/// What an export is of.
pub struct ExportMeta<'a> {
    pub period_first: &'a str,
    pub period_last: &'a str,
    pub revision: u64,
    pub closed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn csv(meta: &ExportMeta, invoices: &[Invoice]) -> Result<Vec<u8>, ExportError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let revision = meta.revision.to_string();
    for inv in invoices {
        let d = inv.minor_unit_digits;
        for (n, l) in inv.lines.iter().enumerate() {
            w.write_record([
                inv.institution.as_str(),
                meta.period_first,
                meta.period_last,
                &revision,
                &(n + 1).to_string(),
                l.kind.as_str(),
                &l.item,
                &l.quantity.to_string(),
                l.unit.as_str(),
                &decimal(l.yearly_minor, d),
                &decimal(l.rate_minor, d),
                &l.from.to_string(),
                &l.to.to_string(),
                &l.days.to_string(),
                &l.days_in_year.to_string(),
                &decimal(l.amount_minor, d),
                &inv.currency,
                &inv.price_table,
                l.corrects.as_deref().unwrap_or(""),
                l.reason.as_deref().unwrap_or(""),
            ])?;
        }
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(w.into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?)
}

#[derive(Serialize)]
struct JsonExport<'a> {
    period: String,
    revision: u64,
    closed: bool,
    invoices: Vec<JsonInvoice<'a>>,
}

#[derive(Serialize)]
struct JsonInvoice<'a> {
    institution: &'a str,
    currency: &'a str,
    minor_unit_digits: u8,
    price_table: &'a str,
    lines: Vec<JsonLine<'a>>,
    total_minor: i64,
    total: String,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    kind: &'a str,
    item: &'a str,
    quantity: i64,
    unit: &'a str,
    yearly_minor: i64,
    rate_minor: i64,
    from: String,
    to: String,
    days: u32,
    days_in_year: u32,
    amount_minor: i64,
    amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    corrects: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

fn json_line(l: &InvoiceLine, digits: u8) -> JsonLine<'_> {
    JsonLine {
        kind: l.kind.as_str(),
        item: &l.item,
        quantity: l.quantity,
        unit: l.unit.as_str(),
        yearly_minor: l.yearly_minor,
        rate_minor: l.rate_minor,
        from: l.from.to_string(),
        to: l.to.to_string(),
        days: l.days,
        days_in_year: l.days_in_year,
        amount_minor: l.amount_minor,
        amount: decimal(l.amount_minor, digits),
        corrects: l.corrects.as_deref(),
        reason: l.reason.as_deref(),
    }
}

pub fn json(meta: &ExportMeta, invoices: &[Invoice]) -> Result<Vec<u8>, ExportError> {
    let export = JsonExport {
        period: format!("{}..{}", meta.period_first, meta.period_last),
        revision: meta.revision,
        closed: meta.closed,
        invoices: invoices
            .iter()
            .map(|i| JsonInvoice {
                institution: &i.institution,
                currency: &i.currency,
                minor_unit_digits: i.minor_unit_digits,
                price_table: &i.price_table,
                lines: i
                    .lines
                    .iter()
                    .map(|l| json_line(l, i.minor_unit_digits))
                    .collect(),
                total_minor: i.total_minor,
                total: decimal(i.total_minor, i.minor_unit_digits),
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&export)?;
    out.push(b'\n');
    Ok(out)
}
