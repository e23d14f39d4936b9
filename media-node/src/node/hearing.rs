//! When a participant's connection was last heard, and whether it has been
//! silent too long.
//!
//! QUIC's own idle timer is at least three probe timeouts, and a probe
//! timeout follows the measured round trip. A node stopped for a few
//! seconds (SIGSTOP, a paused VM) measures round trips of those seconds
//! when it resumes, so a participant that vanished meanwhile stays
//! "connected" for ten seconds or more — and is billed for them. This
//! watch does not depend on round trips: the shell samples how many UDP
//! datagrams the connection has received (keep-alives included) every
//! [`SAMPLE_MS`], and the connection is closed after [`SILENT_MS`] of the
//! node running without hearing anything.
//!
//! Sans-IO: the shell feeds it samples and acts on its verdicts.

/// How often the shell samples a connection.
pub const SAMPLE_MS: u64 = 100;
/// Running this long without hearing a datagram closes the connection.
/// Clients send a keep-alive every 300 ms, so this is five missed in a row.
pub const SILENT_MS: u64 = 1_500;
/// A gap between samples longer than this means the process was stopped.
const STALLED_MS: u64 = 3 * SAMPLE_MS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hearing {
    received: u64,
    last_sample_ms: u64,
    /// When the participant was last heard while the node was serving it:
    /// what its stay is billed up to if it falls silent.
    heard_ms: u64,
    /// Silence is counted from here: the last hearing, or the end of a
    /// stall of this process (nothing could be heard while stopped).
    silent_since_ms: u64,
    /// A verdict of silence was given.
    silenced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Silent for [`SILENT_MS`] of running time: close, and bill the stay
    /// up to `heard_ms`.
    Silent {
        heard_ms: u64,
    },
}

impl Hearing {
    pub fn new(now_ms: u64, received: u64) -> Hearing {
        Hearing {
            received,
            last_sample_ms: now_ms,
            heard_ms: now_ms,
            silent_since_ms: now_ms,
            silenced: false,
        }
    }

    /// Whether this watch closed the connection for silence.
    pub fn silenced(&self) -> bool {
        self.silenced
    }

    /// When the participant was last heard (for a connection that ended
    /// some other way, e.g. QUIC's own idle timeout).
    pub fn heard_ms(&self) -> u64 {
        self.heard_ms
    }

    /// One sample: `received` is the connection's count of UDP datagrams
    /// received so far.
    pub fn sample(&mut self, now_ms: u64, received: u64) -> Verdict {
        let stalled = now_ms > self.last_sample_ms.saturating_add(STALLED_MS);
        if received != self.received {
            self.received = received;
            // What a stall's end counts arrived while the node was stopped
            // and serving nobody: it shows the participant was there when
            // the node stopped, not later.
            self.heard_ms = if stalled { self.last_sample_ms } else { now_ms };
            self.silent_since_ms = now_ms;
        } else if stalled {
            // Give the participant a full silence after the node resumes.
            self.silent_since_ms = now_ms;
        }
        self.last_sample_ms = now_ms;
        if now_ms.saturating_sub(self.silent_since_ms) >= SILENT_MS {
            self.silenced = true;
            Verdict::Silent {
                heard_ms: self.heard_ms,
            }
        } else {
            Verdict::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every SAMPLE_MS from `from` to `to`, with `rx(t)` received.
    fn run(h: &mut Hearing, from: u64, to: u64, rx: impl Fn(u64) -> u64) -> Option<(u64, u64)> {
        let mut t = from;
        while t <= to {
            if let Verdict::Silent { heard_ms } = h.sample(t, rx(t)) {
                return Some((t, heard_ms));
            }
            t += SAMPLE_MS;
        }
        None
    }

    #[test]
    fn a_participant_heard_every_few_hundred_ms_is_kept() {
        let mut h = Hearing::new(0, 0);
        assert_eq!(run(&mut h, 100, 60_000, |t| t / 300), None);
    }

    #[test]
    fn a_vanished_participant_is_closed_after_the_silence_and_billed_to_its_last_hearing() {
        let mut h = Hearing::new(0, 0);
        // Heard until 4,000 ms, then nothing.
        let closed = run(&mut h, 100, 60_000, |t| t.min(4_000) / 300);
        let (at, heard) = closed.expect("closed");
        assert_eq!(heard, 3_900, "the sample that saw the last datagram");
        assert!((heard + SILENT_MS..=heard + SILENT_MS + SAMPLE_MS).contains(&at));
    }

    #[test]
    fn a_stall_of_the_node_is_not_silence_of_the_participant() {
        let mut h = Hearing::new(0, 0);
        assert_eq!(run(&mut h, 100, 2_000, |t| t / 300), None);
        // Stopped from 2,000 to 6,000; what arrived meanwhile is counted
        // at once, and the participant keeps talking.
        assert_eq!(run(&mut h, 6_000, 30_000, |t| t / 300 + 50), None);
    }

    #[test]
    fn a_participant_gone_during_a_stall_is_billed_until_the_stall_began() {
        let mut h = Hearing::new(0, 0);
        assert_eq!(run(&mut h, 100, 2_000, |t| t / 300), None);
        // Stopped from 2,000 to 6,000; it sent a little more, then went.
        let closed = run(&mut h, 6_000, 30_000, |_| 2_000 / 300 + 3);
        let (at, heard) = closed.expect("closed");
        assert_eq!(heard, 2_000, "not when the node resumed");
        assert!((6_000 + SILENT_MS..=6_000 + SILENT_MS + SAMPLE_MS).contains(&at));
    }

    #[test]
    fn a_participant_never_heard_after_connecting_falls_silent_too() {
        let mut h = Hearing::new(1_000, 7);
        let (at, heard) = run(&mut h, 1_100, 10_000, |_| 7).expect("closed");
        assert_eq!(heard, 1_000);
        assert_eq!(at, 1_000 + SILENT_MS);
    }
}
