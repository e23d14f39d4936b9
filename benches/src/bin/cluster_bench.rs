//! Macro benchmarks of a real 3-replica control plane on loopback, printing
//! JSON. Run from the workspace root after `cargo build --release`:
//!
//!   cargo run --release -p fjord-benches --bin cluster_bench -- throughput
//!   cargo run --release -p fjord-benches --bin cluster_bench -- failover --runs 20
//!   cargo run --release -p fjord-benches --bin cluster_bench -- ledger
//!
//! `ledger` measures usage events/s committed to the ledger (batches from
//! several nodes, as media nodes report them) and, side by side, the
//! latency of meeting schedules with and without that ingestion running.
//!
//! `throughput` measures committed meeting placements/s (durable log, fsync
//! per batch) with 1 and 64 concurrent clients, and in the same run the put
//! throughput of a 3-member etcd cluster on the same machine with the same
//! client counts, over mutual TLS on every channel as Fjord's replicas
//! (`--etcd-plaintext` for the plaintext comparison). `failover` measures
//! the time from SIGKILL of the leader to the next committed write.
//!
//! `metadata` runs the same 64-client schedule load with the metadata tier
//! on a real etcd (TLS): records written per second into etcd, the lag from
//! a change to its record in etcd, and how fast a backlog built while etcd
//! was paused (SIGSTOP) drains.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;

use fjord_benches::{
    http_get, local_ca, metric_sum, operator, percentile_ms, EtcdCluster, EtcdTls, FjordCluster,
};
use fjord_common::TlsFiles;
use fjord_control_plane::client::{Client, ClientConfig};
use fjord_proto::v1 as pb;

#[derive(Parser)]
struct Args {
    /// The fjord binary to benchmark.
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Committed placements/s and latency, next to etcd puts/s.
    Throughput {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Stop a measurement after this many operations.
        #[arg(long, default_value_t = 200_000)]
        max_ops: u64,
        /// Skip the etcd comparison.
        #[arg(long)]
        no_etcd: bool,
        /// Run etcd without TLS (the default is mutual TLS on its client
        /// and peer channels, like Fjord's replicas).
        #[arg(long)]
        etcd_plaintext: bool,
    },
    /// Leader kill -9 to next committed write.
    Failover {
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Usage events/s into the ledger, and schedule latency while it ingests.
    Ledger {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Nodes reporting at once.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Events per report.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Concurrent schedule writers measured alongside.
        #[arg(long, default_value_t = 8)]
        schedulers: usize,
        /// Events/s (over all nodes) while schedules are measured alongside.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
    },
    /// Metadata records/s into a real etcd and their lag, under schedule load.
    Metadata {
        /// Seconds of schedule load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds of load while etcd is paused (the backlog then drained).
        #[arg(long, default_value_t = 5)]
        backlog_seconds: u64,
    },
    /// Term changes (elections) over a long run, loaded or idle: a healthy
    /// cluster on a busy machine must not hold a single election.
    Stability {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Concurrent writers (0: idle).
        #[arg(long, default_value_t = 64)]
        clients: usize,
    },
}

/// A client with `files` (the bench operator unless said otherwise).
fn client_as(endpoints: &[String], files: &TlsFiles, retry_for: Duration) -> Client {
    Client::from_files(
        endpoints,
        files,
        ClientConfig {
            retry_for,
            call_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        },
    )
    .expect("client")
}

async fn schedule(c: &Client, key: String) -> Result<(), tonic::Status> {
    let req = pb::ScheduleMeetingRequest {
        institution: "bench".into(),
        participants: 1,
        start_ms: 0,
        duration_ms: 3_600_000,
        request_id: key,
        ..Default::default()
    };
    c.call(|ch| {
        let req = req.clone();
        async move {
            pb::meeting_service_client::MeetingServiceClient::new(ch)
                .schedule_meeting(req)
                .await
        }
    })
    .await
    .map(|_| ())
}

fn client(cluster: &FjordCluster, endpoints: &[String], retry_for: Duration) -> Client {
    client_as(endpoints, &operator(&cluster.ca), retry_for)
}

async fn setup(cluster: &FjordCluster, c: &Client) {
    let inst = pb::CreateInstitutionRequest {
        name: "bench".into(),
        residency: "eu".into(),
        max_participants: 10,
        home_region: String::new(),
    };
    let _ = c
        .call(|ch| {
            let r = inst.clone();
            async move {
                pb::institution_service_client::InstitutionServiceClient::new(ch)
                    .create_institution(r)
                    .await
            }
        })
        .await;
    // Schedules go through the licence check, as in production.
    let _ = c.sample_licence("bench", &[]).await;
    let node = pb::RegisterNodeRequest {
        id: "bench-node".into(),
        region: "eu".into(),
        address: "127.0.0.1:7999".into(),
        capacity: 1_000_000,
        ..Default::default()
    };
    // Registered with the node's own certificate, as a media node does.
    let files = cluster.ca.node("bench-node").expect("node certificate");
    client_as(&cluster.addrs, &files, Duration::from_secs(20))
        .call(|ch| {
            let r = node.clone();
            async move {
                pb::node_service_client::NodeServiceClient::new(ch)
                    .register_node(r)
                    .await
            }
        })
        .await
        .expect("register bench node");
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Runs `op` from `clients` concurrent tasks for `seconds` (or `max_ops`).
async fn measure<F, Fut>(clients: usize, seconds: u64, max_ops: u64, op: F) -> serde_json::Value
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let op = op.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= max_ops {
                        break;
                    }
                    let t = Instant::now();
                    if op(i).await {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("task");
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    json!({
        "clients": clients,
        "ops": all.len(),
        "errors": errors,
        "ops_per_s": (all.len() as f64 / elapsed).round(),
        "p50_ms": percentile_ms(&all, 0.50),
        "p99_ms": percentile_ms(&all, 0.99),
    })
}

async fn wait_ready(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c
            .call(|ch| async move {
                pb::cluster_service_client::ClusterServiceClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            })
            .await;
        if s.is_ok_and(|s| s.into_inner().leader_id != 0) {
            return;
        }
        assert!(Instant::now() < deadline, "cluster did not elect a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn throughput(
    args: &Args,
    seconds: u64,
    max_ops: u64,
    no_etcd: bool,
    etcd_plaintext: bool,
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = FjordCluster::start(&args.fjord, dir.path());
    let c = Arc::new(client(&cluster, &cluster.addrs, Duration::from_secs(20)));
    wait_ready(&c).await;
    setup(&cluster, &c).await;
    let mut fjord = Vec::new();
    for clients in [1usize, 64] {
        let c = c.clone();
        let prefix = format!("t{clients}-");
        let before = cluster.cost();
        let mut r = measure(clients, seconds, max_ops, move |i| {
            let c = c.clone();
            let key = format!("{prefix}{i}");
            async move { schedule(&c, key).await.is_ok() }
        })
        .await;
        let cost = cluster.cost().since(&before);
        let writes = r["ops"].as_f64().unwrap_or(0.0).max(1.0);
        // Over the three replicas: a write costs one append on each.
        r["cpu_ms_per_write"] = json!(round3(cost.cpu_s * 1000.0 / writes));
        r["fsyncs_per_write"] = json!(round3(cost.fsyncs / writes));
        r["appends_per_fsync"] = json!(round3(cost.appends / cost.fsyncs.max(1.0)));
        r["log_bytes_per_write"] = json!((cost.log_bytes / writes).round());
        eprintln!("fjord schedule, {clients} clients: {r}");
        fjord.push(r);
    }
    let writes: f64 = fjord
        .iter()
        .map(|r| r["ops"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        + 2.0;
    let disk: Vec<u64> = (1..=3).map(|id| cluster.disk_bytes(id)).collect();
    let disk_per_write = disk.iter().sum::<u64>() as f64 / 3.0 / writes;
    drop(cluster);

    let mut etcd = Vec::new();
    if !no_etcd {
        let ca = (!etcd_plaintext).then(|| local_ca(dir.path()));
        let etcd_cluster = EtcdCluster::start(dir.path(), ca.as_ref());
        // The bench's etcd client authenticates as Fjord's clients do: an
        // operator certificate from the same CA.
        let etcd_options = ca.as_ref().map(|ca| {
            let files = operator(ca);
            let read = |p: &std::path::Path| std::fs::read(p).expect("reading a TLS file");
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca)))
                .identity(etcd_client::Identity::from_pem(
                    read(files.cert.as_ref().expect("cert")),
                    read(files.key.as_ref().expect("key")),
                ));
            etcd_client::ConnectOptions::new().with_tls(tls)
        });
        let mut ec = None;
        for _ in 0..100 {
            if let Ok(mut c) =
                etcd_client::Client::connect(&etcd_cluster.client_urls, etcd_options.clone()).await
            {
                if c.put("warmup", "x", None).await.is_ok() {
                    ec = Some(c);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ec = ec.expect("etcd cluster did not come up");
        for clients in [1usize, 64] {
            let ec = ec.clone();
            let r = measure(clients, seconds, max_ops, move |i| {
                let mut ec = ec.clone();
                // A value about the size of a serialised schedule command.
                let value = vec![b'x'; 256];
                async move {
                    ec.put(format!("meeting/{clients}/{i}"), value, None)
                        .await
                        .is_ok()
                }
            })
            .await;
            eprintln!("etcd put, {clients} clients: {r}");
            etcd.push(r);
        }
        drop(etcd_cluster);
    }
    let ratios: Vec<_> = fjord
        .iter()
        .zip(&etcd)
        .map(|(f, e)| {
            json!({"clients": f["clients"], "fjord_over_etcd": f["ops_per_s"].as_f64().unwrap() / e["ops_per_s"].as_f64().unwrap().max(1.0)})
        })
        .collect();
    json!({
        "benchmark": "committed_writes",
        "fjord_schedule": fjord,
        "etcd_put": etcd,
        "etcd_transport": if no_etcd { "none" } else if etcd_plaintext { "plaintext" } else { "mutual_tls" },
        "ratios": ratios,
        "fjord_disk_bytes_per_replica": disk,
        "fjord_disk_bytes_per_write": disk_per_write.round(),
    })
}

async fn failover(args: &Args, runs: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = FjordCluster::start(&args.fjord, dir.path());
    let c = client(&cluster, &cluster.addrs, Duration::from_secs(30));
    wait_ready(&c).await;
    setup(&cluster, &c).await;
    let mut times = Vec::new();
    for run in 0..runs {
        // Everyone caught up, then find the leader as the cluster sees it.
        schedule(&c, format!("pre-{run}"))
            .await
            .expect("write before kill");
        let status = c
            .call(|ch| async move {
                pb::cluster_service_client::ClusterServiceClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            })
            .await
            .expect("status")
            .into_inner();
        let leader = status.leader_id as usize;
        let survivors: Vec<String> = cluster
            .addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| i + 1 != leader)
            .map(|(_, a)| a.clone())
            .collect();
        let sc = client(&cluster, &survivors, Duration::from_secs(30));
        let killed = Instant::now();
        cluster.procs[leader - 1].kill9();
        schedule(&sc, format!("post-{run}"))
            .await
            .expect("write after kill");
        let t = killed.elapsed();
        eprintln!(
            "run {run}: leader {leader} killed, next commit after {:.0} ms",
            t.as_secs_f64() * 1000.0
        );
        times.push(t);
        // Bring it back and let it catch up before the next run.
        cluster.procs[leader - 1] = cluster.spawn(leader);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    times.sort();
    json!({
        "benchmark": "leader_failover",
        "runs": runs,
        "kill_to_next_commit_p50_ms": percentile_ms(&times, 0.5),
        "kill_to_next_commit_p99_ms": percentile_ms(&times, 0.99),
        "max_ms": percentile_ms(&times, 1.0),
        "election_timeout_ms": "200-400, heartbeat 100 (defaults)",
    })
}

async fn status(c: &Client) -> Option<pb::StatusResponse> {
    c.call(|ch| async move {
        pb::cluster_service_client::ClusterServiceClient::new(ch)
            .status(pb::StatusRequest {})
            .await
    })
    .await
    .ok()
    .map(|r| r.into_inner())
}

/// The leader's metadata status (the writer runs there).
async fn metadata_status(cluster: &FjordCluster) -> Option<pb::MetadataStatus> {
    let c = client(cluster, &cluster.addrs, Duration::from_secs(5));
    for i in 0..c.endpoints() {
        let (_, ch) = c.channel_at(i);
        if let Ok(r) = pb::metadata_service_client::MetadataServiceClient::new(ch)
            .get_status(pb::MetadataStatusRequest {})
            .await
        {
            let r = r.into_inner();
            if r.leader {
                return Some(r);
            }
        }
    }
    None
}

/// Waits until the outbox is empty; answers the leader's status then.
async fn metadata_drained(cluster: &FjordCluster, within: Duration) -> pb::MetadataStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = metadata_status(cluster).await {
            if s.outbox_depth == 0 && s.connected {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the metadata outbox did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A quantile's bucket bound from a Prometheus histogram on `page`.
fn histogram_quantile(page: &str, name: &str, q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = page
        .lines()
        .filter(|l| l.starts_with(&bucket))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
}

async fn metadata(
    args: &Args,
    seconds: u64,
    clients: usize,
    backlog_seconds: u64,
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdTls::start(dir.path(), &local_ca(dir.path()));
    let store = format!("etcd://{}", etcd.addr);
    let cluster = FjordCluster::start_with(
        &args.fjord,
        dir.path(),
        &[
            "--node-lease-ms",
            "600000",
            "--metadata",
            &store,
            "--metadata-sync-interval-ms",
            "100",
        ],
    );
    let c = Arc::new(client(&cluster, &cluster.addrs, Duration::from_secs(20)));
    wait_ready(&c).await;
    setup(&cluster, &c).await;
    let before = metadata_drained(&cluster, Duration::from_secs(60)).await;

    // Steady state: schedules at full speed, the writer keeping up.
    let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = sampler_stop.clone();
        let addrs = cluster.addrs.clone();
        let ca = operator(&cluster.ca);
        tokio::spawn(async move {
            let c = client_as(&addrs, &ca, Duration::from_secs(5));
            let mut oldest = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..c.endpoints() {
                    let (_, ch) = c.channel_at(i);
                    if let Ok(r) = pb::metadata_service_client::MetadataServiceClient::new(ch)
                        .get_status(pb::MetadataStatusRequest {})
                        .await
                    {
                        if r.get_ref().leader {
                            oldest.push(Duration::from_millis(r.get_ref().lag_ms));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            oldest
        })
    };
    let start = Instant::now();
    let c2 = c.clone();
    let load = measure(clients, seconds, 1_000_000, move |i| {
        let c = c2.clone();
        async move { schedule(&c, format!("m{i}")).await.is_ok() }
    })
    .await;
    let drained = metadata_drained(&cluster, Duration::from_secs(120)).await;
    let elapsed = start.elapsed().as_secs_f64();
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut oldest = sampler.await.expect("sampler");
    oldest.sort();
    let written = drained.synced_total - before.synced_total;
    let leader = status(&c).await.map_or(1, |s| s.leader_id as usize);
    let page = http_get(&cluster.metrics_addrs[leader - 1], "/metrics");
    let lag_metric = "fjord_metadata_sync_lag_seconds";
    let steady = json!({
        "schedules": load.clone(),
        "records_written": written,
        "records_per_s": (written as f64 / elapsed).round(),
        "oldest_pending_lag_ms": {
            "samples": oldest.len(),
            "p50": percentile_ms(&oldest, 0.50),
            "p99": percentile_ms(&oldest, 0.99),
            "max": percentile_ms(&oldest, 1.0),
        },
        "record_lag_seconds_bucket_p50": histogram_quantile(&page, lag_metric, 0.50),
        "record_lag_seconds_bucket_p99": histogram_quantile(&page, lag_metric, 0.99),
        "records_written_by_leader": metric_sum(&page, "fjord_metadata_records_written_total"),
    });
    eprintln!("metadata steady: {steady}");

    // Backlog: etcd paused while schedules go on, then resumed.
    let pid = etcd.proc.0.as_ref().expect("etcd runs").id().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
    };
    signal("-STOP");
    let c3 = c.clone();
    let paused_load = measure(clients, backlog_seconds, 1_000_000, move |i| {
        let c = c3.clone();
        async move { schedule(&c, format!("b{i}")).await.is_ok() }
    })
    .await;
    let backlog = metadata_status(&cluster)
        .await
        .map_or(0, |s| s.outbox_depth);
    let resumed = Instant::now();
    signal("-CONT");
    let after = metadata_drained(&cluster, Duration::from_secs(300)).await;
    let drain_s = resumed.elapsed().as_secs_f64();
    let backlog_json = json!({
        "schedules_while_paused": paused_load,
        "outbox_depth_at_resume": backlog,
        "drain_seconds": round3(drain_s),
        "drain_records_per_s": (backlog as f64 / drain_s).round(),
        "records_written": after.synced_total - drained.synced_total,
    });
    eprintln!("metadata backlog: {backlog_json}");
    drop(cluster);
    drop(etcd);

    // The same load on a cluster with the embedded store, for the ratio.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let embedded = FjordCluster::start(&args.fjord, dir2.path());
    let c = Arc::new(client(&embedded, &embedded.addrs, Duration::from_secs(20)));
    wait_ready(&c).await;
    setup(&embedded, &c).await;
    let c4 = c.clone();
    let baseline = measure(clients, seconds, 1_000_000, move |i| {
        let c = c4.clone();
        async move { schedule(&c, format!("e{i}")).await.is_ok() }
    })
    .await;
    eprintln!("embedded store: {baseline}");
    let ratio = load["ops_per_s"].as_f64().unwrap_or(0.0)
        / baseline["ops_per_s"].as_f64().unwrap_or(1.0).max(1.0);
    json!({
        "benchmark": "metadata_outbox_into_etcd",
        "store": store,
        "steady": steady,
        "backlog": backlog_json,
        "embedded_store_schedules": baseline,
        "schedules_etcd_over_embedded": round3(ratio),
    })
}

async fn stability(args: &Args, seconds: u64, clients: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = FjordCluster::start(&args.fjord, dir.path());
    let c = Arc::new(client(&cluster, &cluster.addrs, Duration::from_secs(20)));
    wait_ready(&c).await;
    setup(&cluster, &c).await;
    // Each replica on its own, so a replica that stood for election is seen.
    let per_replica: Vec<Client> = cluster
        .addrs
        .iter()
        .map(|a| client(&cluster, std::slice::from_ref(a), Duration::from_secs(2)))
        .collect();
    let mut first_terms = Vec::new();
    for r in &per_replica {
        first_terms.push(status(r).await.map(|s| s.term).unwrap_or(0));
    }
    let sampler = {
        let per_replica: Vec<Arc<Client>> = per_replica.into_iter().map(Arc::new).collect();
        tokio::spawn(async move {
            let mut leaders = std::collections::BTreeSet::new();
            let mut max_terms = vec![0u64; per_replica.len()];
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < deadline {
                for (i, r) in per_replica.iter().enumerate() {
                    if let Some(s) = status(r).await {
                        max_terms[i] = max_terms[i].max(s.term);
                        leaders.insert((s.term, s.leader_id));
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (max_terms, leaders.len())
        })
    };
    // Writes that commit through Raft without growing the state (undoing
    // a drain that is not there), so a long run measures Raft, not memory.
    let load = if clients > 0 {
        let c = c.clone();
        measure(clients, seconds, u64::MAX, move |_| {
            let c = c.clone();
            async move {
                c.drain_node(pb::DrainNodeRequest {
                    id: "bench-node".into(),
                    undo: true,
                    evacuate: false,
                })
                .await
                .is_ok()
            }
        })
        .await
    } else {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        json!({"clients": 0})
    };
    let (max_terms, leader_terms) = sampler.await.expect("sampler");
    let term_changes: u64 = max_terms
        .iter()
        .zip(&first_terms)
        .map(|(a, b)| a.saturating_sub(*b))
        .max()
        .unwrap_or(0);
    json!({
        "benchmark": "stability",
        "seconds": seconds,
        "load": load,
        "term_changes": term_changes,
        "distinct_leaders_seen": leader_terms,
        "terms_at_start": first_terms,
        "terms_at_end": max_terms,
    })
}

/// Reports batches of join/leave pairs as `node` from sequence number
/// `from` until `deadline`, at most `rate` events/s (0: as fast as it
/// goes); returns the events acknowledged and the last sequence number.
async fn ingest(
    c: Arc<Client>,
    node: String,
    meeting: u64,
    batch: usize,
    from: u64,
    rate: u64,
    deadline: Instant,
) -> (u64, u64) {
    let mut seq = from;
    let mut acked = 0u64;
    let boot = 1;
    let start = Instant::now();
    while Instant::now() < deadline {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(acked as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let now = fjord_control_plane::raft::now_ms();
        let events: Vec<pb::UsageEvent> = (0..batch as u64)
            .map(|i| {
                let n = seq + i + 1;
                pb::UsageEvent {
                    seq: n,
                    at_ms: now - 60_000 + (i & !1),
                    meeting_id: meeting,
                    // A join and its leave share a participant.
                    participant_id: n.div_ceil(2),
                    kind: if n % 2 == 1 {
                        pb::UsageKind::Joined
                    } else {
                        pb::UsageKind::Left
                    } as i32,
                    features: 0,
                    reason: if n % 2 == 1 {
                        String::new()
                    } else {
                        "left".into()
                    },
                    boot,
                    ..Default::default()
                }
            })
            .collect();
        let req = pb::ReportUsageRequest {
            node_id: node.clone(),
            events,
        };
        let r = c
            .call(|ch| {
                let req = req.clone();
                async move {
                    pb::node_service_client::NodeServiceClient::new(ch)
                        .report_usage(req)
                        .await
                }
            })
            .await;
        match r {
            Ok(r) => {
                let a = r.into_inner().acked_seq;
                acked += a - seq;
                seq = a;
            }
            Err(e) => eprintln!("{node}: report failed: {e}"),
        }
    }
    (acked, seq)
}

async fn ledger(
    args: &Args,
    seconds: u64,
    nodes: usize,
    batch: usize,
    schedulers: usize,
    rate: u64,
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = FjordCluster::start(&args.fjord, dir.path());
    let c = Arc::new(client(&cluster, &cluster.addrs, Duration::from_secs(20)));
    wait_ready(&c).await;
    setup(&cluster, &c).await;
    let meeting = c
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "bench".into(),
            participants: 1,
            request_id: "ledger-meeting".into(),
            ..Default::default()
        })
        .await
        .expect("meeting")
        .meeting
        .expect("meeting")
        .id;
    let mut node_clients = Vec::new();
    for i in 0..nodes {
        let id = format!("usage-node-{i}");
        let files = cluster.ca.node(&id).expect("node certificate");
        let nc = Arc::new(client_as(&cluster.addrs, &files, Duration::from_secs(20)));
        let reg = pb::RegisterNodeRequest {
            id: id.clone(),
            region: "eu".into(),
            address: format!("127.0.0.1:{}", 7000 + i),
            capacity: 1000,
            boot: 1,
            ..Default::default()
        };
        nc.call(|ch| {
            let r = reg.clone();
            async move {
                pb::node_service_client::NodeServiceClient::new(ch)
                    .register_node(r)
                    .await
            }
        })
        .await
        .expect("register usage node");
        node_clients.push((id, nc));
    }
    let sched = |prefix: &'static str| {
        let c = c.clone();
        measure(schedulers, seconds, u64::MAX, move |i| {
            let c = c.clone();
            let key = format!("{prefix}{i}");
            async move { schedule(&c, key).await.is_ok() }
        })
    };
    // Schedules alone.
    let alone = sched("alone-").await;
    eprintln!("schedules alone: {alone}");
    // Ingestion alone as fast as it goes, then at `rate` with schedules
    // alongside.
    let mut seqs = vec![0u64; nodes];
    let mut results = Vec::new();
    for with_schedules in [false, true] {
        let before = cluster.cost();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let per_node = if with_schedules {
            rate / nodes as u64
        } else {
            0
        };
        let tasks: Vec<_> = node_clients
            .iter()
            .zip(&seqs)
            .map(|((id, nc), from)| {
                tokio::spawn(ingest(
                    nc.clone(),
                    id.clone(),
                    meeting,
                    batch,
                    *from,
                    per_node,
                    deadline,
                ))
            })
            .collect();
        let sched_result = if with_schedules {
            Some(sched(if with_schedules { "mixed-" } else { "" }).await)
        } else {
            None
        };
        let mut events = 0u64;
        for (t, seq) in tasks.into_iter().zip(seqs.iter_mut()) {
            let (n, last) = t.await.expect("ingest task");
            events += n;
            *seq = last;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cost = cluster.cost().since(&before);
        let r = json!({
            "with_schedules": with_schedules,
            "target_events_per_s": if with_schedules { json!(rate) } else { json!("max") },
            "nodes": nodes,
            "batch": batch,
            "events": events,
            "events_per_s": (events as f64 / elapsed).round(),
            "fsyncs_per_s": (cost.fsyncs / elapsed).round(),
            "log_bytes_per_event": (cost.log_bytes / 3.0 / events.max(1) as f64).round(),
            "cpu_s_per_s": round3(cost.cpu_s / elapsed),
            "schedules": sched_result,
        });
        eprintln!("ingest: {r}");
        results.push(r);
    }
    let p99_alone = alone["p99_ms"].as_f64().unwrap_or(0.0);
    let p99_mixed = results[1]["schedules"]["p99_ms"].as_f64().unwrap_or(0.0);
    json!({
        "benchmark": "ledger_ingestion",
        "schedules_alone": alone,
        "ingestion": results,
        "schedule_p99_ratio_with_over_without": round3(p99_mixed / p99_alone.max(0.001)),
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let out = match args.mode {
        Mode::Throughput {
            seconds,
            max_ops,
            no_etcd,
            etcd_plaintext,
        } => throughput(&args, seconds, max_ops, no_etcd, etcd_plaintext).await,
        Mode::Failover { runs } => failover(&args, runs).await,
        Mode::Stability { seconds, clients } => stability(&args, seconds, clients).await,
        Mode::Metadata {
            seconds,
            clients,
            backlog_seconds,
        } => metadata(&args, seconds, clients, backlog_seconds).await,
        Mode::Ledger {
            seconds,
            nodes,
            batch,
            schedulers,
            rate,
        } => ledger(&args, seconds, nodes, batch, schedulers, rate).await,
    };
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
