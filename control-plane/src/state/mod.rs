//! The replicated state machine: a pure, deterministic function of the log.
//!
//! ```text
//!   leader stamps now + seed        every replica
//!   Request{now_ms, seed, cmd} ──▶ ClusterState::apply() ──▶ Response
//!                                         │
//!                                         └─ placement::place() for
//!                                            schedule / re-placement
//! ```
//!
//! `apply` never reads a clock: time and randomness travel inside the
//! [`Request`], so replicas that apply the same log end in the same state.
//! Placement runs here, inside `apply`, so a decision always sees every
//! reservation committed before it and two concurrent schedules can never
//! both take the last seat on a node.
//!
//! The state is a set of sub-states, each with its own file and commands
//! ([`command`]): `institutions` (regions and institutions), `nodes` (the
//! node table), `meetings` (meetings, their shares and reservations),
//! `access` (the join-signing key) and `answers` (recent answers for
//! retried writes). A command goes to its sub-state; flows that span
//! several (a node going down re-places its meetings) are methods in the
//! file of the command that starts them. Snapshots store one flat record
//! (`stored.rs`), the layout earlier versions wrote.

mod access;
mod accounts;
mod answers;
mod command;
mod error;
mod institutions;
mod invariants;
mod ledger;
mod licences;
mod meetings;
mod metadata;
mod model;
mod nodes;
mod sla;
mod stored;

pub use access::JoinKeys;
pub use accounts::{Accounts, DisableReason, HostAccount, LoginConfig, INACTIVE_MONTHS};

/// Most affiliation values one login maps.
pub fn accounts_max_eligible() -> usize {
    accounts::MAX_ELIGIBLE_VALUES
}
pub use answers::RecentAnswer;
use answers::RecentAnswers;
pub use command::*;
pub use error::StateError;
pub use institutions::Institutions;
pub use ledger::{
    split_by_day, BillingExport, ClosedPeriod, DayTotals, Ledger, MeetingUsage, NodeUsageMark,
    OpenSession, Session, SessionEnd, UsageEvent, UsageEventKind, UsageReport,
    DEFAULT_AUDIT_WINDOW_DAYS, FEATURE_CASCADE, FEATURE_E2EE, FEATURE_LARGE_MEETING,
    FEATURE_WEBINAR_ATTENDEE, MAX_AUDIT_WINDOW_DAYS, MAX_USAGE_EVENTS_PER_REPORT,
};
pub use licences::{Licence, LicenceVersion, LicenceView, Licences, LoadedPriceTable, Notice};
pub use meetings::Meetings;
pub use metadata::{MetaKey, MetadataState, MetadataSynced, Pending, MAX_SYNCED_PER_COMMAND};
pub use model::*;
pub use sla::{
    AnnounceMaintenance, EvaluateSla, RecordDelivery, RecordSli, SetObjectives, SlaState,
    MAX_SLI_EVENTS_PER_COMMAND,
};

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::placement::{self, Decision, Outcome, PlacementRequest, SplitMix64, Strategy, Trigger};

/// Node indexes run 1..=this: media nodes keep 12 bits of every track id
/// for the index (see `Node::index`).
pub const MAX_NODE_INDEX: u32 = 4095;

/// Default reservation window when a schedule names no duration.
pub const DEFAULT_MEETING_DURATION_MS: u64 = 60 * 60 * 1000;
/// How long the answers to recent writes are kept for retried duplicates:
/// callers retry a write with the same op id within their request timeout
/// (20 s by default), so two minutes cover them with room to spare.
pub const RECENT_OP_RETENTION_MS: u64 = 2 * 60 * 1000;
/// Ended meetings stay queryable this long, then are pruned from the state.
pub const ENDED_MEETING_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A command plus what the leader stamped into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub seed: u64,
    pub strategy: Strategy,
    /// Identifies one logical write across retries (0: none). A write whose
    /// answer was lost (leader deposed mid-call) is retried with the same id
    /// and answered from [`ClusterState`]'s memory instead of applied twice.
    #[serde(default)]
    pub op_id: u64,
    pub command: Command,
}

/// What one Raft entry carries: the client writes the leader gathered while
/// earlier entries were in flight (group commit), applied in order. Each
/// keeps its own seed and op id, so a batch applies exactly as its writes
/// would one by one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub requests: Vec<Request>,
}

impl From<Request> for Proposal {
    fn from(r: Request) -> Self {
        Proposal { requests: vec![r] }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one per applied command, moved not copied
pub enum Output {
    /// Membership changes and blank entries.
    None,
    Institution(Institution),
    Node(NodeView),
    NodesDown {
        nodes: Vec<String>,
        replaced: Vec<u64>,
    },
    Meeting(Meeting),
    Scheduled {
        meeting: Meeting,
        decision: Decision,
    },
    /// A meeting's share moved (`MoveMeeting`).
    Moved {
        meeting: Meeting,
        decision: Decision,
    },
    /// A node drained with evacuation: what moved and what stays.
    Evacuated {
        node: NodeView,
        moved: Vec<u64>,
        kept: Vec<u64>,
    },
    /// The join-token signing key in force, stored before salts (PKCS#8).
    JoinKey(Vec<u8>),
    /// The salt the join-token signing key in force derives from.
    JoinKeySalt(Vec<u8>),
    Licence(Box<LicenceView>),
    Account(Box<HostAccount>),
    LoginConfigured {
        institution: String,
    },
    AccountsSwept {
        disabled: Vec<String>,
    },
    /// `loaded`: false when the same table (or, with `only_if_none`, any
    /// table) was already there.
    PriceTableLoaded {
        version: String,
        loaded: bool,
    },
    /// The node may forget its journal up to here.
    UsageAcked {
        acked_seq: u64,
    },
    PeriodClosed {
        period: String,
        revision: u64,
        invoices: u32,
        adjustments: u32,
    },
    LedgerSwept {
        dropped: u64,
    },
    SliRecorded {
        events: u32,
    },
    SlaEvaluated {
        fired: u32,
        resolved: u32,
        maintenance_started: Vec<u64>,
        /// Nodes drained because their maintenance began.
        drained: Vec<String>,
    },
    MaintenanceAnnounced {
        maintenance: Box<crate::sla::Maintenance>,
        /// Institutions whose contact points were notified.
        notified: Vec<String>,
    },
    DeliveryRecorded {
        recorded: bool,
    },
    ObjectivesSet {
        institution: String,
        objectives: crate::sla::Objectives,
    },
    MetadataSynced {
        cleared: u32,
        pending: u64,
        revision: u64,
    },
}

pub type Response = Result<Output, StateError>;

/// Linearizable reads, answered by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Query {
    Institutions,
    Institution {
        name: String,
    },
    Nodes,
    Node {
        id: String,
    },
    Meetings {
        institution: Option<String>,
        include_ended: bool,
    },
    Meeting {
        id: u64,
    },
    Licence {
        institution: String,
    },
    LicenceHistory {
        institution: String,
    },
    PriceTable,
    Accounts {
        institution: String,
    },
    Login {
        institution: String,
    },
    /// An institution's licence and every price table: what billing needs.
    Billing {
        institution: String,
    },
    /// Invoices for a period as of a ledger revision (0: now).
    BillingExport {
        institution: Option<String>,
        first: jiff::civil::Date,
        last: jiff::civil::Date,
        as_of: u64,
    },
    Usage {
        institution: String,
        first: jiff::civil::Date,
        last: jiff::civil::Date,
        #[serde(default)]
        sessions: bool,
    },
    /// Service levels of one institution, or of all (sorted by budget left).
    Sla {
        institution: Option<String>,
    },
    /// The notification log, newest first.
    SlaNotifications {
        institution: Option<String>,
        limit: u32,
    },
    /// One calendar month's SLO figures (`month`: its first day).
    SlaMonthly {
        institution: String,
        month: jiff::civil::Date,
    },
    /// Every maintenance window known.
    Maintenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryOutput {
    Institutions(Vec<Institution>),
    Institution(Institution),
    Nodes(Vec<NodeView>),
    Node(NodeView),
    Meetings(Vec<Meeting>),
    Meeting(Meeting),
    Licence(Box<LicenceView>),
    LicenceHistory(Box<Licence>),
    PriceTable(Box<crate::licensing::PriceTable>),
    Accounts(Vec<HostAccount>),
    Login(Box<LoginConfig>),
    Billing(Box<Licence>, Vec<LoadedPriceTable>),
    BillingExport(Box<BillingExport>),
    Usage(Box<UsageReport>),
    Sla(Vec<crate::sla::report::InstitutionReport>),
    SlaNotifications(Vec<crate::sla::notify::Notification>),
    SlaMonthly(Vec<crate::sla::report::MonthlyLine>),
    Maintenance(Vec<crate::sla::Maintenance>),
}

/// Everything the control plane replicates. New pillars (licences, the
/// usage ledger, alert state) are new sub-states here, with their commands
/// in a new variant of [`Command`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub institutions: Institutions,
    pub nodes: NodeTable,
    pub meetings: Meetings,
    pub access: JoinKeys,
    pub licences: Licences,
    pub accounts: Accounts,
    pub ledger: Ledger,
    pub sla: SlaState,
    pub metadata: MetadataState,
    answers: RecentAnswers,
    /// Last node index handed out.
    pub last_node_index: u32,
}

impl ClusterState {
    /// Applies one committed request. Errors leave the state unchanged (apart
    /// from time-driven expiry, which any command with a later `now` does).
    pub fn apply(&mut self, req: &Request) -> Response {
        self.metadata.set_clock(req.now_ms);
        self.expire_meetings(req.now_ms);
        self.expire_recent_ops(req.now_ms);
        if req.op_id != 0 {
            if let Some(answer) = self.answers.compact.get(&req.op_id) {
                return self.replay(answer);
            }
            if let Some(answer) = self.answers.full.get(&req.op_id) {
                return answer.clone();
            }
        }
        let answer = self.apply_command(req);
        // Closed sessions (usage reports, a node declared down) change
        // daily totals in many places; they are marked here, once.
        self.mark_touched_days();
        if req.op_id != 0 {
            self.answers
                .compact
                .insert(req.op_id, RecentAnswer::of(&answer));
            self.answers.by_time.insert((req.now_ms, req.op_id));
        }
        answer
    }

    fn apply_command(&mut self, req: &Request) -> Response {
        let mut rng = SplitMix64::new(req.seed);
        match &req.command {
            Command::Institution(InstitutionCommand::Create(c)) => {
                self.create_institution(c, req.now_ms)
            }
            Command::Node(c) => match c {
                NodeCommand::Register(c) => {
                    let answer = self.register_node(c, req, &mut rng);
                    if answer.is_ok() {
                        self.metadata.mark(MetaKey::Node { id: c.id.clone() });
                    }
                    answer
                }
                NodeCommand::Heartbeat(c) => self.heartbeat(c, req, &mut rng),
                NodeCommand::SetDraining(c) => self.set_node_draining(c, req, &mut rng),
                NodeCommand::ExpireLeases(c) => Ok(self.expire_leases(c.lease_ms, req, &mut rng)),
            },
            Command::Meeting(c) => match c {
                MeetingCommand::Schedule(c) => self.schedule_meeting(c, req, &mut rng),
                MeetingCommand::End(c) => self.end_meeting(c.id, req.now_ms),
                MeetingCommand::Move(c) => {
                    self.move_meeting(c.id, c.from.as_deref(), req, &mut rng)
                }
            },
            Command::Access(AccessCommand::InitJoinKey(c)) => Ok(self.init_join_key(c)),
            Command::Licence(c) => {
                let answer = match c {
                    LicenceCommand::LoadPriceTable(c) => self.load_price_table(c, req.now_ms),
                    LicenceCommand::Set(c) => self.set_licence(c, req.now_ms),
                    LicenceCommand::GiveNotice(c) => self.give_notice(c, req.now_ms),
                };
                if answer.is_ok() {
                    self.stamp_billing_revision();
                }
                answer
            }
            Command::Ledger(c) => match c {
                LedgerCommand::Record(c) => self.record_usage(c),
                LedgerCommand::ClosePeriod(c) => self.close_period(c, req.now_ms),
                LedgerCommand::Sweep(c) => self.sweep_ledger(c, req.now_ms),
            },
            Command::Sla(c) => match c {
                SlaCommand::Record(c) => self.record_sli(c),
                SlaCommand::Evaluate(_) => self.evaluate_sla(req, &mut rng),
                SlaCommand::Announce(c) => self.announce_maintenance(c, req.now_ms),
                SlaCommand::Delivery(c) => self.record_delivery(c),
                SlaCommand::SetObjectives(c) => self.set_objectives(c),
            },
            Command::Metadata(MetadataCommand::Synced(c)) => self.metadata_synced(c),
            Command::Account(c) => match c {
                AccountCommand::ConfigureLogin(c) => self.configure_login(c, req.now_ms),
                AccountCommand::Login(c) => self.login(c, req.now_ms),
                AccountCommand::SetEnabled(c) => self.set_account_enabled(c, req.now_ms),
                AccountCommand::Sweep(_) => self.sweep_accounts(req.now_ms),
            },
        }
    }

    /// Answers a read against the state as of `now_ms`.
    pub fn query(&self, q: &Query, now_ms: u64) -> Result<QueryOutput, StateError> {
        Ok(match q {
            Query::Institutions => {
                QueryOutput::Institutions(self.institutions.by_name.values().cloned().collect())
            }
            Query::Institution { name } => QueryOutput::Institution(
                self.institutions
                    .by_name
                    .get(name)
                    .cloned()
                    .ok_or_else(|| StateError::UnknownInstitution { name: name.clone() })?,
            ),
            Query::Nodes => QueryOutput::Nodes(
                self.nodes
                    .keys()
                    .map(|id| self.node_view(id, now_ms))
                    .collect(),
            ),
            Query::Node { id } => {
                if !self.nodes.contains_key(id) {
                    return Err(StateError::UnknownNode { id: id.clone() });
                }
                QueryOutput::Node(self.node_view(id, now_ms))
            }
            Query::Meetings {
                institution,
                include_ended,
            } => {
                if let Some(name) = institution {
                    if !self.institutions.by_name.contains_key(name) {
                        return Err(StateError::UnknownInstitution { name: name.clone() });
                    }
                }
                QueryOutput::Meetings(
                    self.meetings
                        .by_id
                        .values()
                        .filter(|m| *include_ended || m.state != MeetingState::Ended)
                        .filter(|m| institution.as_ref().is_none_or(|i| &m.institution == i))
                        .cloned()
                        .collect(),
                )
            }
            Query::Meeting { id } => QueryOutput::Meeting(
                self.meetings
                    .by_id
                    .get(id)
                    .cloned()
                    .ok_or(StateError::UnknownMeeting { id: *id })?,
            ),
            Query::Licence { institution } => QueryOutput::Licence(Box::new(
                self.licences
                    .view(institution, crate::licensing::service_date(now_ms))?,
            )),
            Query::LicenceHistory { institution } => QueryOutput::LicenceHistory(Box::new(
                self.licences
                    .get(institution)
                    .cloned()
                    .ok_or_else(|| StateError::NoLicence {
                        institution: institution.clone(),
                    })?,
            )),
            Query::PriceTable => QueryOutput::PriceTable(Box::new(
                self.licences
                    .price_table()
                    .cloned()
                    .ok_or(StateError::NoPriceTable)?,
            )),
            Query::Accounts { institution } => {
                if !self.institutions.contains_key(institution) {
                    return Err(StateError::UnknownInstitution {
                        name: institution.clone(),
                    });
                }
                QueryOutput::Accounts(self.accounts.of_institution(institution).cloned().collect())
            }
            Query::Billing { institution } => QueryOutput::Billing(
                Box::new(self.licences.get(institution).cloned().ok_or_else(|| {
                    StateError::NoLicence {
                        institution: institution.clone(),
                    }
                })?),
                self.licences.price_tables.clone(),
            ),
            Query::BillingExport {
                institution,
                first,
                last,
                as_of,
            } => QueryOutput::BillingExport(Box::new(self.billing_export(
                institution.as_deref(),
                *first,
                *last,
                *as_of,
            )?)),
            Query::Usage {
                institution,
                first,
                last,
                sessions,
            } => QueryOutput::Usage(Box::new(self.usage_report(
                institution,
                *first,
                *last,
                now_ms,
                *sessions,
            )?)),
            Query::Sla { institution } => {
                QueryOutput::Sla(self.sla_reports(institution.as_deref(), now_ms)?)
            }
            Query::SlaNotifications { institution, limit } => {
                if let Some(name) = institution {
                    if !self.institutions.contains_key(name) {
                        return Err(StateError::UnknownInstitution { name: name.clone() });
                    }
                }
                QueryOutput::SlaNotifications(
                    self.sla
                        .outbox
                        .log(institution.as_deref())
                        .take(*limit as usize)
                        .cloned()
                        .collect(),
                )
            }
            Query::SlaMonthly { institution, month } => {
                QueryOutput::SlaMonthly(self.sla_monthly(institution, *month)?)
            }
            Query::Maintenance => {
                QueryOutput::Maintenance(self.sla.book.maintenance.all().to_vec())
            }
            Query::Login { institution } => QueryOutput::Login(Box::new(
                self.accounts
                    .logins
                    .get(institution)
                    .cloned()
                    .ok_or_else(|| StateError::NoLogin {
                        institution: institution.clone(),
                    })?,
            )),
        })
    }
}

#[cfg(test)]
mod account_tests;
#[cfg(test)]
mod ledger_tests;
#[cfg(test)]
mod licence_tests;
#[cfg(test)]
mod sla_tests;
#[cfg(test)]
mod tests;
