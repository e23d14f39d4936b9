//! Durable Raft storage: the log in WAL segments ([`super::wal`]), the vote
//! and purge point in a small hard-state file, and the last snapshot in a
//! snapshot file, all under the replica's data directory:
//!
//! ```text
//!   DATA/wal/*.wal     log entries (group-committed, one fdatasync per batch)
//!   DATA/hardstate     vote + last purged log id (replaced atomically)
//!   DATA/snapshot      header, meta, state (replaced atomically)
//! ```
//!
//! Entries not yet purged are also kept in memory, so replication and
//! apply never read the disk; a snapshot every few thousand entries bounds
//! them. The state machine lives in memory and is rebuilt on restart from
//! the snapshot plus the committed log after it. A data directory written
//! by earlier versions (one `raft.redb` file) is migrated on first open.

// openraft's trait methods return its `StorageError`; our helpers return the
// same type so `?` works throughout.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::{Cursor, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard, TryLockError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::codec;
use super::wal::{self, Wal, WalIo};
use super::{NodeId, TypeConfig};
use crate::state::{ClusterState, Response};

/// WAL segments rotate at this size (and at every purge).
const SEGMENT_BYTES: u64 = 64 << 20;
const SNAPSHOT_MAGIC: &[u8; 8] = b"FJSNAP1\n";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Decode {
        path: String,
        source: codec::CodecError,
    },
    #[error("migrating {path}: {reason}")]
    Migrate { path: String, reason: String },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens (or creates) the store under `dir` and returns its two halves.
pub fn open_stores(dir: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    open_stores_with(dir, WalIo::Thread)
}

/// [`open_stores`] with the log's I/O mode: [`WalIo::Inline`] keeps every
/// file operation on the calling task, for the deterministic simulation.
pub fn open_stores_with(dir: &Path, io: WalIo) -> Result<(LogStore, StateMachine), StoreError> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let legacy = dir.join("raft.redb");
    if legacy.exists() && !dir.join("wal").exists() {
        super::migrate::from_redb(dir, &legacy)?;
    }
    let hard_path = dir.join("hardstate");
    let hard: HardState = match std::fs::read(&hard_path) {
        Ok(b) => codec::decode(&b).map_err(|source| StoreError::Decode {
            path: hard_path.display().to_string(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HardState::default(),
        Err(e) => return Err(io_at(&hard_path)(e)),
    };
    let wal_dir = dir.join("wal");
    let (wal, recovered) = wal::open(
        &wal_dir,
        hard.last_purged.map(|l| l.index),
        SEGMENT_BYTES,
        io,
    )
    .map_err(io_at(&wal_dir))?;
    if recovered.torn_bytes > 0 {
        tracing::warn!(
            bytes = recovered.torn_bytes,
            "cut a torn write at the end of the Raft log (never acknowledged)"
        );
    }
    let mut entries = VecDeque::with_capacity(recovered.records.len());
    for (index, bytes) in recovered.records {
        let e = codec::decode_entry(&bytes).map_err(|source| StoreError::Decode {
            path: format!("{} entry {index}", wal_dir.display()),
            source,
        })?;
        entries.push_back(e);
    }
    let snapshot_path = dir.join("snapshot");
    let sm = StateMachine::load(snapshot_path, io)?;
    let log = LogStore {
        inner: Arc::new(LogInner {
            mem: RwLock::new(MemLog {
                entries,
                last_purged: hard.last_purged,
            }),
            hard: Mutex::new(hard),
            hard_path,
            wal,
            io,
        }),
    };
    Ok((log, sm))
}

/// What must survive a crash besides the entries.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct HardState {
    #[serde(default)]
    pub vote: Option<Vote<NodeId>>,
    #[serde(default)]
    pub last_purged: Option<LogId<NodeId>>,
}

/// Writes `bytes` to `path` so a crash leaves either the old or the new
/// file: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}

/// Runs blocking file work off the async runtime's worker threads (in
/// the simulation, right here: no other thread may run).
async fn blocking<T: Send + 'static>(
    io: WalIo,
    f: impl FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    match io {
        WalIo::Thread => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StorageError::from(StorageIOError::write(&e)))?,
        WalIo::Inline => f(),
    }
}

struct MemLog {
    entries: VecDeque<Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
}

impl MemLog {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// The entries in `range`, in order: what is there (openraft's
    /// contract for `try_get_log_entries`: purged entries are skipped).
    fn entries_in(&self, range: impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
        let first_wanted = match range.start_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => Some(i.saturating_add(1)),
            Bound::Unbounded => None,
        };
        let start = first_wanted.map_or(0, |i| self.position(i));
        let end = match range.end_bound() {
            Bound::Included(i) => self.position(i.saturating_add(1)),
            Bound::Excluded(i) => self.position(*i),
            Bound::Unbounded => self.entries.len(),
        };
        self.entries
            .range(start..end.max(start))
            .filter(|e| range.contains(&e.log_id.index))
            .cloned()
            .collect()
    }

    /// What a leader replicates for `start..end`: never the entries after
    /// a purged hole. openraft sends what this returns after the
    /// `prev_log_id` it asked for, so entries 32.. returned for 24.. would
    /// land on a follower as if they followed entry 23. A replication
    /// retry can read a range its leader purged meanwhile; openraft takes
    /// an empty answer as a heartbeat and then sends a snapshot. (Found by
    /// the simulation.)
    fn entries_to_replicate(&self, start: u64, end: u64) -> Vec<Entry<TypeConfig>> {
        if self.last_purged.is_some_and(|p| start <= p.index) && start < end {
            return Vec::new();
        }
        self.entries_in(start..end)
    }

    /// Position of `index` in `entries` (clamped to the ends).
    fn position(&self, index: u64) -> usize {
        match self.first_index() {
            Some(first) => (index.saturating_sub(first) as usize).min(self.entries.len()),
            None => 0,
        }
    }
}

struct LogInner {
    mem: RwLock<MemLog>,
    hard: Mutex<HardState>,
    hard_path: PathBuf,
    wal: Wal,
    io: WalIo,
}

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<LogInner>,
}

impl LogStore {
    async fn save_hard(
        &self,
        change: impl FnOnce(&mut HardState),
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = {
            let mut hard = self.inner.hard.lock().expect("hard state lock poisoned");
            change(&mut hard);
            codec::encode(&*hard).map_err(io_err)?
        };
        let path = self.inner.hard_path.clone();
        blocking(self.inner.io, move || {
            write_atomic(&path, &[&bytes]).map_err(io_err)
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let mem = self.inner.mem.read().expect("log lock poisoned");
        Ok(mem.entries_in(range))
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let mem = self.inner.mem.read().expect("log lock poisoned");
        Ok(mem.entries_to_replicate(start, end))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let mem = self.inner.mem.read().expect("log lock poisoned");
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.entries.back().map(|e| e.log_id).or(mem.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.save_hard(|h| h.vote = Some(vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .inner
            .hard
            .lock()
            .expect("hard state lock poisoned")
            .vote)
    }

    // `save_committed` is not overridden: the commit index is learnt again
    // from the leader after a restart, and persisting it would add an fsync
    // to every commit.

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut records = Vec::with_capacity(entries.len());
        for e in &entries {
            records.push((e.log_id.index, codec::encode(e).map_err(io_err)?));
        }
        // Readable at once (the leader replicates while its own write is in
        // flight); acknowledged to openraft only once durable.
        self.inner
            .mem
            .write()
            .expect("log lock poisoned")
            .entries
            .extend(entries);
        self.inner
            .wal
            .append(records, Box::new(move |r| callback.log_io_completed(r)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut mem = self.inner.mem.write().expect("log lock poisoned");
            let keep = mem.position(log_id.index);
            mem.entries.truncate(keep);
        }
        self.inner.wal.truncate(log_id.index).await.map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The purge point is durable before anything is forgotten.
        self.save_hard(|h| h.last_purged = Some(log_id)).await?;
        {
            let mut mem = self.inner.mem.write().expect("log lock poisoned");
            let drop = mem.position(log_id.index.saturating_add(1));
            mem.entries.drain(..drop);
            mem.last_purged = Some(log_id);
        }
        self.inner.wal.purge(log_id.index).await.map_err(io_err)
    }
}

/// What the state machine holds in memory; shared with the API for reads.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub state: ClusterState,
}

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// `magic | meta length (u32 LE) | meta | state`, replaced atomically so a
/// crash never pairs one snapshot's meta with another's state.
pub(crate) fn write_snapshot(path: &Path, meta: &Meta, data: &[u8]) -> std::io::Result<()> {
    let meta = codec::encode(meta).map_err(std::io::Error::other)?;
    write_atomic(
        path,
        &[
            SNAPSHOT_MAGIC,
            &(meta.len() as u32).to_le_bytes(),
            &meta,
            data,
        ],
    )
}

fn read_snapshot(path: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    let bad = |reason: &str| StoreError::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    };
    if bytes.len() < 12 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a snapshot file"));
    }
    let meta_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if bytes.len() < 12 + meta_len {
        return Err(bad("truncated snapshot meta"));
    }
    let meta: Meta =
        codec::decode(&bytes[12..12 + meta_len]).map_err(|source| StoreError::Decode {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Some((meta, bytes[12 + meta_len..].to_vec())))
}

#[derive(Clone)]
pub struct StateMachine {
    path: PathBuf,
    pub applied: Arc<RwLock<Applied>>,
    snapshot_counter: Arc<std::sync::atomic::AtomicU64>,
    io: WalIo,
}

impl StateMachine {
    fn load(path: PathBuf, io: WalIo) -> Result<Self, StoreError> {
        let applied = match read_snapshot(&path)? {
            Some((_, data)) => codec::decode(&data).map_err(|source| StoreError::Decode {
                path: path.display().to_string(),
                source,
            })?,
            None => Applied::default(),
        };
        Ok(StateMachine {
            path,
            applied: Arc::new(RwLock::new(applied)),
            snapshot_counter: Arc::default(),
            io,
        })
    }
}

/// How long a write waits between tries while the state is being copied.
const WRITE_LOCK_RETRY: std::time::Duration = std::time::Duration::from_micros(500);

/// The state's write lock, waited for without blocking the thread. A
/// snapshot copies the state under its read lock, which for a large state
/// takes hundreds of milliseconds; a replica running on one thread that
/// blocked on the lock meanwhile would send no heartbeat, and its followers
/// would stand for election. Trying (rather than waiting in the lock) also
/// leaves readers free to go on: a waiting writer would hold them up.
async fn write_lock(applied: &RwLock<Applied>) -> RwLockWriteGuard<'_, Applied> {
    let mut waited = false;
    loop {
        // The attempt ends before the wait: no guard is held across it.
        match applied.try_write() {
            Ok(guard) => {
                if waited {
                    metrics::counter!("fjord_raft_apply_lock_waits_total").increment(1);
                }
                return guard;
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Poisoned(_)) => panic!("state lock poisoned"),
        };
        waited = true;
        tokio::time::sleep(WRITE_LOCK_RETRY).await;
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let n = self
            .snapshot_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let applied = self.applied.clone();
        let path = self.path.clone();
        // The copy, the encoding and the write all run on a blocking
        // thread: tens of MiB take long enough to starve every other task
        // of an async worker (heartbeats included) if done on one.
        let (meta, data) = blocking(self.io, move || {
            // A copy under the lock, encoded and written off it, so applies
            // wait for the copy, not for the encoding or the disk.
            let copy = applied.read().expect("state lock poisoned").clone();
            let snapshot_id = match copy.last_applied {
                Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
                None => format!("empty-{n}"),
            };
            let meta = SnapshotMeta {
                last_log_id: copy.last_applied,
                last_membership: copy.membership.clone(),
                snapshot_id,
            };
            let data = codec::encode(&copy).map_err(io_err)?;
            drop(copy);
            write_snapshot(&path, &meta, &data).map_err(io_err)?;
            Ok((meta, data))
        })
        .await?;
        metrics::gauge!("fjord_raft_snapshot_bytes").set(data.len() as f64);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let a = self.applied.read().expect("state lock poisoned");
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut a = write_lock(&self.applied).await;
        let mut out = Vec::new();
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => proposal
                    .requests
                    .iter()
                    .map(|req| {
                        let r = a.state.apply(req);
                        crate::telemetry::command_applied(&req.command, &r);
                        r
                    })
                    .collect(),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let path = self.path.clone();
        let m = meta.clone();
        let applied: Applied = blocking(self.io, move || {
            let applied: Applied = codec::decode(&data).map_err(io_err)?;
            write_snapshot(&path, &m, &data).map_err(io_err)?;
            Ok(applied)
        })
        .await?;
        let installed = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: applied.state,
        };
        let old = std::mem::replace(&mut *write_lock(&self.applied).await, installed);
        // Freeing a large state takes a while too: not on an async worker.
        if self.io == WalIo::Thread {
            tokio::task::spawn_blocking(move || drop(old));
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let path = self.path.clone();
        let found = blocking(self.io, move || {
            read_snapshot(&path).map_err(|e| io_err(std::io::Error::other(e.to_string())))
        })
        .await?;
        Ok(found.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_from(first: u64, last: u64) -> MemLog {
        let entries = (first..=last)
            .map(|index| Entry::<TypeConfig> {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
                payload: openraft::EntryPayload::Blank,
            })
            .collect();
        MemLog {
            entries,
            last_purged: first
                .checked_sub(1)
                .map(|i| LogId::new(openraft::CommittedLeaderId::new(1, 1), i)),
        }
    }

    #[tokio::test]
    async fn a_write_waits_out_a_copy_without_blocking_its_thread() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::{Duration, Instant};
        // A snapshot copy holding the read lock on another thread.
        let applied = Arc::new(RwLock::new(Applied::default()));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let copier = {
            let applied = applied.clone();
            std::thread::spawn(move || {
                let _copying = applied.read().expect("lock");
                held_tx.send(()).expect("held");
                std::thread::sleep(Duration::from_millis(300));
            })
        };
        held_rx.recv().expect("copy started");
        // This test's runtime has one thread: a heartbeat-like task must
        // keep running while the write waits.
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let started = Instant::now();
        let guard = write_lock(&applied).await;
        let waited = started.elapsed();
        drop(guard);
        ticker.abort();
        copier.join().expect("copier");
        assert!(
            waited >= Duration::from_millis(250),
            "the write waited for the copy: {waited:?}"
        );
        let ticks = ticks.load(Ordering::Relaxed);
        assert!(
            ticks >= 3,
            "the thread ran other tasks meanwhile: {ticks} ticks"
        );
    }

    fn indexes(entries: Vec<Entry<TypeConfig>>) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn a_range_reads_what_is_there_from_its_start() {
        let log = log_from(0, 9);
        assert_eq!(indexes(log.entries_in(3..6)), vec![3, 4, 5]);
        assert_eq!(indexes(log.entries_in(8..20)), vec![8, 9]);
        assert_eq!(indexes(log.entries_in(..2)), vec![0, 1]);
        assert_eq!(indexes(log.entries_in(12..20)), Vec::<u64>::new());
    }

    #[test]
    fn a_log_that_never_purged_reads_what_it_has_from_below_its_start() {
        let mut log = log_from(1, 5);
        log.last_purged = None;
        assert_eq!(indexes(log.entries_in(0..)), vec![1, 2, 3, 4, 5]);
        assert_eq!(indexes(log.entries_to_replicate(0, 3)), vec![1, 2]);
    }

    #[test]
    fn a_range_to_replicate_whose_start_is_purged_is_nothing_not_the_entries_after_the_hole() {
        // Purged up to 31: a replication retry asking for 24..40 must not
        // get 32..39, which its leader would send as if they followed 23.
        let log = log_from(32, 70);
        assert_eq!(indexes(log.entries_to_replicate(24, 40)), Vec::<u64>::new());
        assert_eq!(indexes(log.entries_to_replicate(31, 33)), Vec::<u64>::new());
        assert_eq!(indexes(log.entries_to_replicate(32, 35)), vec![32, 33, 34]);
        // A plain read skips what is purged, as openraft's contract says.
        assert_eq!(indexes(log.entries_in(24..35)), vec![32, 33, 34]);
    }
}
