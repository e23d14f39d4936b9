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
