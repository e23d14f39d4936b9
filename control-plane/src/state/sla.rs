//! The SLA sub-state: SLI series, the alert book, the maintenance calendar
//! and the notification outbox ([`crate::sla`] holds the logic). Events
//! come from the usage ledger (quality minutes, join attempts), from
//! replicas (joins the control plane failed) and from the leader's probes;
//! the leader's evaluate tick turns burn rates into alerts, and alerts,
//! node failures and announced maintenance into notifications.

use super::*;
use crate::sla::notify::{self, Attempt, NoticeKind, Outbox};
use crate::sla::{InstitutionScope, Maintenance, Objectives, SlaBook, Sli, SliEvent};

/// Most SLI events one command may carry.
pub const MAX_SLI_EVENTS_PER_COMMAND: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaState {
    pub book: SlaBook,
    pub outbox: Outbox,
    /// Fault notices sent and not yet resolved: node -> (when it failed,
    /// institutions told).
    pub open_faults: BTreeMap<String, (u64, Vec<String>)>,
}

impl ClusterState {
    /// Every institution as SLO evaluation sees it.
    pub fn sla_scopes(&self) -> Vec<InstitutionScope> {
        self.institutions
            .values()
            .map(|i| self.scope_of(i))
            .collect()
    }

    pub fn sla_scope(&self, institution: &str) -> Option<InstitutionScope> {
        self.institutions.get(institution).map(|i| self.scope_of(i))
    }

    fn scope_of(&self, i: &Institution) -> InstitutionScope {
        InstitutionScope {
            name: i.name.clone(),
            regions: self.allowed_regions(&i.residency).into_iter().collect(),
            objectives: self.sla.book.objectives_for(&i.name),
        }
    }

    /// The institution's technical contact point (empty without a licence).
    fn technical_contact(&self, institution: &str, now_ms: u64) -> String {
        self.licences
            .get(institution)
            .and_then(|l| l.shown(crate::licensing::service_date(now_ms)))
            .map(|v| v.terms.technical_contact.clone())
            .unwrap_or_default()
    }

    fn notify(
        &mut self,
        now_ms: u64,
        institution: &str,
        kind: NoticeKind,
        alert: &notify::WebhookAlert,
    ) -> u64 {
        let contact = self.technical_contact(institution, now_ms);
        self.sla
            .outbox
            .push(now_ms, institution, &contact, kind, alert, "")
    }

    /// Node counts per region, for region states.
    fn region_nodes(&self, regions: &[String]) -> Vec<crate::sla::report::RegionNodes> {
        regions
            .iter()
            .map(|r| {
                let mut n = crate::sla::report::RegionNodes {
                    region: r.clone(),
                    ..Default::default()
                };
                for node in self.nodes.values().filter(|x| &x.region == r) {
                    match node.state {
                        NodeState::Ready => n.ready += 1,
                        NodeState::Draining => n.draining += 1,
                        NodeState::Down => n.down += 1,
                    }
                }
                n
            })
            .collect()
    }

    /// Reports for one institution, or all sorted by budget left (least
    /// first).
    pub(super) fn sla_reports(
        &self,
        institution: Option<&str>,
        now_ms: u64,
    ) -> Result<Vec<crate::sla::report::InstitutionReport>, StateError> {
        let scopes = match institution {
            Some(name) => {
                vec![self
                    .sla_scope(name)
                    .ok_or_else(|| StateError::UnknownInstitution {
                        name: name.to_string(),
                    })?]
            }
            None => self.sla_scopes(),
        };
        let mut reports: Vec<_> = scopes
            .iter()
            .map(|scope| {
                let regions = self.region_nodes(&scope.regions);
                crate::sla::report::institution_report(&self.sla.book, scope, &regions, now_ms)
            })
            .collect();
        reports.sort_by_key(|r| (r.least_budget_left_ppm(), r.institution.clone()));
        Ok(reports)
    }

    /// One calendar month (Europe/Oslo) of an institution's SLO figures.
    pub(super) fn sla_monthly(
        &self,
        institution: &str,
        month: jiff::civil::Date,
    ) -> Result<Vec<crate::sla::report::MonthlyLine>, StateError> {
        let scope = self
            .sla_scope(institution)
            .ok_or_else(|| StateError::UnknownInstitution {
                name: institution.to_string(),
            })?;
        let first = month.first_of_month();
        let next = first
            .last_of_month()
            .tomorrow()
            .map_err(|_| StateError::BadPeriod)?;
        let from = crate::licensing::calendar::start_of_service_date(first);
        let to = crate::licensing::calendar::start_of_service_date(next);
        let name = format!("{:04}-{:02}", first.year(), first.month());
        Ok(crate::sla::report::monthly(
            &self.sla.book,
            &scope,
            &name,
            from,
            to,
        ))
    }

    pub(super) fn record_sli(&mut self, c: &RecordSli) -> Response {
        if c.events.len() > MAX_SLI_EVENTS_PER_COMMAND {
            return Err(StateError::TooManyEvents {
                max: MAX_SLI_EVENTS_PER_COMMAND as u32,
            });
        }
        for e in &c.events {
            self.sla.book.record(e);
        }
        Ok(Output::SliRecorded {
            events: c.events.len() as u32,
        })
    }

    /// The SLI side of a node's usage event: quality minutes and join
    /// attempts of a known meeting count for its institution.
    pub(super) fn sla_usage_event(&mut self, node: &str, e: &UsageEvent) {
        let Some(institution) = self
            .meetings
            .by_id
            .get(&e.meeting)
            .map(|m| m.institution.clone())
        else {
            return;
        };
        let Some(region) = self.nodes.get(node).map(|n| n.region.clone()) else {
            return;
        };
        let event = |sli, total: u64, bad: u64| SliEvent {
            at_ms: e.at_ms,
            institution: Some(institution.clone()),
            region: region.clone(),
            node: Some(node.to_string()),
            sli,
            total,
            bad,
        };
        match e.kind {
            UsageEventKind::Quality => {
                let total = u64::from(e.minutes);
                let good = u64::from(e.good_minutes.min(e.minutes));
                self.sla
                    .book
                    .record(&event(Sli::MediaQuality, total, total - good));
            }
            UsageEventKind::JoinAttempt => {
                self.sla
                    .book
                    .record(&event(Sli::JoinSuccess, 1, u64::from(!e.join_ok)));
                if e.join_ok {
                    let slow = u64::from(e.join_latency_ms)
                        > self.sla.book.config.join_latency_threshold_ms;
                    self.sla
                        .book
                        .record(&event(Sli::JoinLatency, 1, u64::from(slow)));
                }
            }
            UsageEventKind::Joined | UsageEventKind::Left => {}
        }
    }

    /// A node was declared down: every institution with meetings on it
    /// gets a fault notice (once per failure).
    pub(super) fn sla_node_down(&mut self, node: &str, meetings: &[u64], now_ms: u64) {
        let Some(region) = self.nodes.get(node).map(|n| n.region.clone()) else {
            return;
        };
        let mut per_institution: BTreeMap<String, usize> = BTreeMap::new();
        for id in meetings {
            if let Some(m) = self.meetings.by_id.get(id) {
                if m.state != MeetingState::Ended {
                    *per_institution.entry(m.institution.clone()).or_default() += 1;
                }
            }
        }
        if per_institution.is_empty() || self.sla.open_faults.contains_key(node) {
            return;
        }
        // Planned work on the node (or its region): its contact points were
        // told ahead; a node stopped for it is no fault.
        if self
            .sla
            .book
            .maintenance
            .covers(&region, Some(node), now_ms)
        {
            return;
        }
        for (institution, count) in &per_institution {
            let alert = notify::node_fault(institution, node, &region, *count, now_ms, None);
            self.notify(now_ms, institution, NoticeKind::Fault, &alert);
        }
        self.sla.open_faults.insert(
            node.to_string(),
            (now_ms, per_institution.into_keys().collect()),
        );
    }

    /// A node that failed is back: those told of the failure hear so.
    pub(super) fn sla_node_up(&mut self, node: &str, now_ms: u64) {
        let Some((since, institutions)) = self.sla.open_faults.remove(node) else {
            return;
        };
        let region = self
            .nodes
            .get(node)
            .map(|n| n.region.clone())
            .unwrap_or_default();
        for institution in institutions {
            let alert = notify::node_fault(&institution, node, &region, 0, since, Some(now_ms));
            self.notify(now_ms, &institution, NoticeKind::Fault, &alert);
        }
    }

    /// Institutions whose meetings a region may carry.
    fn institutions_served_in(&self, region: &str) -> Vec<String> {
        self.institutions
            .values()
            .filter(|i| self.allowed_regions(&i.residency).contains(region))
            .map(|i| i.name.clone())
            .collect()
    }

    pub(super) fn announce_maintenance(
        &mut self,
        c: &AnnounceMaintenance,
        now_ms: u64,
    ) -> Response {
        if !self.institutions.regions.contains_key(&c.region) {
            return Err(StateError::UnknownRegion {
                name: c.region.clone(),
            });
        }
        if let Some(node) = &c.node {
            match self.nodes.get(node) {
                None => return Err(StateError::UnknownNode { id: node.clone() }),
                Some(n) if n.region != c.region => {
                    return Err(StateError::NodeNotInRegion {
                        id: node.clone(),
                        region: c.region.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        let m = self
            .sla
            .book
            .maintenance
            .announce(
                now_ms,
                c.region.clone(),
                c.node.clone(),
                c.from_ms,
                c.to_ms,
                c.reason.clone(),
            )
            .map_err(|e| StateError::BadMaintenance {
                reason: e.to_string(),
            })?;
        let affected = self.institutions_served_in(&c.region);
        for institution in &affected {
            let alert = notify::maintenance_notice(institution, &m);
            self.notify(now_ms, institution, NoticeKind::Maintenance, &alert);
        }
        Ok(Output::MaintenanceAnnounced {
            maintenance: Box::new(m),
            notified: affected,
        })
    }

    /// The leader's tick: maintenance windows that start or end, then
    /// burn rates, alerts and their notifications.
    pub(super) fn evaluate_sla(&mut self, req: &Request, rng: &mut SplitMix64) -> Response {
        let now = req.now_ms;
        let starting: Vec<Maintenance> = self
            .sla
            .book
            .maintenance
            .due_to_start(now)
            .cloned()
            .collect();
        let mut drained = Vec::new();
        for m in &starting {
            let mut drained_node = false;
            if let Some(node) = &m.node {
                let ready = self
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.state == NodeState::Ready);
                if ready {
                    let drain = SetNodeDraining {
                        id: node.clone(),
                        draining: true,
                        evacuate: true,
                    };
                    drained_node = self.set_node_draining(&drain, req, rng).is_ok();
                    if drained_node {
                        drained.push(node.clone());
                    }
                }
            }
            self.sla.book.maintenance.mark_started(m.id, drained_node);
        }
        let ending: Vec<Maintenance> = self.sla.book.maintenance.due_to_end(now).cloned().collect();
        for m in &ending {
            if let (true, Some(node)) = (m.drained_node, &m.node) {
                let draining = self
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.state == NodeState::Draining);
                if draining {
                    let undrain = SetNodeDraining {
                        id: node.clone(),
                        draining: false,
                        evacuate: false,
                    };
                    let _ = self.set_node_draining(&undrain, req, rng);
                }
            }
            self.sla.book.maintenance.mark_ended(m.id);
        }
        let scopes = self.sla_scopes();
        let changes = self.sla.book.evaluate(&scopes, now);
        let (mut fired, mut resolved) = (0u32, 0u32);
        for change in &changes {
            let cfg = self.sla.book.config.clone();
            let alert = match change {
                crate::sla::AlertChange::Fired {
                    key,
                    at_ms,
                    windows,
                } => {
                    fired += 1;
                    notify::slo_alert(key, &cfg, windows, *at_ms, None)
                }
                crate::sla::AlertChange::Resolved {
                    key,
                    started_ms,
                    at_ms,
                } => {
                    resolved += 1;
                    notify::slo_alert(key, &cfg, &[], *started_ms, Some(*at_ms))
                }
            };
            self.notify(now, &change.key().institution, NoticeKind::Alert, &alert);
        }
        Ok(Output::SlaEvaluated {
            fired,
            resolved,
            maintenance_started: starting.iter().map(|m| m.id).collect(),
            drained,
        })
    }

    pub(super) fn record_delivery(&mut self, c: &RecordDelivery) -> Response {
        let recorded = self.sla.outbox.record_attempt(
            c.id,
            Attempt {
                at_ms: c.at_ms,
                ok: c.ok,
                outcome: c.outcome.chars().take(200).collect(),
            },
        );
        Ok(Output::DeliveryRecorded { recorded })
    }

    pub(super) fn set_objectives(&mut self, c: &SetObjectives) -> Response {
        if !self.institutions.contains_key(&c.institution) {
            return Err(StateError::UnknownInstitution {
                name: c.institution.clone(),
            });
        }
        match c.objectives {
            Some(o) => {
                o.validate().map_err(|e| StateError::BadObjective {
                    reason: e.to_string(),
                })?;
                self.sla.book.objectives.insert(c.institution.clone(), o);
            }
            None => {
                self.sla.book.objectives.remove(&c.institution);
            }
        }
        Ok(Output::ObjectivesSet {
            institution: c.institution.clone(),
            objectives: self.sla.book.objectives_for(&c.institution),
        })
    }
}

/// Records SLI events observed outside the usage ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSli {
    pub events: Vec<SliEvent>,
}

/// The leader's SLA tick (time comes from the request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluateSla {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceMaintenance {
    pub region: String,
    pub node: Option<String>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub reason: String,
}

/// The outcome of one webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDelivery {
    pub id: u64,
    pub at_ms: u64,
    pub ok: bool,
    pub outcome: String,
}

/// An institution's own objectives (`None`: back to the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetObjectives {
    pub institution: String,
    pub objectives: Option<Objectives>,
}
