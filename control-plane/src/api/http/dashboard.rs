//! The SLA dashboard: one page per institution (per SLO the objective, the
//! measured value and the error budget left; the budget burn over the SLO
//! window; firing and recent alerts; maintenance; region states; the
//! monthly report as CSV) and an operator overview sorted by budget left.
//! Every page needs a signed link (`fjord ctl sla dashboard-link`): an
//! institution's link opens its own page only, an overview link every page.
//!
//! ```text
//!  GET /sla?link=T                          overview (operator links)
//!  GET /sla/{institution}?link=T            an institution's page
//!  GET /sla/{institution}/report.csv?link=T&month=YYYY-MM
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use crate::raft::Replica;
use crate::sla::link;
use crate::sla::notify::rfc3339;
use crate::sla::report::InstitutionReport;
use crate::sla::{format_ppm, Maintenance};
use crate::state::{Query as StateQuery, QueryOutput};

#[derive(Clone)]
pub struct Dashboard {
    replica: Arc<Replica>,
    link_key: [u8; 32],
}

#[derive(Deserialize)]
pub struct LinkParams {
    link: Option<String>,
    month: Option<String>,
}

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " — Fjord service levels" }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}th:first-child,td:first-child{text-align:left}\
.firing{color:#b00020;font-weight:bold}.ok{color:#1b7f1b}.state{font-weight:bold}";

fn refused(why: &str) -> Response {
    let body = page(
        "Refused",
        html! {
            h1 { "Refused" }
            p #refused { (why) " Ask your operator for a new link (fjord ctl sla dashboard-link)." }
        },
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

fn pct(ppm: i64) -> String {
    format!("{}%", format_ppm(ppm))
}

fn when(ms: u64) -> String {
    rfc3339(ms)
}

impl Dashboard {
    pub fn new(replica: Arc<Replica>, link_key: [u8; 32]) -> Self {
        Dashboard { replica, link_key }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/sla", get(overview))
            .route("/sla/{institution}", get(institution_page))
            .route("/sla/{institution}/report.csv", get(monthly_csv))
            .with_state(self)
    }

    /// The scope the link opens, or the refusal page.
    fn scope(&self, p: &LinkParams) -> Result<String, Box<Response>> {
        let Some(token) = &p.link else {
            return Err(Box::new(refused("This page needs a signed link.")));
        };
        link::verify(&self.link_key, token, crate::raft::now_ms()).map_err(|e| {
            Box::new(match e {
                link::LinkError::Expired => refused("This link has expired."),
                _ => refused("This link is not valid."),
            })
        })
    }

    /// Whether the link opens `institution`'s pages (its own link, or an
    /// overview link).
    fn opens(&self, p: &LinkParams, institution: &str) -> Result<(), Box<Response>> {
        let scope = self.scope(p)?;
        if scope != link::ALL && scope != institution {
            return Err(Box::new(refused(
                "This link opens another institution's page.",
            )));
        }
        Ok(())
    }

    async fn reports(
        &self,
        institution: Option<String>,
    ) -> Result<Vec<InstitutionReport>, Box<Response>> {
        let failed = |code: StatusCode, why: String| Box::new((code, why).into_response());
        match self.replica.read(StateQuery::Sla { institution }).await {
            Ok(QueryOutput::Sla(r)) => Ok(r),
            Ok(_) => Err(failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected answer".into(),
            )),
            Err(crate::raft::ClusterError::State(e)) => {
                Err(failed(StatusCode::NOT_FOUND, e.to_string()))
            }
            Err(e) => Err(failed(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
    }
}

async fn overview(State(d): State<Dashboard>, Query(p): Query<LinkParams>) -> Response {
    let scope = match d.scope(&p) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if scope != link::ALL {
        return refused("This link opens one institution's page only.");
    }
    let reports = match d.reports(None).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let token = p.link.unwrap_or_default();
    page(
        "All institutions",
        html! {
            h1 { "Service levels: all institutions" }
            p { "Least error budget left first." }
            table #overview {
                tr { th { "Institution" } th { "Least budget left" } th { "Firing alerts" } }
                @for r in &reports {
                    tr {
                        td { a href=(format!("/sla/{}?link={}", r.institution, token)) { (r.institution) } }
                        td { (pct(r.least_budget_left_ppm())) }
                        td class=(if r.firing.is_empty() { "ok" } else { "firing" }) { (r.firing.len()) }
                    }
                }
            }
        },
    )
    .into_response()
}

fn maintenance_rows(ms: &[Maintenance], now: u64) -> Markup {
    html! {
        @for m in ms {
            tr {
                td { (if m.to_ms <= now { "past" } else if m.from_ms <= now { "now" } else { "upcoming" }) }
                td { (m.node.clone().map(|n| format!("node {n} ({})", m.region)).unwrap_or_else(|| format!("region {}", m.region))) }
                td { (when(m.from_ms)) } td { (when(m.to_ms)) } td { (m.reason) }
            }
        }
    }
}

async fn institution_page(
    State(d): State<Dashboard>,
    Path(institution): Path<String>,
    Query(p): Query<LinkParams>,
) -> Response {
    if let Err(r) = d.opens(&p, &institution) {
        return *r;
    }
    let r = match d.reports(Some(institution)).await {
        Ok(mut r) if !r.is_empty() => r.remove(0),
        Ok(_) => return (StatusCode::NOT_FOUND, "no such institution").into_response(),
        Err(r) => return *r,
    };
    institution_page_html(&r, &p.link.unwrap_or_default()).into_response()
}

async fn monthly_csv(
    State(d): State<Dashboard>,
    Path(institution): Path<String>,
    Query(p): Query<LinkParams>,
) -> Response {
    if let Err(r) = d.opens(&p, &institution) {
        return *r;
    }
    let Some(month) = p
        .month
        .as_deref()
        .and_then(|m| crate::api::sla::parse_month(m).ok())
    else {
        return (StatusCode::BAD_REQUEST, "month=YYYY-MM").into_response();
    };
    let lines = match d
        .replica
        .read(StateQuery::SlaMonthly {
            institution: institution.clone(),
            month,
        })
        .await
    {
        Ok(QueryOutput::SlaMonthly(l)) => l,
        Ok(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer").into_response(),
        Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    match crate::sla::report::monthly_csv(&institution, &lines) {
        Ok(csv) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "report failed").into_response(),
    }
}

/// HTTPS for axum: each accepted connection's TLS handshake is done (with a
/// deadline) before the connection is handed over.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(error = %e, "dashboard TLS handshake failed"),
                Err(_) => tracing::debug!("dashboard TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves the dashboard on `listener` with `tls` (its ALPN set to HTTP/1.1).
pub fn serve(
    dashboard: Dashboard,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TlsListener {
        tcp: listener,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, dashboard.router()).await {
            tracing::error!(error = %e, "dashboard server stopped");
        }
    });
}

/// The institution page for a report, with links carrying `token`. Pure:
/// the benchmark renders it without a server.
pub fn institution_page_html(r: &InstitutionReport, token: &str) -> Markup {
    let chart = match super::chart::budget_burn_svg(&r.slos, r.at_ms, r.window_days) {
        Ok(svg) => svg,
        Err(e) => {
            tracing::warn!(error = %e, "budget chart failed");
            String::new()
        }
    };
    let month = crate::licensing::service_date(r.at_ms);
    let month = format!("{:04}-{:02}", month.year(), month.month());
    page(
        &r.institution,
        html! {
            h1 { "Service levels: " span #institution { (r.institution) } }
            p { "Rolling " (r.window_days) " days, as of " (when(r.at_ms)) ". Figures leave out announced maintenance; raw figures include it." }
            table #slos {
                tr { th { "SLO" } th { "Objective" } th { "Measured" } th { "Error budget left" } th { "Raw measured" } th { "Events" } th { "Burning" } }
                @for s in &r.slos {
                    tr class="slo" data-sli=(s.sli.as_str()) {
                        td { (s.sli.as_str()) }
                        td class="objective" { (pct(i64::from(s.objective_ppm))) }
                        td class="measured" { (s.measured_ppm.map(|m| pct(i64::from(m))).unwrap_or_else(|| "no data".into())) }
                        td class="budget" { (pct(s.budget_left_ppm)) }
                        td class="raw" { (s.raw_measured_ppm.map(|m| pct(i64::from(m))).unwrap_or_else(|| "no data".into())) }
                        td { (s.window.total) }
                        td { (s.burning.join(", ")) }
                    }
                }
            }
            h2 { "Budget burn" }
            div #chart { (PreEscaped(chart)) }
            h2 { "Alerts" }
            table #alerts {
                tr { th { "Alert" } th { "SLO" } th { "Severity" } th { "Since" } th { "Until" } }
                @for a in &r.firing {
                    tr class="firing" { td { (a.alert) } td { (a.sli.as_str()) } td { (a.severity.as_str()) } td { (when(a.started_ms)) } td { "firing" } }
                }
                @for a in &r.recent {
                    tr { td { (a.alert) } td { (a.sli.as_str()) } td { (a.severity.as_str()) } td { (when(a.started_ms)) } td { (a.ended_ms.map(when).unwrap_or_default()) } }
                }
            }
            h2 { "Regions" }
            table #regions {
                tr { th { "Region" } th { "State" } th { "Nodes ready" } th { "Draining" } th { "Down" } }
                @for g in &r.regions {
                    tr { td { (g.region) } td class="state" { (g.state.as_str()) } td { (g.nodes.ready) } td { (g.nodes.draining) } td { (g.nodes.down) } }
                }
            }
            h2 { "Maintenance" }
            table #maintenance {
                tr { th { "" } th { "Scope" } th { "From" } th { "To" } th { "Reason" } }
                (maintenance_rows(&r.maintenance, r.at_ms))
            }
            p { a #report href=(format!("/sla/{}/report.csv?month={month}&link={token}", r.institution)) { "Monthly report (CSV), " (month) } }
        },
    )
}
