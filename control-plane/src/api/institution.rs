use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::institution_service_server::InstitutionService;

use super::authz::{authorize, Rpc};
use super::{convert, finish, validate, ApiError};
use crate::raft::Replica;
use crate::state::{Command, CreateInstitution, InstitutionCommand, Output, Query, QueryOutput};

pub struct InstitutionApi {
    replica: Arc<Replica>,
}

impl InstitutionApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        InstitutionApi { replica }
    }

    async fn create(
        &self,
        r: pb::CreateInstitutionRequest,
    ) -> Result<pb::CreateInstitutionResponse, ApiError> {
        validate::name("name", &r.name)?;
        validate::name("residency", &r.residency)?;
        if !r.home_region.is_empty() {
            validate::name("home_region", &r.home_region)?;
        }
        validate::range_u32(
            "max_participants",
            r.max_participants,
            1,
            validate::MAX_PARTICIPANTS,
        )?;
        let out = self
            .replica
            .write(Command::Institution(InstitutionCommand::Create(
                CreateInstitution {
                    name: r.name,
                    residency: r.residency,
                    home_region: Some(r.home_region).filter(|h| !h.is_empty()),
                    max_participants: r.max_participants,
                },
            )))
            .await?;
        match out {
            Output::Institution(i) => Ok(pb::CreateInstitutionResponse {
                institution: Some(convert::institution(&i)),
            }),
            other => unreachable!("create_institution answered {other:?}"),
        }
    }

    async fn get(
        &self,
        r: pb::GetInstitutionRequest,
    ) -> Result<pb::GetInstitutionResponse, ApiError> {
        validate::name("name", &r.name)?;
        match self
            .replica
            .read(Query::Institution { name: r.name })
            .await?
        {
            QueryOutput::Institution(i) => Ok(pb::GetInstitutionResponse {
                institution: Some(convert::institution(&i)),
            }),
            other => unreachable!("institution query answered {other:?}"),
        }
    }

    async fn list(&self) -> Result<pb::ListInstitutionsResponse, ApiError> {
        match self.replica.read(Query::Institutions).await? {
            QueryOutput::Institutions(v) => Ok(pb::ListInstitutionsResponse {
                institutions: v.iter().map(convert::institution).collect(),
            }),
            other => unreachable!("institutions query answered {other:?}"),
        }
    }
}

#[tonic::async_trait]
impl InstitutionService for InstitutionApi {
    async fn create_institution(
        &self,
        req: Request<pb::CreateInstitutionRequest>,
    ) -> Result<Response<pb::CreateInstitutionResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::CreateInstitution)?;
            self.create(req.into_inner()).await
        };
        finish("create_institution", r.await).map(Response::new)
    }

    async fn get_institution(
        &self,
        req: Request<pb::GetInstitutionRequest>,
    ) -> Result<Response<pb::GetInstitutionResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::GetInstitution)?;
            let r = req.into_inner();
            caller.check_institution(&r.name)?;
            self.get(r).await
        };
        finish("get_institution", r.await).map(Response::new)
    }

    async fn list_institutions(
        &self,
        req: Request<pb::ListInstitutionsRequest>,
    ) -> Result<Response<pb::ListInstitutionsResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::ListInstitutions)?;
            self.list().await
        };
        finish("list_institutions", r.await).map(Response::new)
    }
}
