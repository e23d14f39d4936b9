//! The Raft log on disk: append-only segment files written by one I/O
//! thread that turns every append waiting at the same moment into one write
//! and one `fdatasync` (group commit), the way etcd's WAL does.
//!
//! ```text
//!   DIR/00000000000000000001.wal   header "FJWAL01\n", then records:
//!   [len u32][crc32 u32 of index+payload][index u64][payload: len bytes]
//! ```
//!
//! A record is durable once the thread has synced it; appenders learn that
//! through their callback. A crash can leave a torn record at the end of
//! the last segment: recovery cuts the file there (the append was never
//! acknowledged). A bad record anywhere else is corruption and refuses to
//! open. Truncation (a follower's conflicting suffix) cuts the files;
//! purging (after a snapshot) rotates to a new segment so old ones can be
//! deleted whole. Little-endian throughout.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

const MAGIC: &[u8; 8] = b"FJWAL01\n";
const RECORD_HEADER: usize = 16;
/// A record larger than this is refused on write and treated as corruption
/// on read (a Raft entry is a command of at most a few KiB).
pub const MAX_RECORD: usize = 64 << 20;

/// Called once the batch holding the record is on disk (or failed).
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

enum Op {
    Append {
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    },
    Truncate {
        from: u64,
        done: Done,
    },
    Purge {
        upto: u64,
        done: Done,
    },
}

/// How the log reaches the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WalIo {
    /// One I/O thread, group commit, `fdatasync`: what replicas run.
    #[default]
    Thread,
    /// In the caller's thread and without syncing: the deterministic
    /// simulation, where nothing may run on a thread of its own and a
    /// crash is a process crash (the kernel keeps what was written).
    Inline,
}

/// The handle appenders use; the I/O thread stops when every handle is gone.
#[derive(Clone)]
pub struct Wal {
    to_disk: ToDisk,
}

#[derive(Clone)]
enum ToDisk {
    Thread(mpsc::Sender<Op>),
    Inline(Arc<Mutex<Disk>>),
}

/// What [`open`] found on disk: records in index order.
pub struct Recovered {
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes cut from a torn tail (0 after a clean stop).
    pub torn_bytes: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Last index written to it, if any.
    last: Option<u64>,
}

struct Disk {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The segment appends go to (the last of `segments`), open for writing.
    active: Option<(File, u64)>,
    /// Where each retained record starts: (index, segment first, offset).
    index: VecDeque<(u64, u64, u64)>,
    max_segment_bytes: u64,
    /// Whether writes are synced (not in the simulation).
    sync: bool,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

fn sync_dir(dir: &Path, sync: bool) -> io::Result<()> {
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn corrupt(path: &Path, at: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what} at byte {at}", path.display()),
    )
}

/// Reads `dir`, repairs a torn tail, drops records at or below `purged`,
/// and starts the I/O thread.
pub fn open(
    dir: &Path,
    purged: Option<u64>,
    max_segment_bytes: u64,
    io: WalIo,
) -> io::Result<(Wal, Recovered)> {
    std::fs::create_dir_all(dir)?;
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse::<u64>().ok()
        })
        .collect();
    firsts.sort_unstable();
    let mut disk = Disk {
        dir: dir.to_path_buf(),
        segments: Vec::new(),
        active: None,
        index: VecDeque::new(),
        max_segment_bytes,
        sync: io == WalIo::Thread,
    };
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut torn_bytes = 0;
    let count = firsts.len();
    for (i, first) in firsts.into_iter().enumerate() {
        let path = segment_path(dir, first);
        let is_last = i + 1 == count;
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let mut at = 0usize;
        let mut last = None;
        let mut good_end = MAGIC.len();
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            if is_last && bytes.len() < MAGIC.len() {
                // Created, then the crash came before the header was synced.
                std::fs::remove_file(&path)?;
                torn_bytes += bytes.len() as u64;
                continue;
            }
            return Err(corrupt(&path, 0, "bad segment header"));
        }
        at += MAGIC.len();
        while at < bytes.len() {
            let Some(record) = parse_record(&bytes[at..]) else {
                if is_last {
                    break;
                }
                return Err(corrupt(&path, at as u64, "bad record"));
            };
            let (index, payload, len) = record;
            if let Some((prev, _)) = records.last() {
                if index != prev + 1 {
                    return Err(corrupt(&path, at as u64, "log index out of sequence"));
                }
            }
            if purged.is_none_or(|p| index > p) {
                records.push((index, payload.to_vec()));
                disk.index.push_back((index, first, at as u64));
            }
            last = Some(index);
            at += len;
            good_end = at;
        }
        if good_end < bytes.len() {
            // A torn tail: never acknowledged, so cut it.
            torn_bytes += (bytes.len() - good_end) as u64;
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(good_end as u64)?;
            f.sync_all()?;
        }
        disk.segments.push(Segment { first, path, last });
    }
    disk.drop_purged_segments(purged.unwrap_or(0), true)?;
    if let Some(seg) = disk.segments.last() {
        let mut f = OpenOptions::new().append(true).open(&seg.path)?;
        let len = f.seek(SeekFrom::End(0))?;
        disk.active = Some((f, len));
    }
    let to_disk = match io {
        WalIo::Thread => {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("fjord-wal".into())
                .spawn(move || disk.run(rx))?;
            ToDisk::Thread(tx)
        }
        WalIo::Inline => ToDisk::Inline(Arc::new(Mutex::new(disk))),
    };
    Ok((
        Wal { to_disk },
        Recovered {
            records,
            torn_bytes,
        },
    ))
}

/// `(index, payload, record length)` or `None` for a torn or bad record.
fn parse_record(b: &[u8]) -> Option<(u64, &[u8], usize)> {
    if b.len() < RECORD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    if len > MAX_RECORD || b.len() < RECORD_HEADER + len {
        return None;
    }
    let body = &b[8..RECORD_HEADER + len];
    if crc32fast::hash(body) != crc {
        return None;
    }
    let index = u64::from_le_bytes(body[0..8].try_into().ok()?);
    Some((index, &body[8..], RECORD_HEADER + len))
}

fn put_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

impl Wal {
    /// Queues records (consecutive indexes, after the last one) and calls
    /// `done` once they are durable.
    pub fn append(&self, records: Vec<(u64, Vec<u8>)>, done: Done) {
        match &self.to_disk {
            ToDisk::Thread(tx) => {
                if let Err(mpsc::SendError(Op::Append { done, .. })) =
                    tx.send(Op::Append { records, done })
                {
                    done(Err(io::Error::other("log writer stopped")));
                }
            }
            ToDisk::Inline(disk) => disk
                .lock()
                .expect("log disk lock")
                .round(vec![Op::Append { records, done }]),
        }
    }

    /// Removes every record from `from` on.
    pub async fn truncate(&self, from: u64) -> io::Result<()> {
        self.call(|done| Op::Truncate { from, done }).await
    }

    /// Forgets every record up to `upto`; whole segments are deleted.
    pub async fn purge(&self, upto: u64) -> io::Result<()> {
        self.call(|done| Op::Purge { upto, done }).await
    }

    async fn call(&self, op: impl FnOnce(Done) -> Op) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        match &self.to_disk {
            ToDisk::Thread(tx) => tx
                .send(op(done))
                .map_err(|_| io::Error::other("log writer stopped"))?,
            ToDisk::Inline(disk) => disk.lock().expect("log disk lock").round(vec![op(done)]),
        }
        rx.await
            .map_err(|_| io::Error::other("log writer stopped"))?
    }
}

impl Disk {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            // Everything queued right now goes in this round: appends share
            // one write and one sync; truncates and purges keep their order.
            let mut ops = vec![first];
            while let Ok(op) = rx.try_recv() {
                ops.push(op);
            }
            self.round(ops);
        }
    }

    fn round(&mut self, ops: Vec<Op>) {
        {
            let mut buf = Vec::new();
            let mut waiting: Vec<Done> = Vec::new();
            for op in ops {
                match op {
                    Op::Append { records, done } => match self.stage(&records, &mut buf) {
                        Ok(()) => waiting.push(done),
                        Err(e) => done(Err(e)),
                    },
                    Op::Truncate { from, done } => {
                        let r = self.flush(&mut buf, &mut waiting);
                        done(r.and_then(|()| self.truncate(from)));
                    }
                    Op::Purge { upto, done } => {
                        let r = self.flush(&mut buf, &mut waiting);
                        done(r.and_then(|()| self.drop_purged_segments(upto, false)));
                    }
                }
            }
            let _ = self.flush(&mut buf, &mut waiting);
        }
    }

    /// Encodes records into `buf`, opening a segment first if none is
    /// active or the active one is full (after flushing what is staged).
    fn stage(&mut self, records: &[(u64, Vec<u8>)], buf: &mut Vec<u8>) -> io::Result<()> {
        let Some((first, _)) = records.first() else {
            return Ok(());
        };
        let full = self
            .active
            .as_ref()
            .is_some_and(|(_, len)| *len + buf.len() as u64 >= self.max_segment_bytes);
        if full && buf.is_empty() {
            self.active = None;
        }
        if self.active.is_none() {
            if !buf.is_empty() {
                return Err(io::Error::other("segment rotation with staged records"));
            }
            self.create_segment(*first)?;
        }
        for (index, payload) in records {
            if payload.len() > MAX_RECORD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("log entry {index} is {} bytes", payload.len()),
                ));
            }
            let (_, len) = self.active.as_ref().expect("active segment");
            let offset = len + buf.len() as u64;
            let seg = self.segments.last_mut().expect("segment");
            self.index.push_back((*index, seg.first, offset));
            seg.last = Some(*index);
            put_record(buf, *index, payload);
        }
        Ok(())
    }

    fn create_segment(&mut self, first: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, first);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        f.write_all(MAGIC)?;
        if self.sync {
            f.sync_all()?;
        }
        sync_dir(&self.dir, self.sync)?;
        self.segments.push(Segment {
            first,
            path,
            last: None,
        });
        self.active = Some((f, MAGIC.len() as u64));
        Ok(())
    }

    /// One write and one `fdatasync` for everything staged, then the
    /// callbacks.
    fn flush(&mut self, buf: &mut Vec<u8>, waiting: &mut Vec<Done>) -> io::Result<()> {
        if buf.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        let result = (|| -> io::Result<()> {
            if buf.is_empty() {
                return Ok(());
            }
            let (file, len) = self.active.as_mut().expect("active segment");
            file.write_all(buf)?;
            if self.sync {
                file.sync_data()?;
            }
            *len += buf.len() as u64;
            metrics::counter!("fjord_raft_log_fsyncs_total").increment(1);
            metrics::counter!("fjord_raft_log_bytes_written_total").increment(buf.len() as u64);
            Ok(())
        })();
        metrics::counter!("fjord_raft_log_appends_total").increment(waiting.len() as u64);
        buf.clear();
        for done in waiting.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        result
    }

    fn truncate(&mut self, from: u64) -> io::Result<()> {
        let Some(pos) = self.index.iter().position(|(i, _, _)| *i >= from) else {
            return Ok(());
        };
        let (_, seg_first, offset) = self.index[pos];
        self.index.truncate(pos);
        // Later segments go entirely.
        while self.segments.last().is_some_and(|s| s.first > seg_first) {
            let s = self.segments.pop().expect("segment");
            std::fs::remove_file(&s.path)?;
        }
        let seg = self
            .segments
            .last_mut()
            .expect("segment of a retained record");
        let f = OpenOptions::new().append(true).open(&seg.path)?;
        f.set_len(offset)?;
        if self.sync {
            f.sync_all()?;
        }
        seg.last = from.checked_sub(1).filter(|l| *l >= seg.first);
        self.active = Some((f, offset));
        Ok(())
    }

    /// Forgets records up to `upto` and deletes segments holding nothing
    /// newer. The active segment is closed if it holds purged records, so
    /// it can go next time.
    fn drop_purged_segments(&mut self, upto: u64, opening: bool) -> io::Result<()> {
        while self.index.front().is_some_and(|(i, _, _)| *i <= upto) {
            self.index.pop_front();
        }
        if !opening
            && self
                .segments
                .last()
                .is_some_and(|s| s.first <= upto && s.last.is_some())
        {
            self.active = None;
        }
        let active_first = self
            .active
            .as_ref()
            .and_then(|_| self.segments.last().map(|s| s.first));
        let mut removed = false;
        let mut kept = Vec::with_capacity(self.segments.len());
        let segments = std::mem::take(&mut self.segments);
        let count = segments.len();
        for (i, s) in segments.into_iter().enumerate() {
            let is_active = Some(s.first) == active_first && i + 1 == count;
            let all_purged = s.last.is_none_or(|l| l <= upto);
            if !is_active && all_purged && upto > 0 {
                std::fs::remove_file(&s.path)?;
                removed = true;
            } else {
                kept.push(s);
            }
        }
        self.segments = kept;
        if removed {
            sync_dir(&self.dir, self.sync)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct WalStats {
        segments: usize,
        bytes: u64,
    }

    /// Segment files and their bytes under a WAL directory.
    fn stats(dir: &Path) -> io::Result<WalStats> {
        let mut s = WalStats {
            segments: 0,
            bytes: 0,
        };
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".wal") {
                s.segments += 1;
                s.bytes += e.metadata()?.len();
            }
        }
        Ok(s)
    }

    fn sync_append(wal: &Wal, records: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        wal.append(
            records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap()
    }

    fn recs(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry-{i}").into_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn appends_survive_reopen_truncate_and_purge() {
        for io in [WalIo::Thread, WalIo::Inline] {
            appends_survive_reopen_truncate_and_purge_with(io).await;
        }
    }

    async fn appends_survive_reopen_truncate_and_purge_with(io: WalIo) {
        let dir = tempfile::tempdir().unwrap();
        let (wal, rec) = open(dir.path(), None, 200, io).unwrap();
        assert!(rec.records.is_empty());
        for chunk in [1..=4, 5..=9, 10..=20] {
            sync_append(&wal, recs(chunk)).unwrap();
        }
        assert!(
            stats(dir.path()).unwrap().segments > 1,
            "small segments rotate"
        );
        wal.truncate(15).await.unwrap();
        sync_append(&wal, vec![(15, b"new-15".to_vec())]).unwrap();
        drop(wal);
        let (wal, rec) = open(dir.path(), None, 200, io).unwrap();
        let idx: Vec<u64> = rec.records.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, (1..=15).collect::<Vec<_>>());
        assert_eq!(rec.records[14].1, b"new-15");
        assert_eq!(rec.records[3].1, b"entry-4");
        wal.purge(12).await.unwrap();
        sync_append(&wal, recs(16..=17)).unwrap();
        drop(wal);
        let before = stats(dir.path()).unwrap();
        let (_wal, rec) = open(dir.path(), Some(12), 200, io).unwrap();
        let idx: Vec<u64> = rec.records.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, (13..=17).collect::<Vec<_>>());
        assert!(before.bytes < 400, "purged segments deleted: {before:?}");
    }

    #[test]
    fn torn_tail_is_cut_and_corruption_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open(dir.path(), None, 1 << 20, WalIo::Thread).unwrap();
        sync_append(&wal, recs(1..=3)).unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let full = std::fs::read(&path).unwrap();
        // A half-written fourth record: cut, the three survive.
        let mut torn = full.clone();
        put_record(&mut torn, 4, b"entry-4");
        torn.truncate(torn.len() - 3);
        std::fs::write(&path, &torn).unwrap();
        let (wal, rec) = open(dir.path(), None, 1 << 20, WalIo::Thread).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert!(rec.torn_bytes > 0);
        sync_append(&wal, recs(4..=4)).unwrap();
        drop(wal);
        let (wal, rec) = open(dir.path(), None, 1 << 20, WalIo::Thread).unwrap();
        assert_eq!(rec.records.len(), 4);
        drop(wal);
        // A flipped bit in a sealed (non-last) segment is refused.
        let mut bad = std::fs::read(&path).unwrap();
        bad[MAGIC.len() + RECORD_HEADER + 1] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        std::fs::write(segment_path(dir.path(), 5), MAGIC).unwrap();
        let err = open(dir.path(), None, 1 << 20, WalIo::Thread)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
