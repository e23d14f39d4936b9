use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::meeting_service_server::MeetingService;

use super::authz::{authorize, Grant, Rpc};
use super::{convert, finish, validate, ApiError, SigningKeys};
use crate::access::{self, JOIN_TOKEN_TTL_MS, PIN_REVEAL_BEFORE_START_MS};
use crate::join_guard::GuardStep;
use crate::licensing::MeetingKind;
use crate::raft::{now_ms, Replica};
use crate::state::{
    Command, EndMeeting, Host, Meeting, MeetingCommand, MeetingState, MoveMeeting, Output, Query,
    QueryOutput, ScheduleMeeting, Share,
};

/// Limits on join attempts, kept by each replica for the calls it receives.
pub struct MeetingApi {
    replica: Arc<Replica>,
    keys: Arc<SigningKeys>,
    /// Derives each meeting's secrets from its salt.
    kek: Arc<access::Kek>,
    /// Tokens issued per meeting and node by this replica: spreads a
    /// cascaded meeting's joiners over its shares in proportion to their
    /// size, and sends re-joiners to the share that replaced a lost one.
    issued: Mutex<HashMap<u64, HashMap<String, u64>>>,
    /// A node whose last committed heartbeat is older than this is overdue
    /// (a client reporting it unreachable is believed).
    node_overdue_ms: u64,
    /// Sources the leader's guards refused, until when: refused here again
    /// without asking the leader, so a flood costs the cluster one peer
    /// call per source and refill, not one per attempt. (This only ever
    /// refuses more than the leader would, never admits more.)
    refused_sources: Mutex<HashMap<IpAddr, u64>>,
    /// Hosts signing in with an ID token, per source.
    sign_ins: Arc<super::SignInLimiter>,
    /// Joins this replica could not serve for the service's own reasons
    /// (no node for the meeting right now), for the join-success SLI.
    sli: crate::drivers::sla::SliSink,
    /// When each meeting's last failed join was counted.
    join_failures: Mutex<HashMap<u64, u64>>,
}

/// Failed joins of one meeting within this long count once.
pub const JOIN_FAILURE_DEDUP_MS: u64 = 5_000;

/// Sources remembered as refused before the oldest are forgotten.
const REFUSED_SOURCES: usize = 100_000;

/// Which share a joiner goes to: the one least filled so far, counting
/// the tokens already `issued` for each node against the share's size, so
/// shares fill in proportion to their size and a share that just replaced
/// a lost or moved one (nothing issued for it yet) takes the re-joiners.
/// Ties go to the earlier share. A share on the node the client could not
/// reach is skipped when there is another; when it is the only one,
/// `None` while that node is `overdue`.
pub fn pick_share<'a>(
    shares: &'a [Share],
    issued: &HashMap<String, u64>,
    unreachable: Option<&str>,
    overdue: bool,
) -> Option<&'a Share> {
    let usable: Vec<&Share> = shares
        .iter()
        .filter(|s| Some(s.node.as_str()) != unreachable)
        .collect();
    let usable = match (usable.is_empty(), overdue) {
        (false, _) => usable,
        (true, true) => return None,
        (true, false) => shares.iter().collect(),
    };
    let fill = |s: &Share| {
        (
            issued.get(&s.node).copied().unwrap_or(0),
            u64::from(s.participants.max(1)),
        )
    };
    usable.into_iter().reduce(|best, s| {
        let ((bi, bp), (si, sp)) = (fill(best), fill(s));
        // si/sp < bi/bp, without division.
        if si * bp < bi * sp {
            s
        } else {
            best
        }
    })
}

/// The join link a passcode rides in.
pub fn join_link(id: u64, passcode: &str) -> String {
    format!("fjord://join/{id}?passcode={passcode}")
}

impl MeetingApi {
    pub fn new(
        replica: Arc<Replica>,
        keys: Arc<SigningKeys>,
        kek: Arc<access::Kek>,
        node_overdue_ms: u64,
        sign_ins: Arc<super::SignInLimiter>,
        sli: crate::drivers::sla::SliSink,
    ) -> Self {
        MeetingApi {
            replica,
            keys,
            kek,
            issued: Mutex::new(HashMap::new()),
            node_overdue_ms,
            refused_sources: Mutex::new(HashMap::new()),
            sign_ins,
            sli,
            join_failures: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a join the service failed (the meeting has no node it can
    /// send the participant to), against the meeting's home region. A
    /// client retries every few tens of milliseconds while a meeting is
    /// re-placed; those retries are one failed join, so a meeting counts
    /// at most one failure per [`JOIN_FAILURE_DEDUP_MS`] on this replica.
    fn join_failed(&self, meeting: &crate::state::Meeting, now_ms: u64) {
        {
            let mut last = self.join_failures.lock().expect("join failures lock");
            if last.len() > 100_000 {
                last.clear();
            }
            match last.get(&meeting.id) {
                Some(t) if now_ms.saturating_sub(*t) < JOIN_FAILURE_DEDUP_MS => return,
                _ => {
                    last.insert(meeting.id, now_ms);
                }
            }
        }
        let region = self.replica.local_state(|s| {
            meeting
                .node()
                .and_then(|n| s.nodes.get(n).map(|n| n.region.clone()))
                .or_else(|| {
                    s.institutions
                        .get(&meeting.institution)
                        .map(|i| i.home_region.clone())
                })
        });
        let Some(region) = region else {
            return;
        };
        self.sli.push(crate::sla::SliEvent {
            at_ms: now_ms,
            institution: Some(meeting.institution.clone()),
            region,
            node: meeting.node().map(str::to_string),
            sli: crate::sla::Sli::JoinSuccess,
            total: 1,
            bad: 1,
        });
    }

    async fn move_meeting(
        &self,
        r: pb::MoveMeetingRequest,
    ) -> Result<pb::MoveMeetingResponse, ApiError> {
        validate::id("id", r.id)?;
        if !r.from_node_id.is_empty() {
            validate::name("from_node_id", &r.from_node_id)?;
        }
        let out = self
            .replica
            .write(Command::Meeting(MeetingCommand::Move(MoveMeeting {
                id: r.id,
                from: Some(r.from_node_id).filter(|s| !s.is_empty()),
            })))
            .await?;
        match out {
            Output::Moved { meeting, decision } => Ok(pb::MoveMeetingResponse {
                meeting: Some(convert::meeting(&meeting)),
                decision: Some(convert::decision(&decision)),
            }),
            other => unreachable!("move answered {other:?}"),
        }
    }

    async fn schedule(
        &self,
        r: pb::ScheduleMeetingRequest,
        host: Host,
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
        super::ensure_price_table(&self.replica).await?;
        let out = self
            .replica
            .write(Command::Meeting(MeetingCommand::Schedule(
                ScheduleMeeting {
                    request_id: Some(r.request_id).filter(|s| !s.is_empty()),
                    institution: r.institution,
                    participants: r.participants,
                    start_ms: Some(r.start_ms).filter(|s| *s != 0),
                    duration_ms: r.duration_ms,
                    access: access::new_meeting_access(convert::settings_from(r.settings)),
                    kind: if r.webinar {
                        MeetingKind::Webinar
                    } else {
                        MeetingKind::Meeting
                    },
                    host,
                },
            )))
            .await?;
        match out {
            // A retried request answers the first attempt's meeting, and so
            // the secrets stored then, not the ones drawn for this attempt.
            Output::Scheduled { meeting, decision } => {
                let span = tracing::Span::current();
                span.record("meeting.id", meeting.id);
                span.record("node.id", meeting.node().unwrap_or(""));
                let secrets = self.kek.meeting_secrets(&meeting.access);
                Ok(pb::ScheduleMeetingResponse {
                    meeting: Some(convert::meeting(&meeting)),
                    decision: Some(convert::decision(&decision)),
                    join_link: join_link(meeting.id, &secrets.passcode),
                    passcode: secrets.passcode,
                    host_key: secrets.host_key,
                })
            }
            other => unreachable!("schedule answered {other:?}"),
        }
    }

    async fn join(
        &self,
        source: IpAddr,
        r: pb::JoinMeetingRequest,
    ) -> Result<pb::JoinMeetingResponse, ApiError> {
        validate::id("meeting_id", r.meeting_id)?;
        let given = [
            !r.passcode.is_empty(),
            !r.pin.is_empty(),
            !r.host_key.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ApiError::invalid(
                "passcode",
                "give exactly one of passcode, pin or host_key",
            ));
        }
        for (field, v) in [
            ("passcode", &r.passcode),
            ("pin", &r.pin),
            ("host_key", &r.host_key),
        ] {
            if v.len() > 64 {
                return Err(ApiError::invalid(field, "longer than 64 characters"));
            }
        }
        validate::display_name("display_name", &r.display_name)?;
        if !r.unreachable_node_id.is_empty() {
            validate::name("unreachable_node_id", &r.unreachable_node_id)?;
        }
        let now = now_ms();
        let pin = r.host_key.is_empty() && !r.pin.is_empty();
        self.guard(GuardStep::Admit {
            source,
            meeting: r.meeting_id,
            pin,
        })
        .await?;
        let meeting = match self.replica.read(Query::Meeting { id: r.meeting_id }).await {
            Ok(QueryOutput::Meeting(m)) => Some(m),
            Ok(other) => unreachable!("meeting query answered {other:?}"),
            Err(crate::raft::ClusterError::State(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some((meeting, role)) =
            meeting.and_then(|m| credential_role(&self.kek, &m, &r, now).map(|role| (m, role)))
        else {
            self.guard(GuardStep::Failed {
                source,
                meeting: r.meeting_id,
                pin,
            })
            .await?;
            metrics::counter!("fjord_join_denied_total").increment(1);
            return Err(ApiError::Denied);
        };
        self.guard(GuardStep::Joined {
            meeting: meeting.id,
        })
        .await?;
        let unplaced = || {
            ApiError::Unavailable("the meeting has no media node right now; retry shortly".into())
        };
        if meeting.state != MeetingState::Placed {
            self.join_failed(&meeting, now);
            return Err(unplaced());
        }
        let unreachable = Some(r.unreachable_node_id.as_str()).filter(|s| !s.is_empty());
        let overdue = unreachable.is_some_and(|id| {
            self.replica
                .local_state(|s| s.nodes.get(id).map(|n| n.last_heartbeat_ms))
                .is_none_or(|beat| now.saturating_sub(beat) > self.node_overdue_ms)
        });
        let node_id = {
            let mut issued = self.issued.lock().expect("issued lock poisoned");
            if issued.len() > 100_000 {
                issued.clear(); // only a spreading hint; forget rather than grow
            }
            let per_node = issued.entry(meeting.id).or_default();
            let Some(share) = pick_share(&meeting.shares, per_node, unreachable, overdue) else {
                drop(issued);
                self.join_failed(&meeting, now);
                return Err(unplaced());
            };
            let node = share.node.clone();
            *per_node.entry(node.clone()).or_default() += 1;
            node
        };
        let (address, certificate) = self
            .replica
            .local_state(|s| {
                s.nodes
                    .get(&node_id)
                    .map(|n| (n.address.clone(), n.certificate.clone()))
            })
            .ok_or(ApiError::Unavailable(
                "the meeting's node is unknown here; retry".into(),
            ))?;
        let signer = self.keys.signer().await?;
        let participant_id = access::random_u64().max(1);
        let expires_at_ms = now + JOIN_TOKEN_TTL_MS;
        let token = signer.sign(&pb::JoinClaims {
            meeting_id: meeting.id,
            participant_id,
            role: role as i32,
            node_id: node_id.clone(),
            display_name: r.display_name,
            issued_at_ms: now,
            expires_at_ms,
            settings: Some(convert::settings(&meeting.access.settings)),
            webinar: meeting.kind == MeetingKind::Webinar,
            time_limit_s: meeting.time_limit.map_or(0, |t| t.max_duration_s),
            warn_before_end_s: meeting.time_limit.map_or(0, |t| t.warn_before_end_s),
        });
        metrics::counter!("fjord_join_tokens_issued_total").increment(1);
        let span = tracing::Span::current();
        span.record("node.id", node_id.as_str());
        let traceparent = fjord_common::trace_context::traceparent(&span);
        Ok(pb::JoinMeetingResponse {
            traceparent,
            token,
            node_id,
            node_address: address,
            node_certificate: certificate,
            participant_id,
            role: role as i32,
            expires_at_ms,
        })
    }

    /// One step on the cluster-wide join guards.
    async fn guard(&self, step: GuardStep) -> Result<(), ApiError> {
        let limited = |retry_after_ms| {
            metrics::counter!("fjord_join_rate_limited_total").increment(1);
            ApiError::RateLimited { retry_after_ms }
        };
        // Passcode and host-key attempts are refused only per source, so a
        // refusal can be remembered per source (PIN attempts may also be
        // refused per meeting, so those always ask).
        let source = match step {
            GuardStep::Admit {
                source, pin: false, ..
            } => Some(source),
            _ => None,
        };
        let now = now_ms();
        if let Some(src) = source {
            let mut refused = self.refused_sources.lock().expect("refused lock poisoned");
            match refused.get(&src) {
                Some(until) if *until > now => return Err(limited(until - now)),
                Some(_) => {
                    refused.remove(&src);
                }
                None => {}
            }
        }
        match self.replica.join_guard(step).await? {
            Ok(()) => Ok(()),
            Err(retry_after_ms) => {
                if let Some(src) = source {
                    let mut refused = self.refused_sources.lock().expect("refused lock poisoned");
                    if refused.len() >= REFUSED_SOURCES {
                        refused.retain(|_, until| *until > now);
                        if refused.len() >= REFUSED_SOURCES {
                            refused.clear();
                        }
                    }
                    refused.insert(src, now + retry_after_ms);
                }
                Err(limited(retry_after_ms))
            }
        }
    }

    async fn pin(
        &self,
        source: IpAddr,
        r: pb::GetMeetingPinRequest,
    ) -> Result<pb::GetMeetingPinResponse, ApiError> {
        validate::id("id", r.id)?;
        if r.host_key.is_empty() || r.host_key.len() > 64 {
            return Err(ApiError::invalid(
                "host_key",
                "must be the meeting's host key",
            ));
        }
        // Host-key guesses here count like wrong joins.
        let step = |ok: bool| {
            if ok {
                GuardStep::Admit {
                    source,
                    meeting: r.id,
                    pin: false,
                }
            } else {
                GuardStep::Failed {
                    source,
                    meeting: r.id,
                    pin: false,
                }
            }
        };
        self.guard(step(true)).await?;
        let m = match self.replica.read(Query::Meeting { id: r.id }).await {
            Ok(QueryOutput::Meeting(m)) => Some(m),
            Ok(other) => unreachable!("meeting query answered {other:?}"),
            Err(crate::raft::ClusterError::State(_)) => None,
            Err(e) => return Err(e.into()),
        };
        // Derived once: the host key is checked and the PIN answered from it.
        let Some((m, secrets)) = m
            .filter(|m| m.state != MeetingState::Ended)
            .map(|m| {
                let secrets = self.kek.meeting_secrets(&m.access);
                (m, secrets)
            })
            .filter(|(_, s)| access::secrets_equal(&s.host_key, &r.host_key))
        else {
            self.guard(step(false)).await?;
            return Err(ApiError::Denied);
        };
        let reveal_at = m.start_ms.saturating_sub(PIN_REVEAL_BEFORE_START_MS);
        let now = now_ms();
        if now < reveal_at {
            return Err(ApiError::NotYet(format!(
                "the PIN is revealed from 5 minutes before start, in {} s",
                (reveal_at - now).div_ceil(1000)
            )));
        }
        Ok(pb::GetMeetingPinResponse { pin: secrets.pin })
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
        match self
            .replica
            .write(Command::Meeting(MeetingCommand::End(EndMeeting { id })))
            .await?
        {
            Output::Meeting(m) => Ok(pb::EndMeetingResponse {
                meeting: Some(convert::meeting(&m)),
            }),
            other => unreachable!("end answered {other:?}"),
        }
    }
}

/// Which role the credential in `r` grants for `m` at `now`, if any.
fn credential_role(
    kek: &access::Kek,
    m: &Meeting,
    r: &pb::JoinMeetingRequest,
    now: u64,
) -> Option<pb::Role> {
    if m.state == MeetingState::Ended {
        return None;
    }
    let secrets = kek.meeting_secrets(&m.access);
    if secrets.passcode.is_empty() {
        return None;
    }
    if !r.host_key.is_empty() {
        return access::secrets_equal(&secrets.host_key, &r.host_key).then_some(pb::Role::Host);
    }
    if !r.pin.is_empty() {
        let open = now >= m.start_ms.saturating_sub(PIN_REVEAL_BEFORE_START_MS);
        return (open && access::secrets_equal(&secrets.pin, &r.pin))
            .then_some(pb::Role::Participant);
    }
    access::secrets_equal(&secrets.passcode, &r.passcode).then_some(pb::Role::Participant)
}

#[tonic::async_trait]
impl MeetingService for MeetingApi {
    async fn join_meeting(
        &self,
        req: Request<pb::JoinMeetingRequest>,
    ) -> Result<Response<pb::JoinMeetingResponse>, Status> {
        let source = fjord_common::grpc::peer_info(&req)
            .map(|p| p.remote.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let meeting_id = req.get_ref().meeting_id;
        let span = tracing::info_span!(
            "join",
            meeting.id = meeting_id,
            node.id = tracing::field::Empty
        );
        let r = async {
            authorize(&req, Rpc::JoinMeeting)?;
            self.join(source, req.into_inner()).await
        };
        finish("join_meeting", r.instrument(span).await).map(Response::new)
    }

    async fn move_meeting(
        &self,
        req: Request<pb::MoveMeetingRequest>,
    ) -> Result<Response<pb::MoveMeetingResponse>, Status> {
        let r = async {
            authorize(&req, Rpc::MoveMeeting)?;
            self.move_meeting(req.into_inner()).await
        };
        finish("move_meeting", r.await).map(Response::new)
    }

    async fn get_meeting_pin(
        &self,
        req: Request<pb::GetMeetingPinRequest>,
    ) -> Result<Response<pb::GetMeetingPinResponse>, Status> {
        let source = fjord_common::grpc::peer_info(&req)
            .map(|p| p.remote.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let r = async {
            authorize(&req, Rpc::GetMeetingPin)?;
            self.pin(source, req.into_inner()).await
        };
        finish("get_meeting_pin", r.await).map(Response::new)
    }

    async fn schedule_meeting(
        &self,
        req: Request<pb::ScheduleMeetingRequest>,
    ) -> Result<Response<pb::ScheduleMeetingResponse>, Status> {
        let span = tracing::info_span!(
            "schedule",
            institution = %req.get_ref().institution,
            meeting.id = tracing::field::Empty,
            node.id = tracing::field::Empty
        );
        let r = async {
            let caller = authorize(&req, Rpc::ScheduleMeeting)?;
            let source = super::account::source_of(&req);
            let mut r = req.into_inner();
            validate::name("institution", &r.institution)?;
            caller.check_institution(&r.institution)?;
            // A host signs in with its institution's ID token; operators and
            // institution admins may schedule for the institution without one.
            let host = if !r.id_token.is_empty() {
                self.sign_ins.take(source)?;
                let token = std::mem::take(&mut r.id_token);
                let account =
                    super::account::sign_in(&self.replica, &self.kek, &r.institution, &token)
                        .await?;
                Host::Account { id: account.id }
            } else if caller.grant == Grant::IdToken {
                return Err(ApiError::NeedsIdToken);
            } else {
                Host::OnBehalf
            };
            // Idempotency keys are the caller's own: the same key from
            // someone else is another request, never an answer with the
            // secrets of this caller's meeting.
            if !r.request_id.is_empty() {
                validate::request_id(&r.request_id)?;
                let who = match (&host, caller.identity.as_ref()) {
                    (Host::Account { id }, _) => id.clone(),
                    (_, Some(i)) => i.uri(),
                    (_, None) => String::new(),
                };
                r.request_id = format!("{who}#{}", r.request_id);
            }
            self.schedule(r, host).await
        };
        finish("schedule_meeting", r.instrument(span).await).map(Response::new)
    }

    async fn get_meeting(
        &self,
        req: Request<pb::GetMeetingRequest>,
    ) -> Result<Response<pb::GetMeetingResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::GetMeeting)?;
            let m = self.meeting(req.into_inner().id).await?;
            caller.check_institution(&m.institution)?;
            Ok(pb::GetMeetingResponse {
                meeting: Some(convert::meeting(&m)),
            })
        };
        finish("get_meeting", r.await).map(Response::new)
    }

    async fn list_meetings(
        &self,
        req: Request<pb::ListMeetingsRequest>,
    ) -> Result<Response<pb::ListMeetingsResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::ListMeetings)?;
            let mut r = req.into_inner();
            if let Some(own) = caller.own_institution() {
                if r.institution.is_empty() {
                    r.institution = own.to_string();
                }
                caller.check_institution(&r.institution)?;
            }
            self.list(r).await
        };
        finish("list_meetings", r.await).map(Response::new)
    }

    async fn end_meeting(
        &self,
        req: Request<pb::EndMeetingRequest>,
    ) -> Result<Response<pb::EndMeetingResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::EndMeeting)?;
            let id = req.into_inner().id;
            if caller.own_institution().is_some() {
                let m = self.meeting(id).await?;
                caller.check_institution(&m.institution)?;
            }
            self.end(id).await
        };
        finish("end_meeting", r.await).map(Response::new)
    }

    async fn explain_meeting(
        &self,
        req: Request<pb::ExplainMeetingRequest>,
    ) -> Result<Response<pb::ExplainMeetingResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::ExplainMeeting)?;
            let m = self.meeting(req.into_inner().id).await?;
            caller.check_institution(&m.institution)?;
            Ok(pb::ExplainMeetingResponse {
                meeting: Some(convert::meeting(&m)),
                decisions: m.decisions.iter().map(convert::decision).collect(),
            })
        };
        finish("explain_meeting", r.await).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(v: &[(&str, u32)]) -> Vec<Share> {
        v.iter()
            .map(|(n, p)| Share {
                node: n.to_string(),
                participants: *p,
            })
            .collect()
    }

    /// Joins `n` participants, returning where each went.
    fn join_n(s: &[Share], issued: &mut HashMap<String, u64>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let node = pick_share(s, issued, None, false).unwrap().node.clone();
                *issued.entry(node.clone()).or_default() += 1;
                node
            })
            .collect()
    }

    #[test]
    fn joiners_fill_shares_in_proportion_to_their_size() {
        let s = shares(&[("a", 4), ("b", 4), ("c", 2)]);
        let mut issued = HashMap::new();
        let picks = join_n(&s, &mut issued, 10);
        assert_eq!(
            picks,
            ["a", "b", "c", "a", "b", "a", "b", "c", "a", "b"].map(String::from)
        );
        assert_eq!(issued["a"], 4);
        assert_eq!(issued["b"], 4);
        assert_eq!(issued["c"], 2);
    }

    #[test]
    fn re_joiners_go_to_the_share_that_replaced_a_lost_one() {
        let before = shares(&[("a", 3), ("b", 3)]);
        let mut issued = HashMap::new();
        join_n(&before, &mut issued, 6);
        // b died (or was evacuated) and its share went to c.
        let after = shares(&[("a", 3), ("c", 3)]);
        assert_eq!(
            join_n(&after, &mut issued, 3),
            ["c", "c", "c"].map(String::from)
        );
    }

    #[test]
    fn an_unreachable_node_is_avoided_and_waited_out_when_it_is_the_only_one() {
        let s = shares(&[("a", 4), ("b", 4)]);
        let none = HashMap::new();
        assert_eq!(pick_share(&s, &none, Some("a"), false).unwrap().node, "b");
        let one = shares(&[("a", 4)]);
        // Overdue: re-placement pending, so no answer yet.
        assert!(pick_share(&one, &none, Some("a"), true).is_none());
        // Still beating: the client's own network was at fault; try again.
        assert_eq!(pick_share(&one, &none, Some("a"), false).unwrap().node, "a");
    }
}
