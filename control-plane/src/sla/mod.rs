//! Service levels per institution: SLIs, objectives, multiwindow
//! multi-burn-rate alerts and maintenance windows. Pure: every function
//! takes `now_ms` and inputs and returns outputs; the replicated state
//! holds an [`SlaBook`] and the leader's loops feed it.
//!
//! ```text
//!  probes, joins, quality ──▶ SlaBook::record ──▶ Series (minute + hour buckets)
//!                                                    │
//!  leader tick (now) ─────▶ SlaBook::evaluate ──────┴─▶ burn rates per window
//!                                 │                         │
//!                                 └──▶ AlertBook: fired / resolved changes
//! ```
//!
//! Alerts follow the SRE workbook's multiwindow, multi-burn-rate scheme
//! (as Sloth generates it): page when 2 % of the budget burns in 1 h
//! (windows 1 h and 5 m) or 5 % in 6 h (6 h and 30 m); ticket when 10 %
//! burns in 1 d (1 d and 2 h) or 3 d (3 d and 6 h). The burn factors follow
//! from the SLO window (14.4, 6, 3 and 1 for 30 days). Comparisons are in
//! integers (targets in parts per million), so every replica decides alike.

mod alerts;
pub mod link;
mod maintenance;
pub mod notify;
pub mod report;
pub mod rules;
mod series;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use alerts::{AlertBook, AlertChange, AlertKey, AlertRecord, AlertState};
pub use maintenance::{Calendar, Maintenance, MaintenanceError, MAX_MAINTENANCE_REASON_CHARS};
pub use series::{Counts, Series, DAY_MS, HOUR_MS, MINUTE_MS};

/// The four service-level indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    /// Synthetic probe joins against every ready node that succeed.
    Availability,
    /// Join requests that reach media, against those failing for Fjord's
    /// reasons (not a wrong passcode).
    JoinSuccess,
    /// Joins that reach media within the latency threshold.
    JoinLatency,
    /// Participant-minutes within the loss and jitter limits.
    MediaQuality,
}

impl Sli {
    pub const ALL: [Sli; 4] = [
        Sli::Availability,
        Sli::JoinSuccess,
        Sli::JoinLatency,
        Sli::MediaQuality,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sli::Availability => "availability",
            Sli::JoinSuccess => "join_success",
            Sli::JoinLatency => "join_latency",
            Sli::MediaQuality => "media_quality",
        }
    }

    pub fn parse(s: &str) -> Option<Sli> {
        Sli::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// What the objective promises, for people.
    pub fn describe(self, cfg: &SloConfig) -> String {
        match self {
            Sli::Availability => "probe joins to every ready node succeed".into(),
            Sli::JoinSuccess => "joins reach media".into(),
            Sli::JoinLatency => format!(
                "joins reach media within {} ms",
                cfg.join_latency_threshold_ms
            ),
            Sli::MediaQuality => "participant-minutes within loss 2 % and jitter 30 ms".into(),
        }
    }

    /// Availability is measured per region (probes hit nodes, not
    /// institutions); the others per institution and region.
    pub fn region_wide(self) -> bool {
        matches!(self, Sli::Availability)
    }
}

/// Alert severity: a page wakes someone, a ticket waits for office hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One window pair of the multiwindow scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurnWindow {
    pub name: &'static str,
    pub severity: Severity,
    pub long_ms: u64,
    pub short_ms: u64,
    /// Share of the whole SLO window's budget that burning at this rate for
    /// `long_ms` consumes, in thousandths (20 = 2 %).
    pub budget_permille: u64,
}

impl BurnWindow {
    /// The burn-rate factor in thousandths for an SLO window: 14,400 for
    /// the 1 h page window of a 30-day SLO.
    pub fn factor_milli(&self, slo_window_ms: u64) -> u64 {
        self.budget_permille * slo_window_ms / self.long_ms
    }
}

pub const BURN_WINDOWS: [BurnWindow; 4] = [
    BurnWindow {
        name: "1h",
        severity: Severity::Page,
        long_ms: HOUR_MS,
        short_ms: 5 * MINUTE_MS,
        budget_permille: 20,
    },
    BurnWindow {
        name: "6h",
        severity: Severity::Page,
        long_ms: 6 * HOUR_MS,
        short_ms: 30 * MINUTE_MS,
        budget_permille: 50,
    },
    BurnWindow {
        name: "1d",
        severity: Severity::Ticket,
        long_ms: DAY_MS,
        short_ms: 2 * HOUR_MS,
        budget_permille: 100,
    },
    BurnWindow {
        name: "3d",
        severity: Severity::Ticket,
        long_ms: 3 * DAY_MS,
        short_ms: 6 * HOUR_MS,
        budget_permille: 100,
    },
];

/// Objectives in parts per million of good events (999,000 = 99.9 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objectives {
    pub availability_ppm: u32,
    pub join_success_ppm: u32,
    pub join_latency_ppm: u32,
    pub media_quality_ppm: u32,
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            availability_ppm: 999_000,
            join_success_ppm: 995_000,
            join_latency_ppm: 990_000,
            media_quality_ppm: 990_000,
        }
    }
}

impl Objectives {
    pub fn get(&self, sli: Sli) -> u32 {
        match sli {
            Sli::Availability => self.availability_ppm,
            Sli::JoinSuccess => self.join_success_ppm,
            Sli::JoinLatency => self.join_latency_ppm,
            Sli::MediaQuality => self.media_quality_ppm,
        }
    }

    pub fn set(&mut self, sli: Sli, ppm: u32) {
        match sli {
            Sli::Availability => self.availability_ppm = ppm,
            Sli::JoinSuccess => self.join_success_ppm = ppm,
            Sli::JoinLatency => self.join_latency_ppm = ppm,
            Sli::MediaQuality => self.media_quality_ppm = ppm,
        }
    }

    pub fn validate(&self) -> Result<(), SlaError> {
        for sli in Sli::ALL {
            let ppm = self.get(sli);
            // 100 % leaves no budget to burn; below 50 % is not a promise.
            if !(500_000..1_000_000).contains(&ppm) {
                return Err(SlaError::ObjectiveOutOfRange { sli, ppm });
            }
        }
        Ok(())
    }
}

/// Parses an objective given as a percentage ("99.9", "99.95") into parts
/// per million, exactly (no floating point).
pub fn parse_percent_ppm(s: &str) -> Option<u32> {
    let s = s.trim().trim_end_matches('%');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || int.len() > 3 || frac.len() > 4 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u32 = int.parse().ok()?;
    let frac_ppm: u32 = format!("{frac:0<4}").parse().ok()?;
    let ppm = int.checked_mul(10_000)?.checked_add(frac_ppm)?;
    (ppm <= 1_000_000).then_some(ppm)
}

/// Formats parts per million as a percentage with up to four decimals.
pub fn format_ppm(ppm: i64) -> String {
    let sign = if ppm < 0 { "-" } else { "" };
    let a = ppm.unsigned_abs();
    let frac = format!("{:04}", a % 10_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", a / 10_000)
    } else {
        format!("{sign}{}.{frac}", a / 10_000)
    }
}

/// The service's SLO settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SloConfig {
    /// The rolling window objectives are measured over.
    pub window_days: u32,
    /// Default objectives; an institution may have its own.
    pub objectives: Objectives,
    /// Events the 1 h or 6 h window must hold before an institution can be
    /// paged: a handful of failed joins at a small institution is a
    /// ticket, not a night call.
    pub min_events_to_page: u64,
    /// A join slower than this counts against the join-latency SLI.
    pub join_latency_threshold_ms: u64,
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            window_days: 30,
            objectives: Objectives::default(),
            min_events_to_page: 100,
            join_latency_threshold_ms: 2_000,
        }
    }
}

impl SloConfig {
    pub fn window_ms(&self) -> u64 {
        u64::from(self.window_days) * DAY_MS
    }

    pub fn validate(&self) -> Result<(), SlaError> {
        // The 3-day ticket window must fit, and a year is plenty.
        if !(7..=366).contains(&self.window_days) {
            return Err(SlaError::WindowOutOfRange {
                days: self.window_days,
            });
        }
        if self.join_latency_threshold_ms == 0 || self.join_latency_threshold_ms > 60_000 {
            return Err(SlaError::LatencyThresholdOutOfRange {
                ms: self.join_latency_threshold_ms,
            });
        }
        self.objectives.validate()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlaError {
    #[error("objective for {} must be at least 50 % and below 100 % (got {} ppm)", sli.as_str(), ppm)]
    ObjectiveOutOfRange { sli: Sli, ppm: u32 },
    #[error("the SLO window must be 7 to 366 days (got {days})")]
    WindowOutOfRange { days: u32 },
    #[error("the join-latency threshold must be 1 to 60000 ms (got {ms})")]
    LatencyThresholdOutOfRange { ms: u64 },
}

/// Events observed for one SLI: where and when they happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliEvent {
    pub at_ms: u64,
    /// `None` for region-wide SLIs (availability).
    pub institution: Option<String>,
    pub region: String,
    /// The media node involved, when there is one (maintenance may cover a
    /// single node).
    pub node: Option<String>,
    pub sli: Sli,
    pub total: u64,
    pub bad: u64,
}

/// Which series an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    pub sli: Sli,
    /// Empty for region-wide SLIs.
    pub institution: String,
    pub region: String,
}

/// An institution as evaluation sees it: its name, the regions that may
/// carry its meetings, and its objectives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstitutionScope {
    pub name: String,
    pub regions: Vec<String>,
    pub objectives: Objectives,
}

/// One SLI of one institution at one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliStatus {
    pub sli: Sli,
    pub objective_ppm: u32,
    /// Over the SLO window, maintenance excluded.
    pub window: Counts,
    /// Good events over all events in the SLO window (maintenance
    /// excluded), in ppm; `None` without events.
    pub measured_ppm: Option<u32>,
    /// Error budget left over the SLO window, in ppm of the budget
    /// (1,000,000 = untouched; negative when overspent).
    pub budget_left_ppm: i64,
    /// Window pairs burning now (their names).
    pub burning: Vec<&'static str>,
}

/// Whether `bad` of `total` burns faster than `factor_milli / 1000` times
/// the budget `1 - objective`.
pub fn burns(bad: u64, total: u64, objective_ppm: u32, factor_milli: u64) -> bool {
    if total == 0 {
        return false;
    }
    let budget_ppm = u128::from(1_000_000 - objective_ppm.min(1_000_000));
    u128::from(bad) * 1_000_000 * 1000 > u128::from(factor_milli) * budget_ppm * u128::from(total)
}

/// Budget left in ppm of the budget: `1 - (bad/total) / (1 - objective)`.
pub fn budget_left_ppm(bad: u64, total: u64, objective_ppm: u32) -> i64 {
    if total == 0 {
        return 1_000_000;
    }
    let budget_ppm = i128::from(1_000_000 - objective_ppm.min(999_999));
    // error ratio in ppm of events, over the budget in ppm, scaled to ppm.
    let spent = i128::from(bad) * 1_000_000 * 1_000_000 / (i128::from(total) * budget_ppm);
    (1_000_000 - spent).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Maps with struct keys travel as lists of pairs: JSON allows only
/// string keys.
pub(crate) mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// The replicated SLA data: every series, the maintenance calendar, the
/// alert book and per-institution objectives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaBook {
    pub config: SloConfig,
    /// Institutions with their own objectives.
    pub objectives: BTreeMap<String, Objectives>,
    #[serde(with = "as_pairs")]
    series: BTreeMap<SeriesKey, Series>,
    pub maintenance: Calendar,
    pub alerts: AlertBook,
}

impl SlaBook {
    pub fn new(config: SloConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn objectives_for(&self, institution: &str) -> Objectives {
        self.objectives
            .get(institution)
            .copied()
            .unwrap_or(self.config.objectives)
    }

    /// Adds observed events; those inside announced maintenance for their
    /// region or node are marked so.
    pub fn record(&mut self, e: &SliEvent) {
        if e.total == 0 {
            return;
        }
        let bad = e.bad.min(e.total);
        let in_maintenance = self
            .maintenance
            .covers(&e.region, e.node.as_deref(), e.at_ms);
        let counts = Counts {
            total: e.total,
            bad,
            maintenance_total: if in_maintenance { e.total } else { 0 },
            maintenance_bad: if in_maintenance { bad } else { 0 },
        };
        let key = SeriesKey {
            sli: e.sli,
            institution: if e.sli.region_wide() {
                String::new()
            } else {
                e.institution.clone().unwrap_or_default()
            },
            region: e.region.clone(),
        };
        self.series.entry(key).or_default().record(e.at_ms, &counts);
    }

    /// The series an institution's SLI is measured from.
    fn series_of<'a>(
        &'a self,
        scope: &'a InstitutionScope,
        sli: Sli,
    ) -> impl Iterator<Item = (&'a str, &'a Series)> + 'a {
        let institution = if sli.region_wide() {
            ""
        } else {
            scope.name.as_str()
        };
        scope.regions.iter().filter_map(move |region| {
            self.series
                .get(&SeriesKey {
                    sli,
                    institution: institution.to_string(),
                    region: region.clone(),
                })
                .map(|s| (region.as_str(), s))
        })
    }

    /// Counts for an institution's SLI over a window ending at `now_ms`,
    /// summed over its regions.
    pub fn window(
        &self,
        scope: &InstitutionScope,
        sli: Sli,
        now_ms: u64,
        window_ms: u64,
    ) -> Counts {
        let mut sum = Counts::default();
        for (_, s) in self.series_of(scope, sli) {
            sum.add(&s.window(now_ms, window_ms));
        }
        sum
    }

    /// Counts in `[from_ms, to_ms)` (to the hour), per region.
    pub fn between_by_region(
        &self,
        scope: &InstitutionScope,
        sli: Sli,
        from_ms: u64,
        to_ms: u64,
    ) -> Vec<(String, Counts)> {
        self.series_of(scope, sli)
            .map(|(r, s)| (r.to_string(), s.between(from_ms, to_ms)))
            .collect()
    }

    /// Daily counts over `[from_ms, to_ms)`, summed over regions.
    pub fn daily(
        &self,
        scope: &InstitutionScope,
        sli: Sli,
        from_ms: u64,
        to_ms: u64,
    ) -> Vec<(u64, Counts)> {
        let mut days: BTreeMap<u64, Counts> = BTreeMap::new();
        for (_, s) in self.series_of(scope, sli) {
            for (d, c) in s.daily(from_ms, to_ms) {
                days.entry(d).or_default().add(&c);
            }
        }
        days.into_iter().collect()
    }

    /// Lifetime counters per series, for the `fjord_sla_*_total` metrics.
    pub fn lifetime(&self) -> impl Iterator<Item = (&SeriesKey, &Counts)> {
        self.series.iter().map(|(k, s)| (k, &s.lifetime))
    }

    /// The status of every SLI of one institution at `now_ms`.
    pub fn status(&self, scope: &InstitutionScope, now_ms: u64) -> Vec<SliStatus> {
        let slo_window_ms = self.config.window_ms();
        Sli::ALL
            .into_iter()
            .map(|sli| {
                let objective_ppm = scope.objectives.get(sli);
                let window = self.window(scope, sli, now_ms, slo_window_ms);
                let (total, bad) = window.corrected();
                let measured_ppm =
                    (total > 0).then(|| ((total - bad) as u128 * 1_000_000 / total as u128) as u32);
                let burning = BURN_WINDOWS
                    .iter()
                    .filter(|w| self.window_burns(scope, sli, w, now_ms))
                    .map(|w| w.name)
                    .collect();
                SliStatus {
                    sli,
                    objective_ppm,
                    window,
                    measured_ppm,
                    budget_left_ppm: budget_left_ppm(bad, total, objective_ppm),
                    burning,
                }
            })
            .collect()
    }

    /// Whether one window pair burns for an institution's SLI: both the
    /// long and the short window above the factor, and for pages at least
    /// `min_events_to_page` events in the long window.
    fn window_burns(
        &self,
        scope: &InstitutionScope,
        sli: Sli,
        w: &BurnWindow,
        now_ms: u64,
    ) -> bool {
        let objective = scope.objectives.get(sli);
        let factor = w.factor_milli(self.config.window_ms());
        let (long_total, long_bad) = self.window(scope, sli, now_ms, w.long_ms).corrected();
        if w.severity == Severity::Page && long_total < self.config.min_events_to_page {
            return false;
        }
        if !burns(long_bad, long_total, objective, factor) {
            return false;
        }
        let (short_total, short_bad) = self.window(scope, sli, now_ms, w.short_ms).corrected();
        burns(short_bad, short_total, objective, factor)
    }

    /// Evaluates every institution at `now_ms`: updates the alert book and
    /// returns what fired and what resolved. Also drops buckets no window
    /// needs any more (a series itself stays: its lifetime counts back the
    /// `fjord_sla_*_total` counters, which must never go down).
    pub fn evaluate(&mut self, scopes: &[InstitutionScope], now_ms: u64) -> Vec<AlertChange> {
        let slo_window_ms = self.config.window_ms();
        for s in self.series.values_mut() {
            s.prune(now_ms, slo_window_ms);
        }
        let mut burning = Vec::new();
        for scope in scopes {
            for sli in Sli::ALL {
                for w in &BURN_WINDOWS {
                    if self.window_burns(scope, sli, w, now_ms) {
                        burning.push((
                            AlertKey {
                                institution: scope.name.clone(),
                                sli,
                                severity: w.severity,
                            },
                            w.name,
                        ));
                    }
                }
            }
        }
        self.alerts.update(now_ms, &burning)
    }

    /// Buckets held over all series (for memory figures).
    pub fn buckets(&self) -> usize {
        self.series.values().map(Series::buckets).sum()
    }
}
