//! Commands, one enum per sub-state, nested in [`Command`].
//!
//! Each sub-state of [`super::ClusterState`] owns its commands; a new one
//! (licences, the usage ledger, alerts) adds its own enum and one variant
//! here, not arms in a single flat list. On the wire a command is its own
//! struct tagged with a name unique across sub-states (`"type":
//! "schedule_meeting"`), the same form logs written before the split carry,
//! so they replay unchanged.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use jiff::civil::Date;

use super::model::MeetingAccess;
use crate::licensing::{LicenceTerms, MeetingKind, PriceTable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Institution(InstitutionCommand),
    Node(NodeCommand),
    Meeting(MeetingCommand),
    Access(AccessCommand),
    Licence(LicenceCommand),
    Account(AccountCommand),
    Ledger(LedgerCommand),
    Sla(SlaCommand),
    Metadata(MetadataCommand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstitutionCommand {
    Create(CreateInstitution),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    Register(RegisterNode),
    Heartbeat(Heartbeat),
    SetDraining(SetNodeDraining),
    ExpireLeases(ExpireLeases),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeetingCommand {
    Schedule(ScheduleMeeting),
    End(EndMeeting),
    Move(MoveMeeting),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessCommand {
    InitJoinKey(InitJoinKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenceCommand {
    LoadPriceTable(LoadPriceTable),
    Set(SetLicence),
    GiveNotice(GiveNotice),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    ConfigureLogin(ConfigureLogin),
    Login(Login),
    SetEnabled(SetAccountEnabled),
    Sweep(SweepAccounts),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCommand {
    Record(RecordUsage),
    ClosePeriod(ClosePeriod),
    Sweep(SweepLedger),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataCommand {
    Synced(super::metadata::MetadataSynced),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlaCommand {
    Record(super::sla::RecordSli),
    Evaluate(super::sla::EvaluateSla),
    Announce(super::sla::AnnounceMaintenance),
    Delivery(super::sla::RecordDelivery),
    SetObjectives(super::sla::SetObjectives),
}

/// A batch of one node's journaled usage events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordUsage {
    pub node: String,
    pub events: Vec<super::ledger::UsageEvent>,
}

/// Closes a billing period: its invoice lines are fixed from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosePeriod {
    pub first: Date,
    pub last: Date,
}

/// Drops raw ledger rows older than the audit window once billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepLedger {
    pub audit_window_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateInstitution {
    pub name: String,
    pub residency: String,
    /// Preferred region inside the residency; defaults to the residency.
    pub home_region: Option<String>,
    pub max_participants: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub id: String,
    pub region: String,
    pub address: String,
    pub capacity: u32,
    #[serde(default)]
    pub certificate: Vec<u8>,
    /// The node process (random per start; 0 from nodes that predate the
    /// usage ledger).
    #[serde(default)]
    pub boot: u64,
}

/// A summary of a node's heartbeats: the receiving replica commits one at
/// most every few seconds per node, not every beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub participants: u32,
    /// The final summary of a heartbeat stream that broke: when the
    /// replica last heard the node (its clock, Unix ms). It moves the last
    /// heartbeat forward to then and never brings a node back.
    #[serde(default)]
    pub seen_ms: Option<u64>,
    /// When the node sent the beat this summary commits (the receiving
    /// replica's clock, Unix ms): the last heartbeat moves to it, at most
    /// to the commit's own time. Without it, a commit that waited (an
    /// election in progress) would date a beat late, and a node that died
    /// meanwhile would be billed until the commit.
    #[serde(default)]
    pub sent_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNodeDraining {
    pub id: String,
    pub draining: bool,
    /// With `draining`: move the node's meetings (running and scheduled) to
    /// other allowed nodes now; those with nowhere to go stay and finish
    /// here.
    #[serde(default)]
    pub evacuate: bool,
}

/// Marks down every node whose last heartbeat is older than `lease_ms` and
/// re-places its meetings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireLeases {
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleMeeting {
    pub request_id: Option<String>,
    pub institution: String,
    pub participants: u32,
    pub start_ms: Option<u64>,
    pub duration_ms: u64,
    #[serde(default)]
    pub access: MeetingAccess,
    #[serde(default)]
    pub kind: MeetingKind,
    /// Who the meeting is scheduled for; decides which limits apply.
    #[serde(default)]
    pub host: Host,
}

/// The host a meeting is scheduled for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Host {
    /// Log entries written before licensing: replayed exactly as they were
    /// applied then, without a licence check. The API never sends this.
    #[default]
    Unchecked,
    /// An operator or institution admin acting for the institution: the
    /// licence's staff limits apply.
    OnBehalf,
    /// A host account (signed in with its institution's identity
    /// provider): its affiliation's limits apply, and it must be active.
    Account { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndMeeting {
    pub id: u64,
}

/// Moves a meeting's share off `from` (default: its primary node) to other
/// allowed nodes; refused, changing nothing, when none has room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveMeeting {
    pub id: u64,
    pub from: Option<String>,
}

/// Installs the key that signs join tokens, unless one exists: the first
/// committed key wins, so replicas racing to create one agree. New clusters
/// commit only a `salt` (the key is derived from it with the
/// key-encryption key, which is not in the log); `pkcs8` is how logs
/// written before that carried the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitJoinKey {
    #[serde(default)]
    pub pkcs8: Vec<u8>,
    #[serde(default)]
    pub salt: Vec<u8>,
}

/// Adds a price table version. With `only_if_none`, only when the
/// state has none yet: the first committed wins, so replicas racing to
/// install the built-in table agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadPriceTable {
    pub table: PriceTable,
    #[serde(default)]
    pub only_if_none: bool,
}

/// Records a new version of an institution's licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetLicence {
    pub institution: String,
    /// Default: the service's date when the command is applied.
    pub effective: Option<Date>,
    pub terms: LicenceTerms,
    #[serde(default)]
    pub reporter: Reporter,
}

/// Who reports a licence change: operators change anything; an
/// institution admin reports FTE, student licences and contact points,
/// while tier, add-ons and the agreement start stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    #[default]
    Operator,
    InstitutionAdmin,
}

/// Sets how an institution's hosts sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigureLogin {
    pub institution: String,
    pub config: super::accounts::LoginConfig,
}

/// A host presented a valid ID token (verified before proposing):
/// `account` is the pseudonymous id, `affiliations` the role claim's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub institution: String,
    pub account: String,
    pub affiliations: Vec<String>,
}

/// An institution admin or operator disables or enables an account;
/// `institution` limits an admin to its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAccountEnabled {
    pub id: String,
    pub enabled: bool,
    pub institution: Option<String>,
}

/// Disables accounts that organised no meeting for twelve months.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepAccounts {}

/// Records written notice of termination received on `date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiveNotice {
    pub institution: String,
    pub date: Date,
}

impl Command {
    /// Short name for logs and metric labels (the wire tag).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Institution(InstitutionCommand::Create(_)) => "create_institution",
            Command::Node(c) => match c {
                NodeCommand::Register(_) => "register_node",
                NodeCommand::Heartbeat(_) => "heartbeat",
                NodeCommand::SetDraining(_) => "set_node_draining",
                NodeCommand::ExpireLeases(_) => "expire_leases",
            },
            Command::Meeting(c) => match c {
                MeetingCommand::Schedule(_) => "schedule_meeting",
                MeetingCommand::End(_) => "end_meeting",
                MeetingCommand::Move(_) => "move_meeting",
            },
            Command::Access(AccessCommand::InitJoinKey(_)) => "init_join_key",
            Command::Licence(c) => match c {
                LicenceCommand::LoadPriceTable(_) => "load_price_table",
                LicenceCommand::Set(_) => "set_licence",
                LicenceCommand::GiveNotice(_) => "give_notice",
            },
            Command::Account(c) => match c {
                AccountCommand::ConfigureLogin(_) => "configure_login",
                AccountCommand::Login(_) => "login",
                AccountCommand::SetEnabled(_) => "set_account_enabled",
                AccountCommand::Sweep(_) => "sweep_accounts",
            },
            Command::Ledger(c) => match c {
                LedgerCommand::Record(_) => "record_usage",
                LedgerCommand::ClosePeriod(_) => "close_period",
                LedgerCommand::Sweep(_) => "sweep_ledger",
            },
            Command::Sla(c) => match c {
                SlaCommand::Record(_) => "record_sli",
                SlaCommand::Evaluate(_) => "evaluate_sla",
                SlaCommand::Announce(_) => "announce_maintenance",
                SlaCommand::Delivery(_) => "record_delivery",
                SlaCommand::SetObjectives(_) => "set_objectives",
            },
            Command::Metadata(MetadataCommand::Synced(_)) => "metadata_synced",
        }
    }
}

/// The wire form: every command's struct under its unique tag.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
enum Wire {
    CreateInstitution(CreateInstitution),
    RegisterNode(RegisterNode),
    Heartbeat(Heartbeat),
    SetNodeDraining(SetNodeDraining),
    ExpireLeases(ExpireLeases),
    ScheduleMeeting(ScheduleMeeting),
    EndMeeting(EndMeeting),
    MoveMeeting(MoveMeeting),
    InitJoinKey(InitJoinKey),
    LoadPriceTable(LoadPriceTable),
    SetLicence(SetLicence),
    GiveNotice(GiveNotice),
    ConfigureLogin(ConfigureLogin),
    Login(Login),
    SetAccountEnabled(SetAccountEnabled),
    SweepAccounts(SweepAccounts),
    RecordUsage(RecordUsage),
    ClosePeriod(ClosePeriod),
    SweepLedger(SweepLedger),
    RecordSli(super::sla::RecordSli),
    EvaluateSla(super::sla::EvaluateSla),
    AnnounceMaintenance(super::sla::AnnounceMaintenance),
    RecordDelivery(super::sla::RecordDelivery),
    SetObjectives(super::sla::SetObjectives),
    MetadataSynced(super::metadata::MetadataSynced),
}

/// The wire form, borrowed for encoding.
#[derive(Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
enum WireRef<'a> {
    CreateInstitution(&'a CreateInstitution),
    RegisterNode(&'a RegisterNode),
    Heartbeat(&'a Heartbeat),
    SetNodeDraining(&'a SetNodeDraining),
    ExpireLeases(&'a ExpireLeases),
    ScheduleMeeting(&'a ScheduleMeeting),
    EndMeeting(&'a EndMeeting),
    MoveMeeting(&'a MoveMeeting),
    InitJoinKey(&'a InitJoinKey),
    LoadPriceTable(&'a LoadPriceTable),
    SetLicence(&'a SetLicence),
    GiveNotice(&'a GiveNotice),
    ConfigureLogin(&'a ConfigureLogin),
    Login(&'a Login),
    SetAccountEnabled(&'a SetAccountEnabled),
    SweepAccounts(&'a SweepAccounts),
    RecordUsage(&'a RecordUsage),
    ClosePeriod(&'a ClosePeriod),
    SweepLedger(&'a SweepLedger),
    RecordSli(&'a super::sla::RecordSli),
    EvaluateSla(&'a super::sla::EvaluateSla),
    AnnounceMaintenance(&'a super::sla::AnnounceMaintenance),
    RecordDelivery(&'a super::sla::RecordDelivery),
    SetObjectives(&'a super::sla::SetObjectives),
    MetadataSynced(&'a super::metadata::MetadataSynced),
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Command::Institution(InstitutionCommand::Create(c)) => WireRef::CreateInstitution(c),
            Command::Node(NodeCommand::Register(c)) => WireRef::RegisterNode(c),
            Command::Node(NodeCommand::Heartbeat(c)) => WireRef::Heartbeat(c),
            Command::Node(NodeCommand::SetDraining(c)) => WireRef::SetNodeDraining(c),
            Command::Node(NodeCommand::ExpireLeases(c)) => WireRef::ExpireLeases(c),
            Command::Meeting(MeetingCommand::Schedule(c)) => WireRef::ScheduleMeeting(c),
            Command::Meeting(MeetingCommand::End(c)) => WireRef::EndMeeting(c),
            Command::Meeting(MeetingCommand::Move(c)) => WireRef::MoveMeeting(c),
            Command::Access(AccessCommand::InitJoinKey(c)) => WireRef::InitJoinKey(c),
            Command::Licence(LicenceCommand::LoadPriceTable(c)) => WireRef::LoadPriceTable(c),
            Command::Licence(LicenceCommand::Set(c)) => WireRef::SetLicence(c),
            Command::Licence(LicenceCommand::GiveNotice(c)) => WireRef::GiveNotice(c),
            Command::Account(AccountCommand::ConfigureLogin(c)) => WireRef::ConfigureLogin(c),
            Command::Account(AccountCommand::Login(c)) => WireRef::Login(c),
            Command::Account(AccountCommand::SetEnabled(c)) => WireRef::SetAccountEnabled(c),
            Command::Account(AccountCommand::Sweep(c)) => WireRef::SweepAccounts(c),
            Command::Ledger(LedgerCommand::Record(c)) => WireRef::RecordUsage(c),
            Command::Ledger(LedgerCommand::ClosePeriod(c)) => WireRef::ClosePeriod(c),
            Command::Ledger(LedgerCommand::Sweep(c)) => WireRef::SweepLedger(c),
            Command::Sla(SlaCommand::Record(c)) => WireRef::RecordSli(c),
            Command::Sla(SlaCommand::Evaluate(c)) => WireRef::EvaluateSla(c),
            Command::Sla(SlaCommand::Announce(c)) => WireRef::AnnounceMaintenance(c),
            Command::Sla(SlaCommand::Delivery(c)) => WireRef::RecordDelivery(c),
            Command::Sla(SlaCommand::SetObjectives(c)) => WireRef::SetObjectives(c),
            Command::Metadata(MetadataCommand::Synced(c)) => WireRef::MetadataSynced(c),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::CreateInstitution(c) => Command::Institution(InstitutionCommand::Create(c)),
            Wire::RegisterNode(c) => Command::Node(NodeCommand::Register(c)),
            Wire::Heartbeat(c) => Command::Node(NodeCommand::Heartbeat(c)),
            Wire::SetNodeDraining(c) => Command::Node(NodeCommand::SetDraining(c)),
            Wire::ExpireLeases(c) => Command::Node(NodeCommand::ExpireLeases(c)),
            Wire::ScheduleMeeting(c) => Command::Meeting(MeetingCommand::Schedule(c)),
            Wire::EndMeeting(c) => Command::Meeting(MeetingCommand::End(c)),
            Wire::MoveMeeting(c) => Command::Meeting(MeetingCommand::Move(c)),
            Wire::InitJoinKey(c) => Command::Access(AccessCommand::InitJoinKey(c)),
            Wire::LoadPriceTable(c) => Command::Licence(LicenceCommand::LoadPriceTable(c)),
            Wire::SetLicence(c) => Command::Licence(LicenceCommand::Set(c)),
            Wire::GiveNotice(c) => Command::Licence(LicenceCommand::GiveNotice(c)),
            Wire::ConfigureLogin(c) => Command::Account(AccountCommand::ConfigureLogin(c)),
            Wire::Login(c) => Command::Account(AccountCommand::Login(c)),
            Wire::SetAccountEnabled(c) => Command::Account(AccountCommand::SetEnabled(c)),
            Wire::SweepAccounts(c) => Command::Account(AccountCommand::Sweep(c)),
            Wire::RecordUsage(c) => Command::Ledger(LedgerCommand::Record(c)),
            Wire::ClosePeriod(c) => Command::Ledger(LedgerCommand::ClosePeriod(c)),
            Wire::SweepLedger(c) => Command::Ledger(LedgerCommand::Sweep(c)),
            Wire::RecordSli(c) => Command::Sla(SlaCommand::Record(c)),
            Wire::EvaluateSla(c) => Command::Sla(SlaCommand::Evaluate(c)),
            Wire::AnnounceMaintenance(c) => Command::Sla(SlaCommand::Announce(c)),
            Wire::RecordDelivery(c) => Command::Sla(SlaCommand::Delivery(c)),
            Wire::SetObjectives(c) => Command::Sla(SlaCommand::SetObjectives(c)),
            Wire::MetadataSynced(c) => Command::Metadata(MetadataCommand::Synced(c)),
        })
    }
}

impl From<InstitutionCommand> for Command {
    fn from(c: InstitutionCommand) -> Self {
        Command::Institution(c)
    }
}

impl From<NodeCommand> for Command {
    fn from(c: NodeCommand) -> Self {
        Command::Node(c)
    }
}

impl From<MeetingCommand> for Command {
    fn from(c: MeetingCommand) -> Self {
        Command::Meeting(c)
    }
}

impl From<LicenceCommand> for Command {
    fn from(c: LicenceCommand) -> Self {
        Command::Licence(c)
    }
}

impl From<AccountCommand> for Command {
    fn from(c: AccountCommand) -> Self {
        Command::Account(c)
    }
}

impl From<LedgerCommand> for Command {
    fn from(c: LedgerCommand) -> Self {
        Command::Ledger(c)
    }
}

impl From<SlaCommand> for Command {
    fn from(c: SlaCommand) -> Self {
        Command::Sla(c)
    }
}

impl From<MetadataCommand> for Command {
    fn from(c: MetadataCommand) -> Self {
        Command::Metadata(c)
    }
}

impl From<AccessCommand> for Command {
    fn from(c: AccessCommand) -> Self {
        Command::Access(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_keeps_its_wire_tag_and_round_trips() {
        let commands: Vec<Command> = vec![
            InstitutionCommand::Create(CreateInstitution {
                name: "uio".into(),
                residency: "nordic".into(),
                home_region: None,
                max_participants: 300,
            })
            .into(),
            NodeCommand::Register(RegisterNode {
                id: "n1".into(),
                region: "nordic".into(),
                address: "127.0.0.1:7000".into(),
                capacity: 100,
                certificate: vec![1, 2, 3],
                boot: 7,
            })
            .into(),
            NodeCommand::Heartbeat(Heartbeat {
                id: "n1".into(),
                participants: 4,
                seen_ms: None,
                sent_ms: None,
            })
            .into(),
            NodeCommand::SetDraining(SetNodeDraining {
                id: "n1".into(),
                draining: true,
                evacuate: true,
            })
            .into(),
            NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 10 }).into(),
            MeetingCommand::Schedule(ScheduleMeeting {
                request_id: Some("r".into()),
                institution: "uio".into(),
                participants: 3,
                start_ms: None,
                duration_ms: 0,
                access: MeetingAccess::default(),
                kind: MeetingKind::Webinar,
                host: Host::OnBehalf,
            })
            .into(),
            MeetingCommand::End(EndMeeting { id: 7 }).into(),
            MeetingCommand::Move(MoveMeeting { id: 7, from: None }).into(),
            AccessCommand::InitJoinKey(InitJoinKey {
                pkcs8: Vec::new(),
                salt: vec![9; 32],
            })
            .into(),
            LicenceCommand::LoadPriceTable(LoadPriceTable {
                table: PriceTable::builtin(),
                only_if_none: true,
            })
            .into(),
            LicenceCommand::Set(SetLicence {
                institution: "uio".into(),
                effective: Some(crate::licensing::parse_date("2026-10-01").unwrap()),
                terms: LicenceTerms {
                    tier: crate::licensing::Tier::Education,
                    staff_fte_centi: 612_050,
                    student_licences: 2000,
                    add_ons: ["webinar-1000".to_string()].into(),
                    agreement_start: crate::licensing::parse_date("2026-10-01").unwrap(),
                    agreement_contact: "avtale@uio.no".into(),
                    technical_contact: "https://alerts.uio.no/fjord".into(),
                    allow_overage: false,
                },
                reporter: Reporter::InstitutionAdmin,
            })
            .into(),
            LicenceCommand::GiveNotice(GiveNotice {
                institution: "uio".into(),
                date: crate::licensing::parse_date("2027-06-14").unwrap(),
            })
            .into(),
            AccountCommand::ConfigureLogin(ConfigureLogin {
                institution: "uio".into(),
                config: super::super::accounts::LoginConfig {
                    issuer: "https://auth.dataporten.no".into(),
                    audience: "fjord".into(),
                    jwks: "{\"keys\":[]}".into(),
                    affiliation_claim: "eduperson_affiliation".into(),
                    eligible: [("employee".to_string(), crate::licensing::Affiliation::Staff)]
                        .into(),
                    affiliation_scope: Some("uio.no".into()),
                },
            })
            .into(),
            AccountCommand::Login(Login {
                institution: "uio".into(),
                account: "acct-1".into(),
                affiliations: vec!["employee".into()],
            })
            .into(),
            AccountCommand::SetEnabled(SetAccountEnabled {
                id: "acct-1".into(),
                enabled: false,
                institution: Some("uio".into()),
            })
            .into(),
            AccountCommand::Sweep(SweepAccounts {}).into(),
            MetadataCommand::Synced(super::super::metadata::MetadataSynced {
                written: vec![
                    (super::super::MetaKey::Meeting { id: 7 }, 3),
                    (super::super::MetaKey::Node { id: "n1".into() }, 4),
                ],
                revision: 99,
            })
            .into(),
            MeetingCommand::Schedule(ScheduleMeeting {
                request_id: None,
                institution: "uio".into(),
                participants: 3,
                start_ms: None,
                duration_ms: 0,
                access: MeetingAccess::default(),
                kind: MeetingKind::Meeting,
                host: Host::Account {
                    id: "acct-1".into(),
                },
            })
            .into(),
        ];
        for c in commands {
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json["type"], c.kind(), "{json}");
            let back: Command = serde_json::from_value(json).unwrap();
            assert_eq!(back, c);
            let packed = rmp_serde::to_vec_named(&c).unwrap();
            assert_eq!(rmp_serde::from_slice::<Command>(&packed).unwrap(), c);
        }
    }
}
