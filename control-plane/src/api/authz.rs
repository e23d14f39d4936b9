//! Who may call what: one table, `role × RPC → grant`, consulted by every
//! handler before it reads its arguments. The caller's role comes from its
//! verified client certificate (see `fjord_common::grpc`); a caller without
//! one is anonymous. A denial is `PERMISSION_DENIED`, logged with the
//! caller's identity and counted in `fjord_authz_denied_total`.

use fjord_common::grpc::peer_info;
use fjord_common::{Identity, Role};
use tonic::Request;

use super::ApiError;

/// Every RPC of the public and the peer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    ClusterStatus,
    AddMember,
    RemoveMember,
    CreateInstitution,
    GetInstitution,
    ListInstitutions,
    ScheduleMeeting,
    GetMeeting,
    ListMeetings,
    EndMeeting,
    MoveMeeting,
    ExplainMeeting,
    JoinMeeting,
    GetMeetingPin,
    RegisterNode,
    Heartbeat,
    DrainNode,
    GetNode,
    ListNodes,
    SetLicence,
    GetLicence,
    LicenceHistory,
    GiveNotice,
    LoadPriceTable,
    GetPriceTable,
    ConfigureLogin,
    GetLogin,
    ListAccounts,
    DisableAccount,
    EnableAccount,
    Login,
    PreviewInvoice,
    ReportUsage,
    ExportBilling,
    ClosePeriod,
    UsageShow,
    SlaStatus,
    SlaNotifications,
    AnnounceMaintenance,
    ListMaintenance,
    WebhookSecret,
    SetObjectives,
    SlaMonthlyReport,
    DashboardLink,
    MetadataStatus,
    RaftAppendEntries,
    RaftVote,
    RaftInstallSnapshot,
    RaftForward,
}

impl Rpc {
    pub const ALL: [Rpc; 49] = [
        Rpc::ClusterStatus,
        Rpc::AddMember,
        Rpc::RemoveMember,
        Rpc::CreateInstitution,
        Rpc::GetInstitution,
        Rpc::ListInstitutions,
        Rpc::ScheduleMeeting,
        Rpc::GetMeeting,
        Rpc::ListMeetings,
        Rpc::EndMeeting,
        Rpc::MoveMeeting,
        Rpc::ExplainMeeting,
        Rpc::JoinMeeting,
        Rpc::GetMeetingPin,
        Rpc::RegisterNode,
        Rpc::Heartbeat,
        Rpc::DrainNode,
        Rpc::GetNode,
        Rpc::ListNodes,
        Rpc::SetLicence,
        Rpc::GetLicence,
        Rpc::LicenceHistory,
        Rpc::GiveNotice,
        Rpc::LoadPriceTable,
        Rpc::GetPriceTable,
        Rpc::ConfigureLogin,
        Rpc::GetLogin,
        Rpc::ListAccounts,
        Rpc::DisableAccount,
        Rpc::EnableAccount,
        Rpc::Login,
        Rpc::PreviewInvoice,
        Rpc::ReportUsage,
        Rpc::ExportBilling,
        Rpc::ClosePeriod,
        Rpc::UsageShow,
        Rpc::SlaStatus,
        Rpc::SlaNotifications,
        Rpc::AnnounceMaintenance,
        Rpc::ListMaintenance,
        Rpc::WebhookSecret,
        Rpc::SetObjectives,
        Rpc::SlaMonthlyReport,
        Rpc::DashboardLink,
        Rpc::MetadataStatus,
        Rpc::RaftAppendEntries,
        Rpc::RaftVote,
        Rpc::RaftInstallSnapshot,
        Rpc::RaftForward,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rpc::ClusterStatus => "cluster_status",
            Rpc::AddMember => "add_member",
            Rpc::RemoveMember => "remove_member",
            Rpc::CreateInstitution => "create_institution",
            Rpc::GetInstitution => "get_institution",
            Rpc::ListInstitutions => "list_institutions",
            Rpc::ScheduleMeeting => "schedule_meeting",
            Rpc::GetMeeting => "get_meeting",
            Rpc::ListMeetings => "list_meetings",
            Rpc::EndMeeting => "end_meeting",
            Rpc::MoveMeeting => "move_meeting",
            Rpc::ExplainMeeting => "explain_meeting",
            Rpc::JoinMeeting => "join_meeting",
            Rpc::GetMeetingPin => "get_meeting_pin",
            Rpc::RegisterNode => "register_node",
            Rpc::Heartbeat => "heartbeat",
            Rpc::DrainNode => "drain_node",
            Rpc::GetNode => "get_node",
            Rpc::ListNodes => "list_nodes",
            Rpc::SetLicence => "set_licence",
            Rpc::GetLicence => "get_licence",
            Rpc::LicenceHistory => "licence_history",
            Rpc::GiveNotice => "give_notice",
            Rpc::LoadPriceTable => "load_price_table",
            Rpc::GetPriceTable => "get_price_table",
            Rpc::ConfigureLogin => "configure_login",
            Rpc::GetLogin => "get_login",
            Rpc::ListAccounts => "list_accounts",
            Rpc::DisableAccount => "disable_account",
            Rpc::EnableAccount => "enable_account",
            Rpc::Login => "login",
            Rpc::PreviewInvoice => "preview_invoice",
            Rpc::ReportUsage => "report_usage",
            Rpc::ExportBilling => "export_billing",
            Rpc::ClosePeriod => "close_period",
            Rpc::UsageShow => "usage_show",
            Rpc::SlaStatus => "sla_status",
            Rpc::SlaNotifications => "sla_notifications",
            Rpc::AnnounceMaintenance => "announce_maintenance",
            Rpc::ListMaintenance => "list_maintenance",
            Rpc::WebhookSecret => "webhook_secret",
            Rpc::SetObjectives => "set_objectives",
            Rpc::SlaMonthlyReport => "sla_monthly_report",
            Rpc::DashboardLink => "dashboard_link",
            Rpc::MetadataStatus => "metadata_status",
            Rpc::RaftAppendEntries => "raft_append_entries",
            Rpc::RaftVote => "raft_vote",
            Rpc::RaftInstallSnapshot => "raft_install_snapshot",
            Rpc::RaftForward => "raft_forward",
        }
    }
}

/// What a role may do with an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Without restriction (participants still need the meeting's credential).
    Any,
    /// Only for the institution in the caller's certificate.
    OwnInstitution,
    /// Only for the node in the caller's certificate.
    OwnNode,
    /// Only a replica that is a member (or learner) of this cluster.
    ClusterMember,
    /// Only with a valid ID token from the institution's identity provider
    /// (hosts, who hold no certificate).
    IdToken,
}

/// The table. Everything not listed is denied.
pub const fn grant(role: Role, rpc: Rpc) -> Option<Grant> {
    use Rpc::*;
    match (role, rpc) {
        // Credential-guarded: anyone, with or without a certificate.
        (_, JoinMeeting | GetMeetingPin | Login) => Some(Grant::Any),
        // Hosts schedule with their institution's ID token.
        (Role::Anonymous, ScheduleMeeting) => Some(Grant::IdToken),
        // Peer RPCs: replicas of this cluster only.
        (Role::Replica, RaftAppendEntries | RaftVote | RaftInstallSnapshot | RaftForward) => {
            Some(Grant::ClusterMember)
        }
        (_, RaftAppendEntries | RaftVote | RaftInstallSnapshot | RaftForward) => None,
        // Media nodes speak for themselves only (and may drain themselves
        // and read their own state: the pod's preStop hook does).
        (Role::Node, RegisterNode | Heartbeat | ReportUsage | DrainNode | GetNode) => {
            Some(Grant::OwnNode)
        }
        (_, RegisterNode | Heartbeat | ReportUsage) => None,
        // Operators administer everything.
        (Role::Operator, _) => Some(Grant::Any),
        // Institution admins: their own institution and its meetings.
        (
            Role::InstitutionAdmin,
            GetInstitution | ScheduleMeeting | GetMeeting | ListMeetings | EndMeeting
            | ExplainMeeting | SetLicence | GetLicence | LicenceHistory | ConfigureLogin | GetLogin
            | ListAccounts | DisableAccount | EnableAccount | PreviewInvoice | ExportBilling
            | UsageShow | SlaStatus | SlaNotifications | WebhookSecret | SlaMonthlyReport
            | DashboardLink,
        ) => Some(Grant::OwnInstitution),
        // The price table is public to every administrator.
        (Role::InstitutionAdmin, GetPriceTable) => Some(Grant::Any),
        _ => None,
    }
}

/// The authorised caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Option<Identity>,
    pub grant: Grant,
    pub rpc: Rpc,
}

fn deny(rpc: Rpc, identity: Option<&Identity>, why: &'static str) -> ApiError {
    let role = identity.map(|i| i.role()).unwrap_or(Role::Anonymous);
    metrics::counter!("fjord_authz_denied_total", "rpc" => rpc.name(), "role" => role.as_str())
        .increment(1);
    match identity {
        Some(id) => tracing::info!(rpc = rpc.name(), caller = %id, why, "permission denied"),
        None => tracing::info!(
            rpc = rpc.name(),
            caller = "anonymous",
            why,
            "permission denied"
        ),
    }
    ApiError::Forbidden {
        rpc: rpc.name(),
        role: role.as_str(),
    }
}

/// Looks the caller of `req` up in the table.
pub fn authorize<T>(req: &Request<T>, rpc: Rpc) -> Result<Caller, ApiError> {
    let identity = peer_info(req).and_then(|p| p.identity.clone());
    let role = identity
        .as_ref()
        .map(|i| i.role())
        .unwrap_or(Role::Anonymous);
    match grant(role, rpc) {
        Some(grant) => Ok(Caller {
            identity,
            grant,
            rpc,
        }),
        None => Err(deny(rpc, identity.as_ref(), "role")),
    }
}

impl Caller {
    /// Whether this caller may act on `institution`.
    pub fn check_institution(&self, institution: &str) -> Result<(), ApiError> {
        match (&self.grant, &self.identity) {
            // The token names the institution: its provider must have signed it.
            (Grant::Any | Grant::IdToken, _) => Ok(()),
            (
                Grant::OwnInstitution,
                Some(Identity::InstitutionAdmin {
                    institution: own, ..
                }),
            ) if own == institution => Ok(()),
            _ => Err(deny(self.rpc, self.identity.as_ref(), "other institution")),
        }
    }

    /// The institution an admin is limited to; `None` for unrestricted callers.
    pub fn own_institution(&self) -> Option<&str> {
        match (&self.grant, &self.identity) {
            (Grant::OwnInstitution, Some(Identity::InstitutionAdmin { institution, .. })) => {
                Some(institution)
            }
            _ => None,
        }
    }

    /// The node id in the caller's certificate. A request naming another
    /// node is refused; an empty `claimed` means "the one in my certificate".
    pub fn own_node(&self, claimed: &str) -> Result<String, ApiError> {
        match (&self.grant, &self.identity) {
            (Grant::OwnNode, Some(Identity::Node { id }))
                if claimed.is_empty() || claimed == id =>
            {
                Ok(id.clone())
            }
            _ => Err(deny(self.rpc, self.identity.as_ref(), "other node")),
        }
    }

    /// The replica id of a peer that must be a cluster member.
    pub fn replica_id(&self) -> Option<u64> {
        match &self.identity {
            Some(Identity::Replica { id }) => Some(*id),
            _ => None,
        }
    }

    /// Refuses a replica that is not in `members`.
    pub fn check_member(&self, members: &[u64]) -> Result<(), ApiError> {
        match self.replica_id() {
            Some(id) if members.is_empty() || members.contains(&id) => Ok(()),
            _ => Err(deny(self.rpc, self.identity.as_ref(), "not a member")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table, written out a second time by hand: a change to
    /// either must be made to both.
    fn expected(role: Role, rpc: Rpc) -> Option<Grant> {
        use Rpc::*;
        let any = Some(Grant::Any);
        match rpc {
            JoinMeeting | GetMeetingPin | Login => any,
            RaftAppendEntries | RaftVote | RaftInstallSnapshot | RaftForward => {
                (role == Role::Replica).then_some(Grant::ClusterMember)
            }
            RegisterNode | Heartbeat | ReportUsage => {
                (role == Role::Node).then_some(Grant::OwnNode)
            }
            DrainNode | GetNode => match role {
                Role::Operator => any,
                Role::Node => Some(Grant::OwnNode),
                _ => None,
            },
            ClusterStatus | AddMember | RemoveMember | CreateInstitution | ListInstitutions
            | MoveMeeting | ListNodes | GiveNotice | LoadPriceTable | ClosePeriod
            | AnnounceMaintenance | ListMaintenance | SetObjectives | MetadataStatus => {
                (role == Role::Operator).then_some(Grant::Any)
            }
            GetPriceTable => {
                matches!(role, Role::Operator | Role::InstitutionAdmin).then_some(Grant::Any)
            }
            ScheduleMeeting => match role {
                Role::Operator => any,
                Role::InstitutionAdmin => Some(Grant::OwnInstitution),
                Role::Anonymous => Some(Grant::IdToken),
                _ => None,
            },
            GetInstitution | GetMeeting | ListMeetings | EndMeeting | ExplainMeeting
            | SetLicence | GetLicence | LicenceHistory | ConfigureLogin | GetLogin
            | ListAccounts | DisableAccount | EnableAccount | PreviewInvoice | ExportBilling
            | UsageShow | SlaStatus | SlaNotifications | WebhookSecret | SlaMonthlyReport
            | DashboardLink => match role {
                Role::Operator => any,
                Role::InstitutionAdmin => Some(Grant::OwnInstitution),
                _ => None,
            },
        }
    }

    #[test]
    fn the_table_matches_the_written_out_matrix_for_every_role_and_rpc() {
        let mut checked = 0;
        for role in Role::ALL {
            for rpc in Rpc::ALL {
                assert_eq!(grant(role, rpc), expected(role, rpc), "{role:?} × {rpc:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, Role::ALL.len() * Rpc::ALL.len());
    }

    #[test]
    fn anonymous_callers_reach_only_the_credential_guarded_rpcs() {
        let allowed: Vec<Rpc> = Rpc::ALL
            .into_iter()
            .filter(|r| grant(Role::Anonymous, *r).is_some())
            .collect();
        assert_eq!(
            allowed,
            vec![
                Rpc::ScheduleMeeting,
                Rpc::JoinMeeting,
                Rpc::GetMeetingPin,
                Rpc::Login
            ]
        );
        assert_eq!(
            grant(Role::Anonymous, Rpc::ScheduleMeeting),
            Some(Grant::IdToken)
        );
    }

    #[test]
    fn only_replicas_reach_peer_rpcs_and_only_nodes_register() {
        for role in Role::ALL {
            for rpc in [
                Rpc::RaftAppendEntries,
                Rpc::RaftVote,
                Rpc::RaftInstallSnapshot,
                Rpc::RaftForward,
            ] {
                assert_eq!(grant(role, rpc).is_some(), role == Role::Replica);
            }
            for rpc in [Rpc::RegisterNode, Rpc::Heartbeat] {
                assert_eq!(grant(role, rpc).is_some(), role == Role::Node);
            }
        }
    }

    #[test]
    fn an_admin_acts_on_its_own_institution_and_a_node_for_itself() {
        let admin = Caller {
            identity: Some(Identity::InstitutionAdmin {
                institution: "uio".into(),
                name: "desk".into(),
            }),
            grant: Grant::OwnInstitution,
            rpc: Rpc::ScheduleMeeting,
        };
        assert!(admin.check_institution("uio").is_ok());
        assert!(matches!(
            admin.check_institution("ntnu"),
            Err(ApiError::Forbidden { .. })
        ));
        let node = Caller {
            identity: Some(Identity::Node { id: "n1".into() }),
            grant: Grant::OwnNode,
            rpc: Rpc::RegisterNode,
        };
        assert_eq!(node.own_node("").unwrap(), "n1");
        assert_eq!(node.own_node("n1").unwrap(), "n1");
        assert!(node.own_node("n2").is_err());
    }
}
