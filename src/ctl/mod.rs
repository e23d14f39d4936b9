//! `fjord ctl`: the operator CLI. Every command is one gRPC call through
//! the failover-aware client; `-o json` prints machine-readable output.
//!
//! Exit codes: 0 ok; 2 invalid arguments (and missing TLS files); 3 cluster
//! unreachable; 4 not found; 5 refused (exists, no capacity, precondition);
//! 6 permission denied (the certificate's role may not do this); 1 anything
//! else.

mod account;
mod billing;
mod licence;
mod metadata;
mod sla;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::{Code, Status};

use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::institution_service_client::InstitutionServiceClient;
use pb::meeting_service_client::MeetingServiceClient;
use pb::node_service_client::NodeServiceClient;

/// The largest list answer `ctl` accepts (the meetings of a busy cluster
/// pass gRPC's 4 MiB default).
const LIST_MESSAGE_LIMIT: usize = 256 << 20;

#[derive(Args)]
pub struct CtlArgs {
    /// Control-plane replicas, HOST:PORT,... (any of them will do).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103",
        env = "FJORD_ENDPOINTS"
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, global = true, default_value_t = Output::Text)]
    output: Output,
    /// Give up after this many seconds without a reachable replica.
    #[arg(long, default_value_t = 20)]
    timeout_s: u64,
    /// An operator or institution-admin certificate is needed for every command.
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Raft cluster membership and health.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Institutions and their residency policies.
    #[command(subcommand)]
    Institution(InstitutionCmd),
    /// Media nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Meetings and their placements.
    #[command(subcommand)]
    Meeting(MeetingCmd),
    /// Institutions' licences: tier, FTE, add-ons, agreement dates, contact points.
    #[command(subcommand)]
    Licence(licence::LicenceCmd),
    /// The price table that prices licences and sets tier limits.
    #[command(subcommand, name = "price-table")]
    PriceTable(licence::PriceTableCmd),
    /// Host accounts and how an institution's hosts sign in.
    #[command(subcommand)]
    Account(account::AccountCmd),
    /// What licences are billed: previews, exports, closing periods.
    #[command(subcommand)]
    Billing(billing::BillingCmd),
    /// What institutions used, from the usage ledger.
    #[command(subcommand)]
    Usage(billing::UsageCmd),
    /// Service levels per institution: SLOs, alerts, notifications.
    #[command(subcommand)]
    Sla(sla::SlaCmd),
    /// Planned maintenance: announce it, list it.
    #[command(subcommand)]
    Maintenance(sla::MaintenanceCmd),
    /// The cloud tier's metadata store: outbox, revision, lag.
    #[command(subcommand)]
    Metadata(metadata::MetadataCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Leader, term, log indexes and members, as the answering replica sees them.
    Status,
    /// Add a replica (started with --join) as a voter.
    AddMember { id: u64, address: String },
    /// Remove a replica from the voters.
    RemoveMember { id: u64 },
}

#[derive(Subcommand)]
enum InstitutionCmd {
    /// Create an institution with a residency policy.
    Create {
        name: String,
        /// Region whose nodes (and nested regions' nodes) may carry its meetings.
        #[arg(long)]
        residency: String,
        /// Largest meeting it may schedule.
        #[arg(long)]
        max_participants: u32,
        /// Region filled first; the rest of the residency takes the overflow.
        #[arg(long)]
        home_region: Option<String>,
    },
    /// List institutions.
    List,
    /// Show one institution.
    Get { name: String },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List media nodes with state and load.
    List,
    /// Show one media node.
    Get { id: String },
    /// Stop placing new meetings on a node; running meetings stay, or
    /// with --evacuate move now (participants switch over to the new node).
    Drain {
        /// Default: the node in the certificate (a node draining itself).
        id: Option<String>,
        /// Also move the node's meetings to other allowed nodes now; those
        /// with nowhere to go stay and finish here.
        #[arg(long)]
        evacuate: bool,
        /// Then wait until the node carries no meeting and no participant
        /// (a Kubernetes preStop hook runs this with the node's own
        /// certificate). Exit 5 if the wait runs out first.
        #[arg(long)]
        wait: bool,
        /// Longest wait, in seconds.
        #[arg(long, default_value_t = 3600)]
        wait_timeout_s: u64,
    },
    /// Let a drained node take new meetings again.
    Undrain { id: String },
}

#[derive(Subcommand)]
enum MeetingCmd {
    /// Schedule a meeting; it is placed (and capacity reserved) at once.
    Schedule {
        #[arg(long)]
        institution: String,
        /// Expected participants (the capacity reserved).
        #[arg(long)]
        participants: u32,
        /// Start time, RFC 3339 (e.g. 2026-12-01T09:00:00Z); default now.
        #[arg(long)]
        start: Option<String>,
        /// Length of the reservation window in minutes (default 60).
        #[arg(long)]
        duration_min: Option<u64>,
        /// Idempotency key; retries with the same key never create a second meeting.
        #[arg(long)]
        request_id: Option<String>,
        /// Let participants in without the host admitting them.
        #[arg(long)]
        no_waiting_room: bool,
        /// Let participants in before the host arrives.
        #[arg(long)]
        join_before_host: bool,
        /// Participants cannot change their own display name.
        #[arg(long)]
        disable_self_rename: bool,
        /// Clients encrypt media end to end (nodes forward it untouched either way).
        #[arg(long)]
        e2ee: bool,
        /// A webinar: panelists send, attendees only receive (the licence sets the size).
        #[arg(long)]
        webinar: bool,
        /// Schedule as the host holding this ID token from the institution's
        /// identity provider (`fjord dev-idp token` in development).
        #[arg(long, env = "FJORD_ID_TOKEN", hide_env_values = true)]
        id_token: Option<String>,
    },
    /// The meeting's PIN for room systems; revealed from 5 minutes before start.
    Pin {
        id: u64,
        #[arg(long)]
        host_key: String,
    },
    /// Show one meeting.
    Get { id: u64 },
    /// List meetings.
    List {
        #[arg(long)]
        institution: Option<String>,
        /// Include ended meetings.
        #[arg(long)]
        all: bool,
    },
    /// End a meeting and release its reservation.
    End { id: u64 },
    /// Move a running meeting off a node; participants switch over to the
    /// new node without leaving the meeting.
    Move {
        id: u64,
        /// The node to move it off (needed when the meeting spans several);
        /// default: its primary node.
        #[arg(long)]
        from: Option<String>,
    },
    /// Every placement decision for a meeting: nodes considered, rejected and why, the choice.
    Explain { id: u64 },
}

struct Failure {
    code: u8,
    message: String,
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument => 2,
            Code::Unavailable | Code::DeadlineExceeded => 3,
            Code::NotFound => 4,
            Code::AlreadyExists | Code::ResourceExhausted | Code::FailedPrecondition => 5,
            Code::PermissionDenied | Code::Unauthenticated => 6,
            _ => 1,
        };
        // Transport failures (a refused certificate, an unreachable host)
        // carry the reason in their sources, not in the message.
        let mut message = format!("{:?}: {}", s.code(), s.message());
        // tonic's answer for a service the server does not have: say what
        // that usually means instead of an empty message.
        if s.code() == Code::Unimplemented && s.message().is_empty() {
            message.push_str(
                "the endpoint does not serve this call (a replica's peer port \
                 in --endpoints, or a replica of an older version?)",
            );
        }
        let mut source = std::error::Error::source(&s);
        while let Some(e) = source {
            message.push_str(&format!(": {e}"));
            source = e.source();
        }
        Failure { code, message }
    }
}

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

pub async fn run(args: CtlArgs) -> ExitCode {
    let output = args.output;
    match execute(args).await {
        Ok((json, text)) => {
            // A null JSON value: the text is the output whatever -o says
            // (billing exports are CSV or JSON themselves).
            if output == Output::Json && !json.is_null() {
                println!("{}", serde_json::to_string_pretty(&json).expect("json"));
            } else {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn fmt_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn node_state(s: i32) -> &'static str {
    match pb::NodeState::try_from(s).unwrap_or_default() {
        pb::NodeState::Ready => "ready",
        pb::NodeState::Draining => "draining",
        pb::NodeState::Down => "down",
        pb::NodeState::Unspecified => "unknown",
    }
}

fn meeting_state(s: i32) -> &'static str {
    match pb::MeetingState::try_from(s).unwrap_or_default() {
        pb::MeetingState::Placed => "placed",
        pb::MeetingState::Unplaced => "unplaced",
        pb::MeetingState::Ended => "ended",
        pb::MeetingState::Unspecified => "unknown",
    }
}

fn institution_json(i: &pb::Institution) -> Value {
    json!({"name": i.name, "residency": i.residency, "home_region": i.home_region,
           "max_participants": i.max_participants, "created_at_ms": i.created_at_ms})
}

fn node_json(n: &pb::MediaNode) -> Value {
    json!({"id": n.id, "region": n.region, "address": n.address, "capacity": n.capacity,
           "state": node_state(n.state), "last_heartbeat_ms": n.last_heartbeat_ms,
           "load_participants": n.load_participants, "reserved_now": n.reserved_now,
           "meetings": n.meetings, "registered_at_ms": n.registered_at_ms})
}

fn meeting_json(m: &pb::Meeting) -> Value {
    json!({"id": m.id, "institution": m.institution, "participants": m.participants,
           "start_ms": m.start_ms, "end_ms": m.end_ms, "state": meeting_state(m.state),
           "node": m.node_id, "created_at_ms": m.created_at_ms, "ended_at_ms": m.ended_at_ms,
           "placements": m.placements, "kind": m.kind,
           "time_limit_s": m.time_limit_s, "warn_before_end_s": m.warn_before_end_s,
           "shares": m.shares.iter().map(|s| json!({"node": s.node_id, "participants": s.participants})).collect::<Vec<_>>()})
}

fn decision_json(d: &pb::Decision) -> Value {
    json!({
        "at_ms": d.at_ms, "trigger": d.trigger,
        "strategy": match pb::PlacementStrategy::try_from(d.strategy).unwrap_or_default() {
            pb::PlacementStrategy::PowerOfTwo => "power-of-two",
            _ => "least-loaded",
        },
        "allowed_regions": d.allowed_regions, "home_region": d.home_region,
        "considered": d.considered,
        "candidates": d.candidates.iter().map(|c| json!({"node": c.node_id, "score_permille": c.score_permille, "in_home_region": c.in_home_region})).collect::<Vec<_>>(),
        "rejections": d.rejections.iter().map(|r| json!({"node": r.node_id, "region": r.node_region, "reason": r.reason, "detail": r.detail})).collect::<Vec<_>>(),
        "rejection_counts": d.rejection_counts.iter().map(|r| (r.reason.clone(), json!(r.count))).collect::<serde_json::Map<_, _>>(),
        "chosen": if d.chosen_node.is_empty() { Value::Null } else { json!(d.chosen_node) },
        "chosen_score_permille": d.chosen_score_permille,
        "shares": d.shares.iter().map(|s| json!({"node": s.node_id, "region": s.region, "participants": s.participants})).collect::<Vec<_>>(),
        "refusal": if d.refusal.is_empty() { Value::Null } else { json!(d.refusal) },
    })
}

fn meeting_line(m: &pb::Meeting) -> String {
    format!(
        "{:<6} {:<16} {:>6} {:<22} {:<22} {:<9} {}\n",
        m.id,
        m.institution,
        m.participants,
        fmt_time(m.start_ms),
        fmt_time(m.end_ms),
        meeting_state(m.state),
        if m.node_id.is_empty() {
            "-".to_string()
        } else if m.shares.len() > 1 {
            m.shares
                .iter()
                .map(|s| format!("{}({})", s.node_id, s.participants))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            m.node_id.clone()
        }
    )
}

const MEETING_HEADER: &str =
    "ID     INSTITUTION      PARTS. START                  END                    STATE     NODE\n";

fn decision_text(d: &pb::Decision) -> String {
    let mut s = format!(
        "decision at {} (trigger: {}, allowed regions: [{}], home: {})\n  considered {} node(s)\n",
        fmt_time(d.at_ms),
        d.trigger,
        d.allowed_regions.join(", "),
        d.home_region,
        d.considered
    );
    for r in &d.rejections {
        s += &format!(
            "  rejected {:<16} ({}): {}{}\n",
            r.node_id,
            r.node_region,
            r.reason,
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(" — {}", r.detail)
            }
        );
    }
    let listed = d.rejections.len() as u32;
    let total: u32 = d.rejection_counts.iter().map(|r| r.count).sum();
    if total > listed {
        s += &format!("  … and {} more rejections:", total - listed);
        for r in &d.rejection_counts {
            s += &format!(" {}={}", r.reason, r.count);
        }
        s += "\n";
    }
    for c in &d.candidates {
        s += &format!(
            "  candidate {:<15} score {:>4}‰{}\n",
            c.node_id,
            c.score_permille,
            if c.in_home_region {
                " (home region)"
            } else {
                ""
            }
        );
    }
    if d.chosen_node.is_empty() {
        s += &format!("  REFUSED: {}\n", d.refusal);
    } else if !d.shares.is_empty() {
        s += &format!(
            "  cascaded over {} nodes (no single node had room):\n",
            d.shares.len()
        );
        for sh in &d.shares {
            s += &format!(
                "    {:<16} ({}): {} participants\n",
                sh.node_id, sh.region, sh.participants
            );
        }
    } else {
        s += &format!(
            "  chose {} (score {}‰)\n",
            d.chosen_node, d.chosen_score_permille
        );
    }
    s
}

fn parse_start(s: &str) -> Result<u64, Failure> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        usage(format!(
            "--start {s:?}: {e} (expected RFC 3339, e.g. 2026-12-01T09:00:00Z)"
        ))
    })?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| usage(format!("--start {s:?} is before 1970")))?
        .as_millis() as u64;
    Ok(ms.max(1))
}

async fn execute(mut args: CtlArgs) -> Result<(Value, String), Failure> {
    // A host with an ID token needs no certificate: the token is the credential.
    let needs_certificate = match &args.command {
        CtlCommand::Meeting(MeetingCmd::Schedule { id_token, .. }) => id_token.is_none(),
        CtlCommand::Account(c) => c.needs_certificate(),
        _ => true,
    };
    let tls = args
        .tls
        .files(needs_certificate)
        .map_err(|e| usage(e.to_string()))?;
    if let CtlCommand::Node(NodeCmd::Drain { id: id @ None, .. }) = &mut args.command {
        match tls.identity().map_err(|e| usage(e.to_string()))? {
            Some(fjord_common::Identity::Node { id: own }) => *id = Some(own),
            _ => {
                return Err(usage(
                    "node drain: give the node id (only a node's certificate implies it)".into(),
                ))
            }
        }
    }
    let client = Client::from_files(
        &args.endpoints,
        &tls,
        ClientConfig {
            retry_for: Duration::from_secs(args.timeout_s),
            ..ClientConfig::default()
        },
    )
    .map_err(|e| usage(e.to_string()))?;
    match args.command {
        CtlCommand::Cluster(c) => cluster(&client, c).await,
        CtlCommand::Institution(c) => institution(&client, c).await,
        CtlCommand::Node(c) => node(&client, c).await,
        CtlCommand::Meeting(c) => meeting(&client, c).await,
        CtlCommand::Licence(c) => licence::licence(&client, c).await,
        CtlCommand::PriceTable(c) => licence::price_table(&client, c).await,
        CtlCommand::Account(c) => account::account(&client, c).await,
        CtlCommand::Billing(c) => billing::billing(&client, c).await,
        CtlCommand::Usage(c) => billing::usage(&client, c).await,
        CtlCommand::Sla(c) => sla::sla(&client, c).await,
        CtlCommand::Maintenance(c) => sla::maintenance(&client, c).await,
        CtlCommand::Metadata(c) => metadata::metadata(&client, c).await,
    }
}

fn members_out(members: &[pb::Member]) -> (Value, String) {
    let json = json!(members
        .iter()
        .map(|m| json!({"id": m.id, "address": m.address, "voter": m.voter}))
        .collect::<Vec<_>>());
    let text = members
        .iter()
        .map(|m| {
            format!(
                "{:<4} {:<22} {}\n",
                m.id,
                m.address,
                if m.voter { "voter" } else { "learner" }
            )
        })
        .collect();
    (json, text)
}

async fn cluster(client: &Client, c: ClusterCmd) -> Result<(Value, String), Failure> {
    match c {
        ClusterCmd::Status => {
            let s = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .status(pb::StatusRequest {})
                        .await
                })
                .await?
                .into_inner();
            let (members_json, members_text) = members_out(&s.members);
            let json = json!({"replica_id": s.replica_id, "leader_id": s.leader_id,
                "leader_address": s.leader_address, "term": s.term,
                "last_log_index": s.last_log_index, "last_applied_index": s.last_applied_index,
                "snapshot_index": s.snapshot_index, "members": members_json});
            let text = format!(
                "answered by replica {}\nleader: {} ({})\nterm: {}\nlast log index: {}\nlast applied: {}\nsnapshot index: {}\nmembers:\n{}",
                s.replica_id,
                s.leader_id,
                s.leader_address,
                s.term,
                s.last_log_index,
                s.last_applied_index,
                s.snapshot_index,
                members_text
            );
            Ok((json, text))
        }
        ClusterCmd::AddMember { id, address } => {
            let r = client
                .call(|ch| {
                    let address = address.clone();
                    async move {
                        ClusterServiceClient::new(ch)
                            .add_member(pb::AddMemberRequest { id, address })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(members_out(&r.members))
        }
        ClusterCmd::RemoveMember { id } => {
            let r = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .remove_member(pb::RemoveMemberRequest { id })
                        .await
                })
                .await?
                .into_inner();
            Ok(members_out(&r.members))
        }
    }
}

async fn institution(client: &Client, c: InstitutionCmd) -> Result<(Value, String), Failure> {
    let one = |i: &pb::Institution| {
        (
            institution_json(i),
            format!(
                "{} residency={} home={} max_participants={}\n",
                i.name, i.residency, i.home_region, i.max_participants
            ),
        )
    };
    match c {
        InstitutionCmd::Create {
            name,
            residency,
            max_participants,
            home_region,
        } => {
            let req = pb::CreateInstitutionRequest {
                name,
                residency,
                max_participants,
                home_region: home_region.unwrap_or_default(),
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move {
                        InstitutionServiceClient::new(ch)
                            .create_institution(req)
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(one(&r.institution.unwrap_or_default()))
        }
        InstitutionCmd::Get { name } => {
            let r = client
                .call(|ch| {
                    let name = name.clone();
                    async move {
                        InstitutionServiceClient::new(ch)
                            .get_institution(pb::GetInstitutionRequest { name })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(one(&r.institution.unwrap_or_default()))
        }
        InstitutionCmd::List => {
            let r = client
                .call(|ch| async move {
                    InstitutionServiceClient::new(ch)
                        .list_institutions(pb::ListInstitutionsRequest {})
                        .await
                })
                .await?
                .into_inner();
            let json = json!(r
                .institutions
                .iter()
                .map(institution_json)
                .collect::<Vec<_>>());
            let mut text =
                String::from("NAME             RESIDENCY  HOME       MAX PARTICIPANTS\n");
            for i in &r.institutions {
                text += &format!(
                    "{:<16} {:<10} {:<10} {}\n",
                    i.name, i.residency, i.home_region, i.max_participants
                );
            }
            Ok((json, text))
        }
    }
}

fn node_line(n: &pb::MediaNode) -> String {
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as u64).saturating_sub(n.last_heartbeat_ms))
        .unwrap_or(0);
    format!(
        "{:<16} {:<8} {:<22} {:<9} {:>8} {:>8} {:>8} {:>8} {:>7.1}s\n",
        n.id,
        n.region,
        n.address,
        node_state(n.state),
        n.capacity,
        n.reserved_now,
        n.load_participants,
        n.meetings,
        age as f64 / 1000.0
    )
}

const NODE_HEADER: &str =
    "ID               REGION   ADDRESS                STATE     CAPACITY RESERVED     LOAD MEETINGS  LAST HB\n";

async fn node(client: &Client, c: NodeCmd) -> Result<(Value, String), Failure> {
    let one = |n: &pb::MediaNode| (node_json(n), format!("{NODE_HEADER}{}", node_line(n)));
    match c {
        NodeCmd::List => {
            let r = client
                .call(|ch| async move {
                    NodeServiceClient::new(ch)
                        .list_nodes(pb::ListNodesRequest {})
                        .await
                })
                .await?
                .into_inner();
            let json = json!(r.nodes.iter().map(node_json).collect::<Vec<_>>());
            let text = std::iter::once(NODE_HEADER.to_string())
                .chain(r.nodes.iter().map(node_line))
                .collect();
            Ok((json, text))
        }
        NodeCmd::Get { id } => {
            let r = client
                .call(|ch| {
                    let id = id.clone();
                    async move {
                        NodeServiceClient::new(ch)
                            .get_node(pb::GetNodeRequest { id })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(one(&r.node.unwrap_or_default()))
        }
        NodeCmd::Drain {
            id,
            evacuate,
            wait,
            wait_timeout_s,
        } => {
            let id = id.expect("filled in from the certificate");
            let r = drain(client, id.clone(), false, evacuate).await?;
            let mut node = r.node.unwrap_or_default();
            if wait {
                let deadline = std::time::Instant::now() + Duration::from_secs(wait_timeout_s);
                while node.meetings > 0 || node.load_participants > 0 {
                    if std::time::Instant::now() >= deadline {
                        return Err(Failure {
                            code: 5,
                            message: format!(
                                "node {id} still carries {} meeting(s) and {} participant(s) after {wait_timeout_s} s",
                                node.meetings, node.load_participants
                            ),
                        });
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let id = id.clone();
                    node = client
                        .call(|ch| {
                            let id = id.clone();
                            async move {
                                NodeServiceClient::new(ch)
                                    .get_node(pb::GetNodeRequest { id })
                                    .await
                            }
                        })
                        .await?
                        .into_inner()
                        .node
                        .unwrap_or_default();
                }
            }
            let (mut json, mut text) = one(&node);
            if evacuate {
                json["moved"] = json!(r.moved);
                json["kept"] = json!(r.kept);
                text += &format!(
                    "moved {} meeting(s) {:?}; {} with nowhere to go stay until they end {:?}\n",
                    r.moved.len(),
                    r.moved,
                    r.kept.len(),
                    r.kept
                );
            }
            Ok((json, text))
        }
        NodeCmd::Undrain { id } => drain(client, id, true, false)
            .await
            .map(|r| one(&r.node.unwrap_or_default())),
    }
}

async fn drain(
    client: &Client,
    id: String,
    undo: bool,
    evacuate: bool,
) -> Result<pb::DrainNodeResponse, Failure> {
    Ok(client
        .call(|ch| {
            let id = id.clone();
            async move {
                NodeServiceClient::new(ch)
                    .drain_node(pb::DrainNodeRequest { id, undo, evacuate })
                    .await
            }
        })
        .await?
        .into_inner())
}

async fn meeting(client: &Client, c: MeetingCmd) -> Result<(Value, String), Failure> {
    let get = |id: u64| async move {
        client
            .call(|ch| async move {
                MeetingServiceClient::new(ch)
                    .get_meeting(pb::GetMeetingRequest { id })
                    .await
            })
            .await
            .map(|r| r.into_inner().meeting.unwrap_or_default())
    };
    match c {
        MeetingCmd::Schedule {
            institution,
            participants,
            start,
            duration_min,
            request_id: key,
            no_waiting_room,
            join_before_host,
            disable_self_rename,
            e2ee,
            webinar,
            id_token,
        } => {
            let start_ms = start.as_deref().map(parse_start).transpose()?.unwrap_or(0);
            let duration_ms = duration_min
                .map(|m| {
                    m.checked_mul(60_000)
                        .ok_or_else(|| usage("--duration-min is too large".into()))
                })
                .transpose()?
                .unwrap_or(0);
            let req = pb::ScheduleMeetingRequest {
                institution,
                participants,
                start_ms,
                duration_ms,
                request_id: key.unwrap_or_else(request_id),
                settings: Some(pb::MeetingSettings {
                    disable_waiting_room: no_waiting_room,
                    allow_join_before_host: join_before_host,
                    disable_self_rename,
                    e2ee,
                }),
                webinar,
                id_token: id_token.unwrap_or_default(),
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move { MeetingServiceClient::new(ch).schedule_meeting(req).await }
                })
                .await?
                .into_inner();
            let m = r.meeting.unwrap_or_default();
            let d = r.decision.unwrap_or_default();
            let json = json!({"meeting": meeting_json(&m), "decision": decision_json(&d),
                "passcode": r.passcode, "host_key": r.host_key, "join_link": r.join_link});
            let text = format!(
                "{MEETING_HEADER}{}{}passcode:  {}\nhost key:  {}\njoin link: {}\n",
                meeting_line(&m),
                decision_text(&d),
                r.passcode,
                r.host_key,
                r.join_link
            );
            Ok((json, text))
        }
        MeetingCmd::Pin { id, host_key } => {
            let r = client
                .call(|ch| {
                    let host_key = host_key.clone();
                    async move {
                        MeetingServiceClient::new(ch)
                            .get_meeting_pin(pb::GetMeetingPinRequest { id, host_key })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok((json!({"id": id, "pin": r.pin}), format!("{}\n", r.pin)))
        }
        MeetingCmd::Get { id } => {
            let m = get(id).await?;
            Ok((
                meeting_json(&m),
                format!("{MEETING_HEADER}{}", meeting_line(&m)),
            ))
        }
        MeetingCmd::List { institution, all } => {
            let req = pb::ListMeetingsRequest {
                institution: institution.unwrap_or_default(),
                include_ended: all,
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move {
                        // A busy cluster's list is larger than gRPC's 4 MiB default.
                        MeetingServiceClient::new(ch)
                            .max_decoding_message_size(LIST_MESSAGE_LIMIT)
                            .list_meetings(req)
                            .await
                    }
                })
                .await?
                .into_inner();
            let json = json!(r.meetings.iter().map(meeting_json).collect::<Vec<_>>());
            let text = std::iter::once(MEETING_HEADER.to_string())
                .chain(r.meetings.iter().map(meeting_line))
                .collect();
            Ok((json, text))
        }
        MeetingCmd::End { id } => {
            let m = client
                .call(|ch| async move {
                    MeetingServiceClient::new(ch)
                        .end_meeting(pb::EndMeetingRequest { id })
                        .await
                })
                .await?
                .into_inner()
                .meeting
                .unwrap_or_default();
            Ok((
                meeting_json(&m),
                format!("{MEETING_HEADER}{}", meeting_line(&m)),
            ))
        }
        MeetingCmd::Move { id, from } => {
            let r = client
                .call(|ch| {
                    let from_node_id = from.clone().unwrap_or_default();
                    async move {
                        MeetingServiceClient::new(ch)
                            .move_meeting(pb::MoveMeetingRequest { id, from_node_id })
                            .await
                    }
                })
                .await?
                .into_inner();
            let m = r.meeting.unwrap_or_default();
            let d = r.decision.unwrap_or_default();
            let json = json!({"meeting": meeting_json(&m), "decision": decision_json(&d)});
            let text = format!("{MEETING_HEADER}{}{}", meeting_line(&m), decision_text(&d));
            Ok((json, text))
        }
        MeetingCmd::Explain { id } => {
            let r = client
                .call(|ch| async move {
                    MeetingServiceClient::new(ch)
                        .explain_meeting(pb::ExplainMeetingRequest { id })
                        .await
                })
                .await?
                .into_inner();
            let m = r.meeting.unwrap_or_default();
            let json = json!({"meeting": meeting_json(&m),
                "decisions": r.decisions.iter().map(decision_json).collect::<Vec<_>>()});
            let mut text = format!("{MEETING_HEADER}{}", meeting_line(&m));
            for d in &r.decisions {
                text += &decision_text(d);
            }
            Ok((json, text))
        }
    }
}
