//! Notifications to institutions' technical contact points: what to send
//! (an Alertmanager version-4 webhook body, fixed when the notification is
//! created, so every retry sends the same bytes), when to try again, and
//! the log of every delivery attempt. Pure; the leader's notify loop does
//! the HTTP and commits each attempt's outcome.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AlertKey, Maintenance, SloConfig};

/// Notifications kept (delivered ones are dropped oldest first).
pub const NOTIFICATION_LIMIT: usize = 10_000;
/// Attempts before a notification is given up.
pub const MAX_ATTEMPTS: usize = 12;
/// First retry delay; each further one doubles, up to [`MAX_RETRY_DELAY_MS`].
pub const FIRST_RETRY_DELAY_MS: u64 = 1_000;
pub const MAX_RETRY_DELAY_MS: u64 = 5 * 60 * 1_000;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// An SLO burn-rate alert fired or resolved.
    Alert,
    /// A media node or region carrying the institution's meetings failed
    /// (or came back).
    Fault,
    /// Planned work announced.
    Maintenance,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Alert => "alert",
            NoticeKind::Fault => "fault",
            NoticeKind::Maintenance => "maintenance",
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub ok: bool,
    /// The HTTP status, or why there was none ("connection refused", ...).
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Pending {
        next_attempt_ms: u64,
    },
    Delivered {
        at_ms: u64,
    },
    GaveUp {
        at_ms: u64,
    },
    /// The contact point is an e-mail address: nothing to post to.
    NoWebhook,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u64,
    pub institution: String,
    pub kind: NoticeKind,
    /// "firing" or "resolved".
    pub status: String,
    /// A one-line summary for the delivery log.
    pub summary: String,
    pub created_ms: u64,
    /// Where it goes: the technical contact point when it was created.
    pub contact: String,
    /// The webhook body (JSON), fixed at creation.
    pub body: String,
    pub attempts: Vec<Attempt>,
    pub delivery: Delivery,
}

/// Milliseconds since the epoch as RFC 3339 UTC (Alertmanager's form).
pub fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".into())
}

/// One alert of an Alertmanager webhook.
pub struct WebhookAlert {
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_ms: u64,
    pub ends_ms: Option<u64>,
    pub fingerprint: String,
}

/// The Alertmanager webhook body (version 4) for one institution.
pub fn webhook_body(institution: &str, alert: &WebhookAlert, external_url: &str) -> String {
    let ends = alert
        .ends_ms
        .map(rfc3339)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    let body = json!({
        "version": "4",
        "groupKey": format!("{{}}:{{institution=\"{institution}\"}}"),
        "truncatedAlerts": 0,
        "status": alert.status,
        "receiver": format!("{institution}-technical-contact"),
        "groupLabels": { "institution": institution },
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": alert.status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.starts_ms),
            "endsAt": ends,
            "generatorURL": external_url,
            "fingerprint": alert.fingerprint,
        }],
    });
    body.to_string()
}

/// A stable id for an alert's label set (Alertmanager's `fingerprint`):
/// FNV-1a over the parts, each ended by 0xff, as 16 hex digits.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The webhook alert for an SLO alert firing (`ends_ms` None) or resolved.
pub fn slo_alert(
    key: &AlertKey,
    cfg: &SloConfig,
    windows: &[String],
    starts_ms: u64,
    ends_ms: Option<u64>,
) -> WebhookAlert {
    let speed = match key.severity {
        super::Severity::Page => "fast",
        super::Severity::Ticket => "steadily",
    };
    let mut annotations = labels(&[
        (
            "summary",
            &format!(
                "{}: the {} error budget is burning {speed}",
                key.institution,
                key.sli.as_str()
            ),
        ),
        (
            "description",
            &format!(
                "The {} SLO of {} ({}) is consuming its {}-day error budget faster than the {} threshold allows.",
                key.sli.as_str(),
                key.institution,
                key.sli.describe(cfg),
                cfg.window_days,
                key.severity.as_str()
            ),
        ),
    ]);
    if !windows.is_empty() {
        annotations.insert("windows".into(), windows.join(","));
    }
    WebhookAlert {
        status: if ends_ms.is_some() {
            "resolved"
        } else {
            "firing"
        },
        labels: labels(&[
            ("alertname", key.alert_name()),
            ("institution", &key.institution),
            ("sli", key.sli.as_str()),
            ("severity", key.severity.as_str()),
        ]),
        annotations,
        starts_ms,
        ends_ms,
        fingerprint: key.fingerprint(),
    }
}

/// The webhook alert for a failed media node (firing) or one back
/// (resolved).
pub fn node_fault(
    institution: &str,
    node: &str,
    region: &str,
    meetings: usize,
    starts_ms: u64,
    ends_ms: Option<u64>,
) -> WebhookAlert {
    let summary = match ends_ms {
        None => format!(
            "Media node {node} in region {region} failed; {meetings} of your meetings it carried were moved"
        ),
        Some(_) => format!("Media node {node} in region {region} is back in service"),
    };
    WebhookAlert {
        status: if ends_ms.is_some() { "resolved" } else { "firing" },
        labels: labels(&[
            ("alertname", "FjordMediaNodeDown"),
            ("institution", institution),
            ("node", node),
            ("region", region),
            ("severity", "page"),
        ]),
        annotations: labels(&[
            ("summary", &summary),
            (
                "description",
                "Fjord declared the node down when its heartbeats stopped and placed its meetings on other nodes in their residency; participants rejoin automatically.",
            ),
        ]),
        starts_ms,
        ends_ms,
        fingerprint: fingerprint(&["FjordMediaNodeDown", institution, node]),
    }
}

/// The webhook alert announcing planned maintenance.
pub fn maintenance_notice(institution: &str, m: &Maintenance) -> WebhookAlert {
    let scope = match &m.node {
        Some(n) => format!("media node {n} in region {}", m.region),
        None => format!("region {}", m.region),
    };
    let mut l = labels(&[
        ("alertname", "FjordPlannedMaintenance"),
        ("institution", institution),
        ("region", &m.region),
        ("severity", "info"),
    ]);
    if let Some(n) = &m.node {
        l.insert("node".into(), n.clone());
    }
    WebhookAlert {
        status: "firing",
        labels: l,
        annotations: labels(&[
            (
                "summary",
                &format!(
                    "Planned maintenance of {scope} from {} to {}",
                    rfc3339(m.from_ms),
                    rfc3339(m.to_ms)
                ),
            ),
            ("description", &m.reason),
            ("maintenance_id", &m.id.to_string()),
        ]),
        starts_ms: m.from_ms,
        ends_ms: Some(m.to_ms),
        fingerprint: fingerprint(&["FjordPlannedMaintenance", institution, &m.id.to_string()]),
    }
}

/// Whether a contact point takes webhooks.
pub fn is_webhook(contact: &str) -> bool {
    contact.starts_with("https://") || contact.starts_with("http://")
}

/// Notifications waiting to go out and the log of those that went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    notifications: VecDeque<Notification>,
    next_id: u64,
}

impl Outbox {
    /// Queues a notification for `institution`'s contact point.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now_ms: u64,
        institution: &str,
        contact: &str,
        kind: NoticeKind,
        alert: &WebhookAlert,
        external_url: &str,
    ) -> u64 {
        self.next_id += 1;
        let delivery = if is_webhook(contact) {
            Delivery::Pending {
                next_attempt_ms: now_ms,
            }
        } else {
            Delivery::NoWebhook
        };
        self.notifications.push_back(Notification {
            id: self.next_id,
            institution: institution.to_string(),
            kind,
            status: alert.status.to_string(),
            summary: alert
                .annotations
                .get("summary")
                .cloned()
                .unwrap_or_default(),
            created_ms: now_ms,
            contact: contact.to_string(),
            body: webhook_body(institution, alert, external_url),
            attempts: Vec::new(),
            delivery,
        });
        if self.notifications.len() > NOTIFICATION_LIMIT {
            // Drop the oldest finished one; pending ones stay.
            if let Some(i) = self
                .notifications
                .iter()
                .position(|n| !matches!(n.delivery, Delivery::Pending { .. }))
            {
                self.notifications.remove(i);
            }
        }
        self.next_id
    }

    /// Notifications whose next attempt is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> impl Iterator<Item = &Notification> {
        self.notifications.iter().filter(
            move |n| matches!(n.delivery, Delivery::Pending { next_attempt_ms } if next_attempt_ms <= now_ms),
        )
    }

    /// Records an attempt; a second record of the same attempt (a retried
    /// commit) changes nothing. Returns false for an unknown or finished
    /// notification.
    pub fn record_attempt(&mut self, id: u64, attempt: Attempt) -> bool {
        let Some(n) = self.notifications.iter_mut().find(|n| n.id == id) else {
            return false;
        };
        if !matches!(n.delivery, Delivery::Pending { .. }) {
            return false;
        }
        if n.attempts.iter().any(|a| a.at_ms == attempt.at_ms) {
            return false;
        }
        let at = attempt.at_ms;
        let ok = attempt.ok;
        n.attempts.push(attempt);
        n.delivery = if ok {
            Delivery::Delivered { at_ms: at }
        } else if n.attempts.len() >= MAX_ATTEMPTS {
            Delivery::GaveUp { at_ms: at }
        } else {
            let shift = (n.attempts.len() - 1).min(20) as u32;
            let delay = (FIRST_RETRY_DELAY_MS << shift).min(MAX_RETRY_DELAY_MS);
            Delivery::Pending {
                next_attempt_ms: at + delay,
            }
        };
        true
    }

    pub fn get(&self, id: u64) -> Option<&Notification> {
        self.notifications.iter().find(|n| n.id == id)
    }

    /// Every notification of one institution (or all), newest first.
    pub fn log<'a>(
        &'a self,
        institution: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Notification> + 'a {
        self.notifications
            .iter()
            .rev()
            .filter(move |n| institution.is_none_or(|i| n.institution == i))
    }
}
