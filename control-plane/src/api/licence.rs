//! Licences and price tables over gRPC. Operators manage everything; an
//! institution admin reads its own licence and reports its own FTE,
//! student licences and contact points (the tier, add-ons and agreement
//! start stay the operator's).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::licence_service_server::LicenceService;

use super::authz::{authorize, Rpc};
use super::{finish, validate, ApiError};
use crate::licensing::{
    format_fte, parse_date, parse_fte, price_table::MAX_PRICE_TABLE_BYTES, LicenceTerms, Limits,
    PriceTable, Tier, MAX_ADD_ONS,
};
use crate::raft::Replica;
use crate::state::{
    Command, GiveNotice, Licence, LicenceCommand, LicenceVersion, LicenceView, LoadPriceTable,
    Output, Query, QueryOutput, Reporter, SetLicence,
};

pub struct LicenceApi {
    replica: Arc<Replica>,
}

/// Installs the built-in price table if the cluster has none: the first
/// committed table wins, so replicas racing here agree.
pub async fn ensure_price_table(replica: &Replica) -> Result<(), ApiError> {
    if replica.local_state(|s| s.licences.price_table().is_some()) {
        return Ok(());
    }
    replica
        .write(Command::Licence(LicenceCommand::LoadPriceTable(
            LoadPriceTable {
                table: PriceTable::builtin(),
                only_if_none: true,
            },
        )))
        .await?;
    Ok(())
}

fn date(field: &'static str, text: &str) -> Result<jiff::civil::Date, ApiError> {
    parse_date(text).map_err(|_| ApiError::invalid(field, "expected a date, YYYY-MM-DD"))
}

fn terms_from(t: pb::LicenceTerms) -> Result<LicenceTerms, ApiError> {
    let tier = Tier::parse(&t.tier)
        .ok_or_else(|| ApiError::invalid("terms.tier", "education or basic"))?;
    let staff_fte_centi = parse_fte(&t.staff_fte).map_err(|_| {
        ApiError::invalid(
            "terms.staff_fte",
            "a number with at most two decimals, at most 10,000,000",
        )
    })?;
    if t.add_ons.len() > MAX_ADD_ONS {
        return Err(ApiError::invalid(
            "terms.add_ons",
            format!("at most {MAX_ADD_ONS}"),
        ));
    }
    for a in &t.add_ons {
        validate::name("terms.add_ons", a)?;
    }
    validate::range_u32("terms.student_licences", t.student_licences, 0, 10_000_000)?;
    let terms = LicenceTerms {
        tier,
        staff_fte_centi,
        student_licences: t.student_licences,
        add_ons: t.add_ons.into_iter().collect(),
        agreement_start: date("terms.agreement_start", &t.agreement_start)?,
        agreement_contact: t.agreement_contact,
        technical_contact: t.technical_contact,
        allow_overage: t.allow_overage,
    };
    crate::licensing::check_contact("agreement contact", &terms.agreement_contact)
        .map_err(|e| ApiError::invalid("terms.agreement_contact", e.to_string()))?;
    crate::licensing::check_contact("technical contact", &terms.technical_contact)
        .map_err(|e| ApiError::invalid("terms.technical_contact", e.to_string()))?;
    Ok(terms)
}

fn terms_out(t: &LicenceTerms) -> pb::LicenceTerms {
    pb::LicenceTerms {
        tier: t.tier.as_str().to_string(),
        staff_fte: format_fte(t.staff_fte_centi),
        student_licences: t.student_licences,
        add_ons: t.add_ons.iter().cloned().collect(),
        agreement_start: t.agreement_start.to_string(),
        agreement_contact: t.agreement_contact.clone(),
        technical_contact: t.technical_contact.clone(),
        staff_licences: t.staff_licences(),
        allow_overage: t.allow_overage,
    }
}

fn version_out(v: &LicenceVersion) -> pb::LicenceVersion {
    pb::LicenceVersion {
        version: v.version,
        effective: v.effective.to_string(),
        recorded_at_ms: v.recorded_at_ms,
        terms: Some(terms_out(&v.terms)),
    }
}

fn limits_out(l: &Limits) -> pb::Limits {
    pb::Limits {
        meeting_participants: l.meeting_participants,
        webinar_attendees: l.webinar_attendees,
        max_duration_s: l.max_duration_s,
        warn_before_end_s: l.warn_before_end_s,
    }
}

fn licence_out(v: &LicenceView) -> pb::LicenceResponse {
    let s = &v.status;
    let on_renewal = match s.on_renewal_date {
        crate::licensing::OnRenewalDate::Renews => "renews",
        crate::licensing::OnRenewalDate::Ends => "ends",
        crate::licensing::OnRenewalDate::Nothing => "nothing",
    };
    pb::LicenceResponse {
        licence: Some(pb::Licence {
            institution: v.institution.clone(),
            in_force: Some(version_out(&v.in_force)),
            versions: v.versions,
            status: Some(pb::AgreementStatus {
                on: s.on.to_string(),
                phase: s.phase.as_str().to_string(),
                contract_year_first_day: s.contract_year.first_day.to_string(),
                contract_year_last_day: s.contract_year.last_day.to_string(),
                contract_year_days_covered: s.contract_year.days_covered,
                contract_year_days: s.contract_year.days_in_year,
                renewal_date: s.renewal_date.to_string(),
                on_renewal_date: on_renewal.to_string(),
                last_day_to_give_notice: s.last_day_to_give_notice.to_string(),
                ends_on: s.ends_on.map(|d| d.to_string()).unwrap_or_default(),
                notice_given_on: v.notice.map(|d| d.to_string()).unwrap_or_default(),
            }),
            price_table: v.price_table.clone(),
            staff_limits: Some(limits_out(&v.staff_limits)),
            student_limits: Some(limits_out(&v.student_limits)),
        }),
    }
}

fn history_out(l: &Licence) -> pb::LicenceHistoryResponse {
    pb::LicenceHistoryResponse {
        institution: l.institution.clone(),
        versions: l.history.iter().map(version_out).collect(),
        notice_given_on: l.notice.map(|n| n.date.to_string()).unwrap_or_default(),
    }
}

impl LicenceApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        LicenceApi { replica }
    }

    async fn set(
        &self,
        r: pb::SetLicenceRequest,
        reporter: Reporter,
    ) -> Result<pb::LicenceResponse, ApiError> {
        validate::name("institution", &r.institution)?;
        let terms = terms_from(r.terms.unwrap_or_default())?;
        let effective = match r.effective.as_str() {
            "" => None,
            d => Some(date("effective", d)?),
        };
        ensure_price_table(&self.replica).await?;
        let out = self
            .replica
            .write(Command::Licence(LicenceCommand::Set(SetLicence {
                institution: r.institution,
                effective,
                terms,
                reporter,
            })))
            .await?;
        match out {
            Output::Licence(v) => Ok(licence_out(&v)),
            other => unreachable!("set_licence answered {other:?}"),
        }
    }

    async fn get(&self, institution: String) -> Result<pb::LicenceResponse, ApiError> {
        validate::name("institution", &institution)?;
        match self.replica.read(Query::Licence { institution }).await? {
            QueryOutput::Licence(v) => Ok(licence_out(&v)),
            other => unreachable!("licence query answered {other:?}"),
        }
    }

    async fn history(&self, institution: String) -> Result<pb::LicenceHistoryResponse, ApiError> {
        validate::name("institution", &institution)?;
        match self
            .replica
            .read(Query::LicenceHistory { institution })
            .await?
        {
            QueryOutput::LicenceHistory(l) => Ok(history_out(&l)),
            other => unreachable!("licence history query answered {other:?}"),
        }
    }

    async fn notice(&self, r: pb::GiveNoticeRequest) -> Result<pb::LicenceResponse, ApiError> {
        validate::name("institution", &r.institution)?;
        let date = date("date", &r.date)?;
        let out = self
            .replica
            .write(Command::Licence(LicenceCommand::GiveNotice(GiveNotice {
                institution: r.institution,
                date,
            })))
            .await?;
        match out {
            Output::Licence(v) => Ok(licence_out(&v)),
            other => unreachable!("give_notice answered {other:?}"),
        }
    }

    async fn load(
        &self,
        r: pb::LoadPriceTableRequest,
    ) -> Result<pb::LoadPriceTableResponse, ApiError> {
        if r.toml.len() > MAX_PRICE_TABLE_BYTES {
            return Err(ApiError::invalid(
                "toml",
                format!("at most {MAX_PRICE_TABLE_BYTES} bytes"),
            ));
        }
        let table =
            PriceTable::from_toml(&r.toml).map_err(|e| ApiError::invalid("toml", e.to_string()))?;
        let out = self
            .replica
            .write(Command::Licence(LicenceCommand::LoadPriceTable(
                LoadPriceTable {
                    table,
                    only_if_none: false,
                },
            )))
            .await?;
        match out {
            Output::PriceTableLoaded { version, loaded } => {
                Ok(pb::LoadPriceTableResponse { version, loaded })
            }
            other => unreachable!("load_price_table answered {other:?}"),
        }
    }

    async fn price_table(&self) -> Result<pb::GetPriceTableResponse, ApiError> {
        ensure_price_table(&self.replica).await?;
        match self.replica.read(Query::PriceTable).await? {
            QueryOutput::PriceTable(t) => Ok(pb::GetPriceTableResponse {
                version: t.version.clone(),
                json: serde_json::to_string(&t)
                    .map_err(|_| ApiError::Internal("the price table cannot be encoded"))?,
            }),
            other => unreachable!("price table query answered {other:?}"),
        }
    }
}

#[tonic::async_trait]
impl LicenceService for LicenceApi {
    async fn set_licence(
        &self,
        req: Request<pb::SetLicenceRequest>,
    ) -> Result<Response<pb::LicenceResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::SetLicence)?;
            let r = req.into_inner();
            caller.check_institution(&r.institution)?;
            let reporter = match caller.own_institution() {
                Some(_) => Reporter::InstitutionAdmin,
                None => Reporter::Operator,
            };
            self.set(r, reporter).await
        };
        finish("set_licence", r.await).map(Response::new)
    }

    async fn get_licence(
        &self,
        req: Request<pb::GetLicenceRequest>,
    ) -> Result<Response<pb::LicenceResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::GetLicence)?;
            let r = req.into_inner();
            caller.check_institution(&r.institution)?;
            self.get(r.institution).await
        };
        finish("get_licence", r.await).map(Response::new)
    }

    async fn licence_history(
        &self,
        req: Request<pb::GetLicenceRequest>,
    ) -> Result<Response<pb::LicenceHistoryResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::LicenceHistory)?;
            let r = req.into_inner();
            caller.check_institution(&r.institution)?;
            self.history(r.institution).await
        };
        finish("licence_history", r.await).map(Response::new)
    }

    async fn give_notice(
        &self,
        req: Request<pb::GiveNoticeRequest>,
    ) -> Result<Response<pb::LicenceResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::GiveNotice)?;
            self.notice(req.into_inner()).await
        };
        finish("give_notice", r.await).map(Response::new)
    }

    async fn load_price_table(
        &self,
        req: Request<pb::LoadPriceTableRequest>,
    ) -> Result<Response<pb::LoadPriceTableResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::LoadPriceTable)?;
            self.load(req.into_inner()).await
        };
        finish("load_price_table", r.await).map(Response::new)
    }

    async fn get_price_table(
        &self,
        req: Request<pb::GetPriceTableRequest>,
    ) -> Result<Response<pb::GetPriceTableResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::GetPriceTable)?;
            self.price_table().await
        };
        finish("get_price_table", r.await).map(Response::new)
    }
}
