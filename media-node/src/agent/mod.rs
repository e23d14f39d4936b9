//! The node's agent towards the control plane for usage: the journal of
//! usage events and the reporter that commits them to the ledger, and the
//! node-local connection log with its retention sweep.
//!
//! ```text
//!  Sfu::take_usage ──▶ journal (append + fsync) ──▶ ReportUsage ──▶ ledger
//!                         ▲                              │
//!                         └──── forget up to acked_seq ◀─┘
//!  Sfu::take_connections ──▶ connections.log (this disk only) ──▶ sweep
//! ```
//!
//! Every flush interval the reporter takes what the core recorded, journals
//! it with one fsync, then reports what the ledger has not acknowledged
//! (at most `REPORT_BATCH` events per call). Numbering starts after the
//! mark the control plane answered at registration, so a node whose disk
//! was lost never reuses a sequence number.

pub mod connection_log;
pub mod journal;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use fjord_common::client::Client;
use fjord_proto::v1 as pb;

use crate::sfu::{ConnectionRecord, UsageRecord};
use connection_log::ConnectionLog;
use journal::Journal;

/// Most events one report carries.
pub const REPORT_BATCH: usize = 5000;

#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Where the journal and the connection log live. `None`: a fresh
    /// directory under the system's temporary directory (a restart then
    /// starts without what was not yet reported).
    pub data_dir: Option<PathBuf>,
    /// How often usage is journaled and reported.
    pub flush_interval: Duration,
    /// Connection-log entries older than this are deleted (≤ 365 days).
    pub connection_log_retention: Duration,
    /// How often the connection log is swept.
    pub sweep_interval: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            data_dir: None,
            flush_interval: Duration::from_millis(200),
            connection_log_retention: connection_log::MAX_RETENTION,
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

impl UsageConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval < Duration::from_millis(10)
            || self.flush_interval > Duration::from_secs(60)
        {
            return Err("the usage flush interval must be 10 ms to 60 s".into());
        }
        if self.connection_log_retention.is_zero()
            || self.connection_log_retention > connection_log::MAX_RETENTION
        {
            return Err(
                "the connection-log retention must be more than 0 and at most 365 days".into(),
            );
        }
        if self.sweep_interval < Duration::from_millis(100) {
            return Err("the connection-log sweep interval must be at least 100 ms".into());
        }
        Ok(())
    }
}

/// The journal and the log, shared between the reporter and shutdown.
pub struct UsageAgent {
    pub boot: u64,
    dir: PathBuf,
    temporary: bool,
    journal: Mutex<Journal>,
    connections: Mutex<ConnectionLog>,
    /// Recorded but not yet journaled (a failed write is retried).
    unjournaled: Mutex<Vec<UsageRecord>>,
    config: UsageConfig,
}

fn random_boot() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system randomness");
    u64::from_be_bytes(b) | 1
}

impl UsageAgent {
    pub fn open(node_id: &str, config: UsageConfig) -> std::io::Result<UsageAgent> {
        let boot = random_boot();
        let (dir, temporary) = match &config.data_dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "fjord-media-node-{node_id}-{}-{boot:x}",
                    std::process::id()
                )),
                true,
            ),
        };
        if temporary {
            tracing::warn!(dir = %dir.display(), "no --data-dir: the usage journal lives in a temporary directory");
        }
        let journal = Journal::open(&dir, boot)?;
        if journal.torn_on_open {
            tracing::warn!("the usage journal ended in a torn record (a crash mid-write); cut off");
        }
        let connections = ConnectionLog::open(&dir, config.connection_log_retention)?;
        Ok(UsageAgent {
            boot,
            dir,
            temporary,
            journal: Mutex::new(journal),
            connections: Mutex::new(connections),
            unjournaled: Mutex::new(Vec::new()),
            config,
        })
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Events journaled and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.journal.lock().expect("journal lock").pending()
    }

    /// Journals what the core recorded (one fsync) and logs connections.
    fn journal(&self, records: Vec<UsageRecord>, connections: Vec<ConnectionRecord>) {
        if !connections.is_empty() {
            if let Err(e) = self
                .connections
                .lock()
                .expect("connection log lock")
                .append(&connections)
            {
                tracing::error!(error = %e, "could not write the connection log");
                metrics::counter!("fjord_connection_log_write_errors_total").increment(1);
            }
        }
        for j in records.iter().filter_map(|r| r.join) {
            // The node's own view of join latency (join call to reaching
            // media), as a histogram; the SLI counts the same joins against
            // the threshold.
            let outcome = if j.ok { "reached_media" } else { "turned_away" };
            metrics::histogram!("fjord_media_join_latency_seconds", "outcome" => outcome)
                .record(f64::from(j.latency_ms) / 1000.0);
        }
        let mut waiting = self.unjournaled.lock().expect("unjournaled lock");
        waiting.extend(records);
        if waiting.is_empty() {
            return;
        }
        let mut journal = self.journal.lock().expect("journal lock");
        if !journal.is_numbering() {
            return; // not registered yet: keep them
        }
        match journal.append(&waiting) {
            Ok(()) => {
                metrics::counter!("fjord_usage_events_journaled_total")
                    .increment(waiting.len() as u64);
                waiting.clear();
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write the usage journal; retrying");
                metrics::counter!("fjord_usage_journal_write_errors_total").increment(1);
            }
        }
        metrics::gauge!("fjord_usage_journal_pending").set(journal.pending() as f64);
    }

    /// Reports one batch: Some(true) when everything journaled is
    /// acknowledged, None when the report failed.
    async fn report(&self, client: &Client, node_id: &str) -> Option<bool> {
        let events = self
            .journal
            .lock()
            .expect("journal lock")
            .unacked(REPORT_BATCH);
        if events.is_empty() {
            return Some(true);
        }
        let n = events.len();
        let node_id = node_id.to_string();
        let answer = client
            .call(|ch| {
                let req = pb::ReportUsageRequest {
                    node_id: node_id.clone(),
                    events: events.clone(),
                };
                async move {
                    pb::node_service_client::NodeServiceClient::new(ch)
                        .report_usage(req)
                        .await
                }
            })
            .await;
        match answer {
            Ok(r) => {
                let acked = r.into_inner().acked_seq;
                let mut journal = self.journal.lock().expect("journal lock");
                if let Err(e) = journal.acknowledge(acked) {
                    tracing::error!(error = %e, "could not trim the usage journal");
                }
                metrics::counter!("fjord_usage_events_reported_total").increment(n as u64);
                metrics::gauge!("fjord_usage_journal_pending").set(journal.pending() as f64);
                Some(journal.pending() == 0)
            }
            Err(e) => {
                tracing::warn!(error = %e, events = n, "usage report failed; will resend");
                metrics::counter!("fjord_usage_report_failures_total").increment(1);
                None
            }
        }
    }

    fn sweep(&self, now_ms: u64) {
        match self
            .connections
            .lock()
            .expect("connection log lock")
            .sweep(now_ms)
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    deleted = n,
                    "connection log: entries past retention deleted"
                );
                metrics::counter!("fjord_connection_log_deleted_total").increment(n as u64);
            }
            Err(e) => tracing::error!(error = %e, "connection-log sweep failed"),
        }
    }

    /// Removes an automatically created directory once nothing is pending.
    pub fn cleanup(&self) {
        if self.temporary && self.pending() == 0 {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs until `stop`: journal, report, sweep. `take` drains the core's
/// usage and connection records. Waits for `acked` (the ledger's mark from
/// registration) before numbering anything.
pub async fn run_reporter(
    agent: Arc<UsageAgent>,
    client: Arc<Client>,
    node_id: String,
    take: impl Fn() -> (Vec<UsageRecord>, Vec<ConnectionRecord>) + Send + 'static,
    mut acked: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let mark = tokio::select! {
        m = acked.wait_for(|m| m.is_some()) => match m { Ok(m) => m.expect("some"), Err(_) => return },
        _ = stop.changed() => return,
    };
    {
        let mut journal = agent.journal.lock().expect("journal lock");
        if let Err(e) = journal.start_numbering(mark) {
            tracing::error!(error = %e, "could not trim the usage journal");
        }
        tracing::info!(
            acked = mark,
            resending = journal.pending(),
            boot = agent.boot,
            "usage journal open"
        );
    }
    let mut tick = tokio::time::interval(agent.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = Instant::now();
    agent.sweep(crate::node::now_ms());
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        let (records, connections) = take();
        let a = agent.clone();
        let _ = tokio::task::spawn_blocking(move || a.journal(records, connections)).await;
        if stopping {
            // The last words: report what is journaled, briefly.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(1), agent.report(&client, &node_id))
                    .await
                {
                    Ok(Some(true)) => break,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            return;
        }
        // Catch up in several batches when far behind.
        for _ in 0..8 {
            match agent.report(&client, &node_id).await {
                Some(false) if agent.pending() >= REPORT_BATCH => continue,
                _ => break,
            }
        }
        if last_sweep.elapsed() >= agent.config.sweep_interval {
            let a = agent.clone();
            let _ = tokio::task::spawn_blocking(move || a.sweep(crate::node::now_ms())).await;
            last_sweep = Instant::now();
        }
    }
}
