//! One-way migration of a data directory written before the WAL (a single
//! `raft.redb` with JSON entries, vote and snapshot) to the current layout.
//!
//! Crash-safe by ordering: the snapshot and hard state are written first,
//! the WAL is built under `wal.migrating` and renamed to `wal` last; until
//! that rename the old file is the truth and a restart migrates again. The
//! old file is then renamed `raft.redb.migrated` and can be deleted once the
//! replica runs.

use std::path::Path;

use openraft::{Entry, LogId, SnapshotMeta, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec;
use super::store::{write_atomic, write_snapshot, Applied, HardState, StoreError};
use super::{wal, NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

pub(crate) fn from_redb(dir: &Path, legacy: &Path) -> Result<(), StoreError> {
    let fail = |reason: String| StoreError::Migrate {
        path: legacy.display().to_string(),
        reason,
    };
    let db = Database::open(legacy).map_err(|e| fail(e.to_string()))?;
    let txn = db.begin_read().map_err(|e| fail(e.to_string()))?;

    let meta = txn.open_table(META).map_err(|e| fail(e.to_string()))?;
    let get_meta = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta
            .get(key)
            .map_err(|e| fail(e.to_string()))?
            .map(|v| v.value().to_vec()))
    };
    let vote: Option<Vote<NodeId>> = match get_meta("vote")? {
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| fail(format!("vote: {e}")))?),
        None => None,
    };
    let last_purged: Option<LogId<NodeId>> = match get_meta("last_purged")? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| fail(format!("last_purged: {e}")))?,
        None => None,
    };

    let snapshot_path = dir.join("snapshot");
    let snap = txn.open_table(SNAPSHOT).map_err(|e| fail(e.to_string()))?;
    let (m, d) = (
        snap.get("meta").map_err(|e| fail(e.to_string()))?,
        snap.get("data").map_err(|e| fail(e.to_string()))?,
    );
    if let (Some(m), Some(d)) = (m, d) {
        let meta: SnapshotMeta<NodeId, openraft::BasicNode> =
            serde_json::from_slice(m.value()).map_err(|e| fail(format!("snapshot meta: {e}")))?;
        let applied: Applied =
            serde_json::from_slice(d.value()).map_err(|e| fail(format!("snapshot data: {e}")))?;
        let data = codec::encode(&applied).map_err(|e| fail(e.to_string()))?;
        write_snapshot(&snapshot_path, &meta, &data).map_err(|e| fail(e.to_string()))?;
    }

    let hard = HardState { vote, last_purged };
    let bytes = codec::encode(&hard).map_err(|e| fail(e.to_string()))?;
    write_atomic(&dir.join("hardstate"), &[&bytes]).map_err(|e| fail(e.to_string()))?;

    let staging = dir.join("wal.migrating");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| fail(e.to_string()))?;
    }
    let mut records = Vec::new();
    let log = txn.open_table(LOG).map_err(|e| fail(e.to_string()))?;
    for item in log.iter().map_err(|e| fail(e.to_string()))? {
        let (k, v) = item.map_err(|e| fail(e.to_string()))?;
        let index = k.value();
        if last_purged.is_some_and(|p| index <= p.index) {
            continue;
        }
        let entry: Entry<TypeConfig> =
            codec::decode_entry(v.value()).map_err(|e| fail(format!("entry {index}: {e}")))?;
        records.push((
            index,
            codec::encode(&entry).map_err(|e| fail(e.to_string()))?,
        ));
    }
    let count = records.len();
    {
        let (w, _) = wal::open(
            &staging,
            last_purged.map(|l| l.index),
            64 << 20,
            wal::WalIo::Thread,
        )
        .map_err(|e| fail(e.to_string()))?;
        if !records.is_empty() {
            let (tx, rx) = std::sync::mpsc::channel();
            w.append(
                records,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            rx.recv()
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    std::fs::rename(&staging, dir.join("wal")).map_err(|e| fail(e.to_string()))?;
    drop(log);
    drop(snap);
    drop(meta);
    drop(txn);
    drop(db);
    std::fs::rename(legacy, dir.join("raft.redb.migrated")).map_err(|e| fail(e.to_string()))?;
    tracing::info!(
        entries = count,
        from = %legacy.display(),
        "migrated the Raft data directory to the WAL layout; raft.redb.migrated can be deleted"
    );
    Ok(())
}
