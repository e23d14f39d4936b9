//! The invariants the rest of the system relies on, checked by tests after
//! every command.

use super::*;

impl ClusterState {
    /// Checks the invariants the rest of the system relies on. Used by tests;
    /// cheap enough to run after every command there.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.nodes.check_rows()?;
        for m in self.meetings.by_id.values() {
            let inst = self
                .institutions
                .get(&m.institution)
                .ok_or_else(|| format!("meeting {} of unknown institution", m.id))?;
            let allowed = self.allowed_regions(&inst.residency);
            match (m.state, m.shares.is_empty()) {
                (MeetingState::Placed, false) => {}
                (MeetingState::Placed, true) => {
                    return Err(format!("placed meeting {} has no node", m.id))
                }
                (_, false) => return Err(format!("meeting {} not placed but has a node", m.id)),
                _ => {}
            }
            let mut seen = BTreeSet::new();
            let mut total = 0u32;
            for share in &m.shares {
                let node = self
                    .nodes
                    .get(&share.node)
                    .ok_or_else(|| format!("meeting {} on unknown node {}", m.id, share.node))?;
                if !allowed.contains(&node.region) {
                    return Err(format!(
                        "meeting {} of {} (residency {}) placed on {} in {}",
                        m.id, inst.name, inst.residency, node.id, node.region
                    ));
                }
                if !node.reservations.contains_key(&m.id) {
                    return Err(format!(
                        "meeting {} has no reservation on {}",
                        m.id, node.id
                    ));
                }
                if !seen.insert(&share.node) || share.participants == 0 {
                    return Err(format!("meeting {} has a bad share {share:?}", m.id));
                }
                total += share.participants;
            }
            if total > m.participants {
                return Err(format!(
                    "meeting {} shares hold {total} of {} participants",
                    m.id, m.participants
                ));
            }
            let short = m.state == MeetingState::Placed && total < m.participants;
            if short != self.meetings.short.contains(&m.id) {
                return Err(format!(
                    "meeting {} holds {total} of {} seats but short={}",
                    m.id,
                    m.participants,
                    self.meetings.short.contains(&m.id)
                ));
            }
            for d in &m.decisions {
                for region in d.chosen_regions() {
                    if !allowed.contains(region) {
                        return Err(format!(
                            "decision for {} chose {:?} in {region}",
                            m.id,
                            d.chosen()
                        ));
                    }
                }
            }
        }
        for node in self.nodes.values() {
            for (id, r) in &node.reservations {
                let m = self
                    .meetings
                    .get(id)
                    .ok_or_else(|| format!("{} reserves for missing meeting {id}", node.id))?;
                if m.share_on(&node.id).map(|s| s.participants) != Some(r.participants) {
                    return Err(format!("{} holds a stale reservation for {id}", node.id));
                }
            }
            let peak = node.peak_reserved(0, u64::MAX);
            if peak > node.capacity {
                return Err(format!(
                    "{} reserved {peak} participants at once, capacity {}",
                    node.id, node.capacity
                ));
            }
        }
        self.check_ledger()?;
        self.check_licences()
    }

    /// Every `joined` event the ledger took in is one session, open or
    /// closed, and none is beyond what it acknowledged.
    fn check_ledger(&self) -> Result<(), String> {
        let mut joins = BTreeSet::new();
        let open = self.ledger.open.iter().flat_map(|(node, meetings)| {
            meetings
                .values()
                .flat_map(|p| p.values())
                .map(move |o| (node.as_str(), o.join_seq))
        });
        let closed = self
            .ledger
            .sessions
            .iter()
            .map(|s| (s.node.as_str(), s.join_seq));
        for (node, seq) in open.chain(closed) {
            if !joins.insert((node, seq)) {
                return Err(format!("{node}'s usage event {seq} counted twice"));
            }
            if seq > self.ledger.acked_seq(node) {
                return Err(format!(
                    "{node}'s usage event {seq} counted beyond its acknowledged {}",
                    self.ledger.acked_seq(node)
                ));
            }
        }
        Ok(())
    }

    /// Licence versions are numbered 1, 2, ... in recording order, for
    /// known institutions.
    fn check_licences(&self) -> Result<(), String> {
        for (name, licence) in &self.licences.by_institution {
            if self.institutions.get(name).is_none() {
                return Err(format!("licence of unknown institution {name}"));
            }
            for (i, v) in licence.history.iter().enumerate() {
                if v.version as usize != i + 1 {
                    return Err(format!(
                        "{name}'s licence version {} recorded as number {}",
                        v.version,
                        i + 1
                    ));
                }
            }
        }
        Ok(())
    }
}
