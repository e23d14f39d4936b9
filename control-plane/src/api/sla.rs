//! Service levels over gRPC: status and reports from a linearizable read,
//! the notification log, maintenance announcements, per-institution
//! objectives and the webhook secret (derived from the KEK, answered only
//! to the institution's admins and operators).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::sla_service_server::SlaService;

use super::authz::{authorize, Rpc};
use super::{finish, validate, ApiError};
use crate::access::Kek;
use crate::raft::Replica;
use crate::sla::notify::{Delivery, Notification};
use crate::sla::report::{InstitutionReport, SloView};
use crate::sla::{Maintenance, Objectives};
use crate::state::{
    AnnounceMaintenance, Command, Output, Query, QueryOutput, SetObjectives, SlaCommand,
};

pub struct SlaApi {
    replica: Arc<Replica>,
    kek: Arc<Kek>,
    /// Where this replica's dashboard is reached (`https://host:port`).
    dashboard_url: Option<String>,
}

pub fn maintenance_out(m: &Maintenance) -> pb::MaintenanceWindow {
    pb::MaintenanceWindow {
        id: m.id,
        region: m.region.clone(),
        node_id: m.node.clone().unwrap_or_default(),
        from_ms: m.from_ms,
        to_ms: m.to_ms,
        reason: m.reason.clone(),
        announced_ms: m.announced_ms,
        started: m.started,
        ended: m.ended,
    }
}

fn slo_out(s: &SloView) -> pb::SloStatus {
    pb::SloStatus {
        sli: s.sli.as_str().into(),
        objective_ppm: s.objective_ppm,
        total: s.window.total,
        bad: s.window.bad,
        maintenance_total: s.window.maintenance_total,
        maintenance_bad: s.window.maintenance_bad,
        measured: s.measured_ppm.is_some(),
        measured_ppm: s.measured_ppm.unwrap_or(0),
        raw_measured_ppm: s.raw_measured_ppm.unwrap_or(0),
        budget_left_ppm: s.budget_left_ppm,
        raw_budget_left_ppm: s.raw_budget_left_ppm,
        burning: s.burning.clone(),
    }
}

pub fn report_out(r: &InstitutionReport) -> pb::InstitutionSla {
    let alert = |a: &crate::sla::report::AlertView| pb::SlaAlert {
        alert: a.alert.clone(),
        sli: a.sli.as_str().into(),
        severity: a.severity.as_str().into(),
        started_ms: a.started_ms,
        ended_ms: a.ended_ms.unwrap_or(0),
        windows: a.windows.clone(),
    };
    pb::InstitutionSla {
        institution: r.institution.clone(),
        at_ms: r.at_ms,
        window_days: r.window_days,
        slos: r.slos.iter().map(slo_out).collect(),
        firing: r.firing.iter().map(alert).collect(),
        recent: r.recent.iter().map(alert).collect(),
        maintenance: r.maintenance.iter().map(maintenance_out).collect(),
        regions: r
            .regions
            .iter()
            .map(|g| pb::RegionStatus {
                region: g.region.clone(),
                state: g.state.as_str().into(),
                nodes_ready: g.nodes.ready,
                nodes_draining: g.nodes.draining,
                nodes_down: g.nodes.down,
            })
            .collect(),
    }
}

fn notification_out(n: &Notification) -> pb::SlaNotification {
    let (delivery, next) = match n.delivery {
        Delivery::Pending { next_attempt_ms } => ("pending", next_attempt_ms),
        Delivery::Delivered { .. } => ("delivered", 0),
        Delivery::GaveUp { .. } => ("gave_up", 0),
        Delivery::NoWebhook => ("no_webhook", 0),
    };
    pb::SlaNotification {
        id: n.id,
        institution: n.institution.clone(),
        kind: n.kind.as_str().into(),
        status: n.status.clone(),
        summary: n.summary.clone(),
        created_ms: n.created_ms,
        contact: n.contact.clone(),
        delivery: delivery.into(),
        next_attempt_ms: next,
        attempts: n
            .attempts
            .iter()
            .map(|a| pb::DeliveryAttempt {
                at_ms: a.at_ms,
                ok: a.ok,
                outcome: a.outcome.clone(),
            })
            .collect(),
        body: n.body.clone(),
    }
}

/// Parses `YYYY-MM` into the month's first day.
pub fn parse_month(text: &str) -> Result<jiff::civil::Date, ApiError> {
    let bad = || ApiError::invalid("month", "YYYY-MM");
    let (y, m) = text.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let y: i16 = y.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    jiff::civil::Date::new(y, m, 1).map_err(|_| bad())
}

impl SlaApi {
    pub fn new(replica: Arc<Replica>, kek: Arc<Kek>, dashboard_url: Option<String>) -> Self {
        SlaApi {
            replica,
            kek,
            dashboard_url,
        }
    }

    pub async fn reports(
        &self,
        institution: Option<String>,
    ) -> Result<Vec<InstitutionReport>, ApiError> {
        match self.replica.read(Query::Sla { institution }).await? {
            QueryOutput::Sla(r) => Ok(r),
            other => unreachable!("sla query answered {other:?}"),
        }
    }

    async fn notifications(
        &self,
        r: pb::ListNotificationsRequest,
    ) -> Result<pb::ListNotificationsResponse, ApiError> {
        let institution = (!r.institution.is_empty()).then_some(r.institution);
        if let Some(i) = &institution {
            validate::name("institution", i)?;
        }
        let limit = match r.limit {
            0 => 100,
            n if n <= 10_000 => n,
            _ => return Err(ApiError::invalid("limit", "at most 10000")),
        };
        match self
            .replica
            .read(Query::SlaNotifications { institution, limit })
            .await?
        {
            QueryOutput::SlaNotifications(n) => Ok(pb::ListNotificationsResponse {
                notifications: n.iter().map(notification_out).collect(),
            }),
            other => unreachable!("notifications query answered {other:?}"),
        }
    }

    async fn announce(
        &self,
        r: pb::AnnounceMaintenanceRequest,
    ) -> Result<pb::AnnounceMaintenanceResponse, ApiError> {
        validate::name("region", &r.region)?;
        if !r.node_id.is_empty() {
            validate::name("node_id", &r.node_id)?;
        }
        if r.reason.trim().is_empty() {
            return Err(ApiError::invalid("reason", "say what the work is"));
        }
        let cmd = Command::Sla(SlaCommand::Announce(AnnounceMaintenance {
            region: r.region,
            node: (!r.node_id.is_empty()).then_some(r.node_id),
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            reason: r.reason,
        }));
        match self.replica.write(cmd).await? {
            Output::MaintenanceAnnounced {
                maintenance,
                notified,
            } => Ok(pb::AnnounceMaintenanceResponse {
                maintenance: Some(maintenance_out(&maintenance)),
                notified,
            }),
            other => unreachable!("announce answered {other:?}"),
        }
    }

    async fn set_objectives(
        &self,
        r: pb::SetObjectivesRequest,
    ) -> Result<pb::SetObjectivesResponse, ApiError> {
        validate::name("institution", &r.institution)?;
        let objectives = (!r.reset).then_some(Objectives {
            availability_ppm: r.availability_ppm,
            join_success_ppm: r.join_success_ppm,
            join_latency_ppm: r.join_latency_ppm,
            media_quality_ppm: r.media_quality_ppm,
        });
        if let Some(o) = &objectives {
            o.validate()
                .map_err(|e| ApiError::invalid("objectives", e.to_string()))?;
        }
        let cmd = Command::Sla(SlaCommand::SetObjectives(SetObjectives {
            institution: r.institution,
            objectives,
        }));
        match self.replica.write(cmd).await? {
            Output::ObjectivesSet { objectives: o, .. } => Ok(pb::SetObjectivesResponse {
                availability_ppm: o.availability_ppm,
                join_success_ppm: o.join_success_ppm,
                join_latency_ppm: o.join_latency_ppm,
                media_quality_ppm: o.media_quality_ppm,
            }),
            other => unreachable!("set objectives answered {other:?}"),
        }
    }

    async fn monthly(
        &self,
        r: pb::MonthlyReportRequest,
    ) -> Result<pb::MonthlyReportResponse, ApiError> {
        validate::name("institution", &r.institution)?;
        let month = parse_month(&r.month)?;
        let lines = match self
            .replica
            .read(Query::SlaMonthly {
                institution: r.institution.clone(),
                month,
            })
            .await?
        {
            QueryOutput::SlaMonthly(l) => l,
            other => unreachable!("monthly query answered {other:?}"),
        };
        let csv = crate::sla::report::monthly_csv(&r.institution, &lines).map_err(|e| {
            tracing::error!(error = %e, "monthly SLA report failed");
            ApiError::Internal("monthly report")
        })?;
        Ok(pb::MonthlyReportResponse { csv })
    }
}

#[tonic::async_trait]
impl SlaService for SlaApi {
    async fn get_status(
        &self,
        req: Request<pb::SlaStatusRequest>,
    ) -> Result<Response<pb::SlaStatusResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::SlaStatus)?;
            let r = req.into_inner();
            let institution = match (r.institution.as_str(), caller.own_institution()) {
                ("", Some(own)) => Some(own.to_string()),
                ("", None) => None,
                (name, _) => {
                    validate::name("institution", name)?;
                    caller.check_institution(name)?;
                    Some(name.to_string())
                }
            };
            let reports = self.reports(institution).await?;
            Ok(pb::SlaStatusResponse {
                institutions: reports.iter().map(report_out).collect(),
            })
        };
        finish("sla_status", r.await).map(Response::new)
    }

    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::SlaNotifications)?;
            let mut r = req.into_inner();
            match (r.institution.as_str(), caller.own_institution()) {
                ("", Some(own)) => r.institution = own.to_string(),
                ("", None) => {}
                (name, _) => caller.check_institution(name)?,
            }
            self.notifications(r).await
        };
        finish("sla_notifications", r.await).map(Response::new)
    }

    async fn announce_maintenance(
        &self,
        req: Request<pb::AnnounceMaintenanceRequest>,
    ) -> Result<Response<pb::AnnounceMaintenanceResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::AnnounceMaintenance)?;
            self.announce(req.into_inner()).await
        };
        finish("announce_maintenance", r.await).map(Response::new)
    }

    async fn list_maintenance(
        &self,
        req: Request<pb::ListMaintenanceRequest>,
    ) -> Result<Response<pb::ListMaintenanceResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::ListMaintenance)?;
            match self.replica.read(Query::Maintenance).await? {
                QueryOutput::Maintenance(m) => Ok(pb::ListMaintenanceResponse {
                    maintenance: m.iter().map(maintenance_out).collect(),
                }),
                other => unreachable!("maintenance query answered {other:?}"),
            }
        };
        finish("list_maintenance", r.await).map(Response::new)
    }

    async fn get_webhook_secret(
        &self,
        req: Request<pb::WebhookSecretRequest>,
    ) -> Result<Response<pb::WebhookSecretResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::WebhookSecret)?;
            let r = req.into_inner();
            validate::name("institution", &r.institution)?;
            caller.check_institution(&r.institution)?;
            // Only for institutions that exist: the secret of a name not yet
            // created is nobody's. A linearizable read (unknown institutions
            // are refused by it), so an institution created just before is
            // known even to a follower that has not applied it yet.
            self.replica
                .read(crate::state::Query::Institution {
                    name: r.institution.clone(),
                })
                .await?;
            Ok(pb::WebhookSecretResponse {
                secret: self.kek.webhook_secret(&r.institution),
            })
        };
        finish("webhook_secret", r.await).map(Response::new)
    }

    async fn set_objectives(
        &self,
        req: Request<pb::SetObjectivesRequest>,
    ) -> Result<Response<pb::SetObjectivesResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::SetObjectives)?;
            self.set_objectives(req.into_inner()).await
        };
        finish("set_objectives", r.await).map(Response::new)
    }

    async fn monthly_report(
        &self,
        req: Request<pb::MonthlyReportRequest>,
    ) -> Result<Response<pb::MonthlyReportResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::SlaMonthlyReport)?;
            let r = req.into_inner();
            caller.check_institution(&r.institution)?;
            self.monthly(r).await
        };
        finish("sla_monthly_report", r.await).map(Response::new)
    }

    async fn dashboard_link(
        &self,
        req: Request<pb::DashboardLinkRequest>,
    ) -> Result<Response<pb::DashboardLinkResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::DashboardLink)?;
            let r = req.into_inner();
            let scope = if r.institution.is_empty() {
                if caller.own_institution().is_some() {
                    return Err(ApiError::invalid(
                        "institution",
                        "institution admins get their own institution's page",
                    ));
                }
                crate::sla::link::ALL.to_string()
            } else {
                validate::name("institution", &r.institution)?;
                caller.check_institution(&r.institution)?;
                r.institution.clone()
            };
            let valid_ms = match r.valid_for_s {
                0 => 3_600_000,
                s => s.saturating_mul(1000),
            };
            if valid_ms > crate::sla::link::MAX_LINK_VALIDITY_MS {
                return Err(ApiError::invalid("valid_for_s", "at most 31 days"));
            }
            let Some(base) = &self.dashboard_url else {
                return Err(ApiError::NotYet(
                    "this replica serves no dashboard (start it with --dashboard-listen)".into(),
                ));
            };
            let expires_ms = crate::raft::now_ms() + valid_ms;
            let token = crate::sla::link::sign(&self.kek.dashboard_link_key(), &scope, expires_ms);
            let path = if scope == crate::sla::link::ALL {
                "/sla".to_string()
            } else {
                format!("/sla/{scope}")
            };
            Ok(pb::DashboardLinkResponse {
                url: format!("{base}{path}?link={token}"),
                expires_ms,
            })
        };
        finish("dashboard_link", r.await).map(Response::new)
    }
}
