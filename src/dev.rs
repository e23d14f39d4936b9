//! `fjord dev`: the whole control plane on one machine, with sample data,
//! for trying Fjord out. Three replicas run in this process, each a full
//! replica with its own gRPC port and Raft log on disk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic::Code;

use fjord_control_plane::client::{run_node_session, Client, ClientConfig, NodeRegistration};
use fjord_control_plane::server::{self, ReplicaConfig};
use fjord_proto::v1 as pb;

#[derive(Args)]
pub struct DevArgs {
    /// First gRPC port; replicas use this and the next two.
    #[arg(long, default_value_t = 7101)]
    base_port: u16,
    /// Where the replicas keep their logs (default: a fresh directory under the system temp dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics_listen: SocketAddr,
    /// Do not start the simulated node agents.
    #[arg(long)]
    no_nodes: bool,
}

/// Sample institutions: a Nordic university kept on Nordic nodes, a national
/// network allowed anywhere in the EU but preferring Nordic nodes, and an
/// EU research lab.
const INSTITUTIONS: &[(&str, &str, Option<&str>, u32)] = &[
    ("uio", "nordic", None, 300),
    ("sikt", "eu", Some("nordic"), 500),
    ("cern", "eu", None, 1000),
];

/// Node agents that register and heartbeat exactly as a media node does, so
/// placement has somewhere to put meetings. They carry no media.
const NODES: &[(&str, &str, &str, u32)] = &[
    ("nordic-1", "nordic", "127.0.0.1:7201", 500),
    ("nordic-2", "nordic", "127.0.0.1:7202", 500),
    ("eu-1", "eu", "127.0.0.1:7203", 1000),
];

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    super::install_metrics(args.metrics_listen)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("fjord-dev-{}", std::process::id())));
    let peers: BTreeMap<u64, String> = (1..=3u64)
        .map(|i| (i, format!("127.0.0.1:{}", args.base_port + i as u16 - 1)))
        .collect();
    let mut handles = Vec::new();
    for (id, addr) in &peers {
        let config = ReplicaConfig {
            id: *id,
            listen: addr.parse().context("replica address")?,
            data_dir: data_dir.join(format!("replica-{id}")),
            peers: peers.clone(),
            ..ReplicaConfig::default()
        };
        handles.push(server::start(config).await?);
    }
    let endpoints: Vec<String> = peers.values().cloned().collect();
    let client = Client::new(&endpoints, ClientConfig::default())?;

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

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    if !args.no_nodes {
        for (id, region, address, capacity) in NODES {
            let reg = NodeRegistration {
                id: id.to_string(),
                region: region.to_string(),
                address: address.to_string(),
                capacity: *capacity,
                certificate: Vec::new(),
            };
            let client = Client::new(&endpoints, ClientConfig::default())?;
            let stop = stop_rx.clone();
            agents.push(tokio::spawn(async move {
                let beat = || pb::HeartbeatRequest::default();
                if let Err(e) = run_node_session(&client, reg, beat, |_| {}, stop).await {
                    tracing::error!(error = %e, "node agent stopped");
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let eps = endpoints.join(",");
    println!("Fjord dev cluster is up.");
    println!("  control plane (gRPC): {eps}");
    println!(
        "  metrics:              http://{}/metrics",
        args.metrics_listen
    );
    println!("  data:                 {}", data_dir.display());
    println!("  institutions:         uio (nordic), sikt (eu, home nordic), cern (eu)");
    if !args.no_nodes {
        println!("  node agents:          nordic-1, nordic-2 (nordic), eu-1 (eu)");
    }
    println!();
    println!("Try:");
    println!("  fjord ctl --endpoints {eps} cluster status");
    println!("  fjord ctl --endpoints {eps} node list");
    println!("  fjord ctl --endpoints {eps} meeting schedule --institution uio --participants 40");
    println!("  fjord ctl --endpoints {eps} meeting explain 1");
    println!("Stop with Ctrl-C.");

    super::shutdown_signal().await;
    let _ = stop_tx.send(true);
    for a in agents {
        let _ = a.await;
    }
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}
