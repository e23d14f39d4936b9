//! Synthetic media at real packet rates, and what a receiver measures.
//!
//! Each datagram's payload starts with the send time (µs since the Unix
//! epoch), the track id and the sequence number, followed by bytes derived
//! from them. The receiver recomputes those bytes, so any change on the way
//! is caught, and takes one-way latency from the send time (sender and
//! receiver share a clock on one machine).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;

use crate::wire::{flags, MediaHeader, HEADER_LEN};

/// Payload prefix: send time u64, track u32, seq u32.
pub const PAYLOAD_PREFIX: usize = 16;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn pattern_byte(track: u32, seq: u32, i: usize) -> u8 {
    (seq.wrapping_mul(31) ^ track.wrapping_mul(7) ^ (i as u32).wrapping_mul(13)) as u8
}

/// How a synthetic stream behaves.
#[derive(Debug, Clone, Copy)]
pub struct StreamProfile {
    pub frames_per_second: u32,
    /// Average frame size in bytes (before fragmentation).
    pub frame_bytes: usize,
    /// Every n-th frame is a keyframe, `keyframe_scale` times larger (0: none).
    pub keyframe_every: u32,
    pub keyframe_scale: usize,
}

impl StreamProfile {
    /// Opus-like audio: 50 packets/s of 160 bytes (64 kbit/s).
    pub fn audio() -> Self {
        StreamProfile {
            frames_per_second: 50,
            frame_bytes: 160,
            keyframe_every: 0,
            keyframe_scale: 1,
        }
    }

    /// 720p-like video: 30 fps at ~1.5 Mbit/s, a keyframe every 2 s at 4x
    /// size; ~200 datagrams/s after fragmentation.
    pub fn video() -> Self {
        StreamProfile {
            frames_per_second: 30,
            frame_bytes: 5_500,
            keyframe_every: 60,
            keyframe_scale: 4,
        }
    }
}

/// Builds the datagrams of one stream.
pub struct StreamSender {
    pub track: u32,
    profile: StreamProfile,
    max_payload: usize,
    frame_no: u32,
    seq: u32,
    clock_rate: u32,
}

impl StreamSender {
    pub fn new(track: u32, profile: StreamProfile, max_datagram: usize) -> Self {
        StreamSender {
            track,
            profile,
            max_payload: max_datagram
                .saturating_sub(HEADER_LEN)
                .max(PAYLOAD_PREFIX + 1),
            frame_no: 0,
            seq: 0,
            clock_rate: 90_000,
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_micros(1_000_000 / u64::from(self.profile.frames_per_second.max(1)))
    }

    /// The datagrams of the next frame.
    pub fn next_frame(&mut self) -> Vec<Bytes> {
        let keyframe = self.profile.keyframe_every > 0
            && self.frame_no.is_multiple_of(self.profile.keyframe_every);
        let size = if keyframe {
            self.profile.frame_bytes * self.profile.keyframe_scale
        } else {
            self.profile.frame_bytes
        };
        let count = size.div_ceil(self.max_payload).clamp(1, 255);
        let per = size.div_ceil(count).max(PAYLOAD_PREFIX);
        let timestamp = self
            .frame_no
            .wrapping_mul(self.clock_rate / self.profile.frames_per_second.max(1));
        self.frame_no = self.frame_no.wrapping_add(1);
        let sent = now_us();
        (0..count)
            .map(|i| {
                let seq = self.seq;
                self.seq = self.seq.wrapping_add(1);
                let mut b = BytesMut::with_capacity(HEADER_LEN + per);
                MediaHeader {
                    flags: if keyframe { flags::KEYFRAME } else { 0 },
                    frag_index: i as u8,
                    frag_count: count as u8,
                    track: self.track,
                    seq,
                    timestamp,
                }
                .write(&mut b);
                b.put_u64(sent);
                b.put_u32(self.track);
                b.put_u32(seq);
                for j in PAYLOAD_PREFIX..per {
                    b.put_u8(pattern_byte(self.track, seq, j));
                }
                b.freeze()
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct TrackRx {
    first_seq: Option<u32>,
    highest_seq: u32,
    received: u64,
    /// RFC 3550 interarrival jitter, in µs.
    jitter_us: f64,
    last_transit_us: Option<i64>,
}

/// What one participant measured on everything it received.
pub struct ReceiveStats {
    inner: Mutex<RxInner>,
    pub sent_datagrams: AtomicU64,
    pub send_errors: AtomicU64,
}

struct RxInner {
    started: Instant,
    first_media: Option<Duration>,
    tracks: HashMap<u32, TrackRx>,
    latency_us: Histogram<u64>,
    received: u64,
    bytes: u64,
    corrupted: u64,
    malformed: u64,
    last_rx: Option<Instant>,
    /// Longest silence between two datagrams since media first arrived.
    max_gap: Duration,
}

/// A summary, for printing and for tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub bytes: u64,
    /// Datagrams missing from the sequence ranges seen.
    pub lost: u64,
    pub corrupted: u64,
    pub malformed: u64,
    pub tracks: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub jitter_ms: f64,
    /// From the start of the join to the first media datagram received.
    pub first_media_ms: Option<f64>,
}

impl RxInner {
    /// Datagrams expected from the senders' sequence numbers, those of
    /// them received, and the mean interarrival jitter (µs).
    fn quality(&self) -> (u64, u64, f64) {
        let expected = self
            .tracks
            .values()
            .filter_map(|t| {
                t.first_seq
                    .map(|f| u64::from(t.highest_seq.wrapping_sub(f)) + 1)
            })
            .sum();
        let received = self.tracks.values().map(|t| t.received).sum();
        let jitter = if self.tracks.is_empty() {
            0.0
        } else {
            self.tracks.values().map(|t| t.jitter_us).sum::<f64>() / self.tracks.len() as f64
        };
        (expected, received, jitter)
    }
}

impl ReceiveStats {
    pub fn new(started: Instant) -> Self {
        ReceiveStats {
            inner: Mutex::new(RxInner {
                started,
                first_media: None,
                tracks: HashMap::new(),
                latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
                received: 0,
                bytes: 0,
                corrupted: 0,
                malformed: 0,
                last_rx: None,
                max_gap: Duration::ZERO,
            }),
            sent_datagrams: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
        }
    }

    /// Records one received datagram, checking every payload byte.
    pub fn record(&self, d: &[u8]) {
        let now = now_us();
        let mut s = self.inner.lock().expect("stats lock");
        let Ok(h) = MediaHeader::parse(d) else {
            s.malformed += 1;
            return;
        };
        let p = &d[HEADER_LEN..];
        if p.len() < PAYLOAD_PREFIX {
            s.malformed += 1;
            return;
        }
        let sent = u64::from_be_bytes(p[0..8].try_into().expect("8 bytes"));
        let track = u32::from_be_bytes(p[8..12].try_into().expect("4 bytes"));
        let seq = u32::from_be_bytes(p[12..16].try_into().expect("4 bytes"));
        let intact = track == h.track
            && seq == h.seq
            && p[PAYLOAD_PREFIX..]
                .iter()
                .enumerate()
                .all(|(i, b)| *b == pattern_byte(track, seq, i + PAYLOAD_PREFIX));
        if !intact {
            s.corrupted += 1;
        }
        if s.first_media.is_none() {
            s.first_media = Some(s.started.elapsed());
        }
        let arrived = Instant::now();
        if let Some(last) = s.last_rx {
            s.max_gap = s.max_gap.max(arrived - last);
        }
        s.last_rx = Some(arrived);
        s.received += 1;
        s.bytes += d.len() as u64;
        let transit = now as i64 - sent as i64;
        let _ = s.latency_us.record(transit.max(1) as u64);
        let t = s.tracks.entry(h.track).or_default();
        t.received += 1;
        match t.first_seq {
            None => {
                t.first_seq = Some(h.seq);
                t.highest_seq = h.seq;
            }
            Some(_) if h.seq.wrapping_sub(t.highest_seq) < u32::MAX / 2 => t.highest_seq = h.seq,
            _ => {}
        }
        if let Some(last) = t.last_transit_us {
            let d = (transit - last).abs() as f64;
            t.jitter_us += (d - t.jitter_us) / 16.0;
        }
        t.last_transit_us = Some(transit);
    }

    /// The longest silence between two received datagrams since the last
    /// call (or since media began), and starts measuring anew.
    pub fn take_max_gap(&self) -> Duration {
        std::mem::take(&mut self.inner.lock().expect("stats lock").max_gap)
    }

    /// Datagrams received so far (cheap: no percentiles).
    pub fn received(&self) -> u64 {
        self.inner.lock().expect("stats lock").received
    }

    /// Datagrams expected (from the senders' sequence numbers) and
    /// received in that range so far, and the mean interarrival jitter now
    /// (µs): what receive reports are made of.
    pub fn quality_counters(&self) -> (u64, u64, f64) {
        self.inner.lock().expect("stats lock").quality()
    }

    /// When the last datagram arrived.
    pub fn last_received(&self) -> Option<Instant> {
        self.inner.lock().expect("stats lock").last_rx
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self.inner.lock().expect("stats lock");
        let (expected, received_in_range, jitter) = s.quality();
        let ms = |us: u64| us as f64 / 1000.0;
        StatsSnapshot {
            sent: self.sent_datagrams.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            received: s.received,
            bytes: s.bytes,
            lost: expected.saturating_sub(received_in_range),
            corrupted: s.corrupted,
            malformed: s.malformed,
            tracks: s.tracks.len(),
            latency_p50_ms: ms(s.latency_us.value_at_quantile(0.5)),
            latency_p99_ms: ms(s.latency_us.value_at_quantile(0.99)),
            jitter_ms: jitter / 1000.0,
            first_media_ms: s.first_media.map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// Distinct tracks heard from so far.
    pub fn tracks_heard(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .inner
            .lock()
            .expect("stats lock")
            .tracks
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// The latency histogram, to merge across participants.
    pub fn latency_histogram(&self) -> Histogram<u64> {
        self.inner.lock().expect("stats lock").latency_us.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_profile_lands_in_the_promised_packet_rate_and_round_trips() {
        let mut s = StreamSender::new(5, StreamProfile::video(), 1200);
        let mut datagrams = 0;
        for _ in 0..30 {
            datagrams += s.next_frame().len();
        }
        // One second of video.
        assert!((150..=300).contains(&datagrams), "{datagrams} datagrams/s");
        let stats = ReceiveStats::new(Instant::now());
        for d in s.next_frame() {
            assert!(d.len() <= 1200);
            stats.record(&d);
        }
        let mut bad = s.next_frame()[0].to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        stats.record(&bad);
        let snap = stats.snapshot();
        assert_eq!(snap.corrupted, 1);
        assert!(snap.received >= 2);
    }
}
