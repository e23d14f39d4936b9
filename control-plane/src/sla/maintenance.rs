//! Planned maintenance: announced windows over a region or one node.
//! Events inside a window's scope and time are kept but marked, so alerts
//! and corrected figures leave them out while raw figures keep them.

use serde::{Deserialize, Serialize};

/// Longest maintenance reason kept.
pub const MAX_MAINTENANCE_REASON_CHARS: usize = 500;
/// Longest maintenance window.
pub const MAX_MAINTENANCE_WINDOW_MS: u64 = 7 * super::DAY_MS;
/// Past windows kept for reports.
pub const MAINTENANCE_HISTORY_LIMIT: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub id: u64,
    pub region: String,
    /// `None`: the whole region.
    pub node: Option<String>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub reason: String,
    pub announced_ms: u64,
    /// Set once the window's start was acted on (the named node drained).
    #[serde(default)]
    pub started: bool,
    /// The named node was drained by this window (not already draining),
    /// so its end puts it back in service.
    #[serde(default)]
    pub drained_node: bool,
    /// Set once the window's end was acted on.
    #[serde(default)]
    pub ended: bool,
}

impl Maintenance {
    /// Whether an event at `at_ms` in `region` (on `node`) falls inside.
    pub fn covers(&self, region: &str, node: Option<&str>, at_ms: u64) -> bool {
        if at_ms < self.from_ms || at_ms >= self.to_ms || region != self.region {
            return false;
        }
        match (&self.node, node) {
            (None, _) => true,
            (Some(n), Some(e)) => n == e,
            (Some(_), None) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    #[error("the window must end after it starts")]
    EmptyWindow,
    #[error("the window must not start in the past")]
    StartsInPast,
    #[error("a maintenance window may last at most 7 days")]
    TooLong,
    #[error("the reason must be 1 to 500 characters of text")]
    BadReason,
}

/// Every announced window, upcoming and past (bounded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    windows: Vec<Maintenance>,
    next_id: u64,
}

impl Calendar {
    /// Adds a window; `now_ms` is when it was announced.
    pub fn announce(
        &mut self,
        now_ms: u64,
        region: String,
        node: Option<String>,
        from_ms: u64,
        to_ms: u64,
        reason: String,
    ) -> Result<Maintenance, MaintenanceError> {
        if to_ms <= from_ms {
            return Err(MaintenanceError::EmptyWindow);
        }
        // A minute of slack for the operator's clock and the commit.
        if from_ms + super::MINUTE_MS < now_ms {
            return Err(MaintenanceError::StartsInPast);
        }
        if to_ms - from_ms > MAX_MAINTENANCE_WINDOW_MS {
            return Err(MaintenanceError::TooLong);
        }
        let chars = reason.chars().count();
        if chars == 0
            || chars > MAX_MAINTENANCE_REASON_CHARS
            || reason.chars().any(char::is_control)
        {
            return Err(MaintenanceError::BadReason);
        }
        self.next_id += 1;
        let m = Maintenance {
            id: self.next_id,
            region,
            node,
            from_ms,
            to_ms,
            reason,
            announced_ms: now_ms,
            started: false,
            drained_node: false,
            ended: false,
        };
        self.windows.push(m.clone());
        if self.windows.len() > MAINTENANCE_HISTORY_LIMIT {
            // Drop the oldest ended window.
            if let Some(i) = self
                .windows
                .iter()
                .enumerate()
                .filter(|(_, w)| w.to_ms <= now_ms)
                .min_by_key(|(_, w)| w.to_ms)
                .map(|(i, _)| i)
            {
                self.windows.remove(i);
            }
        }
        Ok(m)
    }

    pub fn covers(&self, region: &str, node: Option<&str>, at_ms: u64) -> bool {
        self.windows.iter().any(|w| w.covers(region, node, at_ms))
    }

    pub fn all(&self) -> &[Maintenance] {
        &self.windows
    }

    /// Windows that have begun but whose start was not yet acted on.
    pub fn due_to_start(&self, now_ms: u64) -> impl Iterator<Item = &Maintenance> {
        self.windows
            .iter()
            .filter(move |w| !w.started && w.from_ms <= now_ms && now_ms < w.to_ms)
    }

    pub fn mark_started(&mut self, id: u64, drained_node: bool) {
        if let Some(w) = self.windows.iter_mut().find(|w| w.id == id) {
            w.started = true;
            w.drained_node = drained_node;
        }
    }

    /// Windows that have ended but whose end was not yet acted on.
    pub fn due_to_end(&self, now_ms: u64) -> impl Iterator<Item = &Maintenance> {
        self.windows
            .iter()
            .filter(move |w| w.started && !w.ended && w.to_ms <= now_ms)
    }

    pub fn mark_ended(&mut self, id: u64) {
        if let Some(w) = self.windows.iter_mut().find(|w| w.id == id) {
            w.ended = true;
        }
    }

    /// Whether a region (or a node in it) is under maintenance now.
    pub fn active_in(&self, region: &str, now_ms: u64) -> impl Iterator<Item = &Maintenance> {
        let region = region.to_string();
        self.windows
            .iter()
            .filter(move |w| w.region == region && w.from_ms <= now_ms && now_ms < w.to_ms)
    }
}
