//! `fjord operator`: the Kubernetes controller, run in the cluster next to
//! the release it manages (the chart's names and labels). Every
//! `--interval` it observes the machines, the release's pods and
//! StatefulSets and the control plane, decides (`k8s::decide`) and acts:
//! drains media nodes on cordoned machines, sizes media pools from the
//! coming hour's reservations, keeps Raft membership in step with
//! `--voters`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fjord_control_plane::k8s::decide::Desired;

#[derive(Args)]
pub struct OperatorArgs {
    /// The release's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The Helm release name (`app.kubernetes.io/instance`).
    #[arg(long)]
    release: String,
    /// The chart's fullname (names of its StatefulSets; default:
    /// RELEASE-fjord, or RELEASE when it contains "fjord").
    #[arg(long)]
    fullname: Option<String>,
    /// Pools and their limits: a JSON list of {"name", "min_replicas",
    /// "max_replicas", "node_capacity", "headroom_pct"}.
    #[arg(long)]
    pools: PathBuf,
    /// Raft voters wanted (3 or 5).
    #[arg(long, default_value_t = 3)]
    voters: u32,
    /// The control plane's peer port (what new members are added at).
    #[arg(long, default_value_t = 7111)]
    peer_port: u16,
    /// How often it observes and acts.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Serve Prometheus metrics, /healthz and /readyz on this address.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Control-plane replicas, HOST:PORT,...
    #[arg(long, value_delimiter = ',', env = "FJORD_ENDPOINTS")]
    endpoints: Vec<String>,
    /// An operator certificate.
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

impl OperatorArgs {
    /// What the operator is asked to keep, checked.
    fn desired(&self) -> anyhow::Result<Desired> {
        let text = std::fs::read_to_string(&self.pools)
            .map_err(|e| anyhow::anyhow!("--pools {}: {e}", self.pools.display()))?;
        let out = fjord_control_plane::k8s::pools::parse_pools(&text)
            .map_err(|e| anyhow::anyhow!("--pools {}: {e}", self.pools.display()))?;
        if !matches!(self.voters, 3 | 5) {
            anyhow::bail!("--voters must be 3 or 5");
        }
        Ok(Desired {
            pools: out,
            voters: self.voters,
        })
    }

    fn fullname(&self) -> String {
        self.fullname.clone().unwrap_or_else(|| {
            if self.release.contains("fjord") {
                self.release.clone()
            } else {
                format!("{}-fjord", self.release)
            }
        })
    }
}

#[cfg(feature = "k8s")]
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    use fjord_control_plane::client::{Client, ClientConfig};
    use fjord_control_plane::k8s::{fjord_io::FjordSide, kube_io::KubeSide};
    let desired = args.desired()?;
    if let Some(addr) = args.metrics_listen {
        let slot =
            crate::ops::serve(addr, fjord_control_plane::telemetry::describe_metrics).await?;
        slot.set(std::sync::Arc::new(|| true));
    }
    let tls = args.tls.files(true)?;
    let cp = Client::from_files(&args.endpoints, &tls, ClientConfig::default())?;
    let kube = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("Kubernetes client (in-cluster or kubeconfig): {e}"))?;
    let fullname = args.fullname();
    tracing::info!(namespace = %args.namespace, release = %args.release, %fullname,
        pools = desired.pools.len(), voters = desired.voters, "operator started");
    fjord_control_plane::k8s::run(
        KubeSide::new(
            kube,
            &args.namespace,
            &args.release,
            &fullname,
            args.peer_port,
        ),
        FjordSide::new(cp),
        desired,
        args.interval,
    )
    .await;
    Ok(())
}

#[cfg(not(feature = "k8s"))]
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    args.desired()?;
    let _ = args.fullname();
    anyhow::bail!("this binary was built without Kubernetes support (cargo feature `k8s`)")
}
