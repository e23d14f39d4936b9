//! The Kubernetes controller's decisions: a pure function of what it
//! observed (Kubernetes nodes, media pods, Fjord's nodes and Raft members)
//! and what the operator asked for (pool limits, voters), returning the
//! actions to take, in order. The executor carries them out; nothing here
//! talks to an API server or reads a clock.

use std::collections::{BTreeMap, BTreeSet};

/// A Kubernetes node as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNode {
    pub name: String,
    /// Cordoned (`spec.unschedulable`), or tainted for eviction.
    pub cordoned: bool,
}

/// A media-node pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPod {
    pub name: String,
    pub pool: String,
    /// The Fjord node id it runs (from its certificate).
    pub node_id: String,
    /// The Kubernetes node it is scheduled on.
    pub kube_node: Option<String>,
    /// Already being deleted.
    pub terminating: bool,
    /// Its ordinal in the pool's workload.
    pub index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FjordNodeState {
    Ready,
    Draining,
    Down,
}

/// A media node as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FjordNode {
    pub id: String,
    pub state: FjordNodeState,
    pub capacity: u32,
    /// Participants reserved on it at some point in the coming hour (peak).
    pub reserved_next_hour: u32,
    pub load_participants: u32,
}

/// One pool's limits (from the chart's values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Capacity of one node of the pool.
    pub node_capacity: u32,
    /// Keep at least this share of the pool's capacity free (percent).
    pub headroom_pct: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolObserved {
    pub name: String,
    /// The workload's desired replicas now.
    pub replicas: u32,
    pub removal: Removal,
}

/// Which pod a pool's workload removes when it scales in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The one with the lowest deletion cost (ReplicaSets, Deployments):
    /// the controller picks the emptiest node and marks its pod.
    DeletionCost,
    /// Always the highest ordinal (StatefulSets): that node is the one
    /// drained, whatever it carries.
    HighestOrdinal,
}

/// A Raft member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub voter: bool,
    /// A learner whose log is within reach of the leader's.
    pub caught_up: bool,
}

/// A control-plane pod (replica id = index + 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPod {
    pub id: u64,
    pub ready: bool,
    /// Where other replicas reach its peer port.
    pub peer_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub kube_nodes: Vec<KubeNode>,
    pub media_pods: Vec<MediaPod>,
    pub fjord_nodes: Vec<FjordNode>,
    pub pools: Vec<PoolObserved>,
    pub members: Vec<Member>,
    pub replica_pods: Vec<ReplicaPod>,
    /// The control-plane StatefulSet's replicas now.
    pub statefulset_replicas: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub pools: Vec<PoolSpec>,
    /// Raft voters wanted (3 or 5).
    pub voters: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Drain a media node with evacuation (its meetings move now).
    DrainNode {
        node_id: String,
        reason: DrainReason,
    },
    /// Set a pod's deletion cost, so the workload removes it first when it
    /// scales in (`controller.kubernetes.io/pod-deletion-cost`).
    SetDeletionCost {
        pod: String,
        cost: i32,
    },
    ScalePool {
        pool: String,
        from: u32,
        to: u32,
    },
    AddLearner {
        id: u64,
        peer_address: String,
    },
    PromoteVoter {
        id: u64,
    },
    RemoveMember {
        id: u64,
    },
    ScaleControlPlane {
        from: u32,
        to: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// Its Kubernetes node was cordoned or is being drained.
    Cordoned,
    /// The pool scales in and this node is the emptiest.
    ScaleIn,
}

/// Pod deletion cost of a node chosen for scale-in (the lowest goes first).
pub const SCALE_IN_DELETION_COST: i32 = -1000;

/// Everything to do now, in order: drains for cordoned machines, pool
/// sizes, then at most one Raft membership change (they go one at a time).
pub fn decide(observed: &Observed, desired: &Desired) -> Vec<Action> {
    let mut actions = Vec::new();
    let fjord: BTreeMap<&str, &FjordNode> = observed
        .fjord_nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    drains_for_cordons(observed, &fjord, &mut actions);
    for spec in &desired.pools {
        scale_pool(observed, spec, &fjord, &mut actions);
    }
    if let Some(a) = membership(observed, desired) {
        actions.push(a);
    }
    actions
}

/// A cordoned machine's media nodes are drained with evacuation before
/// their pods are evicted (their meetings move; participants switch over).
fn drains_for_cordons(
    observed: &Observed,
    fjord: &BTreeMap<&str, &FjordNode>,
    actions: &mut Vec<Action>,
) {
    let cordoned: BTreeSet<&str> = observed
        .kube_nodes
        .iter()
        .filter(|n| n.cordoned)
        .map(|n| n.name.as_str())
        .collect();
    for pod in &observed.media_pods {
        let on_cordoned = pod
            .kube_node
            .as_deref()
            .is_some_and(|n| cordoned.contains(n));
        let ready = fjord
            .get(pod.node_id.as_str())
            .is_some_and(|n| n.state == FjordNodeState::Ready);
        if on_cordoned && ready {
            actions.push(Action::DrainNode {
                node_id: pod.node_id.clone(),
                reason: DrainReason::Cordoned,
            });
        }
    }
}

/// Sizes a pool from the capacity reserved for the coming hour: enough
/// nodes that the reservation leaves `headroom_pct` free, within the
/// pool's limits. Scale-in takes one node at a time, the emptiest, and
/// only once what remains still keeps the head-room.
fn scale_pool(
    observed: &Observed,
    spec: &PoolSpec,
    fjord: &BTreeMap<&str, &FjordNode>,
    actions: &mut Vec<Action>,
) {
    let Some(current) = observed.pools.iter().find(|p| p.name == spec.name) else {
        return;
    };
    let pods: Vec<&MediaPod> = observed
        .media_pods
        .iter()
        .filter(|p| p.pool == spec.name && !p.terminating)
        .collect();
    let nodes: Vec<&FjordNode> = pods
        .iter()
        .filter_map(|p| fjord.get(p.node_id.as_str()).copied())
        .collect();
    let reserved: u64 = nodes.iter().map(|n| u64::from(n.reserved_next_hour)).sum();
    // Nodes needed so that reserved ≤ (100 - headroom)% of their capacity.
    let usable = u64::from(spec.node_capacity) * u64::from(100 - spec.headroom_pct.min(99));
    let needed = if usable == 0 {
        spec.max_replicas
    } else {
        (reserved * 100).div_ceil(usable) as u32
    };
    let want = needed.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
    if want > current.replicas {
        actions.push(Action::ScalePool {
            pool: spec.name.clone(),
            from: current.replicas,
            to: want,
        });
        return;
    }
    if want < current.replicas && current.replicas > spec.min_replicas {
        // One at a time. Where the workload honours deletion costs, the
        // emptiest node (least reserved, then fewest participants, then the
        // name for a stable choice); a StatefulSet removes its highest
        // ordinal, so that one is drained.
        let candidates = pods
            .iter()
            .filter_map(|p| fjord.get(p.node_id.as_str()).map(|n| (*p, *n)));
        let victim = match current.removal {
            Removal::DeletionCost => candidates
                .filter(|(_, n)| n.state != FjordNodeState::Down)
                .min_by(|(pa, a), (pb, b)| {
                    (a.reserved_next_hour, a.load_participants, &pa.name).cmp(&(
                        b.reserved_next_hour,
                        b.load_participants,
                        &pb.name,
                    ))
                }),
            Removal::HighestOrdinal => candidates
                .filter(|(p, _)| p.index + 1 == u64::from(current.replicas))
                .max_by_key(|(p, _)| p.index),
        };
        if let Some((pod, node)) = victim {
            if node.state == FjordNodeState::Ready {
                actions.push(Action::DrainNode {
                    node_id: node.id.clone(),
                    reason: DrainReason::ScaleIn,
                });
            }
            if current.removal == Removal::DeletionCost {
                actions.push(Action::SetDeletionCost {
                    pod: pod.name.clone(),
                    cost: SCALE_IN_DELETION_COST,
                });
            }
            actions.push(Action::ScalePool {
                pool: spec.name.clone(),
                from: current.replicas,
                to: current.replicas - 1,
            });
        }
    }
}

/// One membership step toward `desired.voters`: grow the StatefulSet, add
/// a ready pod as learner, promote a caught-up learner; or shrink: the
/// highest voter leaves Raft first, and only then is its pod removed.
fn membership(observed: &Observed, desired: &Desired) -> Option<Action> {
    let want = desired.voters;
    if want == 0 {
        return None;
    }
    let members: BTreeMap<u64, &Member> = observed.members.iter().map(|m| (m.id, m)).collect();
    let voters = observed.members.iter().filter(|m| m.voter).count() as u32;
    if want > observed.statefulset_replicas {
        return Some(Action::ScaleControlPlane {
            from: observed.statefulset_replicas,
            to: want,
        });
    }
    // Promote before adding the next: one change in flight at a time.
    if let Some(l) = observed
        .members
        .iter()
        .find(|m| !m.voter && m.id <= u64::from(want) && m.caught_up)
    {
        return Some(Action::PromoteVoter { id: l.id });
    }
    if observed
        .members
        .iter()
        .any(|m| !m.voter && m.id <= u64::from(want))
    {
        // A learner still catching up: wait for it.
        return None;
    }
    if voters < want {
        if let Some(pod) = observed
            .replica_pods
            .iter()
            .filter(|p| p.ready && p.id <= u64::from(want) && !members.contains_key(&p.id))
            .min_by_key(|p| p.id)
        {
            return Some(Action::AddLearner {
                id: pod.id,
                peer_address: pod.peer_address.clone(),
            });
        }
        return None;
    }
    // Shrinking: members beyond the wanted ids leave Raft, highest first,
    // before the StatefulSet lets their pods go.
    if let Some(m) = observed
        .members
        .iter()
        .filter(|m| m.id > u64::from(want))
        .max_by_key(|m| m.id)
    {
        return Some(Action::RemoveMember { id: m.id });
    }
    if observed.statefulset_replicas > want {
        return Some(Action::ScaleControlPlane {
            from: observed.statefulset_replicas,
            to: want,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fjord(id: &str, state: FjordNodeState, reserved: u32, load: u32) -> FjordNode {
        FjordNode {
            id: id.into(),
            state,
            capacity: 500,
            reserved_next_hour: reserved,
            load_participants: load,
        }
    }

    fn pod(name: &str, node_id: &str, machine: &str, index: u64) -> MediaPod {
        MediaPod {
            name: name.into(),
            pool: "nordic".into(),
            node_id: node_id.into(),
            kube_node: Some(machine.into()),
            terminating: false,
            index,
        }
    }

    fn pool(min: u32, max: u32) -> PoolSpec {
        PoolSpec {
            name: "nordic".into(),
            min_replicas: min,
            max_replicas: max,
            node_capacity: 500,
            headroom_pct: 20,
        }
    }

    /// Three nodes of the nordic pool on machines m0..m2 with these
    /// reservations.
    fn three(reserved: [u32; 3]) -> Observed {
        Observed {
            kube_nodes: (0..3)
                .map(|i| KubeNode {
                    name: format!("m{i}"),
                    cordoned: false,
                })
                .collect(),
            media_pods: (0..3)
                .map(|i| {
                    pod(
                        &format!("media-{i}"),
                        &format!("nordic-{i}"),
                        &format!("m{i}"),
                        i as u64,
                    )
                })
                .collect(),
            fjord_nodes: (0..3)
                .map(|i| {
                    fjord(
                        &format!("nordic-{i}"),
                        FjordNodeState::Ready,
                        reserved[i],
                        reserved[i] / 2,
                    )
                })
                .collect(),
            pools: vec![PoolObserved {
                name: "nordic".into(),
                replicas: 3,
                removal: Removal::DeletionCost,
            }],
            ..Default::default()
        }
    }

    fn desired(min: u32, max: u32) -> Desired {
        Desired {
            pools: vec![pool(min, max)],
            voters: 0,
        }
    }

    #[test]
    fn a_cordoned_machine_has_its_ready_media_nodes_drained_with_evacuation() {
        let mut o = three([300, 300, 300]);
        o.kube_nodes[1].cordoned = true;
        let a = decide(&o, &desired(3, 6));
        assert_eq!(
            a,
            vec![Action::DrainNode {
                node_id: "nordic-1".into(),
                reason: DrainReason::Cordoned
            }]
        );
        // Already draining: nothing more to do.
        o.fjord_nodes[1].state = FjordNodeState::Draining;
        assert_eq!(decide(&o, &desired(3, 6)), vec![]);
    }

    #[test]
    fn the_pool_grows_when_the_coming_hours_reservations_near_its_capacity() {
        // 3 x 500 with 20 % head-room carries 1,200: at 1,150 it stays.
        assert_eq!(decide(&three([400, 400, 350]), &desired(2, 6)), vec![]);
        // 1,300 reserved needs ceil(1300 / 400) = 4 nodes.
        assert_eq!(
            decide(&three([450, 450, 400]), &desired(2, 6)),
            vec![Action::ScalePool {
                pool: "nordic".into(),
                from: 3,
                to: 4
            }]
        );
        // Never past the maximum.
        assert_eq!(decide(&three([500, 500, 500]), &desired(2, 3)), vec![]);
    }

    #[test]
    fn scale_in_drains_the_emptiest_node_and_marks_its_pod_to_go_first() {
        // 500 reserved needs 2 nodes; nordic-2 is the emptiest.
        let o = three([300, 190, 10]);
        assert_eq!(
            decide(&o, &desired(1, 6)),
            vec![
                Action::DrainNode {
                    node_id: "nordic-2".into(),
                    reason: DrainReason::ScaleIn
                },
                Action::SetDeletionCost {
                    pod: "media-2".into(),
                    cost: SCALE_IN_DELETION_COST
                },
                Action::ScalePool {
                    pool: "nordic".into(),
                    from: 3,
                    to: 2
                },
            ]
        );
        // Ties on reservations go to the fewer participants.
        let mut o = three([0, 0, 0]);
        o.fjord_nodes[0].load_participants = 5;
        o.fjord_nodes[1].load_participants = 0;
        o.fjord_nodes[2].load_participants = 3;
        let a = decide(&o, &desired(1, 6));
        assert!(
            matches!(&a[0], Action::DrainNode { node_id, .. } if node_id == "nordic-1"),
            "{a:?}"
        );
    }

    #[test]
    fn a_statefulset_pool_drains_the_ordinal_it_will_remove() {
        // The emptiest is nordic-0, but a StatefulSet removes nordic-2.
        let mut o = three([10, 190, 300]);
        o.pools[0].removal = Removal::HighestOrdinal;
        assert_eq!(
            decide(&o, &desired(1, 6)),
            vec![
                Action::DrainNode {
                    node_id: "nordic-2".into(),
                    reason: DrainReason::ScaleIn
                },
                Action::ScalePool {
                    pool: "nordic".into(),
                    from: 3,
                    to: 2
                },
            ]
        );
    }

    #[test]
    fn a_pool_never_goes_below_its_minimum() {
        // Empty, but the minimum is 3.
        assert_eq!(decide(&three([0, 0, 0]), &desired(3, 6)), vec![]);
        // Below the minimum (someone scaled it down by hand): back up.
        let mut o = three([0, 0, 0]);
        o.pools[0].replicas = 1;
        assert_eq!(
            decide(&o, &desired(3, 6)),
            vec![Action::ScalePool {
                pool: "nordic".into(),
                from: 1,
                to: 3
            }]
        );
    }

    fn replicas(n: u64, members: &[(u64, bool, bool)], sts: u32) -> Observed {
        Observed {
            replica_pods: (1..=n)
                .map(|id| ReplicaPod {
                    id,
                    ready: true,
                    peer_address: format!("cp-{}:7111", id - 1),
                })
                .collect(),
            members: members
                .iter()
                .map(|(id, voter, caught_up)| Member {
                    id: *id,
                    voter: *voter,
                    caught_up: *caught_up,
                })
                .collect(),
            statefulset_replicas: sts,
            ..Default::default()
        }
    }

    fn voters(n: u32) -> Desired {
        Desired {
            pools: vec![],
            voters: n,
        }
    }

    #[test]
    fn growing_to_five_voters_goes_pod_then_learner_then_voter_one_at_a_time() {
        let v = |id| (id, true, true);
        // 3 voters, the StatefulSet at 3: grow it first.
        let o = replicas(3, &[v(1), v(2), v(3)], 3);
        assert_eq!(
            decide(&o, &voters(5)),
            vec![Action::ScaleControlPlane { from: 3, to: 5 }]
        );
        // Pods 4 and 5 up: 4 joins as a learner (the lower id first).
        let o = replicas(5, &[v(1), v(2), v(3)], 5);
        assert_eq!(
            decide(&o, &voters(5)),
            vec![Action::AddLearner {
                id: 4,
                peer_address: "cp-3:7111".into()
            }]
        );
        // A learner still catching up: wait (no second change in flight).
        let o = replicas(5, &[v(1), v(2), v(3), (4, false, false)], 5);
        assert_eq!(decide(&o, &voters(5)), vec![]);
        // Caught up: promoted before 5 is added.
        let o = replicas(5, &[v(1), v(2), v(3), (4, false, true)], 5);
        assert_eq!(decide(&o, &voters(5)), vec![Action::PromoteVoter { id: 4 }]);
        let o = replicas(5, &[v(1), v(2), v(3), v(4)], 5);
        assert_eq!(
            decide(&o, &voters(5)),
            vec![Action::AddLearner {
                id: 5,
                peer_address: "cp-4:7111".into()
            }]
        );
        let o = replicas(5, &[v(1), v(2), v(3), v(4), v(5)], 5);
        assert_eq!(decide(&o, &voters(5)), vec![]);
    }

    #[test]
    fn shrinking_to_three_removes_members_from_raft_before_their_pods() {
        let v = |id| (id, true, true);
        let o = replicas(5, &[v(1), v(2), v(3), v(4), v(5)], 5);
        assert_eq!(decide(&o, &voters(3)), vec![Action::RemoveMember { id: 5 }]);
        let o = replicas(5, &[v(1), v(2), v(3), v(4)], 5);
        assert_eq!(decide(&o, &voters(3)), vec![Action::RemoveMember { id: 4 }]);
        // Only when neither is a member does the StatefulSet shrink.
        let o = replicas(5, &[v(1), v(2), v(3)], 5);
        assert_eq!(
            decide(&o, &voters(3)),
            vec![Action::ScaleControlPlane { from: 5, to: 3 }]
        );
        let o = replicas(3, &[v(1), v(2), v(3)], 3);
        assert_eq!(decide(&o, &voters(3)), vec![]);
    }
}
