//! The usage journal: every usage event, numbered and on the node's own
//! disk (appended, one fsync per batch) before it is reported. What the
//! ledger acknowledged is forgotten; what it did not is resent, also after
//! a crash or restart.
//!
//! On disk: records of `[len u32 BE][crc32 u32 BE][UsageEvent protobuf]`.
//! A torn record at the tail (a crash mid-write) fails its length or CRC
//! and is cut off, with everything after it: it was never fsynced, so it
//! was never reported either.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use fjord_proto::v1 as pb;

use crate::sfu::UsageRecord;

/// Largest record accepted when reading back.
const MAX_RECORD: usize = 4096;
/// Rewrite the file without the acknowledged prefix past this size.
const COMPACT_ABOVE_BYTES: u64 = 1 << 20;

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Journaled and not yet acknowledged, in sequence order.
    pending: VecDeque<pb::UsageEvent>,
    /// The next sequence number to hand out (set by `start_numbering`).
    next_seq: u64,
    boot: u64,
    bytes: u64,
    /// Torn records cut off when opening.
    pub torn_on_open: bool,
}

fn encode(e: &pb::UsageEvent, out: &mut Vec<u8>) {
    let body = e.encode_to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Decodes records until the end or the first bad one; returns the events
/// and how many bytes were good.
fn decode_all(bytes: &[u8]) -> (Vec<pb::UsageEvent>, usize) {
    let mut events = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4"));
        if len > MAX_RECORD || bytes.len() - at - 8 < len {
            break;
        }
        let body = &bytes[at + 8..at + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        match pb::UsageEvent::decode(body) {
            Ok(e) => events.push(e),
            Err(_) => break,
        }
        at += 8 + len;
    }
    (events, at)
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, keeping what a previous
    /// process left unacknowledged.
    pub fn open(dir: &Path, boot: u64) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let path = dir.join("usage.journal");
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut bytes)?;
        }
        let (events, good) = decode_all(&bytes);
        let torn_on_open = good < bytes.len();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if torn_on_open {
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))?;
        Ok(Journal {
            path,
            file,
            pending: events.into(),
            next_seq: 0,
            boot,
            bytes: good as u64,
            torn_on_open,
        })
    }

    /// The ledger holds everything up to `acked`: number on after it (or
    /// after what this journal holds, if more).
    pub fn start_numbering(&mut self, acked: u64) -> io::Result<()> {
        let last = self.pending.back().map_or(0, |e| e.seq);
        self.next_seq = last.max(acked) + 1;
        self.acknowledge(acked)
    }

    pub fn is_numbering(&self) -> bool {
        self.next_seq > 0
    }

    /// Appends `records` with the next sequence numbers and fsyncs once.
    pub fn append(&mut self, records: &[UsageRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        assert!(self.next_seq > 0, "start_numbering comes first");
        let mut buf = Vec::with_capacity(records.len() * 48);
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            let e = pb::UsageEvent {
                seq: self.next_seq,
                at_ms: r.at_ms,
                meeting_id: r.meeting,
                participant_id: r.participant,
                kind: match (r.quality, r.join, r.joined) {
                    (Some(_), _, _) => pb::UsageKind::Quality,
                    (None, Some(_), _) => pb::UsageKind::JoinAttempt,
                    (None, None, true) => pb::UsageKind::Joined,
                    (None, None, false) => pb::UsageKind::Left,
                } as i32,
                features: r.features,
                reason: r.reason.to_string(),
                boot: self.boot,
                minutes: r.quality.map_or(0, |q| q.minutes),
                good_minutes: r.quality.map_or(0, |q| q.good_minutes),
                join_ok: r.join.is_some_and(|j| j.ok),
                join_latency_ms: r.join.map_or(0, |j| j.latency_ms),
            };
            self.next_seq += 1;
            encode(&e, &mut buf);
            events.push(e);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.bytes += buf.len() as u64;
        self.pending.extend(events);
        Ok(())
    }

    /// Up to `max` unacknowledged events, oldest first.
    pub fn unacked(&self, max: usize) -> Vec<pb::UsageEvent> {
        self.pending.iter().take(max).cloned().collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Forgets everything up to `acked`; empties or compacts the file.
    pub fn acknowledge(&mut self, acked: u64) -> io::Result<()> {
        let before = self.pending.len();
        while self.pending.front().is_some_and(|e| e.seq <= acked) {
            self.pending.pop_front();
        }
        if before == self.pending.len() {
            return Ok(());
        }
        if self.pending.is_empty() {
            self.file.set_len(0)?;
            use std::io::Seek;
            self.file.seek(io::SeekFrom::Start(0))?;
            self.file.sync_all()?;
            self.bytes = 0;
        } else if self.bytes > COMPACT_ABOVE_BYTES {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the pending events to a new file and renames it over the old.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut buf = Vec::new();
        for e in &self.pending {
            encode(e, &mut buf);
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, joined: bool) -> UsageRecord {
        UsageRecord {
            at_ms: at,
            meeting: 7,
            participant: 42,
            joined,
            features: 0,
            reason: if joined { "" } else { "left" },
            quality: None,
            join: None,
        }
    }

    #[test]
    fn unacknowledged_events_survive_a_reopen_and_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.start_numbering(0).unwrap();
        j.append(&[rec(1, true), rec(2, false), rec(3, true)])
            .unwrap();
        j.acknowledge(1).unwrap();
        drop(j);
        let mut j = Journal::open(dir.path(), 2).unwrap();
        // Before numbering, the ledger's mark decides what is stale.
        assert_eq!(j.pending(), 3, "the file still holds the acknowledged one");
        j.start_numbering(1).unwrap();
        let seqs: Vec<u64> = j.unacked(10).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert!(
            j.unacked(10).iter().all(|e| e.boot == 1),
            "the old boot travels with its events"
        );
        j.append(&[rec(4, false)]).unwrap();
        assert_eq!(j.unacked(10).last().unwrap().seq, 4);
        assert_eq!(j.unacked(10).last().unwrap().boot, 2);
        j.acknowledge(4).unwrap();
        assert_eq!(j.pending(), 0);
        assert_eq!(
            fs::metadata(dir.path().join("usage.journal"))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn numbering_continues_after_the_ledger_mark_when_the_disk_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.start_numbering(500).unwrap();
        j.append(&[rec(1, true)]).unwrap();
        assert_eq!(j.unacked(1)[0].seq, 501);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.start_numbering(0).unwrap();
        j.append(&[rec(1, true), rec(2, false)]).unwrap();
        drop(j);
        let path = dir.path().join("usage.journal");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2, 3]).unwrap(); // half a record
        drop(f);
        let mut j = Journal::open(dir.path(), 2).unwrap();
        assert!(j.torn_on_open);
        j.start_numbering(0).unwrap();
        assert_eq!(j.unacked(10).len(), 2);
        j.append(&[rec(3, true)]).unwrap();
        drop(j);
        let j = Journal::open(dir.path(), 3).unwrap();
        assert!(!j.torn_on_open);
        assert_eq!(j.pending(), 3);
    }

    #[test]
    fn compaction_keeps_only_the_unacknowledged_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 1).unwrap();
        j.start_numbering(0).unwrap();
        let batch: Vec<UsageRecord> = (0..60_000).map(|i| rec(i, i % 2 == 0)).collect();
        j.append(&batch).unwrap();
        j.acknowledge(59_990).unwrap();
        let len = fs::metadata(dir.path().join("usage.journal"))
            .unwrap()
            .len();
        assert!(len < 1000, "compacted to the last ten records, {len} bytes");
        drop(j);
        let mut j = Journal::open(dir.path(), 2).unwrap();
        j.start_numbering(59_990).unwrap();
        assert_eq!(j.unacked(100).len(), 10);
    }
}
