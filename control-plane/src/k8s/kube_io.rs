//! The operator's Kubernetes side: what it reads from the API server
//! (machines, the release's pods and StatefulSets) and the writes it makes
//! (scale a pool or the control plane, set a pod's deletion cost). Names
//! follow the chart: `<fullname>-cp`, `<fullname>-media-<pool>`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use super::decide::{Action, KubeNode, MediaPod, PoolObserved, Removal, ReplicaPod};

/// The annotation ReplicaSet-managed workloads remove the lowest first by.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// What the operator reads from Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeObserved {
    pub kube_nodes: Vec<KubeNode>,
    pub media_pods: Vec<MediaPod>,
    pub pools: Vec<PoolObserved>,
    pub statefulset_replicas: u32,
    pub replica_pods: Vec<ReplicaPod>,
}

pub struct KubeSide {
    client: Client,
    namespace: String,
    /// The chart's fullname (`<release>-fjord`, or the release name).
    fullname: String,
    /// The release's `app.kubernetes.io/instance` label.
    release: String,
    peer_port: u16,
}

impl KubeSide {
    pub fn new(
        client: Client,
        namespace: &str,
        release: &str,
        fullname: &str,
        peer_port: u16,
    ) -> Self {
        KubeSide {
            client,
            namespace: namespace.into(),
            fullname: fullname.into(),
            release: release.into(),
            peer_port,
        }
    }

    fn control_plane(&self) -> String {
        format!("{}-cp", self.fullname)
    }

    fn pool_statefulset(&self, pool: &str) -> String {
        format!("{}-media-{pool}", self.fullname)
    }

    pub async fn observe(&self) -> Result<KubeObserved, kube::Error> {
        let selector =
            ListParams::default().labels(&format!("app.kubernetes.io/instance={}", self.release));
        let machines: Api<Node> = Api::all(self.client.clone());
        let kube_nodes = machines
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let tainted = spec.taints.unwrap_or_default().iter().any(|t| {
                    t.key == "node.kubernetes.io/unschedulable"
                        || (t.effect == "NoExecute" && t.key.starts_with("node.kubernetes.io/"))
                });
                KubeNode {
                    name: n.metadata.name.unwrap_or_default(),
                    cordoned: spec.unschedulable.unwrap_or(false) || tainted,
                }
            })
            .collect();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut media_pods = Vec::new();
        let mut replica_pods = Vec::new();
        for p in pods.list(&selector).await?.items {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            let Some(index) = labels.get(POD_INDEX).and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            let terminating = p.metadata.deletion_timestamp.is_some();
            match labels
                .get("app.kubernetes.io/component")
                .map(String::as_str)
            {
                Some("media-node") => {
                    let Some(pool) = labels.get("fjord.io/pool") else {
                        continue;
                    };
                    media_pods.push(MediaPod {
                        name,
                        pool: pool.clone(),
                        node_id: format!("{pool}-{index}"),
                        kube_node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                        terminating,
                        index,
                    });
                }
                Some("control-plane") => {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    replica_pods.push(ReplicaPod {
                        id: index + 1,
                        ready: ready && !terminating,
                        peer_address: format!(
                            "{name}.{}-cp-peers.{}.svc:{}",
                            self.fullname, self.namespace, self.peer_port
                        ),
                    });
                }
                _ => {}
            }
        }
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut pools = BTreeMap::new();
        let mut statefulset_replicas = 0;
        for s in sets.list(&selector).await?.items {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
            match labels
                .get("app.kubernetes.io/component")
                .map(String::as_str)
            {
                Some("control-plane") => statefulset_replicas = replicas,
                Some("media-node") => {
                    if let Some(pool) = labels.get("fjord.io/pool") {
                        pools.insert(pool.clone(), replicas);
                    }
                }
                _ => {}
            }
        }
        Ok(KubeObserved {
            kube_nodes,
            media_pods,
            pools: pools
                .into_iter()
                // The chart's pools are StatefulSets (stable identities,
                // one certificate per ordinal).
                .map(|(name, replicas)| PoolObserved {
                    name,
                    replicas,
                    removal: Removal::HighestOrdinal,
                })
                .collect(),
            statefulset_replicas,
            replica_pods,
        })
    }

    /// Carries out a Kubernetes action; `Ok(false)` for actions that are
    /// not Kubernetes' to carry out.
    pub async fn apply(&self, action: &Action) -> Result<bool, kube::Error> {
        let merge = PatchParams::default();
        match action {
            Action::SetDeletionCost { pod, cost } => {
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
                let patch = json!({"metadata": {"annotations": {DELETION_COST: cost.to_string()}}});
                pods.patch(pod, &merge, &Patch::Merge(&patch)).await?;
            }
            Action::ScalePool { pool, to, .. } => {
                self.scale(&self.pool_statefulset(pool), *to).await?;
            }
            Action::ScaleControlPlane { to, .. } => {
                self.scale(&self.control_plane(), *to).await?;
            }
            Action::DrainNode { .. }
            | Action::AddLearner { .. }
            | Action::PromoteVoter { .. }
            | Action::RemoveMember { .. } => return Ok(false),
        }
        Ok(true)
    }

    async fn scale(&self, name: &str, to: u32) -> Result<(), kube::Error> {
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let patch = json!({"spec": {"replicas": to}});
        sets.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against a mocked API server (tower-test's mock pair, as kube-rs's
    //! own tests do): no real Kubernetes API server can run here. Each
    //! request the operator sends is asserted, and answered as the API
    //! server would.

    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn side() -> (KubeSide, Handle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "fjord");
        (
            KubeSide::new(client, "fjord", "prod", "prod-fjord", 7111),
            handle,
        )
    }

    async fn expect(
        handle: &mut Handle,
        method: &str,
        path_and_query: &str,
        answer: serde_json::Value,
    ) -> serde_json::Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method().as_str(), method);
        assert_eq!(
            request.uri().path_and_query().map(|p| p.as_str()),
            Some(path_and_query)
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let sent = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        sent
    }

    fn list(kind: &str, items: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {}, "items": items})
    }

    #[tokio::test]
    async fn observes_machines_pods_and_statefulsets_of_the_release() {
        let (side, mut handle) = side();
        let server = tokio::spawn(async move {
            expect(
                &mut handle,
                "GET",
                "/api/v1/nodes?",
                list(
                    "Node",
                    json!([
                        {"metadata": {"name": "m0"}, "spec": {}},
                        {"metadata": {"name": "m1"}, "spec": {"unschedulable": true}},
                        {"metadata": {"name": "m2"}, "spec": {"taints": [
                            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}},
                    ]),
                ),
            )
            .await;
            let instance = "labelSelector=app.kubernetes.io%2Finstance%3Dprod";
            expect(
                &mut handle,
                "GET",
                &format!("/api/v1/namespaces/fjord/pods?&{instance}"),
                list(
                    "Pod",
                    json!([
                        {"metadata": {"name": "prod-fjord-media-nordic-1", "labels": {
                            "app.kubernetes.io/component": "media-node", "fjord.io/pool": "nordic",
                            "apps.kubernetes.io/pod-index": "1"}},
                         "spec": {"nodeName": "m1", "containers": []}},
                        {"metadata": {"name": "prod-fjord-cp-0", "labels": {
                            "app.kubernetes.io/component": "control-plane",
                            "apps.kubernetes.io/pod-index": "0"}},
                         "spec": {"containers": []},
                         "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                        {"metadata": {"name": "prod-fjord-cp-3", "labels": {
                            "app.kubernetes.io/component": "control-plane",
                            "apps.kubernetes.io/pod-index": "3"}},
                         "spec": {"containers": []},
                         "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                    ]),
                ),
            )
            .await;
            expect(
                &mut handle,
                "GET",
                &format!("/apis/apps/v1/namespaces/fjord/statefulsets?&{instance}"),
                list(
                    "StatefulSet",
                    json!([
                        {"metadata": {"name": "prod-fjord-cp", "labels": {
                            "app.kubernetes.io/component": "control-plane"}},
                         "spec": {"replicas": 4, "selector": {}, "serviceName": "x",
                                  "template": {}}},
                        {"metadata": {"name": "prod-fjord-media-nordic", "labels": {
                            "app.kubernetes.io/component": "media-node", "fjord.io/pool": "nordic"}},
                         "spec": {"replicas": 2, "selector": {}, "serviceName": "y",
                                  "template": {}}},
                    ]),
                ),
            )
            .await;
        });
        let o = side.observe().await.unwrap();
        server.await.unwrap();
        let cordoned: Vec<bool> = o.kube_nodes.iter().map(|n| n.cordoned).collect();
        assert_eq!(cordoned, [false, true, true]);
        assert_eq!(o.media_pods.len(), 1);
        assert_eq!(o.media_pods[0].node_id, "nordic-1");
        assert_eq!(o.media_pods[0].kube_node.as_deref(), Some("m1"));
        assert_eq!(
            o.replica_pods,
            vec![
                ReplicaPod {
                    id: 1,
                    ready: true,
                    peer_address: "prod-fjord-cp-0.prod-fjord-cp-peers.fjord.svc:7111".into()
                },
                ReplicaPod {
                    id: 4,
                    ready: false,
                    peer_address: "prod-fjord-cp-3.prod-fjord-cp-peers.fjord.svc:7111".into()
                },
            ]
        );
        assert_eq!(o.statefulset_replicas, 4);
        assert_eq!(
            o.pools,
            vec![PoolObserved {
                name: "nordic".into(),
                replicas: 2,
                removal: Removal::HighestOrdinal,
            }]
        );
    }

    #[tokio::test]
    async fn scale_in_marks_the_pod_then_scales_its_pool_and_scales_the_control_plane() {
        let (side, mut handle) = side();
        let server = tokio::spawn(async move {
            let sent = expect(
                &mut handle,
                "PATCH",
                "/api/v1/namespaces/fjord/pods/prod-fjord-media-nordic-2?",
                json!({"metadata": {"name": "prod-fjord-media-nordic-2"}}),
            )
            .await;
            assert_eq!(
                sent,
                json!({"metadata": {"annotations": {DELETION_COST: "-1000"}}})
            );
            let scale = |n: u32| {
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": "x"}, "spec": {"replicas": n}})
            };
            let sent = expect(
                &mut handle,
                "PATCH",
                "/apis/apps/v1/namespaces/fjord/statefulsets/prod-fjord-media-nordic/scale?",
                scale(2),
            )
            .await;
            assert_eq!(sent, json!({"spec": {"replicas": 2}}));
            let sent = expect(
                &mut handle,
                "PATCH",
                "/apis/apps/v1/namespaces/fjord/statefulsets/prod-fjord-cp/scale?",
                scale(5),
            )
            .await;
            assert_eq!(sent, json!({"spec": {"replicas": 5}}));
        });
        for a in [
            Action::SetDeletionCost {
                pod: "prod-fjord-media-nordic-2".into(),
                cost: -1000,
            },
            Action::ScalePool {
                pool: "nordic".into(),
                from: 3,
                to: 2,
            },
            Action::ScaleControlPlane { from: 3, to: 5 },
        ] {
            assert!(side.apply(&a).await.unwrap(), "{a:?}");
        }
        // Not Kubernetes' to carry out: no request.
        assert!(!side.apply(&Action::RemoveMember { id: 5 }).await.unwrap());
        server.await.unwrap();
    }
}
