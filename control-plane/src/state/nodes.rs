//! Media nodes: registration, heartbeats, draining and lease expiry, and
//! what each of them sets off among the meetings.

use super::*;

impl ClusterState {
    pub fn node_view(&self, id: &str, now_ms: u64) -> NodeView {
        let n = &self.nodes[id];
        NodeView {
            id: n.id.clone(),
            region: n.region.clone(),
            address: n.address.clone(),
            capacity: n.capacity,
            state: n.state,
            last_heartbeat_ms: n.last_heartbeat_ms,
            load_participants: n.load_participants,
            reserved_now: n.reserved_at(now_ms),
            reserved_next_hour: n
                .reservations
                .peak(now_ms, now_ms.saturating_add(3_600_000)),
            meetings: n.reservations.len() as u32,
            registered_at_ms: n.registered_at_ms,
            index: n.index,
        }
    }

    pub(super) fn register_node(
        &mut self,
        RegisterNode {
            id,
            region,
            address,
            capacity,
            certificate,
            boot,
        }: &RegisterNode,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let capacity = *capacity;
        if !self.institutions.regions.contains_key(region) {
            return Err(StateError::UnknownRegion {
                name: region.to_string(),
            });
        }
        let mut came_up = true;
        if self.nodes.contains_key(id) {
            let node = self.nodes.get(id).expect("present");
            if &node.region != region && !node.reservations.is_empty() {
                return Err(StateError::NodeRegionChange {
                    id: id.to_string(),
                    from: node.region.clone(),
                    to: region.to_string(),
                });
            }
            let peak = node.reservations.peak_all();
            if capacity < peak {
                return Err(StateError::CapacityBelowReservations {
                    id: id.to_string(),
                    capacity,
                    reserved: peak,
                });
            }
            came_up = node.state == NodeState::Down;
            let last_heartbeat_ms = node.last_heartbeat_ms;
            // A new process: what the last one left open ended with it.
            self.usage_node_boot(id, *boot, last_heartbeat_ms);
            let mut node = self.nodes.get_mut(id).expect("present");
            if node.index == 0 && self.last_node_index < MAX_NODE_INDEX {
                // Registered before nodes had indexes.
                self.last_node_index += 1;
                node.index = self.last_node_index;
            }
            node.region = region.to_string();
            node.address = address.to_string();
            node.capacity = capacity;
            node.certificate = certificate.to_vec();
            node.last_heartbeat_ms = req.now_ms;
            let was_down = node.state == NodeState::Down;
            if was_down {
                node.state = NodeState::Ready;
            }
            drop(node);
            if was_down {
                self.sla_node_up(id, req.now_ms);
            }
        } else {
            if self.last_node_index >= MAX_NODE_INDEX {
                return Err(StateError::TooManyNodes {
                    max: MAX_NODE_INDEX,
                });
            }
            self.last_node_index += 1;
            self.nodes.insert(Node {
                index: self.last_node_index,
                id: id.to_string(),
                region: region.to_string(),
                address: address.to_string(),
                capacity,
                state: NodeState::Ready,
                last_heartbeat_ms: req.now_ms,
                load_participants: 0,
                registered_at_ms: req.now_ms,
                certificate: certificate.to_vec(),
                reservations: Reservations::default(),
            });
            self.usage_node_boot(id, *boot, req.now_ms);
        }
        if came_up {
            self.retry_unplaced(req, rng);
        }
        Ok(Output::Node(self.node_view(id, req.now_ms)))
    }

    pub(super) fn heartbeat(
        &mut self,
        Heartbeat {
            id,
            participants,
            seen_ms,
            sent_ms,
        }: &Heartbeat,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let id = id.as_str();
        let came_back = {
            let mut node = self
                .nodes
                .get_mut(id)
                .ok_or_else(|| StateError::UnknownNode { id: id.to_string() })?;
            if let Some(seen) = seen_ms {
                // A broken stream's last word: when the node was last
                // heard. It is evidence of the past, not of life now.
                if node.state != NodeState::Down {
                    node.last_heartbeat_ms = node.last_heartbeat_ms.max((*seen).min(req.now_ms));
                }
                drop(node);
                return Ok(Output::Node(self.node_view(id, req.now_ms)));
            }
            let beat_ms = sent_ms.map_or(req.now_ms, |sent| sent.min(req.now_ms));
            node.last_heartbeat_ms = node.last_heartbeat_ms.max(beat_ms);
            node.load_participants = *participants;
            // Its meetings already moved; it comes back empty and ready.
            let came_back = node.state == NodeState::Down;
            if came_back {
                node.state = NodeState::Ready;
            }
            came_back
        };
        if came_back {
            self.metadata.mark(MetaKey::Node { id: id.to_string() });
        }
        if came_back {
            self.retry_unplaced(req, rng);
        }
        Ok(Output::Node(self.node_view(id, req.now_ms)))
    }

    pub(super) fn set_node_draining(
        &mut self,
        SetNodeDraining {
            id,
            draining,
            evacuate,
        }: &SetNodeDraining,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let was_down = {
            let mut node = self
                .nodes
                .get_mut(id)
                .ok_or_else(|| StateError::UnknownNode { id: id.clone() })?;
            let was_down = node.state == NodeState::Down;
            node.state = match (*draining, node.state) {
                (true, NodeState::Down) => NodeState::Down,
                (true, _) => NodeState::Draining,
                (false, NodeState::Draining) => NodeState::Ready,
                (false, s) => s,
            };
            was_down
        };
        self.metadata.mark(MetaKey::Node { id: id.clone() });
        if !*draining && !was_down {
            self.retry_unplaced(req, rng);
        }
        if *draining && *evacuate {
            return Ok(self.evacuate(id, req, rng));
        }
        Ok(Output::Node(self.node_view(id, req.now_ms)))
    }

    pub(super) fn expire_leases(
        &mut self,
        lease_ms: u64,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Output {
        let expired: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Down)
            .filter(|n| req.now_ms.saturating_sub(n.last_heartbeat_ms) >= lease_ms)
            .map(|n| n.id.clone())
            .collect();
        // Mark every expired node down before re-placing anything, so no
        // orphan lands on a node that is about to be declared down too.
        let mut orphans: Vec<(u64, String)> = Vec::new();
        for id in &expired {
            self.metadata.mark(MetaKey::Node { id: id.clone() });
            let mut node = self.nodes.get_mut(id).expect("listed above");
            node.state = NodeState::Down;
            node.load_participants = 0;
            let meetings: Vec<u64> = node.reservations.keys().copied().collect();
            orphans.extend(meetings.iter().map(|m| (*m, id.clone())));
            let last_heartbeat_ms = node.last_heartbeat_ms;
            drop(node);
            // Its participants' sessions end at its last sign of life.
            self.usage_node_down(id, last_heartbeat_ms);
            // Institutions it carried meetings for hear of it.
            self.sla_node_down(id, &meetings, req.now_ms);
        }
        orphans.sort();
        let mut replaced = Vec::new();
        for (meeting_id, node) in orphans {
            let trigger = Trigger::NodeDown { node: node.clone() };
            if self.replace_share(meeting_id, &node, trigger, req, rng) {
                replaced.push(meeting_id);
            }
        }
        Output::NodesDown {
            nodes: expired,
            replaced,
        }
    }
}
