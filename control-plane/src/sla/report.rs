//! What the dashboard and `fjord ctl sla status` show for one institution:
//! per SLO the objective, the measured value and the budget left (raw and
//! with maintenance left out), the daily budget burn, alerts, maintenance
//! and the state of each region; and the monthly report.

use serde::{Deserialize, Serialize};

use super::{
    budget_left_ppm, AlertRecord, Counts, InstitutionScope, Maintenance, SlaBook, Sli, DAY_MS,
};

/// One SLO of one institution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SloView {
    pub sli: Sli,
    pub objective_ppm: u32,
    /// Over the SLO window, every event (maintenance included).
    pub window: Counts,
    /// Good over all events outside maintenance, in ppm (`None`: no events).
    pub measured_ppm: Option<u32>,
    /// The same with maintenance included.
    pub raw_measured_ppm: Option<u32>,
    /// Budget left in ppm of the budget (negative: overspent).
    pub budget_left_ppm: i64,
    pub raw_budget_left_ppm: i64,
    /// Budget left at the end of each UTC day of the window, oldest first
    /// (maintenance left out), for the burn chart.
    pub budget_by_day: Vec<(u64, i64)>,
    /// Window pairs burning now.
    pub burning: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionState {
    Operational,
    Degraded,
    PartialOutage,
    MajorOutage,
    UnderMaintenance,
}

impl RegionState {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionState::Operational => "operational",
            RegionState::Degraded => "degraded",
            RegionState::PartialOutage => "partial outage",
            RegionState::MajorOutage => "major outage",
            RegionState::UnderMaintenance => "under maintenance",
        }
    }
}

/// Node counts of a region, as the caller sees them now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionNodes {
    pub region: String,
    pub ready: u32,
    pub draining: u32,
    pub down: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionView {
    pub region: String,
    pub state: RegionState,
    pub nodes: RegionNodes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub alert: String,
    pub sli: Sli,
    pub severity: super::Severity,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub windows: Vec<String>,
}

impl AlertView {
    fn of(r: &AlertRecord) -> Self {
        AlertView {
            alert: r.key.alert_name().to_string(),
            sli: r.key.sli,
            severity: r.key.severity,
            started_ms: r.started_ms,
            ended_ms: Some(r.ended_ms),
            windows: r.windows.clone(),
        }
    }
}

/// Everything about one institution's service level at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstitutionReport {
    pub institution: String,
    pub at_ms: u64,
    pub window_days: u32,
    pub slos: Vec<SloView>,
    pub firing: Vec<AlertView>,
    /// Resolved alerts, newest first (at most 50).
    pub recent: Vec<AlertView>,
    /// Maintenance in its regions: upcoming and of the last 30 days.
    pub maintenance: Vec<Maintenance>,
    pub regions: Vec<RegionView>,
}

impl InstitutionReport {
    /// The least budget left over its SLOs (for sorting the overview).
    pub fn least_budget_left_ppm(&self) -> i64 {
        self.slos
            .iter()
            .map(|s| s.budget_left_ppm)
            .min()
            .unwrap_or(1_000_000)
    }
}

fn ratio_ppm(total: u64, bad: u64) -> Option<u32> {
    (total > 0).then(|| ((total - bad) as u128 * 1_000_000 / total as u128) as u32)
}

/// The report for `scope` at `now_ms`; `regions` are the node counts of
/// the institution's regions.
pub fn institution_report(
    book: &SlaBook,
    scope: &InstitutionScope,
    regions: &[RegionNodes],
    now_ms: u64,
) -> InstitutionReport {
    let window_ms = book.config.window_ms();
    let from = now_ms.saturating_sub(window_ms);
    let status = book.status(scope, now_ms);
    let slos = status
        .into_iter()
        .map(|s| {
            let (total, bad) = s.window.corrected();
            // Cumulative budget left at each day's end.
            let mut acc = Counts::default();
            let budget_by_day = book
                .daily(scope, s.sli, from / DAY_MS * DAY_MS, now_ms + 1)
                .into_iter()
                .map(|(day, c)| {
                    acc.add(&c);
                    let (t, b) = acc.corrected();
                    (day, budget_left_ppm(b, t, s.objective_ppm))
                })
                .collect();
            SloView {
                sli: s.sli,
                objective_ppm: s.objective_ppm,
                window: s.window,
                measured_ppm: ratio_ppm(total, bad),
                raw_measured_ppm: ratio_ppm(s.window.total, s.window.bad),
                budget_left_ppm: budget_left_ppm(bad, total, s.objective_ppm),
                raw_budget_left_ppm: budget_left_ppm(s.window.bad, s.window.total, s.objective_ppm),
                budget_by_day,
                burning: s.burning.iter().map(|w| w.to_string()).collect(),
            }
        })
        .collect();
    let firing = book
        .alerts
        .firing_for(&scope.name)
        .map(|(k, a)| AlertView {
            alert: k.alert_name().to_string(),
            sli: k.sli,
            severity: k.severity,
            started_ms: a.started_ms,
            ended_ms: None,
            windows: a.windows.clone(),
        })
        .collect();
    let recent = book
        .alerts
        .history_for(&scope.name)
        .take(50)
        .map(AlertView::of)
        .collect();
    let maintenance = book
        .maintenance
        .all()
        .iter()
        .filter(|m| scope.regions.contains(&m.region))
        .filter(|m| m.to_ms + window_ms >= now_ms)
        .cloned()
        .collect();
    let regions = regions
        .iter()
        .map(|n| RegionView {
            region: n.region.clone(),
            state: region_state(book, scope, n, now_ms),
            nodes: n.clone(),
        })
        .collect();
    InstitutionReport {
        institution: scope.name.clone(),
        at_ms: now_ms,
        window_days: book.config.window_days,
        slos,
        firing,
        recent,
        maintenance,
        regions,
    }
}

/// A region's state as a status page says it: maintenance first, then
/// outages by node counts, then degraded when the last hour's probes or
/// joins there missed their objective.
fn region_state(
    book: &SlaBook,
    scope: &InstitutionScope,
    n: &RegionNodes,
    now_ms: u64,
) -> RegionState {
    let region_wide = book
        .maintenance
        .active_in(&n.region, now_ms)
        .any(|m| m.node.is_none());
    if region_wide {
        return RegionState::UnderMaintenance;
    }
    let in_service = n.ready;
    let total = n.ready + n.draining + n.down;
    if total > 0 && in_service == 0 && n.draining == 0 {
        return RegionState::MajorOutage;
    }
    if n.down > 0 {
        return RegionState::PartialOutage;
    }
    if book
        .maintenance
        .active_in(&n.region, now_ms)
        .next()
        .is_some()
    {
        return RegionState::UnderMaintenance;
    }
    let region_scope = InstitutionScope {
        name: scope.name.clone(),
        regions: vec![n.region.clone()],
        objectives: scope.objectives,
    };
    for sli in [Sli::Availability, Sli::JoinSuccess] {
        let (total, bad) = book
            .window(&region_scope, sli, now_ms, super::HOUR_MS)
            .corrected();
        if !super::burns(bad, total, scope.objectives.get(sli), 1_000) {
            continue;
        }
        return RegionState::Degraded;
    }
    RegionState::Operational
}

/// One SLO's figures over a calendar month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyLine {
    pub month: String,
    pub sli: Sli,
    pub objective_ppm: u32,
    pub counts: Counts,
    pub raw_measured_ppm: Option<u32>,
    pub measured_ppm: Option<u32>,
    /// Whether the month (maintenance left out) met the objective; no
    /// events count as met.
    pub met: bool,
}

/// The monthly report for `[from_ms, to_ms)` (a calendar month in the
/// service's time zone, named `month` as `YYYY-MM`).
pub fn monthly(
    book: &SlaBook,
    scope: &InstitutionScope,
    month: &str,
    from_ms: u64,
    to_ms: u64,
) -> Vec<MonthlyLine> {
    Sli::ALL
        .into_iter()
        .map(|sli| {
            let mut counts = Counts::default();
            for (_, c) in book.between_by_region(scope, sli, from_ms, to_ms) {
                counts.add(&c);
            }
            let (total, bad) = counts.corrected();
            let objective_ppm = scope.objectives.get(sli);
            let measured_ppm = ratio_ppm(total, bad);
            MonthlyLine {
                month: month.to_string(),
                sli,
                objective_ppm,
                counts,
                raw_measured_ppm: ratio_ppm(counts.total, counts.bad),
                measured_ppm,
                met: measured_ppm.is_none_or(|m| m >= objective_ppm),
            }
        })
        .collect()
}

/// The monthly report as CSV (CRLF, fixed header), one row per SLO, both
/// raw and with maintenance left out.
pub fn monthly_csv(institution: &str, lines: &[MonthlyLine]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record([
        "institution",
        "month",
        "sli",
        "objective_percent",
        "events",
        "bad_events",
        "maintenance_events",
        "maintenance_bad_events",
        "raw_percent",
        "corrected_percent",
        "met",
    ])?;
    let pct = |p: Option<u32>| {
        p.map(|v| super::format_ppm(i64::from(v)))
            .unwrap_or_default()
    };
    for l in lines {
        w.write_record([
            institution.to_string(),
            l.month.clone(),
            l.sli.as_str().to_string(),
            super::format_ppm(i64::from(l.objective_ppm)),
            l.counts.total.to_string(),
            l.counts.bad.to_string(),
            l.counts.maintenance_total.to_string(),
            l.counts.maintenance_bad.to_string(),
            pct(l.raw_measured_ppm),
            pct(l.measured_ppm),
            if l.met { "yes" } else { "no" }.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}
