//! The connection log the institutions' terms require: the name and
//! address each participant connected with, kept on this node's own disk
//! only — never reported to the control plane, never in the replicated
//! state or the cloud tier — and deleted once older than the retention
//! period (at most 365 days).
//!
//! One JSON object per line, in time order; the sweep rewrites the file
//! without the lines past retention and renames it over the old one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sfu::ConnectionRecord;

/// The longest retention the terms allow.
pub const MAX_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub at_ms: u64,
    pub meeting: u64,
    pub participant: u64,
    pub name: String,
    /// Participants join with a display name; an e-mail is logged when the
    /// join carried one.
    #[serde(default)]
    pub email: String,
    pub ip: String,
}

pub struct ConnectionLog {
    path: PathBuf,
    file: File,
    retention: Duration,
}

impl ConnectionLog {
    pub fn open(dir: &Path, retention: Duration) -> io::Result<ConnectionLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join("connections.log");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(ConnectionLog {
            path,
            file,
            retention,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, records: &[ConnectionRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(
                &mut buf,
                &Entry {
                    at_ms: r.at_ms,
                    meeting: r.meeting,
                    participant: r.participant,
                    name: r.display_name.clone(),
                    email: String::new(),
                    ip: r.source.to_string(),
                },
            )
            .map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    /// Deletes entries older than the retention period; returns how many.
    pub fn sweep(&mut self, now_ms: u64) -> io::Result<usize> {
        let cutoff = now_ms.saturating_sub(self.retention.as_millis() as u64);
        let reader = BufReader::new(File::open(&self.path)?);
        let mut kept = Vec::new();
        let mut dropped = 0;
        for line in reader.lines() {
            let line = line?;
            match serde_json::from_str::<Entry>(&line) {
                Ok(e) if e.at_ms < cutoff => dropped += 1,
                Ok(_) => {
                    kept.extend_from_slice(line.as_bytes());
                    kept.push(b'\n');
                }
                // A torn last line from a crash: nothing to keep.
                Err(_) => dropped += 1,
            }
        }
        if dropped == 0 {
            return Ok(0);
        }
        let tmp = self.path.with_extension("log.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&kept)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, name: &str) -> ConnectionRecord {
        ConnectionRecord {
            at_ms: at,
            meeting: 1,
            participant: 2,
            display_name: name.into(),
            source: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn the_sweep_deletes_entries_older_than_the_retention_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConnectionLog::open(dir.path(), Duration::from_secs(10)).unwrap();
        log.append(&[rec(1_000, "Old One"), rec(15_000, "New One")])
            .unwrap();
        assert_eq!(log.sweep(20_000).unwrap(), 1);
        let text = fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains("Old One"), "{text}");
        assert!(text.contains("New One") && text.contains("127.0.0.1"));
        // Appends after a sweep land in the new file.
        log.append(&[rec(21_000, "Later")]).unwrap();
        assert_eq!(log.sweep(21_500).unwrap(), 0);
        assert!(fs::read_to_string(log.path()).unwrap().contains("Later"));
    }
}
