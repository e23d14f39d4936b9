//! The Kubernetes integration (`fjord operator`): a pure
//! [`decide::decide`] from what the controller observed and what the
//! operator asked for to the actions to take — drain media nodes on a
//! cordoned machine, size media pools from the capacity reserved for the
//! coming hour, keep Raft membership in step with the control plane's
//! StatefulSet — and the executor: [`kube_io`] reads and writes the
//! Kubernetes API (feature `k8s`), [`fjord_io`] the control plane.

pub mod decide;
pub mod fjord_io;
#[cfg(feature = "k8s")]
pub mod kube_io;
pub mod pools;

pub use decide::{decide, Action, Desired, Observed};

impl Action {
    /// Short name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::DrainNode { .. } => "drain_node",
            Action::SetDeletionCost { .. } => "set_deletion_cost",
            Action::ScalePool { .. } => "scale_pool",
            Action::AddLearner { .. } => "add_learner",
            Action::PromoteVoter { .. } => "promote_voter",
            Action::RemoveMember { .. } => "remove_member",
            Action::ScaleControlPlane { .. } => "scale_control_plane",
        }
    }
}

/// Observe, decide, act, every `every`, for the life of the process. An
/// action that fails ends the round (the next one observes again).
#[cfg(feature = "k8s")]
pub async fn run(
    kube: kube_io::KubeSide,
    fjord: fjord_io::FjordSide,
    desired: Desired,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let k = match kube.observe().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "operator: Kubernetes not observed");
                metrics::counter!("fjord_operator_observe_errors_total", "side" => "kubernetes")
                    .increment(1);
                continue;
            }
        };
        let (fjord_nodes, members) = match fjord.observe().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "operator: control plane not observed");
                metrics::counter!("fjord_operator_observe_errors_total", "side" => "control_plane")
                    .increment(1);
                continue;
            }
        };
        let observed = Observed {
            kube_nodes: k.kube_nodes,
            media_pods: k.media_pods,
            fjord_nodes,
            pools: k.pools,
            members,
            replica_pods: k.replica_pods,
            statefulset_replicas: k.statefulset_replicas,
        };
        for action in decide(&observed, &desired) {
            let done = match kube.apply(&action).await {
                Ok(true) => Ok(()),
                Ok(false) => fjord
                    .apply(&action)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let result = if done.is_ok() { "ok" } else { "failed" };
            metrics::counter!("fjord_operator_actions_total", "action" => action.kind(), "result" => result)
                .increment(1);
            match done {
                Ok(()) => tracing::info!(?action, "operator acted"),
                Err(error) => {
                    tracing::warn!(
                        ?action,
                        error,
                        "operator action failed; observing again next round"
                    );
                    break;
                }
            }
        }
    }
}
