//! Meetings and their shares: scheduling, placement and re-placement,
//! moves, evacuation, expiry, and the reservations they hold on nodes.

use super::*;
use crate::licensing::Affiliation;

/// Meetings by id, with the indexes expiry and retries scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meetings {
    pub(super) by_id: BTreeMap<u64, Meeting>,
    pub(super) next_id: u64,
    /// Idempotency keys of schedule requests -> the meeting they created.
    pub(super) request_ids: BTreeMap<String, u64>,
    /// Meetings not yet ended, by window end, so expiry scans only what is due.
    pub(super) open_by_end: BTreeSet<(u64, u64)>,
    /// Ended meetings by end time, for pruning.
    pub(super) ended_by_time: BTreeSet<(u64, u64)>,
    /// Meetings waiting for an allowed node with room.
    pub(super) unplaced: BTreeSet<u64>,
    /// Placed meetings whose shares hold fewer seats than the meeting (a
    /// lost share found no room): retried like `unplaced` ones.
    pub(super) short: BTreeSet<u64>,
}

impl Default for Meetings {
    fn default() -> Self {
        Meetings {
            by_id: BTreeMap::new(),
            next_id: 1,
            request_ids: BTreeMap::new(),
            open_by_end: BTreeSet::new(),
            ended_by_time: BTreeSet::new(),
            unplaced: BTreeSet::new(),
            short: BTreeSet::new(),
        }
    }
}

impl Meetings {
    pub fn get(&self, id: &u64) -> Option<&Meeting> {
        self.by_id.get(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &Meeting> + '_ {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The id the next scheduled meeting gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}

impl std::ops::Index<&u64> for Meetings {
    type Output = Meeting;
    fn index(&self, id: &u64) -> &Meeting {
        &self.by_id[id]
    }
}

impl ClusterState {
    /// A copy of meeting `id` and the decision `pick` takes from its history.
    pub(super) fn meeting_with_decision(
        &self,
        id: u64,
        pick: impl FnOnce(&[Decision]) -> Option<&Decision>,
    ) -> Result<(Meeting, Decision), StateError> {
        let meeting = self
            .meetings
            .get(&id)
            .ok_or(StateError::UnknownMeeting { id })?;
        let decision = pick(&meeting.decisions)
            .cloned()
            .ok_or(StateError::UnknownMeeting { id })?;
        Ok((meeting.clone(), decision))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn schedule_meeting(
        &mut self,
        ScheduleMeeting {
            request_id,
            institution,
            participants,
            start_ms: requested_start,
            duration_ms,
            access,
            kind,
            host,
        }: &ScheduleMeeting,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let (request_id, participants, duration_ms) =
            (request_id.as_deref(), *participants, *duration_ms);
        if let Some((key, existing)) =
            request_id.and_then(|r| self.meetings.request_ids.get(r).map(|m| (r, m)))
        {
            // A retried request: answer with what the first attempt did, but
            // only if it is the same request; a key reused for another one
            // is refused, never answered with the first meeting's secrets.
            let first = &self.meetings.by_id[existing];
            let same = &first.institution == institution
                && first.participants == participants
                && first.access.settings == access.settings
                && requested_start.is_none_or(|s| s == first.start_ms)
                && (duration_ms == 0 || duration_ms == first.end_ms.saturating_sub(first.start_ms));
            if !same {
                return Err(StateError::RequestIdReused {
                    key: key.to_string(),
                });
            }
            let (meeting, decision) = self.meeting_with_decision(*existing, |d| d.first())?;
            return Ok(Output::Scheduled { meeting, decision });
        }
        let start_ms = requested_start.unwrap_or(req.now_ms);
        let inst = self.institutions.by_name.get(institution).ok_or_else(|| {
            StateError::UnknownInstitution {
                name: institution.to_string(),
            }
        })?;
        if participants > inst.max_participants {
            return Err(StateError::TooManyParticipants {
                requested: participants,
                max: inst.max_participants,
            });
        }
        let time_limit = match host {
            Host::Unchecked => None,
            Host::OnBehalf | Host::Account { .. } => {
                let affiliation = match host {
                    Host::Account { id } => self.host_account(id, institution)?,
                    _ => Affiliation::Staff,
                };
                let limits = self.licences.check_schedule(
                    institution,
                    affiliation,
                    *kind,
                    participants,
                    start_ms,
                    req.now_ms,
                )?;
                (limits.max_duration_s > 0).then_some(TimeLimit {
                    max_duration_s: limits.max_duration_s,
                    warn_before_end_s: limits.warn_before_end_s,
                })
            }
        };
        let duration_ms = if duration_ms == 0 {
            DEFAULT_MEETING_DURATION_MS
        } else {
            duration_ms
        };
        let end_ms = start_ms.saturating_add(duration_ms);
        if end_ms <= req.now_ms {
            return Err(StateError::WindowInPast { end_ms });
        }
        let allowed = self.allowed_regions(&inst.residency);
        let decision = placement::place(
            &PlacementRequest {
                participants,
                start_ms: start_ms.max(req.now_ms),
                end_ms,
                now_ms: req.now_ms,
                allowed_regions: &allowed,
                home_region: &inst.home_region,
                strategy: req.strategy,
                trigger: Trigger::Scheduled,
                exclude: None,
            },
            &self.nodes,
            rng,
        );
        if let Outcome::Refused { refusal } = &decision.outcome {
            return Err(StateError::NoCapacity {
                refusal: refusal.clone(),
                decision: Box::new(decision),
            });
        }
        let shares = shares_of(&decision, participants);
        let id = self.meetings.next_id;
        self.meetings.next_id += 1;
        let meeting = Meeting {
            id,
            institution: institution.to_string(),
            participants,
            start_ms,
            end_ms,
            state: MeetingState::Placed,
            shares,
            created_at_ms: req.now_ms,
            ended_at_ms: None,
            request_id: request_id.map(str::to_string),
            decisions: vec![decision.clone()],
            access: access.clone(),
            kind: *kind,
            time_limit,
        };
        if let Some(r) = request_id {
            self.meetings.request_ids.insert(r.to_string(), id);
        }
        self.meetings.by_id.insert(id, meeting);
        self.metadata.mark_meeting(id);
        self.meetings.open_by_end.insert((end_ms, id));
        self.reserve(id);
        if let Host::Account { id: account } = host {
            self.note_meeting_scheduled(account, req.now_ms);
        }
        Ok(Output::Scheduled {
            meeting: self.meetings.by_id[&id].clone(),
            decision,
        })
    }

    /// A meeting that exists and has not ended.
    pub(super) fn open_meeting(&self, id: u64) -> Result<&Meeting, StateError> {
        let m = self
            .meetings
            .get(&id)
            .ok_or(StateError::UnknownMeeting { id })?;
        if m.state == MeetingState::Ended {
            return Err(StateError::MeetingEnded { id });
        }
        Ok(m)
    }

    pub(super) fn end_meeting(&mut self, id: u64, now_ms: u64) -> Response {
        self.open_meeting(id)?;
        self.finish(id, now_ms);
        Ok(Output::Meeting(self.meetings.by_id[&id].clone()))
    }

    /// Ends meetings whose window has passed and prunes long-ended ones.
    pub(super) fn expire_meetings(&mut self, now_ms: u64) {
        while let Some(&(end, id)) = self.meetings.open_by_end.first() {
            if end > now_ms {
                break;
            }
            self.finish(id, end);
        }
        let horizon = now_ms.saturating_sub(ENDED_MEETING_RETENTION_MS);
        while let Some(&(ended, id)) = self.meetings.ended_by_time.first() {
            if ended > horizon {
                break;
            }
            self.meetings.ended_by_time.remove(&(ended, id));
            // Pruned here, so deleted from the store too.
            self.metadata.mark_meeting(id);
            if let Some(m) = self.meetings.by_id.remove(&id) {
                if let Some(r) = m.request_id {
                    self.meetings.request_ids.remove(&r);
                }
            }
        }
    }

    pub(super) fn finish(&mut self, id: u64, at_ms: u64) {
        self.release(id);
        self.meetings.unplaced.remove(&id);
        self.meetings.short.remove(&id);
        let m = self.meetings.by_id.get_mut(&id).expect("caller checked");
        self.meetings.open_by_end.remove(&(m.end_ms, id));
        m.state = MeetingState::Ended;
        m.shares.clear();
        m.ended_at_ms = Some(at_ms);
        self.meetings.ended_by_time.insert((at_ms, id));
    }

    /// Places a meeting that has no node (lost it, or never had room).
    /// Returns whether it found one.
    pub(super) fn try_place(
        &mut self,
        id: u64,
        trigger: Trigger,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> bool {
        let participants = self.meetings.by_id[&id].participants;
        let decision = self.decide(id, participants, trigger, None, req, rng);
        let shares = shares_of(&decision, participants);
        self.metadata.mark_meeting(id);
        let m = self.meetings.by_id.get_mut(&id).expect("looked up above");
        m.record_decision(decision);
        if shares.is_empty() {
            m.shares.clear();
            m.state = MeetingState::Unplaced;
            self.meetings.unplaced.insert(id);
            false
        } else {
            m.shares = shares;
            m.state = MeetingState::Placed;
            self.meetings.unplaced.remove(&id);
            self.reserve(id);
            true
        }
    }

    /// Runs placement for `participants` of meeting `id` against the nodes
    /// as they stand (the meeting's other shares keep their reservations).
    pub(super) fn decide(
        &self,
        id: u64,
        participants: u32,
        trigger: Trigger,
        exclude: Option<&str>,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Decision {
        let m = &self.meetings.by_id[&id];
        let inst = &self.institutions.by_name[&m.institution];
        let allowed = self.allowed_regions(&inst.residency);
        placement::place(
            &PlacementRequest {
                participants,
                start_ms: m.start_ms.max(req.now_ms),
                end_ms: m.end_ms,
                now_ms: req.now_ms,
                allowed_regions: &allowed,
                home_region: &inst.home_region,
                strategy: req.strategy,
                trigger,
                exclude,
            },
            &self.nodes,
            rng,
        )
    }

    /// Re-places the share of meeting `id` held by `node` (which is down,
    /// or being evacuated). The other shares stay where they are; the new
    /// share(s) merge into them when placement picks one of their nodes.
    /// When nothing has room the share is dropped: a meeting left with no
    /// share waits in `unplaced`, one with others runs on smaller. Returns
    /// whether the share found a new home.
    pub(super) fn replace_share(
        &mut self,
        id: u64,
        node: &str,
        trigger: Trigger,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> bool {
        let Some(share) = self.meetings.by_id[&id].share_on(node).cloned() else {
            return false;
        };
        let decision = self.decide(id, share.participants, trigger, None, req, rng);
        self.apply_share_decision(id, node, decision)
    }

    /// Swaps the share on `node` for what `decision` chose.
    pub(super) fn apply_share_decision(&mut self, id: u64, node: &str, decision: Decision) -> bool {
        let participants = self.meetings.by_id[&id]
            .share_on(node)
            .map_or(0, |s| s.participants);
        let new = shares_of(&decision, participants);
        self.release(id);
        let m = self.meetings.by_id.get_mut(&id).expect("caller checked");
        m.record_decision(decision);
        m.shares.retain(|s| s.node != node);
        self.merge_shares(id, &new);
        !new.is_empty()
    }

    /// Adds `new` to the meeting's shares (into a share on the same node
    /// when there is one), then books the reservations and notes whether
    /// the meeting is short of seats or has no node at all. The meeting's
    /// reservations must have been released first.
    pub(super) fn merge_shares(&mut self, id: u64, new: &[Share]) {
        let m = self.meetings.by_id.get_mut(&id).expect("caller checked");
        for s in new {
            match m.shares.iter_mut().find(|o| o.node == s.node) {
                Some(o) => o.participants += s.participants,
                None => m.shares.push(s.clone()),
            }
        }
        let seats: u32 = m.shares.iter().map(|s| s.participants).sum();
        if m.shares.is_empty() {
            m.state = MeetingState::Unplaced;
            self.meetings.unplaced.insert(id);
            self.meetings.short.remove(&id);
            return;
        }
        if seats < m.participants {
            self.meetings.short.insert(id);
        } else {
            self.meetings.short.remove(&id);
        }
        self.reserve(id);
    }

    pub(super) fn move_meeting(
        &mut self,
        id: u64,
        from: Option<&str>,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let m = self.open_meeting(id)?;
        let from = match from {
            Some(f) => f.to_string(),
            None if m.is_cascaded() => return Err(StateError::NameTheShare { id }),
            None => m
                .node()
                .ok_or(StateError::MeetingUnplaced { id })?
                .to_string(),
        };
        let Some(share) = m.share_on(&from) else {
            return Err(StateError::NotOnNode { id, node: from });
        };
        let trigger = Trigger::Move { node: from.clone() };
        let decision = self.decide(id, share.participants, trigger, Some(&from), req, rng);
        if let Outcome::Refused { refusal } = &decision.outcome {
            return Err(StateError::NoCapacity {
                refusal: refusal.clone(),
                decision: Box::new(decision),
            });
        }
        self.apply_share_decision(id, &from, decision);
        let meeting = self.meetings.by_id[&id].clone();
        let decision = meeting.decisions.last().expect("just pushed").clone();
        Ok(Output::Moved { meeting, decision })
    }

    /// Moves every meeting share off a node that was just set draining.
    pub(super) fn evacuate(&mut self, node: &str, req: &Request, rng: &mut SplitMix64) -> Output {
        let ids: Vec<u64> = self.nodes[node].reservations.keys().copied().collect();
        let (mut moved, mut kept) = (Vec::new(), Vec::new());
        for id in ids {
            let share = self.meetings.by_id[&id]
                .share_on(node)
                .cloned()
                .expect("reserved");
            let trigger = Trigger::Evacuate {
                node: node.to_string(),
            };
            let decision = self.decide(id, share.participants, trigger, None, req, rng);
            if matches!(decision.outcome, Outcome::Refused { .. }) {
                // Nowhere to go: it finishes here, as a plain drain allows.
                let m = self.meetings.by_id.get_mut(&id).expect("listed");
                m.record_decision(decision);
                kept.push(id);
            } else {
                self.apply_share_decision(id, node, decision);
                moved.push(id);
            }
        }
        Output::Evacuated {
            node: self.node_view(node, req.now_ms),
            moved,
            kept,
        }
    }

    pub(super) fn retry_unplaced(&mut self, req: &Request, rng: &mut SplitMix64) {
        let waiting: Vec<u64> = self.meetings.unplaced.iter().copied().collect();
        for id in waiting {
            self.try_place(id, Trigger::Retry, req, rng);
        }
        // Cascades running short of seats get the missing ones back when a
        // node has room; only a success is recorded as a decision, so a
        // meeting waiting for long does not pile up refusals.
        let short: Vec<u64> = self.meetings.short.iter().copied().collect();
        for id in short {
            let m = &self.meetings.by_id[&id];
            let missing = m.participants - m.shares.iter().map(|s| s.participants).sum::<u32>();
            let decision = self.decide(id, missing, Trigger::Retry, None, req, rng);
            let new = shares_of(&decision, missing);
            if !new.is_empty() {
                self.release(id);
                self.meetings
                    .by_id
                    .get_mut(&id)
                    .expect("listed")
                    .decisions
                    .push(decision);
                self.merge_shares(id, &new);
            }
        }
    }

    /// Records the meeting's reservation on each node holding a share.
    pub(super) fn reserve(&mut self, id: u64) {
        self.metadata.mark_meeting(id);
        let m = &self.meetings.by_id[&id];
        for share in &m.shares {
            self.nodes
                .get_mut(&share.node)
                .expect("placement chose an existing node")
                .reservations
                .insert(
                    id,
                    Reservation {
                        start_ms: m.start_ms,
                        end_ms: m.end_ms,
                        participants: share.participants,
                    },
                );
        }
    }

    /// Drops the meeting's reservations from every node holding a share.
    pub(super) fn release(&mut self, id: u64) {
        // Every change to where a meeting runs, or to whether it runs,
        // releases its reservations first.
        self.metadata.mark_meeting(id);
        for share in &self.meetings.by_id[&id].shares {
            if let Some(mut node) = self.nodes.get_mut(&share.node) {
                node.reservations.remove(&id);
            }
        }
    }
}

/// The shares a decision assigns, in the meeting's form.
pub(super) fn shares_of(decision: &Decision, participants: u32) -> Vec<Share> {
    decision
        .shares(participants)
        .into_iter()
        .map(|s| Share {
            node: s.node,
            participants: s.participants,
        })
        .collect()
}
