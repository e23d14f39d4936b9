//! The usage ledger: what participants used, committed from the media
//! nodes' journals, append-only.
//!
//! A node numbers its usage events (gapless per node, across restarts) and
//! reports them in batches; the ledger keeps each node's high-water mark, so
//! a batch sent again after a lost answer or a restart is answered and
//! never counted twice. A participant's time on a node is a **session**:
//! opened by its `joined` event, closed by its `left` event, or — when the
//! node dies and can no longer say — closed by failure at the node's last
//! heartbeat. Closed sessions are the ledger's rows, each stamped with the
//! ledger revision that appended it; billing reads them as of a revision.
//!
//! Bounded: every closed session is also added to per-institution daily
//! totals (service-time-zone days, per feature), which billing and usage
//! reports read once the raw rows have aged out of the audit window
//! (`SweepLedger`). Rows are only dropped once a closed period has billed
//! them.
//!
//! Nothing here names a person: participants are the per-meeting
//! pseudonyms from their join tokens.

use std::collections::VecDeque;

use jiff::civil::Date;

use super::*;
use crate::licensing::calendar::start_of_service_date;
use crate::licensing::{service_date, Affiliation, MeetingKind};

/// Usage feature bits as nodes report them.
pub const FEATURE_WEBINAR_ATTENDEE: u32 = 1;
pub const FEATURE_E2EE: u32 = 2;
pub const FEATURE_CASCADE: u32 = 4;
/// Set by the ledger: the meeting is larger than the tier's base limit
/// (it needs a large-meeting add-on).
pub const FEATURE_LARGE_MEETING: u32 = 8;

/// Boots whose failure close is remembered per node (for events of a dead
/// process that its successor resends).
const CLOSED_BOOTS_KEPT: usize = 16;
/// Most events one report may carry.
pub const MAX_USAGE_EVENTS_PER_REPORT: usize = 10_000;
/// The longest audit window for raw rows, and the default.
pub const MAX_AUDIT_WINDOW_DAYS: u32 = 3660;
pub const DEFAULT_AUDIT_WINDOW_DAYS: u32 = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageEventKind {
    Joined,
    Left,
    /// A meeting's minute on the node: participant-minutes reported and
    /// those within the quality limits.
    Quality,
    /// A join with a valid token reached media or was turned away by the
    /// node (for the join SLIs; not a billing row).
    JoinAttempt,
}

/// One usage event as a node journaled and reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub seq: u64,
    /// The node process that recorded it.
    pub boot: u64,
    pub at_ms: u64,
    pub meeting: u64,
    pub participant: u64,
    pub kind: UsageEventKind,
    pub features: u32,
    /// For `left`: why (left, moved, time_limit, closed, ...).
    #[serde(default)]
    pub reason: SessionEnd,
    /// For `quality`: participant-minutes reported, and how many of them
    /// were within the limits.
    #[serde(default)]
    pub minutes: u32,
    #[serde(default)]
    pub good_minutes: u32,
    /// For `join_attempt`: whether it reached media, and how long after
    /// the join call.
    #[serde(default)]
    pub join_ok: bool,
    #[serde(default)]
    pub join_latency_ms: u32,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    #[default]
    Left,
    Moved,
    TimeLimit,
    /// The meeting ended or the node closed it.
    Closed,
    /// The node died (or restarted) before it could say: closed at its last
    /// heartbeat by the control plane.
    Failure,
    /// A second `joined` for the same participant replaced this one.
    Replaced,
}

impl SessionEnd {
    pub fn parse(reason: &str) -> SessionEnd {
        match reason {
            "moved" => SessionEnd::Moved,
            "time_limit" => SessionEnd::TimeLimit,
            "closed" | "ended" | "shutdown" => SessionEnd::Closed,
            _ => SessionEnd::Left,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Left => "left",
            SessionEnd::Moved => "moved",
            SessionEnd::TimeLimit => "time_limit",
            SessionEnd::Closed => "closed",
            SessionEnd::Failure => "failure",
            SessionEnd::Replaced => "replaced",
        }
    }
}

/// A node's place in the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUsageMark {
    /// Highest sequence number committed from the node.
    pub acked_seq: u64,
    /// The node process registered now (0: none yet).
    pub boot: u64,
    /// Boots that ended by failure and when their sessions were closed.
    pub closed_boots: Vec<(u64, u64)>,
    /// Sequence numbers skipped (a journal lost with its disk): counted,
    /// never silent.
    pub gaps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    pub institution: String,
    pub boot: u64,
    pub start_ms: u64,
    pub features: u32,
    pub join_seq: u64,
}

/// One row of the ledger: a participant's time on a node in a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The ledger revision that appended the row.
    pub revision: u64,
    pub institution: String,
    pub meeting: u64,
    pub node: String,
    pub participant: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub features: u32,
    pub end: SessionEnd,
    pub join_seq: u64,
    /// 0 when closed by failure.
    pub left_seq: u64,
}

/// Milliseconds of use on one day, per feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    pub participant_ms: u64,
    pub webinar_attendee_ms: u64,
    pub large_meeting_ms: u64,
    pub e2ee_ms: u64,
    pub cascade_ms: u64,
    /// Participant-minutes with a receive report, and those within the
    /// quality limits (loss ≤ 2 %, jitter ≤ 30 ms).
    #[serde(default)]
    pub quality_minutes: u64,
    #[serde(default)]
    pub good_quality_minutes: u64,
}

impl DayTotals {
    pub fn add(&mut self, features: u32, ms: u64) {
        self.participant_ms += ms;
        if features & FEATURE_WEBINAR_ATTENDEE != 0 {
            self.webinar_attendee_ms += ms;
        }
        if features & FEATURE_LARGE_MEETING != 0 {
            self.large_meeting_ms += ms;
        }
        if features & FEATURE_E2EE != 0 {
            self.e2ee_ms += ms;
        }
        if features & FEATURE_CASCADE != 0 {
            self.cascade_ms += ms;
        }
    }

    /// Takes back what [`add`](Self::add) added.
    pub fn remove(&mut self, features: u32, ms: u64) {
        let mut added = DayTotals::default();
        added.add(features, ms);
        self.participant_ms -= added.participant_ms;
        self.webinar_attendee_ms -= added.webinar_attendee_ms;
        self.large_meeting_ms -= added.large_meeting_ms;
        self.e2ee_ms -= added.e2ee_ms;
        self.cascade_ms -= added.cascade_ms;
    }

    pub fn merge(&mut self, o: &DayTotals) {
        self.participant_ms += o.participant_ms;
        self.webinar_attendee_ms += o.webinar_attendee_ms;
        self.large_meeting_ms += o.large_meeting_ms;
        self.e2ee_ms += o.e2ee_ms;
        self.cascade_ms += o.cascade_ms;
        self.quality_minutes += o.quality_minutes;
        self.good_quality_minutes += o.good_quality_minutes;
    }
}

/// Splits `[start_ms, end_ms)` over service-time-zone days.
pub fn split_by_day(start_ms: u64, end_ms: u64, mut f: impl FnMut(Date, u64)) {
    let mut at = start_ms;
    while at < end_ms {
        let day = service_date(at);
        let next = day
            .tomorrow()
            .map(start_of_service_date)
            .unwrap_or(u64::MAX);
        let until = next.min(end_ms);
        f(day, until - at);
        at = until;
    }
}

/// A billing period that was closed: its invoice lines are fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedPeriod {
    pub first: Date,
    pub last: Date,
    /// The ledger revision its lines were computed at.
    pub revision: u64,
    pub closed_at_ms: u64,
    pub invoices: Vec<crate::billing::Invoice>,
}

impl ClosedPeriod {
    pub fn label(&self) -> String {
        format!("{}..{}", self.first, self.last)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Bumped by every appended row and every change to what billing reads
    /// (licences, price tables, a closed period).
    pub revision: u64,
    pub nodes: BTreeMap<String, NodeUsageMark>,
    /// Open sessions: node → meeting → participant.
    pub open: BTreeMap<String, BTreeMap<u64, BTreeMap<u64, OpenSession>>>,
    /// Closed sessions in revision order; the oldest leave with the audit
    /// window.
    pub sessions: VecDeque<Session>,
    /// Every closed session, per institution and day.
    pub daily: BTreeMap<String, BTreeMap<Date, DayTotals>>,
    /// Rows dropped by the audit window so far, and the revision below
    /// which raw rows are gone.
    pub dropped_rows: u64,
    pub dropped_below_revision: u64,
    pub closed_periods: Vec<ClosedPeriod>,
    /// Events whose meeting the state no longer knew: kept, unattributed.
    pub unattributed: u64,
    /// `left` events with no open session (after a failure close).
    pub unmatched_left: u64,
    pub audit_window_days: u32,
    /// Days whose totals the command being applied changed; `apply` moves
    /// them into the metadata outbox before it returns, so this is empty
    /// between commands (and never in a snapshot).
    #[serde(skip)]
    touched_days: BTreeSet<(String, Date)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            revision: 0,
            nodes: BTreeMap::new(),
            open: BTreeMap::new(),
            sessions: VecDeque::new(),
            daily: BTreeMap::new(),
            dropped_rows: 0,
            dropped_below_revision: 0,
            closed_periods: Vec::new(),
            unattributed: 0,
            unmatched_left: 0,
            audit_window_days: DEFAULT_AUDIT_WINDOW_DAYS,
            touched_days: BTreeSet::new(),
        }
    }
}

impl Ledger {
    pub(super) fn take_touched_days(&mut self) -> BTreeSet<(String, Date)> {
        std::mem::take(&mut self.touched_days)
    }

    pub fn acked_seq(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |m| m.acked_seq)
    }

    pub fn open_sessions(&self) -> usize {
        self.open
            .values()
            .flat_map(|m| m.values())
            .map(|p| p.len())
            .sum()
    }

    /// The closed period holding `day`, if any.
    pub fn closed_period_of(&self, day: Date) -> Option<&ClosedPeriod> {
        self.closed_periods
            .iter()
            .find(|p| p.first <= day && day <= p.last)
    }

    /// Closes `open` (of `participant` in `meeting` on `node`) into a row.
    fn append(
        &mut self,
        (node, meeting, participant): (&str, u64, u64),
        open: OpenSession,
        end_ms: u64,
        end: SessionEnd,
        left_seq: u64,
    ) {
        self.revision += 1;
        let end_ms = end_ms.max(open.start_ms);
        if !open.institution.is_empty() {
            let days = self.daily.entry(open.institution.clone()).or_default();
            let touched = &mut self.touched_days;
            split_by_day(open.start_ms, end_ms, |day, ms| {
                days.entry(day).or_default().add(open.features, ms);
                touched.insert((open.institution.clone(), day));
            });
        }
        self.sessions.push_back(Session {
            revision: self.revision,
            institution: open.institution,
            meeting,
            node: node.to_string(),
            participant,
            start_ms: open.start_ms,
            end_ms,
            features: open.features,
            end,
            join_seq: open.join_seq,
            left_seq,
        });
    }

    fn take_open(&mut self, node: &str, meeting: u64, participant: u64) -> Option<OpenSession> {
        let by_meeting = self.open.get_mut(node)?;
        let by_pid = by_meeting.get_mut(&meeting)?;
        let s = by_pid.remove(&participant);
        if by_pid.is_empty() {
            by_meeting.remove(&meeting);
        }
        if by_meeting.is_empty() {
            self.open.remove(node);
        }
        s
    }

    /// Closes every session `boot` left open on `node`, at `at_ms`, by
    /// failure, and remembers the boot as closed.
    pub fn close_boot(&mut self, node: &str, boot: u64, at_ms: u64) -> usize {
        let mut keys = Vec::new();
        if let Some(by_meeting) = self.open.get(node) {
            for (m, by_pid) in by_meeting {
                for (p, s) in by_pid {
                    if s.boot == boot {
                        keys.push((*m, *p));
                    }
                }
            }
        }
        let n = keys.len();
        for (m, p) in keys {
            let s = self.take_open(node, m, p).expect("listed");
            self.append((node, m, p), s, at_ms, SessionEnd::Failure, 0);
        }
        let mark = self.nodes.entry(node.to_string()).or_default();
        if let Some(c) = mark.closed_boots.iter_mut().find(|(b, _)| *b == boot) {
            c.1 = c.1.max(at_ms);
        } else {
            mark.closed_boots.push((boot, at_ms));
            if mark.closed_boots.len() > CLOSED_BOOTS_KEPT {
                mark.closed_boots.remove(0);
            }
        }
        n
    }
}

impl ClusterState {
    /// A licence or price table changed: billing inputs have a new revision
    /// (the version or table was stamped with it when recorded).
    pub(super) fn stamp_billing_revision(&mut self) {
        self.ledger.revision += 1;
    }

    /// Whether a meeting of `participants` needs more than the tier's base
    /// limit (a large-meeting add-on) under `institution`'s licence.
    fn large_meeting(
        &self,
        institution: &str,
        participants: u32,
        kind: MeetingKind,
        day: Date,
    ) -> bool {
        if kind == MeetingKind::Webinar {
            return false;
        }
        let (Some(table), Some(licence)) =
            (self.licences.price_table(), self.licences.get(institution))
        else {
            return false;
        };
        let Some(v) = licence.shown(day) else {
            return false;
        };
        let base = table.limits(
            v.terms.tier,
            Affiliation::Staff,
            std::iter::empty::<&String>(),
        );
        base.meeting_participants > 0 && participants > base.meeting_participants
    }

    pub(super) fn record_usage(&mut self, c: &RecordUsage) -> Response {
        if !self.nodes.contains_key(&c.node) {
            return Err(StateError::UnknownNode { id: c.node.clone() });
        }
        if c.events.len() > MAX_USAGE_EVENTS_PER_REPORT {
            return Err(StateError::TooManyEvents {
                max: MAX_USAGE_EVENTS_PER_REPORT as u32,
            });
        }
        let mut events: Vec<&UsageEvent> = c.events.iter().collect();
        events.sort_by_key(|e| e.seq);
        for e in events {
            let mark = self.ledger.nodes.entry(c.node.clone()).or_default();
            if e.seq <= mark.acked_seq {
                continue; // already counted: a resend
            }
            if e.seq > mark.acked_seq + 1 {
                mark.gaps += e.seq - mark.acked_seq - 1;
            }
            mark.acked_seq = e.seq;
            if mark.boot == 0 {
                mark.boot = e.boot;
            }
            let current_boot = mark.boot;
            let closed_at = mark
                .closed_boots
                .iter()
                .find(|(b, _)| *b == e.boot)
                .map(|(_, at)| *at);
            match e.kind {
                UsageEventKind::Joined => {
                    let (institution, features) = match self.meetings.by_id.get(&e.meeting) {
                        Some(m) => {
                            let mut f = e.features;
                            if self.large_meeting(
                                &m.institution,
                                m.participants,
                                m.kind,
                                service_date(e.at_ms),
                            ) {
                                f |= FEATURE_LARGE_MEETING;
                            }
                            (m.institution.clone(), f)
                        }
                        None => {
                            self.ledger.unattributed += 1;
                            (String::new(), e.features)
                        }
                    };
                    let open = OpenSession {
                        institution,
                        boot: e.boot,
                        start_ms: e.at_ms,
                        features,
                        join_seq: e.seq,
                    };
                    if let Some(prev) = self.ledger.take_open(&c.node, e.meeting, e.participant) {
                        self.ledger.append(
                            (&c.node, e.meeting, e.participant),
                            prev,
                            e.at_ms,
                            SessionEnd::Replaced,
                            0,
                        );
                    }
                    match closed_at {
                        // The process was declared dead after this join:
                        // the session ended with it.
                        Some(at) if e.at_ms <= at => self.ledger.append(
                            (&c.node, e.meeting, e.participant),
                            open,
                            at,
                            SessionEnd::Failure,
                            0,
                        ),
                        _ if e.boot == current_boot => {
                            self.ledger
                                .open
                                .entry(c.node.clone())
                                .or_default()
                                .entry(e.meeting)
                                .or_default()
                                .insert(e.participant, open);
                        }
                        // An earlier process of the node, dead by now,
                        // recorded this after its last heartbeat.
                        _ => self.ledger.append(
                            (&c.node, e.meeting, e.participant),
                            open,
                            e.at_ms,
                            SessionEnd::Failure,
                            0,
                        ),
                    }
                }
                UsageEventKind::JoinAttempt => {
                    if self.meetings.by_id.contains_key(&e.meeting) {
                        self.sla_usage_event(&c.node, e);
                    } else {
                        self.ledger.unattributed += 1;
                    }
                }
                UsageEventKind::Quality => {
                    self.sla_usage_event(&c.node, e);
                    // Counted for the institution's day; not a billing row.
                    if let Some(m) = self.meetings.by_id.get(&e.meeting) {
                        let date = service_date(e.at_ms);
                        self.ledger
                            .touched_days
                            .insert((m.institution.clone(), date));
                        let day = self
                            .ledger
                            .daily
                            .entry(m.institution.clone())
                            .or_default()
                            .entry(date)
                            .or_default();
                        day.quality_minutes += u64::from(e.minutes);
                        day.good_quality_minutes += u64::from(e.good_minutes.min(e.minutes));
                    } else {
                        self.ledger.unattributed += 1;
                    }
                }
                UsageEventKind::Left => {
                    let open = self
                        .ledger
                        .open
                        .get(&c.node)
                        .and_then(|m| m.get(&e.meeting))
                        .and_then(|p| p.get(&e.participant))
                        .is_some_and(|s| s.boot == e.boot);
                    if open {
                        let s = self
                            .ledger
                            .take_open(&c.node, e.meeting, e.participant)
                            .expect("checked");
                        self.ledger.append(
                            (&c.node, e.meeting, e.participant),
                            s,
                            e.at_ms,
                            e.reason,
                            e.seq,
                        );
                    } else {
                        self.ledger.unmatched_left += 1;
                    }
                }
            }
        }
        Ok(Output::UsageAcked {
            acked_seq: self.ledger.acked_seq(&c.node),
        })
    }

    /// A node registered as a new process: what its previous process left
    /// open ended at that process's last heartbeat.
    pub(super) fn usage_node_boot(&mut self, node: &str, boot: u64, last_heartbeat_ms: u64) {
        if boot == 0 {
            return;
        }
        let previous = self.ledger.nodes.get(node).map_or(0, |m| m.boot);
        if previous != 0 && previous != boot {
            self.ledger.close_boot(node, previous, last_heartbeat_ms);
        }
        self.ledger.nodes.entry(node.to_string()).or_default().boot = boot;
    }

    /// A node was declared down: its sessions end at its last heartbeat.
    pub(super) fn usage_node_down(&mut self, node: &str, last_heartbeat_ms: u64) {
        if let Some(boot) = self.ledger.nodes.get(node).map(|m| m.boot) {
            self.ledger.close_boot(node, boot, last_heartbeat_ms);
        }
    }

    /// Drops raw rows older than the audit window that a closed period has
    /// billed; their daily totals stay.
    pub(super) fn sweep_ledger(&mut self, c: &SweepLedger, now_ms: u64) -> Response {
        if c.audit_window_days == 0 || c.audit_window_days > MAX_AUDIT_WINDOW_DAYS {
            return Err(StateError::BadAuditWindow {
                max: MAX_AUDIT_WINDOW_DAYS,
            });
        }
        self.ledger.audit_window_days = c.audit_window_days;
        let cutoff = now_ms.saturating_sub(u64::from(c.audit_window_days) * 86_400_000);
        let billed_through = self
            .ledger
            .closed_periods
            .iter()
            .map(|p| p.revision)
            .max()
            .unwrap_or(0);
        let last_closed_day = self.ledger.closed_periods.iter().map(|p| p.last).max();
        let mut dropped = 0u64;
        while let Some(s) = self.ledger.sessions.front() {
            let billed = s.revision <= billed_through
                && last_closed_day.is_some_and(|d| service_date(s.end_ms) <= d);
            if s.end_ms >= cutoff || !billed {
                break;
            }
            self.ledger.dropped_below_revision = s.revision + 1;
            self.ledger.sessions.pop_front();
            dropped += 1;
        }
        self.ledger.dropped_rows += dropped;
        Ok(Output::LedgerSwept { dropped })
    }
}

/// What a billing export reads, as of a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingExport {
    pub invoices: Vec<crate::billing::Invoice>,
    pub revision: u64,
    /// The period is closed: these are its stored lines.
    pub closed: bool,
}

/// One meeting's usage in a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingUsage {
    pub meeting: u64,
    pub participant_ms: u64,
    pub sessions: u32,
    pub closed_by_failure: u32,
    pub open: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub meetings: Vec<MeetingUsage>,
    pub participant_ms: u64,
    /// Use in the period whose raw rows the audit window dropped.
    pub rolled_up_ms: u64,
    pub revision: u64,
    /// The rows themselves when asked for (open ones with `end_ms` 0).
    pub sessions: Vec<Session>,
    /// Participant-minutes with receive reports in the period, and those
    /// within the quality limits.
    pub quality_minutes: u64,
    pub good_quality_minutes: u64,
}

fn billing_error(e: crate::billing::BillingError) -> StateError {
    use crate::billing::BillingError as B;
    match e {
        B::NoLicence { institution, .. } => StateError::NoLicence { institution },
        B::NoPriceTable => StateError::NoPriceTable,
        B::Overflow => StateError::AmountOverflow,
    }
}

/// The part of `[start, end)` inside `[from, until)`.
fn clip(start: u64, end: u64, from: u64, until: u64) -> u64 {
    end.min(until).saturating_sub(start.max(from))
}

impl ClusterState {
    /// Invoices for `first..=last` as of ledger revision `as_of` (0: now),
    /// for one institution or every licensed one.
    pub fn billing_export(
        &self,
        institution: Option<&str>,
        first: Date,
        last: Date,
        as_of: u64,
    ) -> Result<BillingExport, StateError> {
        let ledger = &self.ledger;
        let revision = if as_of == 0 { ledger.revision } else { as_of };
        if revision > ledger.revision {
            return Err(StateError::RevisionAhead {
                revision,
                current: ledger.revision,
            });
        }
        if let Some(name) = institution {
            if !self.licences.by_institution.contains_key(name) {
                return Err(StateError::NoLicence {
                    institution: name.to_string(),
                });
            }
        }
        let closed: Vec<ClosedPeriod> = ledger
            .closed_periods
            .iter()
            .filter(|p| p.revision <= revision)
            .cloned()
            .collect();
        if let Some(p) = closed.iter().find(|p| p.first == first && p.last == last) {
            return Ok(BillingExport {
                invoices: p
                    .invoices
                    .iter()
                    .filter(|i| institution.is_none_or(|n| i.institution == n))
                    .cloned()
                    .collect(),
                revision: p.revision,
                closed: true,
            });
        }
        if let Some(p) = closed.iter().find(|p| p.first <= last && first <= p.last) {
            return Err(StateError::PeriodOverlapsClosed { period: p.label() });
        }
        if revision + 1 < ledger.dropped_below_revision {
            return Err(StateError::RevisionDropped {
                revision,
                oldest: ledger.dropped_below_revision.saturating_sub(1),
            });
        }
        let tables: Vec<LoadedPriceTable> = self
            .licences
            .price_tables
            .iter()
            .filter(|t| t.revision <= revision)
            .cloned()
            .collect();
        // Rows appended after the revision, subtracted from the daily totals.
        let later = ledger.sessions.partition_point(|s| s.revision <= revision);
        let mut invoices = Vec::new();
        for (name, licence) in &self.licences.by_institution {
            if institution.is_some_and(|n| n != name) {
                continue;
            }
            let mut licence = licence.clone();
            licence.history.retain(|v| v.revision <= revision);
            if licence.history.is_empty() {
                continue;
            }
            let mut usage = ledger.daily.get(name).cloned().unwrap_or_default();
            for s in ledger
                .sessions
                .range(later..)
                .filter(|s| &s.institution == name)
            {
                split_by_day(s.start_ms, s.end_ms, |day, ms| {
                    if let Some(d) = usage.get_mut(&day) {
                        d.remove(s.features, ms);
                    }
                });
            }
            let inputs = crate::billing::PeriodInputs {
                licence: &licence,
                tables: &tables,
                usage: &usage,
                closed: &closed,
            };
            invoices
                .push(crate::billing::period_invoice(&inputs, first, last).map_err(billing_error)?);
        }
        Ok(BillingExport {
            invoices,
            revision,
            closed: false,
        })
    }

    /// Closes `first..=last`: its lines, for every licensed institution,
    /// are computed now and never again.
    pub(super) fn close_period(&mut self, c: &ClosePeriod, now_ms: u64) -> Response {
        if c.first > c.last {
            return Err(StateError::BadPeriod);
        }
        let today = service_date(now_ms);
        if c.last >= today {
            return Err(StateError::PeriodNotOver {
                last: c.last.to_string(),
            });
        }
        if let Some(p) = self
            .ledger
            .closed_periods
            .iter()
            .find(|p| p.first <= c.last && c.first <= p.last)
        {
            return Err(StateError::PeriodOverlapsClosed { period: p.label() });
        }
        if self.ledger.closed_periods.iter().any(|p| p.first > c.last) {
            return Err(StateError::PeriodBeforeClosed);
        }
        let export = self.billing_export(None, c.first, c.last, 0)?;
        let adjustments = export
            .invoices
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| l.kind == crate::billing::LineKind::Adjustment)
            .count() as u32;
        self.ledger.revision += 1;
        let period = ClosedPeriod {
            first: c.first,
            last: c.last,
            revision: self.ledger.revision,
            closed_at_ms: now_ms,
            invoices: export.invoices,
        };
        let out = Output::PeriodClosed {
            period: period.label(),
            revision: period.revision,
            invoices: period.invoices.len() as u32,
            adjustments,
        };
        self.ledger.closed_periods.push(period);
        Ok(out)
    }

    /// Participant time per meeting of `institution` in `first..=last`,
    /// open sessions counted up to `now_ms`.
    pub fn usage_report(
        &self,
        institution: &str,
        first: Date,
        last: Date,
        now_ms: u64,
        list_sessions: bool,
    ) -> Result<UsageReport, StateError> {
        if !self.institutions.contains_key(institution) {
            return Err(StateError::UnknownInstitution {
                name: institution.to_string(),
            });
        }
        let from = start_of_service_date(first);
        let until = last
            .tomorrow()
            .map(start_of_service_date)
            .unwrap_or(u64::MAX);
        let mut by_meeting: BTreeMap<u64, MeetingUsage> = BTreeMap::new();
        let mut raw_closed_ms = 0u64;
        let mut rows = Vec::new();
        for s in self
            .ledger
            .sessions
            .iter()
            .filter(|s| s.institution == institution)
        {
            let ms = clip(s.start_ms, s.end_ms, from, until);
            if ms == 0 && !(from <= s.start_ms && s.start_ms < until) {
                continue;
            }
            if list_sessions {
                rows.push(s.clone());
            }
            let m = by_meeting.entry(s.meeting).or_insert_with(|| MeetingUsage {
                meeting: s.meeting,
                ..Default::default()
            });
            m.participant_ms += ms;
            m.sessions += 1;
            if s.end == SessionEnd::Failure {
                m.closed_by_failure += 1;
            }
            raw_closed_ms += ms;
        }
        for (node, by_meeting_open) in &self.ledger.open {
            for (meeting, by_pid) in by_meeting_open {
                for (pid, s) in by_pid.iter().filter(|(_, s)| s.institution == institution) {
                    let ms = clip(s.start_ms, now_ms.max(s.start_ms), from, until);
                    if ms == 0 && !(from <= s.start_ms && s.start_ms < until) {
                        continue;
                    }
                    if list_sessions {
                        rows.push(Session {
                            revision: 0,
                            institution: s.institution.clone(),
                            meeting: *meeting,
                            node: node.clone(),
                            participant: *pid,
                            start_ms: s.start_ms,
                            end_ms: 0,
                            features: s.features,
                            end: SessionEnd::Left,
                            join_seq: s.join_seq,
                            left_seq: 0,
                        });
                    }
                    let m = by_meeting.entry(*meeting).or_insert_with(|| MeetingUsage {
                        meeting: *meeting,
                        ..Default::default()
                    });
                    m.participant_ms += ms;
                    m.sessions += 1;
                    m.open += 1;
                }
            }
        }
        let mut days = DayTotals::default();
        if let Some(d) = self.ledger.daily.get(institution) {
            for (_, t) in d.range(first..=last) {
                days.merge(t);
            }
        }
        let daily_ms = days.participant_ms;
        let meetings: Vec<MeetingUsage> = by_meeting.into_values().collect();
        Ok(UsageReport {
            participant_ms: meetings.iter().map(|m| m.participant_ms).sum(),
            meetings,
            rolled_up_ms: daily_ms.saturating_sub(raw_closed_ms),
            revision: self.ledger.revision,
            sessions: rows,
            quality_minutes: days.quality_minutes,
            good_quality_minutes: days.good_quality_minutes,
        })
    }
}
