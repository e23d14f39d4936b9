//! Every media node, in id order, with a dense summary row per node that
//! placement scans.
//!
//! A decision looks at every node, so what it reads per node must be small
//! and contiguous: a row holds the node's region as a small interned number,
//! its state, capacity, reported load and the most it ever has reserved at
//! once (an O(1) upper bound on any window's peak). The full [`Node`] is
//! read only for the few nodes a decision lists or must check exactly.
//!
//! Rows follow the nodes through every change: [`NodeTable::get_mut`]
//! hands out a guard that refreshes the node's row when dropped, so no
//! caller can change a node and forget its summary. Only the nodes are
//! serialised (as a map by id, the form earlier versions wrote); rows and
//! interned regions are rebuilt on load, and equality compares the nodes.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Node, NodeState};

/// What placement reads of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRow {
    /// Interned region (see [`NodeTable::region_id`]).
    pub region: u16,
    pub state: NodeState,
    pub capacity: u32,
    pub load_participants: u32,
    /// The most participants reserved at any one instant.
    pub peak_reserved_ever: u32,
}

impl NodeRow {
    fn of(node: &Node, region: u16) -> NodeRow {
        NodeRow {
            region,
            state: node.state,
            capacity: node.capacity,
            load_participants: node.load_participants,
            peak_reserved_ever: node.reservations.peak_all(),
        }
    }
}

/// A set of interned regions, one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMask(Vec<u64>);

impl RegionMask {
    pub fn insert(&mut self, region: u16) {
        let (word, bit) = (usize::from(region) / 64, region % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    pub fn contains(&self, region: u16) -> bool {
        let (word, bit) = (usize::from(region) / 64, region % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    nodes: Vec<Node>,
    rows: Vec<NodeRow>,
    /// Region names by interned number, and the reverse. Append-only: a
    /// number, once given, stays with its name for the table's life.
    region_names: Vec<String>,
    region_ids: BTreeMap<String, u16>,
}

impl NodeTable {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Position of node `id` in id order.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.as_str().cmp(id)).ok()
    }

    pub fn get(&self, id: &str) -> Option<&Node> {
        self.position(id).map(|i| &self.nodes[i])
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// The node for changing; its row is refreshed when the guard drops.
    pub fn get_mut(&mut self, id: &str) -> Option<NodeMut<'_>> {
        let i = self.position(id)?;
        Some(NodeMut { table: self, i })
    }

    /// Adds or replaces the node with `node.id`; returns the one replaced.
    pub fn insert(&mut self, node: Node) -> Option<Node> {
        match self
            .nodes
            .binary_search_by(|n| n.id.as_str().cmp(node.id.as_str()))
        {
            Ok(i) => {
                let old = std::mem::replace(&mut self.nodes[i], node);
                self.refresh(i);
                Some(old)
            }
            Err(i) => {
                let region = self.intern(&node.region);
                self.rows.insert(i, NodeRow::of(&node, region));
                self.nodes.insert(i, node);
                None
            }
        }
    }

    /// Nodes in id order.
    pub fn values(&self) -> std::slice::Iter<'_, Node> {
        self.nodes.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.nodes.iter().map(|n| n.id.as_str())
    }

    /// The node at `position` (id order).
    pub fn at(&self, position: usize) -> &Node {
        &self.nodes[position]
    }

    /// Summary rows, in the same order as the nodes.
    pub fn rows(&self) -> &[NodeRow] {
        &self.rows
    }

    /// The interned number of `region`, if any node ever lived there.
    pub fn region_id(&self, region: &str) -> Option<u16> {
        self.region_ids.get(region).copied()
    }

    /// The interned regions among `regions`; regions no node lives in have
    /// no number and need none.
    pub fn region_mask<'a>(&self, regions: impl IntoIterator<Item = &'a String>) -> RegionMask {
        let mut mask = RegionMask::default();
        for r in regions {
            if let Some(id) = self.region_id(r) {
                mask.insert(id);
            }
        }
        mask
    }

    /// Whether every row still matches its node (tests run this after
    /// every command).
    pub fn check_rows(&self) -> Result<(), String> {
        for (node, row) in self.nodes.iter().zip(&self.rows) {
            let region = self
                .region_id(&node.region)
                .ok_or_else(|| format!("node {}: region {} not interned", node.id, node.region))?;
            if *row != NodeRow::of(node, region) {
                return Err(format!("node {}: summary row out of date", node.id));
            }
        }
        if self.nodes.len() != self.rows.len() {
            return Err("node table: rows and nodes differ in number".into());
        }
        if self.nodes.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err("node table: nodes out of id order".into());
        }
        Ok(())
    }

    fn intern(&mut self, region: &str) -> u16 {
        if let Some(id) = self.region_ids.get(region) {
            return *id;
        }
        // Region names are validated identifiers that operators create one
        // by one; 65,536 distinct ones is far beyond any deployment.
        let id = u16::try_from(self.region_names.len()).expect("fewer than 65,536 regions");
        self.region_names.push(region.to_string());
        self.region_ids.insert(region.to_string(), id);
        id
    }

    fn refresh(&mut self, i: usize) {
        let region = {
            let name = self.nodes[i].region.clone();
            self.intern(&name)
        };
        self.rows[i] = NodeRow::of(&self.nodes[i], region);
    }
}

/// A node being changed; refreshes the node's summary row when dropped.
pub struct NodeMut<'a> {
    table: &'a mut NodeTable,
    i: usize,
}

impl Deref for NodeMut<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.table.nodes[self.i]
    }
}

impl DerefMut for NodeMut<'_> {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.table.nodes[self.i]
    }
}

impl Drop for NodeMut<'_> {
    fn drop(&mut self) {
        debug_assert!(
            self.i == 0 || self.table.nodes[self.i - 1].id < self.table.nodes[self.i].id,
            "a node's id never changes"
        );
        self.table.refresh(self.i);
    }
}

impl<'a> std::ops::Index<&'a str> for NodeTable {
    type Output = Node;
    fn index(&self, id: &'a str) -> &Node {
        self.get(id).expect("node present")
    }
}

impl<'a> IntoIterator for &'a NodeTable {
    type Item = &'a Node;
    type IntoIter = std::slice::Iter<'a, Node>;
    fn into_iter(self) -> Self::IntoIter {
        self.nodes.iter()
    }
}

impl FromIterator<Node> for NodeTable {
    fn from_iter<I: IntoIterator<Item = Node>>(iter: I) -> Self {
        let mut table = NodeTable::default();
        for node in iter {
            table.insert(node);
        }
        table
    }
}

impl PartialEq for NodeTable {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl Eq for NodeTable {}

impl Serialize for NodeTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.nodes.iter().map(|n| (&n.id, n)))
    }
}

impl<'de> Deserialize<'de> for NodeTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Node>::deserialize(d)?
            .into_values()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reservation, Reservations};

    fn node(id: &str, region: &str) -> Node {
        Node {
            id: id.into(),
            region: region.into(),
            address: "127.0.0.1:7000".into(),
            capacity: 100,
            state: NodeState::Ready,
            last_heartbeat_ms: 0,
            load_participants: 0,
            registered_at_ms: 0,
            certificate: Vec::new(),
            index: 1,
            reservations: Reservations::default(),
        }
    }

    /// The rows a table would have if built afresh from its nodes.
    fn rebuilt(t: &NodeTable) -> Vec<NodeRow> {
        t.values()
            .map(|n| NodeRow::of(n, t.region_id(&n.region).unwrap()))
            .collect()
    }

    #[test]
    fn rows_follow_every_change_and_keep_id_order() {
        let mut t = NodeTable::default();
        for (id, region) in [("c", "eu"), ("a", "nordic"), ("b", "eu")] {
            assert!(t.insert(node(id, region)).is_none());
        }
        assert_eq!(t.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(t.rows(), rebuilt(&t).as_slice());

        {
            let mut b = t.get_mut("b").unwrap();
            b.state = NodeState::Draining;
            b.region = "oslo".into();
            b.load_participants = 7;
            b.reservations.insert(
                9,
                Reservation {
                    start_ms: 10,
                    end_ms: 20,
                    participants: 30,
                },
            );
        }
        let row = t.rows()[1];
        assert_eq!(row.state, NodeState::Draining);
        assert_eq!(row.load_participants, 7);
        assert_eq!(row.peak_reserved_ever, 30);
        assert_eq!(t.region_id("oslo"), Some(row.region));
        assert_eq!(t.rows(), rebuilt(&t).as_slice());

        let mut replaced = node("a", "eu");
        replaced.capacity = 5;
        assert_eq!(t.insert(replaced).unwrap().region, "nordic");
        assert_eq!(t.rows()[0].capacity, 5);
        assert_eq!(t.rows(), rebuilt(&t).as_slice());

        let mask = t.region_mask(&["eu".to_string(), "nowhere".to_string()]);
        assert!(mask.contains(t.region_id("eu").unwrap()));
        assert!(!mask.contains(t.region_id("oslo").unwrap()));
    }

    #[test]
    fn serialises_as_the_map_by_id_and_loads_back_equal() {
        let t: NodeTable = [node("b", "eu"), node("a", "nordic")].into_iter().collect();
        let as_map: BTreeMap<String, Node> =
            t.values().map(|n| (n.id.clone(), n.clone())).collect();
        let bytes = rmp_serde::to_vec_named(&t).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec_named(&as_map).unwrap());
        let back: NodeTable = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.rows(), rebuilt(&back).as_slice());
    }
}
