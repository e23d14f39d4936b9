//! Shared pieces of Fjord's fuzz targets: a reader that turns the fuzzer's
//! bytes into a sequence of operations, and fixtures (a control plane's
//! signing key, valid join tokens) that let the targets get past the front
//! door and fuzz what lies behind it.

use std::sync::OnceLock;

use fjord_common::token::{generate_signing_key, TokenSigner, JOIN_TOKEN_TTL_MS};
use fjord_proto::v1 as pb;

/// Reads the fuzzer's input as a script. Past the end every read yields
/// zero or nothing, so a script simply stops.
pub struct Script<'a> {
    data: &'a [u8],
}

impl<'a> Script<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Script { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A length-prefixed slice (u16 length, cut at the end of input).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = (self.u16() as usize).min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

pub const NODE: &str = "node-a";
pub const PEER: &str = "node-b";
pub const MEETING: u64 = 42;
pub const NOW: u64 = 1_700_000_000_000;

/// A control plane's signing key, made once per fuzzing process.
pub fn signer() -> &'static TokenSigner {
    static SIGNER: OnceLock<TokenSigner> = OnceLock::new();
    SIGNER.get_or_init(|| TokenSigner::from_pkcs8(&generate_signing_key()).expect("fresh key"))
}

/// Settings of a meeting anyone with a token enters at once.
pub fn open_meeting() -> pb::MeetingSettings {
    pb::MeetingSettings {
        disable_waiting_room: true,
        allow_join_before_host: true,
        ..Default::default()
    }
}

/// A valid join token for participant `pid` of [`MEETING`] on [`NODE`]
/// (signed once per process and pid: signing is most of a run's cost).
pub fn join_token(pid: u64, role: pb::Role) -> Vec<u8> {
    type Tokens = std::sync::Mutex<std::collections::HashMap<(u64, i32), Vec<u8>>>;
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    let tokens = TOKENS.get_or_init(Default::default);
    let mut tokens = tokens.lock().expect("token cache");
    tokens
        .entry((pid, role as i32))
        .or_insert_with(|| sign_join_token(pid, role))
        .clone()
}

fn sign_join_token(pid: u64, role: pb::Role) -> Vec<u8> {
    signer().sign(&pb::JoinClaims {
        meeting_id: MEETING,
        participant_id: pid,
        role: role as i32,
        node_id: NODE.into(),
        display_name: format!("p{pid}"),
        issued_at_ms: NOW,
        expires_at_ms: NOW + JOIN_TOKEN_TTL_MS,
        settings: Some(open_meeting()),
        ..Default::default()
    })
}

/// A valid cascade-link token for [`PEER`] (signed once per process).
pub fn link_token() -> Vec<u8> {
    static TOKEN: OnceLock<Vec<u8>> = OnceLock::new();
    TOKEN.get_or_init(|| sign_link_token(PEER)).clone()
}

fn sign_link_token(node_id: &str) -> Vec<u8> {
    signer().sign(&pb::JoinClaims {
        meeting_id: 0,
        participant_id: 0,
        role: pb::Role::Node as i32,
        node_id: node_id.into(),
        issued_at_ms: NOW,
        expires_at_ms: NOW + JOIN_TOKEN_TTL_MS,
        ..Default::default()
    })
}

/// A control plane's state with an institution, its licence, a node and a
/// meeting: what the metadata tier's records are judged against.
pub fn cluster_state() -> &'static fjord_control_plane::state::ClusterState {
    use fjord_control_plane::licensing::{parse_date, LicenceTerms, PriceTable, Tier};
    use fjord_control_plane::state::{
        ClusterState, Command, CreateInstitution, Host, InstitutionCommand, LicenceCommand,
        LoadPriceTable, MeetingAccess, MeetingCommand, NodeCommand, RegisterNode, Reporter,
        Request, ScheduleMeeting, SetLicence,
    };
    static STATE: OnceLock<ClusterState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut s = ClusterState::default();
        let commands: Vec<Command> = vec![
            LicenceCommand::LoadPriceTable(LoadPriceTable {
                table: PriceTable::builtin(),
                only_if_none: true,
            })
            .into(),
            InstitutionCommand::Create(CreateInstitution {
                name: "uio".into(),
                residency: "nordic".into(),
                home_region: None,
                max_participants: 300,
            })
            .into(),
            LicenceCommand::Set(SetLicence {
                institution: "uio".into(),
                effective: None,
                terms: LicenceTerms {
                    tier: Tier::Education,
                    staff_fte_centi: 100_000,
                    student_licences: 10,
                    add_ons: Default::default(),
                    agreement_start: parse_date("2023-10-01").expect("a date"),
                    agreement_contact: "avtale@uio.no".into(),
                    technical_contact: "https://alerts.uio.no/fjord".into(),
                    allow_overage: false,
                },
                reporter: Reporter::Operator,
            })
            .into(),
            NodeCommand::Register(RegisterNode {
                id: "nordic-1".into(),
                region: "nordic".into(),
                address: "127.0.0.1:7201".into(),
                capacity: 100,
                certificate: Vec::new(),
                boot: 1,
            })
            .into(),
            MeetingCommand::Schedule(ScheduleMeeting {
                request_id: None,
                institution: "uio".into(),
                participants: 4,
                start_ms: None,
                duration_ms: 0,
                access: MeetingAccess::default(),
                kind: Default::default(),
                host: Host::OnBehalf,
            })
            .into(),
        ];
        for command in commands {
            s.apply(&Request {
                now_ms: NOW,
                seed: 1,
                strategy: Default::default(),
                op_id: 0,
                command,
            })
            .expect("the fixture applies");
        }
        s
    })
}
