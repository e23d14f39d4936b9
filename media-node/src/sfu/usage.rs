//! Usage counting: the core notes when a participant is let into a meeting
//! on this node and when it leaves (and why), with the features it uses.
//! The shell journals these to disk and reports them to the control plane's
//! ledger (`agent/`). Participants are their per-meeting pseudonyms from
//! the join token: no name, no address.

/// Feature bits, as the ledger reads them.
pub const FEATURE_WEBINAR_ATTENDEE: u32 = 1;
pub const FEATURE_E2EE: u32 = 2;
pub const FEATURE_CASCADE: u32 = 4;

/// Why a participant left.
pub const LEFT: &str = "left";
pub const MOVED: &str = "moved";
pub const TIME_LIMIT: &str = "time_limit";
pub const CLOSED: &str = "closed";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub at_ms: u64,
    pub meeting: u64,
    pub participant: u64,
    /// Joined (let in) or left.
    pub joined: bool,
    pub features: u32,
    /// For a leave: one of the reasons above.
    pub reason: &'static str,
    /// A quality summary instead of a join or leave: the minute starting at
    /// `at_ms`.
    pub quality: Option<QualityMinute>,
    /// A join attempt's outcome instead of a join or leave (for the
    /// join-success and join-latency SLIs).
    pub join: Option<JoinAttempt>,
}

/// How a join with a valid token went: whether it reached media (let in,
/// or held in the waiting room by the meeting's own settings) and how long
/// after the join call (the token's issue) it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinAttempt {
    pub ok: bool,
    pub latency_ms: u32,
}

/// One meeting's minute on this node, from its participants' receive
/// reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QualityMinute {
    /// Participants that reported in the minute.
    pub minutes: u32,
    /// Of those, the ones whose every report was within the limits.
    pub good_minutes: u32,
}

/// Within the limits: at most this much loss (per mille) and jitter.
pub const MAX_GOOD_LOSS_PERMILLE: u64 = 20;
pub const MAX_GOOD_JITTER_US: u32 = 30_000;

/// The minute being summed for one meeting: per participant, whether all
/// its reports so far were good.
#[derive(Debug, Clone, Default)]
pub struct QualityAccumulator {
    pub minute: u64,
    pub good: std::collections::HashMap<u64, bool>,
}

impl QualityAccumulator {
    pub fn record(&mut self, pid: u64, expected: u64, received: u64, jitter_us: u32) {
        // In u128: the counts come from the participant and may be anything
        // up to u64::MAX (an overflow here was found by fuzzing).
        let lost = u128::from(expected.saturating_sub(received));
        let good = lost * 1000 <= u128::from(expected) * u128::from(MAX_GOOD_LOSS_PERMILLE)
            && jitter_us <= MAX_GOOD_JITTER_US;
        let e = self.good.entry(pid).or_insert(true);
        *e &= good;
    }

    pub fn summary(&self) -> QualityMinute {
        QualityMinute {
            minutes: self.good.len() as u32,
            good_minutes: self.good.values().filter(|g| **g).count() as u32,
        }
    }
}

/// A participant's connection as the institution's terms require it kept:
/// only ever written to the node's own disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub at_ms: u64,
    pub meeting: u64,
    pub participant: u64,
    pub display_name: String,
    pub source: std::net::IpAddr,
}
