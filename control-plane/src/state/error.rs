use serde::{Deserialize, Serialize};

use super::accounts::DisableReason;
use crate::licensing::{Affiliation, LicensingError, Phase};
use crate::placement::{Decision, Refusal};

/// Why the state machine refused a command. Variants carry ids, not
/// formatted text; `code()` is the stable label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StateError {
    #[error("institution {name:?} already exists")]
    InstitutionExists { name: String },
    #[error("idempotency key {key:?} was already used for a different meeting request")]
    RequestIdReused { key: String },
    #[error("unknown institution {name:?}")]
    UnknownInstitution { name: String },
    #[error("unknown region {name:?}")]
    UnknownRegion { name: String },
    #[error("home region {home:?} is not inside residency {residency:?}")]
    HomeOutsideResidency { home: String, residency: String },
    #[error("unknown node {id:?}")]
    UnknownNode { id: String },
    #[error("node {id:?} is not in region {region:?}")]
    NodeNotInRegion { id: String, region: String },
    #[error("maintenance window refused: {reason}")]
    BadMaintenance { reason: String },
    #[error("objectives refused: {reason}")]
    BadObjective { reason: String },
    #[error("node {id:?} carries meetings in {from:?}; drain it before moving it to {to:?}")]
    NodeRegionChange {
        id: String,
        from: String,
        to: String,
    },
    #[error(
        "node {id:?}: capacity {capacity} is below the {reserved} participants already reserved"
    )]
    CapacityBelowReservations {
        id: String,
        capacity: u32,
        reserved: u32,
    },
    #[error("unknown meeting {id}")]
    UnknownMeeting { id: u64 },
    #[error("meeting {id} has already ended")]
    MeetingEnded { id: u64 },
    #[error("{requested} participants exceeds the institution's limit of {max}")]
    TooManyParticipants { requested: u32, max: u32 },
    #[error("the meeting window ends in the past ({end_ms} ms since the epoch)")]
    WindowInPast { end_ms: u64 },
    #[error("meeting {id} spans several nodes; name the node to move it off")]
    NameTheShare { id: u64 },
    #[error("meeting {id} has no node right now")]
    MeetingUnplaced { id: u64 },
    #[error("meeting {id} has no share on node {node:?}")]
    NotOnNode { id: u64, node: String },
    #[error("the cluster already has the most media nodes it can index ({max})")]
    TooManyNodes { max: u32 },
    #[error("a usage report carries at most {max} events")]
    TooManyEvents { max: u32 },
    #[error("the audit window must be 1..={max} days")]
    BadAuditWindow { max: u32 },
    #[error("the period's first day is after its last")]
    BadPeriod,
    #[error("the period has not ended yet (its last day is {last})")]
    PeriodNotOver { last: String },
    #[error("the period overlaps the closed period {period}")]
    PeriodOverlapsClosed { period: String },
    #[error("a later period is already closed; periods close in order")]
    PeriodBeforeClosed,
    #[error("ledger revision {revision} is past the current one ({current})")]
    RevisionAhead { revision: u64, current: u64 },
    #[error("ledger revision {revision} is older than the audit window keeps (oldest {oldest})")]
    RevisionDropped { revision: u64, oldest: u64 },
    #[error("an amount does not fit 64 bits")]
    AmountOverflow,
    #[error("institution {institution:?} holds no licence")]
    NoLicence { institution: String },
    #[error("no price table is loaded")]
    NoPriceTable,
    #[error("the licence of {institution:?} is not in force ({phase:?})")]
    LicenceNotInForce { institution: String, phase: Phase },
    #[error("the agreement of {institution:?} ends on {ends_on}; the meeting starts after that")]
    AfterAgreementEnd {
        institution: String,
        ends_on: String,
    },
    #[error("price table version {version:?} was already loaded with other contents")]
    PriceTableVersionUsed { version: String },
    #[error("at most {max} versions are kept")]
    TooManyVersions { max: u32 },
    #[error("{error}")]
    Licensing { error: LicensingError },
    #[error("only an operator may change a licence's {field}")]
    OperatorOnly { field: String },
    #[error("institution {institution:?} has no login (identity provider) configured")]
    NoLogin { institution: String },
    #[error("the host's role is not eligible to host at {institution:?}")]
    NotEligible { institution: String },
    #[error("unknown host account {id:?}")]
    UnknownAccount { id: String },
    #[error("host account {id:?} is disabled ({reason:?})")]
    AccountDisabled { id: String, reason: DisableReason },
    #[error("every {affiliation:?} licence of {institution:?} is taken ({held}); the licence allows no overage")]
    NoFreeLicence {
        institution: String,
        affiliation: Affiliation,
        held: u64,
    },
    #[error("placement refused: {refusal}")]
    NoCapacity {
        refusal: Refusal,
        decision: Box<Decision>,
    },
}

impl StateError {
    pub fn code(&self) -> &'static str {
        match self {
            StateError::InstitutionExists { .. } => "institution_exists",
            StateError::RequestIdReused { .. } => "request_id_reused",
            StateError::UnknownInstitution { .. } => "unknown_institution",
            StateError::UnknownRegion { .. } => "unknown_region",
            StateError::HomeOutsideResidency { .. } => "home_outside_residency",
            StateError::UnknownNode { .. } => "unknown_node",
            StateError::NodeNotInRegion { .. } => "node_not_in_region",
            StateError::BadMaintenance { .. } => "bad_maintenance",
            StateError::BadObjective { .. } => "bad_objective",
            StateError::NodeRegionChange { .. } => "node_region_change",
            StateError::CapacityBelowReservations { .. } => "capacity_below_reservations",
            StateError::UnknownMeeting { .. } => "unknown_meeting",
            StateError::MeetingEnded { .. } => "meeting_ended",
            StateError::TooManyParticipants { .. } => "too_many_participants",
            StateError::WindowInPast { .. } => "window_in_past",
            StateError::NoCapacity { .. } => "no_capacity",
            StateError::NameTheShare { .. } => "name_the_share",
            StateError::MeetingUnplaced { .. } => "meeting_unplaced",
            StateError::NotOnNode { .. } => "not_on_node",
            StateError::TooManyNodes { .. } => "too_many_nodes",
            StateError::NoLicence { .. } => "no_licence",
            StateError::NoPriceTable => "no_price_table",
            StateError::LicenceNotInForce { .. } => "licence_not_in_force",
            StateError::AfterAgreementEnd { .. } => "after_agreement_end",
            StateError::PriceTableVersionUsed { .. } => "price_table_version_used",
            StateError::TooManyVersions { .. } => "too_many_versions",
            StateError::Licensing { .. } => "licensing",
            StateError::OperatorOnly { .. } => "operator_only",
            StateError::NoLogin { .. } => "no_login",
            StateError::NotEligible { .. } => "not_eligible",
            StateError::UnknownAccount { .. } => "unknown_account",
            StateError::AccountDisabled { .. } => "account_disabled",
            StateError::NoFreeLicence { .. } => "no_free_licence",
            StateError::TooManyEvents { .. } => "too_many_events",
            StateError::BadAuditWindow { .. } => "bad_audit_window",
            StateError::BadPeriod => "bad_period",
            StateError::PeriodNotOver { .. } => "period_not_over",
            StateError::PeriodOverlapsClosed { .. } => "period_overlaps_closed",
            StateError::PeriodBeforeClosed => "period_before_closed",
            StateError::RevisionAhead { .. } => "revision_ahead",
            StateError::RevisionDropped { .. } => "revision_dropped",
            StateError::AmountOverflow => "amount_overflow",
        }
    }
}

impl From<LicensingError> for StateError {
    fn from(error: LicensingError) -> Self {
        StateError::Licensing { error }
    }
}
