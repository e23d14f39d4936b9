//! `fjord dev`: the whole system on one machine, with sample data, for
//! trying Fjord out. Three control-plane replicas (each with its own gRPC
//! ports and Raft log on disk) and two media nodes run in this process.
//! It makes a dev CA and every certificate in its data dir, so it is secure
//! like any other cluster: TLS on every channel, roles from certificates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic::Code;

use fjord_common::pki::LocalCa;
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_control_plane::login::dev_idp::{self, DevIdp};
use fjord_control_plane::server::{self, ReplicaConfig};
use fjord_media_node::node::{self as media_node, MediaNodeConfig};
use fjord_proto::v1 as pb;

#[derive(Args)]
pub struct DevArgs {
    /// First gRPC port; replicas use this and the next two, and the peer
    /// ports ten above them.
    #[arg(long, default_value_t = 7101)]
    base_port: u16,
    /// Where the replicas keep their logs (default: a fresh directory under the system temp dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics_listen: SocketAddr,
    /// Do not start the media nodes.
    #[arg(long)]
    no_nodes: bool,
    /// A media node silent this long is declared down (tests on a busy
    /// machine give it more).
    #[arg(long, default_value_t = ReplicaConfig::default().node_lease_ms)]
    node_lease_ms: u64,
    /// Serve the SLA dashboard (HTTPS, from replica 1) on this address
    /// (default: 127.0.0.1 and the base port + 79, i.e. 7180).
    #[arg(long)]
    dashboard_listen: Option<SocketAddr>,
}

/// Sample institutions: a Nordic university kept on Nordic nodes, a national
/// network allowed anywhere in the EU but preferring Nordic nodes, and an
/// EU research lab.
const INSTITUTIONS: &[(&str, &str, Option<&str>, u32)] = &[
    ("uio", "nordic", None, 300),
    ("sikt", "eu", Some("nordic"), 500),
    ("cern", "eu", None, 1000),
];

/// Each sample institution's licence: the education tier, with add-ons.
const LICENCE_ADD_ONS: &[(&str, &[&str])] = &[
    ("uio", &[]),
    ("sikt", &["large-meeting-500", "webinar-1000"]),
    ("cern", &["large-meeting-1000", "webinar-5000"]),
];

/// The operator whose certificate the printed commands use.
const DEV_OPERATOR: &str = "dev-operator";

/// Media nodes: QUIC on these UDP ports.
const NODES: &[(&str, &str, &str, u32)] = &[
    ("nordic-1", "nordic", "127.0.0.1:7201", 500),
    ("eu-1", "eu", "127.0.0.1:7202", 600),
];

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let ready = super::ops::serve(args.metrics_listen, || {
        fjord_control_plane::telemetry::describe_metrics();
        fjord_media_node::telemetry::describe_metrics();
    })
    .await?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("fjord-dev-{}", std::process::id())));
    let ca = LocalCa::open_or_init(&data_dir.join("pki")).context("dev CA")?;
    let public: BTreeMap<u64, String> = (1..=3u64)
        .map(|i| (i, format!("127.0.0.1:{}", args.base_port + i as u16 - 1)))
        .collect();
    let peers: BTreeMap<u64, String> = (1..=3u64)
        .map(|i| {
            (
                i,
                format!("127.0.0.1:{}", args.base_port + 10 + i as u16 - 1),
            )
        })
        .collect();
    let dashboard = args
        .dashboard_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.base_port + 79)));
    let mut handles = Vec::new();
    for (id, addr) in &public {
        let config = ReplicaConfig {
            id: *id,
            listen: addr.parse().context("replica address")?,
            peer_listen: peers[id].parse().context("replica peer address")?,
            data_dir: data_dir.join(format!("replica-{id}")),
            peers: peers.clone(),
            tls: ca.replica(*id)?,
            kek_file: ca.kek()?,
            prober: Some(super::probe::handle()),
            // Figures show up within seconds on a demo cluster.
            sla_evaluate_interval_ms: 5_000,
            sla_probe_interval_ms: 5_000,
            node_lease_ms: args.node_lease_ms,
            dashboard_listen: (*id == 1).then_some(dashboard),
            // Every replica makes links to replica 1's dashboard.
            dashboard_url: Some(format!("https://{dashboard}")),
            ..ReplicaConfig::default()
        };
        handles.push(server::start(config).await?);
    }
    let replicas: Vec<_> = handles.iter().map(|h| h.replica.clone()).collect();
    ready.set(std::sync::Arc::new(move || {
        replicas.iter().all(|r| r.is_ready())
    }));
    let endpoints: Vec<String> = public.values().cloned().collect();
    let operator = ca.operator(DEV_OPERATOR)?;
    let client = Client::from_files(&endpoints, &operator, ClientConfig::default())?;

    for (name, residency, home, max) in INSTITUTIONS {
        let req = pb::CreateInstitutionRequest {
            name: name.to_string(),
            residency: residency.to_string(),
            home_region: home.unwrap_or_default().to_string(),
            max_participants: *max,
        };
        match client.create_institution(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => anyhow::bail!("creating sample institution {name}: {s}"),
        }
    }
    for (name, add_ons) in LICENCE_ADD_ONS {
        let has_one = client
            .call(|ch| {
                let institution = name.to_string();
                async move {
                    pb::licence_service_client::LicenceServiceClient::new(ch)
                        .get_licence(pb::GetLicenceRequest { institution })
                        .await
                }
            })
            .await
            .is_ok();
        if !has_one {
            client
                .sample_licence(name, add_ons)
                .await
                .with_context(|| format!("licensing sample institution {name}"))?;
        }
    }

    // The development identity provider, trusted by every sample institution.
    let idp_key = dev_idp::default_key_path();
    let idp = match DevIdp::load(&idp_key) {
        Ok(idp) => idp,
        Err(_) => {
            let idp = DevIdp::generate();
            idp.save(&idp_key).context("dev identity provider key")?;
            idp
        }
    };
    for (name, _) in LICENCE_ADD_ONS {
        let req = pb::ConfigureLoginRequest {
            institution: name.to_string(),
            config: Some(pb::LoginConfig {
                issuer: idp.issuer(name),
                audience: dev_idp::AUDIENCE.into(),
                jwks: idp.jwks(),
                affiliation_claim: dev_idp::AFFILIATION_CLAIM.into(),
                eligible: [
                    ("staff", "staff"),
                    ("employee", "staff"),
                    ("faculty", "staff"),
                    ("student", "student"),
                ]
                .into_iter()
                .map(|(v, a)| (v.to_string(), a.to_string()))
                .collect(),
                affiliation_scope: String::new(),
            }),
        };
        client
            .call(|ch| {
                let req = req.clone();
                async move {
                    pb::account_service_client::AccountServiceClient::new(ch)
                        .configure_login(req)
                        .await
                }
            })
            .await
            .with_context(|| format!("login for sample institution {name}"))?;
    }

    let mut nodes = Vec::new();
    if !args.no_nodes {
        for (id, region, address, capacity) in NODES {
            let mut c = MediaNodeConfig::new(
                id,
                region,
                address.parse().context("node address")?,
                endpoints.clone(),
                ca.node(id)?,
            );
            c.capacity = *capacity;
            c.usage.data_dir = Some(data_dir.join(format!("node-{id}")));
            nodes.push(media_node::start(c).await?);
        }
    }
    // A sample meeting to join right away.
    let sample = if args.no_nodes {
        None
    } else {
        match client
            .schedule_meeting(pb::ScheduleMeetingRequest {
                institution: "uio".into(),
                participants: 10,
                duration_ms: 8 * 3_600_000,
                request_id: request_id(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => Some(r),
            Err(s) => {
                tracing::warn!(status = %s, "could not schedule the sample meeting");
                None
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let eps = endpoints.join(",");
    println!("Fjord dev cluster is up.");
    println!("  control plane (gRPC, TLS): {eps}");
    println!(
        "  metrics:              http://{}/metrics",
        args.metrics_listen
    );
    println!("  data:                 {}", data_dir.display());
    println!("  institutions:         uio (nordic), sikt (eu, home nordic), cern (eu)");
    if !args.no_nodes {
        println!(
            "  media nodes (QUIC):   nordic-1 127.0.0.1:7201 (nordic), eu-1 127.0.0.1:7202 (eu)"
        );
    }
    println!(
        "  peer ports (mTLS):    {}",
        peers.values().cloned().collect::<Vec<_>>().join(",")
    );
    println!("  CA and certificates:  {}", ca.dir().display());
    let link = |institution: &str| {
        let client = &client;
        let institution = institution.to_string();
        async move {
            client
                .call(|ch| {
                    let req = pb::DashboardLinkRequest {
                        institution: institution.clone(),
                        valid_for_s: 24 * 3600,
                    };
                    async move {
                        pb::sla_service_client::SlaServiceClient::new(ch)
                            .dashboard_link(req)
                            .await
                    }
                })
                .await
                .map(|r| r.into_inner().url)
        }
    };
    match (link("").await, link("uio").await) {
        (Ok(all), Ok(uio)) => {
            println!("  SLA dashboard (HTTPS, dev CA; links valid 24 h):");
            println!("    all institutions:   {all}");
            println!("    uio:                {uio}");
        }
        (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "no dashboard link"),
    }
    println!();
    println!("In another shell, first (puts `fjord` on the PATH and selects the dev CA and operator certificate):");
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    if let Some(d) = bin_dir {
        println!("  export PATH=\"{}:$PATH\"", d.display());
    }
    println!(
        "  export FJORD_CA={} FJORD_CERT={} FJORD_KEY={} FJORD_ENDPOINTS={eps}",
        operator.ca.display(),
        operator
            .cert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        operator
            .key
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    println!();
    println!("Then try:");
    println!("  fjord ctl cluster status");
    println!("  fjord ctl node list");
    println!(
        "  fjord ctl licence get uio            # tier, limits, contract year, notice deadline"
    );
    println!("  fjord ctl meeting schedule --institution uio --participants 40");
    println!("  fjord ctl meeting explain 1");
    println!("As a host signed in with the development identity provider:");
    println!(
        "  fjord ctl meeting schedule --institution uio --participants 40 --id-token \"$(fjord dev-idp token --institution uio --subject staff-1 --affiliation staff)\""
    );
    println!("  fjord ctl account list --institution uio");
    println!(
        "  fjord ctl meeting schedule --institution cern --participants 1000   # cascades over both nodes"
    );
    println!("  fjord ctl meeting move ID [--from NODE]");
    println!("  fjord ctl node drain eu-1 --evacuate");
    if let Some(m) = &sample {
        let id = m.meeting.as_ref().map(|m| m.id).unwrap_or_default();
        println!();
        println!("Sample meeting {id} (uio) is open. Join as host, then as participants:");
        println!("  fjord join --meeting {id} --host-key {}", m.host_key);
        println!("  fjord join --link '{}'", m.join_link);
        println!("Or load it: fjord loadgen --institution uio --meetings 2 --participants 5 --duration-s 10");
    }
    // Today and its contract year, in the service's time zone.
    let today = fjord_control_plane::licensing::service_date(fjord_control_plane::raft::now_ms());
    let y = today.year();
    let (from, to) = if today.month() >= 10 {
        (y, y + 1)
    } else {
        (y - 1, y)
    };
    println!();
    println!("What was used, and what it is billed (after joining):");
    println!("  fjord ctl usage show --institution uio --period {today}..{today} --sessions");
    println!(
        "  fjord ctl billing export --institution uio --period {from}-10-01..{to}-09-30 --format csv"
    );
    println!("Stop with Ctrl-C.");

    super::shutdown_signal().await;
    for n in nodes {
        n.stop().await;
    }
    // Let the replicas commit what the nodes' last words set off (their
    // final usage reports and heartbeat summaries) before Raft stops.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}
