//! The metadata tier's loop, on the leader: drain the outbox into the
//! store, watch the store for changes made in the cloud tier, reconcile in
//! full when leadership begins, when the watch's history was compacted and
//! every `reconcile` interval. Every replica exports the outbox gauges from
//! the replicated state. While the store is unreachable nothing here
//! blocks a meeting: the outbox grows (one entry per record at most) and
//! drains when the store is back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::metadata::store::{MetadataStore, StoreError, StoreOp, WatchItem, WatchStream};
use crate::metadata::sync::{desired, judge, reconcile, Verdict};
use crate::raft::Replica;
use crate::state::{
    Command, LicenceCommand, MetaKey, MetadataCommand, MetadataSynced, MAX_SYNCED_PER_COMMAND,
};

/// Outbox entries written per store round trip.
const WRITE_BATCH: usize = 1_000;
/// Most entries written per tick (then the loop lets the watch in).
const MAX_PER_TICK: usize = 20_000;
/// Longest wait between attempts while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct MetadataTiming {
    /// How often the outbox is drained.
    pub sync: Duration,
    /// How often the whole store is compared with the state.
    pub reconcile: Duration,
}

/// What the writer knows that the replicated state does not: answered by
/// `MetadataService.GetStatus` on the replica that runs it (the leader).
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    pub backend: String,
    pub describe: String,
    /// This replica leads and runs the writer.
    pub active: bool,
    /// The last store operation succeeded.
    pub connected: bool,
    pub last_error: Option<String>,
    pub last_success_ms: u64,
    /// The last store revision the watch or a full read reached.
    pub seen_revision: u64,
    pub reconciles: u64,
    pub written: u64,
    pub restored: u64,
    pub edits_applied: u64,
    pub edits_refused: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SyncStatusHandle(Arc<Mutex<SyncStatus>>);

impl SyncStatusHandle {
    pub fn get(&self) -> SyncStatus {
        self.0.lock().expect("metadata status lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self.0.lock().expect("metadata status lock"))
    }
}

struct Writer {
    replica: Arc<Replica>,
    store: Arc<dyn MetadataStore>,
    status: SyncStatusHandle,
    /// Where the next drain starts (round robin over the outbox, so a
    /// stream of meeting changes cannot starve the records after them).
    cursor: Option<MetaKey>,
    /// Revision taken in by the watch, not yet committed.
    revision_to_commit: u64,
}

/// Runs for the life of the replica.
pub async fn sync_loop(
    replica: Arc<Replica>,
    store: Arc<dyn MetadataStore>,
    status: SyncStatusHandle,
    timing: MetadataTiming,
) {
    status.update(|s| {
        s.backend = store.kind().into();
        s.describe = store.describe();
    });
    let mut w = Writer {
        replica,
        store,
        status,
        cursor: None,
        revision_to_commit: 0,
    };
    let mut tick = tokio::time::interval(timing.sync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch: Option<WatchStream> = None;
    let mut reconciled_at: Option<Instant> = None;
    let mut backoff = timing.sync;
    let mut next_try = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            item = next_item(&mut watch) => {
                match item {
                    Some(Ok(WatchItem::Events { revision, events })) => {
                        for e in events {
                            w.on_change(&e.path, e.value.as_deref()).await;
                        }
                        w.saw_revision(revision);
                    }
                    Some(Ok(WatchItem::Compacted { compact_revision })) => {
                        tracing::info!(compact_revision, "metadata watch history compacted; reading the store again");
                        watch = None;
                        reconciled_at = None;
                    }
                    Some(Err(e)) => {
                        w.failed(&e);
                        watch = None;
                    }
                    None => watch = None,
                }
                continue;
            }
        }
        export_metrics(&w.replica);
        if !w.replica.is_leader() {
            if watch.take().is_some() || reconciled_at.is_some() {
                tracing::info!("no longer leader; metadata writer paused");
            }
            reconciled_at = None;
            w.status.update(|s| s.active = false);
            continue;
        }
        w.status.update(|s| s.active = true);
        if Instant::now() < next_try {
            continue;
        }
        let round = async {
            let due = reconciled_at.is_none_or(|t| t.elapsed() >= timing.reconcile);
            if due {
                let revision = w.reconcile().await?;
                reconciled_at = Some(Instant::now());
                watch = None;
                w.saw_revision(revision);
            }
            if watch.is_none() {
                let after = w.status.get().seen_revision;
                watch = Some(w.store.watch(after).await?);
            }
            w.drain().await
        };
        match round.await {
            Ok(()) => {
                backoff = timing.sync;
                w.status.update(|s| {
                    s.connected = true;
                    s.last_error = None;
                    s.last_success_ms = crate::raft::now_ms();
                });
            }
            Err(e) => {
                w.failed(&e);
                watch = None;
                next_try = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn next_item(watch: &mut Option<WatchStream>) -> Option<Result<WatchItem, StoreError>> {
    match watch {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}

impl Writer {
    fn failed(&self, e: &StoreError) {
        metrics::counter!("fjord_metadata_store_errors_total", "error" => e.id()).increment(1);
        let first = self.status.get().connected;
        if first {
            tracing::warn!(error = %e, "metadata store failed; the outbox keeps the changes and retries");
        } else {
            tracing::debug!(error = %e, "metadata store still failing");
        }
        self.status.update(|s| {
            s.connected = false;
            s.last_error = Some(e.to_string());
        });
    }

    fn saw_revision(&mut self, revision: u64) {
        self.status
            .update(|s| s.seen_revision = s.seen_revision.max(revision));
        self.revision_to_commit = self.revision_to_commit.max(revision);
    }

    /// Reads the whole store and acts on every key out of step; answers the
    /// revision it read at.
    async fn reconcile(&mut self) -> Result<u64, StoreError> {
        let contents = self.store.read_all().await?;
        let plan = self.replica.local_state(|s| reconcile(s, &contents.values));
        let keys = contents.values.len();
        let out_of_step = plan.len();
        for (path, verdict) in plan {
            let found = contents.values.get(&path).map(Vec::as_slice);
            self.act(&path, found, verdict).await?;
        }
        self.status.update(|s| s.reconciles += 1);
        metrics::counter!("fjord_metadata_reconciles_total").increment(1);
        tracing::info!(
            store = %self.store.describe(),
            keys,
            out_of_step,
            revision = contents.revision,
            "metadata store reconciled"
        );
        Ok(contents.revision)
    }

    /// A change the watch saw (a delete when `value` is `None`).
    async fn on_change(&mut self, path: &str, value: Option<&[u8]>) {
        let verdict = self.replica.local_state(|s| {
            // A key waiting in the outbox is about to be written anyway
            // (and our own writes echo back while newer changes wait).
            match MetaKey::parse(path) {
                Some(k) if s.metadata.outbox.contains_key(&k) => Verdict::InSync,
                _ => judge(s, path, value),
            }
        });
        if let Err(e) = self.act(path, value, verdict).await {
            self.failed(&e);
        }
    }

    async fn act(
        &mut self,
        path: &str,
        found: Option<&[u8]>,
        verdict: Verdict,
    ) -> Result<(), StoreError> {
        let restore = match verdict {
            Verdict::InSync | Verdict::Foreign => return Ok(()),
            Verdict::Restore(r) => r,
            Verdict::Refused { reason, restore } => {
                tracing::warn!(path, reason = %reason, "change made in the metadata store refused; restored");
                metrics::counter!("fjord_metadata_edits_total", "result" => reason.id())
                    .increment(1);
                self.status.update(|s| s.edits_refused += 1);
                restore
            }
            Verdict::LicenceEdit { edit, .. } => {
                let institution = edit.institution.clone();
                match self
                    .replica
                    .write(Command::Licence(LicenceCommand::Set(*edit)))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(
                            path,
                            institution,
                            "licence edited in the metadata store taken in as a new version"
                        );
                        metrics::counter!("fjord_metadata_edits_total", "result" => "applied")
                            .increment(1);
                        self.status.update(|s| s.edits_applied += 1);
                    }
                    Err(e) => {
                        tracing::warn!(path, institution, error = %e, "licence edited in the metadata store refused");
                        metrics::counter!("fjord_metadata_edits_total", "result" => "refused")
                            .increment(1);
                        self.status.update(|s| s.edits_refused += 1);
                    }
                }
                // Judged again against the state with the edit in it.
                match self.replica.local_state(|s| judge(s, path, found)) {
                    Verdict::Restore(r)
                    | Verdict::LicenceEdit { restore: r, .. }
                    | Verdict::Refused { restore: r, .. } => r,
                    Verdict::InSync | Verdict::Foreign => return Ok(()),
                }
            }
        };
        let op = match restore {
            Some(r) => StoreOp::Put {
                path: path.to_string(),
                value: r.encode(),
            },
            None => StoreOp::Delete {
                path: path.to_string(),
            },
        };
        self.store.write(std::slice::from_ref(&op)).await?;
        metrics::counter!("fjord_metadata_restored_total").increment(1);
        self.status.update(|s| s.restored += 1);
        Ok(())
    }

    /// Writes what the outbox holds, a batch at a time, and commits what
    /// was written (with the revision the watch reached).
    async fn drain(&mut self) -> Result<(), StoreError> {
        let mut done = 0;
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                break;
            }
            let ops: Vec<StoreOp> = batch
                .iter()
                .map(|(key, _, record, _)| match record {
                    Some(bytes) => StoreOp::Put {
                        path: key.path(),
                        value: bytes.clone(),
                    },
                    None => StoreOp::Delete { path: key.path() },
                })
                .collect();
            self.store.write(&ops).await?;
            let written: Vec<(MetaKey, u64)> =
                batch.iter().map(|(k, v, _, _)| (k.clone(), *v)).collect();
            self.cursor = written.last().map(|(k, _)| k.clone());
            self.commit(written).await;
            let now = crate::raft::now_ms();
            let lag = metrics::histogram!("fjord_metadata_sync_lag_seconds");
            for (_, _, _, since) in &batch {
                lag.record(now.saturating_sub(*since) as f64 / 1000.0);
            }
            metrics::counter!("fjord_metadata_records_written_total").increment(batch.len() as u64);
            self.status.update(|s| s.written += batch.len() as u64);
            done += batch.len();
            if batch.len() < WRITE_BATCH || done >= MAX_PER_TICK {
                break;
            }
        }
        if done == 0 && self.revision_to_commit > self.replica.local_state(|s| s.metadata.revision)
        {
            self.commit(Vec::new()).await;
        }
        Ok(())
    }

    /// Up to a batch of outbox entries from the cursor on (wrapping), each
    /// with its version, its record's bytes (`None`: delete) and when it
    /// was first marked.
    #[allow(clippy::type_complexity)]
    fn next_batch(&self) -> Vec<(MetaKey, u64, Option<Vec<u8>>, u64)> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.replica.local_state(|s| {
            let outbox = &s.metadata.outbox;
            let entry = |(k, p): (&MetaKey, &crate::state::Pending)| {
                let record = desired(s, k).ok().flatten().map(|r| r.encode());
                (k.clone(), p.version, record, p.since_ms)
            };
            let mut out: Vec<_> = match &self.cursor {
                Some(c) => outbox
                    .range((Excluded(c.clone()), Unbounded))
                    .take(WRITE_BATCH)
                    .map(entry)
                    .collect(),
                None => outbox.iter().take(WRITE_BATCH).map(entry).collect(),
            };
            if let Some(c) = &self.cursor {
                let rest = WRITE_BATCH - out.len();
                out.extend(outbox.range(..=c.clone()).take(rest).map(entry));
            }
            out
        })
    }

    /// Commits written versions; a lost commit only means the records are
    /// written again (puts are idempotent).
    async fn commit(&mut self, written: Vec<(MetaKey, u64)>) {
        debug_assert!(written.len() <= MAX_SYNCED_PER_COMMAND);
        let revision = self.revision_to_commit;
        match self
            .replica
            .write(Command::Metadata(MetadataCommand::Synced(MetadataSynced {
                written,
                revision,
            })))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "metadata writes written but not committed; they will be written again")
            }
        }
    }
}

/// Outbox gauges from the replicated state (the same on every replica).
fn export_metrics(replica: &Replica) {
    let now = crate::raft::now_ms();
    let (depth, oldest, revision, synced) = replica.local_state(|s| {
        let m = &s.metadata;
        (
            m.outbox.len(),
            m.oldest_pending_ms(),
            m.revision,
            m.synced_total,
        )
    });
    metrics::gauge!("fjord_metadata_outbox_depth").set(depth as f64);
    metrics::gauge!("fjord_metadata_outbox_oldest_seconds")
        .set(oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0));
    metrics::gauge!("fjord_metadata_revision").set(revision as f64);
    metrics::gauge!("fjord_metadata_synced_records").set(synced as f64);
}
