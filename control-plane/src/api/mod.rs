//! tonic services for the public API. Each handler validates its arguments
//! (bad input -> `INVALID_ARGUMENT` naming the field, nothing changed), turns
//! the request into a state-machine [`Command`](crate::state::Command) or
//! [`Query`](crate::state::Query), and hands it to the [`Replica`], which
//! forwards to the leader when needed. All errors map to `Status` in one place.

mod account;
pub mod authz;
mod billing;
mod cluster;
mod convert;
pub mod http;
mod institution;
mod keys;
mod licence;
mod meeting;
mod metadata;
mod node;
pub mod sla;
mod validate;

pub use crate::join_guard::JoinLimits;
pub use account::{AccountApi, SignInLimiter};
pub use billing::BillingApi;
pub use cluster::ClusterApi;
pub use institution::InstitutionApi;
pub use keys::SigningKeys;
pub use licence::{ensure_price_table, LicenceApi};
pub use meeting::{join_link, MeetingApi};
pub use metadata::MetadataApi;
pub use node::NodeApi;
pub use sla::SlaApi;
pub use validate::address as validate_address;
pub use validate::display_name as validate_display_name;
pub use validate::name as validate_name;
pub use validate::{
    MAX_CAPACITY, MAX_DURATION_MS, MAX_PARTICIPANTS, MAX_REQUEST_ID_LEN, MAX_SCHEDULE_AHEAD_MS,
};

use tonic::{Code, Status};

use crate::raft::ClusterError;
use crate::state::StateError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Unknown meeting, wrong passcode/PIN/host key, or ended meeting: one
    /// answer for all, so guessing learns nothing.
    #[error("no meeting with this id and passcode")]
    Denied,
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// The caller's certificate (or its absence) does not allow this call.
    #[error("permission denied: {role} may not call {rpc} on this resource")]
    Forbidden {
        rpc: &'static str,
        role: &'static str,
    },
    #[error("{0}")]
    NotYet(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A host's ID token did not validate.
    #[error("sign-in refused: {0}")]
    Login(crate::login::LoginError),
    #[error("an ID token from the institution's identity provider is needed (id_token)")]
    NeedsIdToken,
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        ApiError::Cluster(ClusterError::State(e))
    }
}

impl ApiError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    fn code(&self) -> Code {
        match self {
            ApiError::Invalid { .. } => Code::InvalidArgument,
            ApiError::Denied | ApiError::Forbidden { .. } => Code::PermissionDenied,
            ApiError::RateLimited { .. } => Code::ResourceExhausted,
            ApiError::NotYet(_) => Code::FailedPrecondition,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Login(_) | ApiError::NeedsIdToken => Code::Unauthenticated,
            ApiError::Cluster(c) => match c {
                ClusterError::State(s) => match s {
                    StateError::InstitutionExists { .. } | StateError::RequestIdReused { .. } => {
                        Code::AlreadyExists
                    }
                    StateError::UnknownInstitution { .. }
                    | StateError::UnknownNode { .. }
                    | StateError::UnknownMeeting { .. } => Code::NotFound,
                    StateError::UnknownRegion { .. }
                    | StateError::HomeOutsideResidency { .. }
                    | StateError::TooManyParticipants { .. }
                    | StateError::WindowInPast { .. } => Code::InvalidArgument,
                    StateError::NodeRegionChange { .. }
                    | StateError::CapacityBelowReservations { .. }
                    | StateError::MeetingEnded { .. }
                    | StateError::NameTheShare { .. }
                    | StateError::MeetingUnplaced { .. }
                    | StateError::NotOnNode { .. } => Code::FailedPrecondition,
                    StateError::TooManyNodes { .. } => Code::ResourceExhausted,
                    StateError::NoCapacity { .. } => Code::ResourceExhausted,
                    StateError::NoLicence { .. }
                    | StateError::NoPriceTable
                    | StateError::LicenceNotInForce { .. }
                    | StateError::AfterAgreementEnd { .. } => Code::FailedPrecondition,
                    StateError::PriceTableVersionUsed { .. } => Code::AlreadyExists,
                    StateError::TooManyVersions { .. } => Code::ResourceExhausted,
                    StateError::Licensing { error } => licensing_code(error),
                    StateError::OperatorOnly { .. }
                    | StateError::NotEligible { .. }
                    | StateError::AccountDisabled { .. } => Code::PermissionDenied,
                    StateError::UnknownAccount { .. } => Code::NotFound,
                    StateError::NoLogin { .. } => Code::FailedPrecondition,
                    StateError::NoFreeLicence { .. } => Code::ResourceExhausted,
                    StateError::TooManyEvents { .. }
                    | StateError::BadAuditWindow { .. }
                    | StateError::BadPeriod
                    | StateError::RevisionAhead { .. }
                    | StateError::NodeNotInRegion { .. }
                    | StateError::BadMaintenance { .. }
                    | StateError::BadObjective { .. } => Code::InvalidArgument,
                    StateError::PeriodNotOver { .. }
                    | StateError::PeriodOverlapsClosed { .. }
                    | StateError::PeriodBeforeClosed
                    | StateError::RevisionDropped { .. } => Code::FailedPrecondition,
                    StateError::AmountOverflow => Code::OutOfRange,
                },
                ClusterError::Unavailable { .. } | ClusterError::NotLeader { .. } => {
                    Code::Unavailable
                }
                ClusterError::Membership { .. } => Code::FailedPrecondition,
                ClusterError::UnknownMember { .. } => Code::NotFound,
            },
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Counts the call by method and outcome, and converts the error.
pub(crate) fn finish<T>(method: &'static str, r: Result<T, ApiError>) -> Result<T, Status> {
    let code = match &r {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    };
    metrics::counter!("fjord_api_requests_total", "method" => method, "code" => format!("{code:?}"))
        .increment(1);
    if let Err(e) = &r {
        tracing::debug!(method, error = %e, "request refused");
    }
    r.map_err(Status::from)
}

/// Beyond the licence is a refusal (the cluster's, exit 5); malformed
/// licence data is the caller's mistake.
fn licensing_code(e: &crate::licensing::LicensingError) -> Code {
    use crate::licensing::LicensingError as L;
    match e {
        L::MeetingTooLarge { .. }
        | L::WebinarNotIncluded { .. }
        | L::WebinarTooLarge { .. }
        | L::NoticeAlreadyGiven { .. } => Code::FailedPrecondition,
        L::BadDate { .. }
        | L::BadFte
        | L::TooManyAddOns { .. }
        | L::UnknownAddOn { .. }
        | L::BadContact { .. }
        | L::NoticeBeforeStart { .. }
        | L::BadPriceTable { .. }
        | L::PriceTableSyntax { .. }
        | L::PriceTableTooLarge { .. } => Code::InvalidArgument,
    }
}
