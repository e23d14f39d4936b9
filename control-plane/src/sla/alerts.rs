//! The alert book: which SLO alerts fire now and which fired recently.
//! It lives in the replicated state, so a new leader neither forgets a
//! firing alert nor announces it again: a change is produced exactly once,
//! by the evaluation that made it.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Severity, Sli};

/// Resolved alerts kept for dashboards and reports.
pub const ALERT_HISTORY_LIMIT: usize = 10_000;

/// One alert: an institution's SLO at one severity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    pub institution: String,
    pub sli: Sli,
    pub severity: Severity,
}

impl AlertKey {
    /// The Prometheus-style alert name, as `fjord sla rules` names it too.
    pub fn alert_name(&self) -> &'static str {
        match self.severity {
            Severity::Page => "FjordSloBudgetBurnPage",
            Severity::Ticket => "FjordSloBudgetBurnTicket",
        }
    }

    /// A stable id for the alert's label set (Alertmanager's
    /// `fingerprint`): FNV-1a over the labels, as 16 hex digits.
    pub fn fingerprint(&self) -> String {
        super::notify::fingerprint(&[
            self.alert_name(),
            self.institution.as_str(),
            self.sli.as_str(),
            self.severity.as_str(),
        ])
    }
}

/// A firing alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    pub started_ms: u64,
    /// The window pairs burning at the last evaluation.
    pub windows: Vec<String>,
}

/// An alert that fired, and when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub key: AlertKey,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// The window pairs that made it fire.
    pub windows: Vec<String>,
}

/// What one evaluation changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertChange {
    Fired {
        key: AlertKey,
        at_ms: u64,
        windows: Vec<String>,
    },
    Resolved {
        key: AlertKey,
        started_ms: u64,
        at_ms: u64,
    },
}

impl AlertChange {
    pub fn key(&self) -> &AlertKey {
        match self {
            AlertChange::Fired { key, .. } | AlertChange::Resolved { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertBook {
    #[serde(with = "super::as_pairs")]
    firing: BTreeMap<AlertKey, AlertState>,
    history: VecDeque<AlertRecord>,
}

impl AlertBook {
    /// Brings the book to what burns now: `burning` holds one entry per
    /// window pair burning, keyed by alert. Alerts not burning resolve.
    pub fn update(
        &mut self,
        now_ms: u64,
        burning: &[(AlertKey, &'static str)],
    ) -> Vec<AlertChange> {
        let mut now: BTreeMap<&AlertKey, Vec<String>> = BTreeMap::new();
        for (key, window) in burning {
            now.entry(key).or_default().push((*window).to_string());
        }
        let mut changes = Vec::new();
        let ended: Vec<AlertKey> = self
            .firing
            .keys()
            .filter(|k| !now.contains_key(k))
            .cloned()
            .collect();
        for key in ended {
            let state = self.firing.remove(&key).expect("listed above");
            changes.push(AlertChange::Resolved {
                key: key.clone(),
                started_ms: state.started_ms,
                at_ms: now_ms,
            });
            if self.history.len() == ALERT_HISTORY_LIMIT {
                self.history.pop_front();
            }
            self.history.push_back(AlertRecord {
                key,
                started_ms: state.started_ms,
                ended_ms: now_ms,
                windows: state.windows,
            });
        }
        for (key, windows) in now {
            match self.firing.get_mut(key) {
                Some(state) => state.windows = windows,
                None => {
                    changes.push(AlertChange::Fired {
                        key: key.clone(),
                        at_ms: now_ms,
                        windows: windows.clone(),
                    });
                    self.firing.insert(
                        key.clone(),
                        AlertState {
                            started_ms: now_ms,
                            windows,
                        },
                    );
                }
            }
        }
        changes
    }

    pub fn firing(&self) -> impl Iterator<Item = (&AlertKey, &AlertState)> {
        self.firing.iter()
    }

    pub fn firing_for<'a>(
        &'a self,
        institution: &'a str,
    ) -> impl Iterator<Item = (&'a AlertKey, &'a AlertState)> + 'a {
        self.firing
            .iter()
            .filter(move |(k, _)| k.institution == institution)
    }

    /// Resolved alerts of one institution, newest first.
    pub fn history_for<'a>(
        &'a self,
        institution: &'a str,
    ) -> impl Iterator<Item = &'a AlertRecord> + 'a {
        self.history
            .iter()
            .rev()
            .filter(move |r| r.key.institution == institution)
    }
}
