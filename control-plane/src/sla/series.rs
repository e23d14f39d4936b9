//! Event counts over time for one SLI, bounded in memory: one bucket per
//! minute for the last six hours (the short alert windows need minutes) and
//! one per hour for the SLO window (30 days by default). Buckets exist only
//! where events happened, so an institution with little traffic costs little.
//!
//! Every count is kept twice over: all events, and the part that fell inside
//! announced maintenance. Alerts and the corrected figures use the
//! difference; reports show both.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// How far back minute buckets reach: the longest short window (6 h).
pub const MINUTE_HORIZON_MS: u64 = 6 * HOUR_MS;

/// How far back hour buckets reach at least: the last whole calendar month
/// must be reportable after it ends (31 + 31 days, and a day of slack).
pub const HOUR_HORIZON_MIN_MS: u64 = 63 * DAY_MS;

/// Good and bad events, and how many of each fell inside maintenance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: u64,
    pub bad: u64,
    pub maintenance_total: u64,
    pub maintenance_bad: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.total += o.total;
        self.bad += o.bad;
        self.maintenance_total += o.maintenance_total;
        self.maintenance_bad += o.maintenance_bad;
    }

    /// Events outside maintenance: what alerts and corrected figures count.
    pub fn corrected(&self) -> (u64, u64) {
        (
            self.total - self.maintenance_total,
            self.bad - self.maintenance_bad,
        )
    }
}

/// One bucket: its index (minutes or hours since the epoch) and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    index: u64,
    counts: Counts,
}

/// The buckets of one SLI of one institution in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    minutes: VecDeque<Bucket>,
    hours: VecDeque<Bucket>,
    /// Every event ever recorded (for the `fjord_sla_*_total` counters,
    /// which must never go down).
    pub lifetime: Counts,
}

fn add_to(buckets: &mut VecDeque<Bucket>, index: u64, c: &Counts) {
    // Events arrive nearly in order; a late one goes into its own bucket.
    match buckets.iter().rposition(|b| b.index <= index) {
        Some(i) if buckets[i].index == index => buckets[i].counts.add(c),
        Some(i) => buckets.insert(i + 1, Bucket { index, counts: *c }),
        None => buckets.push_front(Bucket { index, counts: *c }),
    }
}

impl Series {
    /// Adds events that happened at `at_ms`.
    pub fn record(&mut self, at_ms: u64, c: &Counts) {
        add_to(&mut self.minutes, at_ms / MINUTE_MS, c);
        add_to(&mut self.hours, at_ms / HOUR_MS, c);
        self.lifetime.add(c);
    }

    /// Drops buckets older than what any window needs at `now_ms`.
    pub fn prune(&mut self, now_ms: u64, slo_window_ms: u64) {
        let min_minute = now_ms.saturating_sub(MINUTE_HORIZON_MS) / MINUTE_MS;
        while self.minutes.front().is_some_and(|b| b.index < min_minute) {
            self.minutes.pop_front();
        }
        let min_hour = now_ms.saturating_sub(slo_window_ms.max(HOUR_HORIZON_MIN_MS)) / HOUR_MS;
        while self.hours.front().is_some_and(|b| b.index < min_hour) {
            self.hours.pop_front();
        }
    }

    /// Counts over the `window_ms` ending at `now_ms` (inclusive of the
    /// current minute). Windows up to six hours are exact to the minute;
    /// longer ones (1 d, 3 d, 30 d) to the hour: they start at the
    /// beginning of the hour `window_ms` ago.
    pub fn window(&self, now_ms: u64, window_ms: u64) -> Counts {
        let mut sum = Counts::default();
        if window_ms <= MINUTE_HORIZON_MS {
            let now_min = now_ms / MINUTE_MS;
            let first = (now_min + 1).saturating_sub(window_ms / MINUTE_MS);
            for b in self.minutes.iter().rev() {
                if b.index > now_min {
                    continue;
                }
                if b.index < first {
                    break;
                }
                sum.add(&b.counts);
            }
        } else {
            let now_hour = now_ms / HOUR_MS;
            let first = (now_hour + 1).saturating_sub(window_ms / HOUR_MS);
            for b in self.hours.iter().rev() {
                if b.index > now_hour {
                    continue;
                }
                if b.index < first {
                    break;
                }
                sum.add(&b.counts);
            }
        }
        sum
    }

    /// Per-day counts for the days in `[from_ms, to_ms)`, oldest first, as
    /// `(day start ms, counts)` (UTC days; charts and budgets need no
    /// calendar).
    pub fn daily(&self, from_ms: u64, to_ms: u64) -> Vec<(u64, Counts)> {
        let mut days: Vec<(u64, Counts)> = Vec::new();
        for b in &self.hours {
            let at = b.index * HOUR_MS;
            if at < from_ms || at >= to_ms {
                continue;
            }
            let day = at / DAY_MS * DAY_MS;
            match days.last_mut() {
                Some((d, c)) if *d == day => c.add(&b.counts),
                _ => days.push((day, b.counts)),
            }
        }
        days
    }

    /// Counts in `[from_ms, to_ms)`, to the hour.
    pub fn between(&self, from_ms: u64, to_ms: u64) -> Counts {
        let mut sum = Counts::default();
        for b in &self.hours {
            let at = b.index * HOUR_MS;
            if at >= from_ms && at < to_ms {
                sum.add(&b.counts);
            }
        }
        sum
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.minutes.is_empty()
    }

    /// Buckets held (for memory figures).
    pub fn buckets(&self) -> usize {
        self.minutes.len() + self.hours.len()
    }
}
