use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::meeting_service_server::MeetingService;

use super::{convert, finish, validate, ApiError};
use crate::raft::Replica;
use crate::state::{Command, Output, Query, QueryOutput};

pub struct MeetingApi {
    replica: Arc<Replica>,
}

impl MeetingApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        MeetingApi { replica }
    }

    async fn schedule(
        &self,
        r: pb::ScheduleMeetingRequest,
    ) -> Result<pb::ScheduleMeetingResponse, ApiError> {
        validate::name("institution", &r.institution)?;
        validate::range_u32(
            "participants",
            r.participants,
            1,
            validate::MAX_PARTICIPANTS,
        )?;
        if r.duration_ms > validate::MAX_DURATION_MS {
            return Err(ApiError::invalid(
                "duration_ms",
                format!("longer than {} ms (7 days)", validate::MAX_DURATION_MS),
            ));
        }
        let now = crate::raft::now_ms();
        if r.start_ms > now.saturating_add(validate::MAX_SCHEDULE_AHEAD_MS) {
            return Err(ApiError::invalid("start_ms", "more than 400 days ahead"));
        }
        if r.request_id.len() > validate::MAX_REQUEST_ID_LEN
            || r.request_id.chars().any(|c| c.is_control())
        {
            return Err(ApiError::invalid(
                "request_id",
                format!(
                    "at most {} printable characters",
                    validate::MAX_REQUEST_ID_LEN
                ),
            ));
        }
        let out = self
            .replica
            .write(Command::ScheduleMeeting {
                request_id: Some(r.request_id).filter(|s| !s.is_empty()),
                institution: r.institution,
                participants: r.participants,
                start_ms: Some(r.start_ms).filter(|s| *s != 0),
                duration_ms: r.duration_ms,
            })
            .await?;
        match out {
            Output::Scheduled { meeting, decision } => Ok(pb::ScheduleMeetingResponse {
                meeting: Some(convert::meeting(&meeting)),
                decision: Some(convert::decision(&decision)),
            }),
            other => unreachable!("schedule answered {other:?}"),
        }
    }

    async fn meeting(&self, id: u64) -> Result<crate::state::Meeting, ApiError> {
        validate::id("id", id)?;
        match self.replica.read(Query::Meeting { id }).await? {
            QueryOutput::Meeting(m) => Ok(m),
            other => unreachable!("meeting query answered {other:?}"),
        }
    }

    async fn list(&self, r: pb::ListMeetingsRequest) -> Result<pb::ListMeetingsResponse, ApiError> {
        if !r.institution.is_empty() {
            validate::name("institution", &r.institution)?;
        }
        let q = Query::Meetings {
            institution: Some(r.institution).filter(|s| !s.is_empty()),
            include_ended: r.include_ended,
        };
        match self.replica.read(q).await? {
            QueryOutput::Meetings(v) => Ok(pb::ListMeetingsResponse {
                meetings: v.iter().map(convert::meeting).collect(),
            }),
            other => unreachable!("meetings query answered {other:?}"),
        }
    }

    async fn end(&self, id: u64) -> Result<pb::EndMeetingResponse, ApiError> {
        validate::id("id", id)?;
        match self.replica.write(Command::EndMeeting { id }).await? {
            Output::Meeting(m) => Ok(pb::EndMeetingResponse {
                meeting: Some(convert::meeting(&m)),
            }),
            other => unreachable!("end answered {other:?}"),
        }
    }
}

#[tonic::async_trait]
impl MeetingService for MeetingApi {
    async fn schedule_meeting(
        &self,
        req: Request<pb::ScheduleMeetingRequest>,
    ) -> Result<Response<pb::ScheduleMeetingResponse>, Status> {
        finish("schedule_meeting", self.schedule(req.into_inner()).await).map(Response::new)
    }

    async fn get_meeting(
        &self,
        req: Request<pb::GetMeetingRequest>,
    ) -> Result<Response<pb::GetMeetingResponse>, Status> {
        let r = self
            .meeting(req.into_inner().id)
            .await
            .map(|m| pb::GetMeetingResponse {
                meeting: Some(convert::meeting(&m)),
            });
        finish("get_meeting", r).map(Response::new)
    }

    async fn list_meetings(
        &self,
        req: Request<pb::ListMeetingsRequest>,
    ) -> Result<Response<pb::ListMeetingsResponse>, Status> {
        finish("list_meetings", self.list(req.into_inner()).await).map(Response::new)
    }

    async fn end_meeting(
        &self,
        req: Request<pb::EndMeetingRequest>,
    ) -> Result<Response<pb::EndMeetingResponse>, Status> {
        finish("end_meeting", self.end(req.into_inner().id).await).map(Response::new)
    }

    async fn explain_meeting(
        &self,
        req: Request<pb::ExplainMeetingRequest>,
    ) -> Result<Response<pb::ExplainMeetingResponse>, Status> {
        let r = self
            .meeting(req.into_inner().id)
            .await
            .map(|m| pb::ExplainMeetingResponse {
                meeting: Some(convert::meeting(&m)),
                decisions: m.decisions.iter().map(convert::decision).collect(),
            });
        finish("explain_meeting", r).map(Response::new)
    }
}
