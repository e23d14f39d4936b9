//! When this process was not running: SIGSTOP, a VM paused by its host,
//! a machine too busy to schedule it. A QUIC connection's idle timer that
//! fires after such a stall fires late, so "one idle timeout before the
//! timer fired" is no longer when the participant was last heard: nothing
//! could be heard while the process was stopped. Sans-IO: the shell ticks
//! it from a timer and asks it when a connection times out.

use std::collections::VecDeque;

/// A gap between ticks longer than this is a stall (the shell ticks every
/// 50 ms).
pub const STALL_MS: u64 = 250;
/// Stalls older than this are forgotten (idle timeouts are far shorter).
const KEEP_MS: u64 = 120_000;
/// At most this many stalls are kept.
const KEEP_STALLS: usize = 256;

#[derive(Debug, Default)]
pub struct Stalls {
    last_tick_ms: Option<u64>,
    /// (last tick before, first tick after), oldest first.
    gaps: VecDeque<(u64, u64)>,
}

impl Stalls {
    pub fn tick(&mut self, now_ms: u64) {
        if let Some(last) = self.last_tick_ms {
            if now_ms > last.saturating_add(STALL_MS) {
                self.gaps.push_back((last, now_ms));
                metrics::counter!("fjord_media_stalls_total").increment(1);
            }
        }
        self.last_tick_ms = Some(self.last_tick_ms.map_or(now_ms, |l| l.max(now_ms)));
        while self
            .gaps
            .front()
            .is_some_and(|(_, end)| end.saturating_add(KEEP_MS) < now_ms)
            || self.gaps.len() > KEEP_STALLS
        {
            self.gaps.pop_front();
        }
    }

    /// The latest time at or before `t` at which this process was running,
    /// as seen at `now_ms`: `t` itself, or the start of a stall that
    /// covered it (including one still unticked at `now_ms`).
    pub fn running_at_or_before(&self, t: u64, now_ms: u64) -> u64 {
        let open = self
            .last_tick_ms
            .filter(|last| now_ms > last.saturating_add(STALL_MS))
            .map(|last| (last, now_ms));
        self.gaps
            .iter()
            .copied()
            .chain(open)
            .find(|(start, end)| *start < t && t < *end)
            .map_or(t, |(start, _)| start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticked(times: &[u64]) -> Stalls {
        let mut s = Stalls::default();
        for t in times {
            s.tick(*t);
        }
        s
    }

    #[test]
    fn without_a_stall_a_time_is_its_own_answer() {
        let s = ticked(&[1_000, 1_050, 1_100, 1_150]);
        assert_eq!(s.running_at_or_before(1_120, 1_160), 1_120);
    }

    #[test]
    fn a_time_inside_a_stall_moves_back_to_its_start() {
        // Stopped from just after 1,050 until 5,200.
        let s = ticked(&[1_000, 1_050, 5_200, 5_250]);
        assert_eq!(s.running_at_or_before(3_700, 5_260), 1_050);
        assert_eq!(s.running_at_or_before(5_230, 5_260), 5_230);
        assert_eq!(s.running_at_or_before(900, 5_260), 900);
    }

    #[test]
    fn a_stall_not_yet_ticked_counts_too() {
        // The connection's timer ran before the tick after the stall.
        let s = ticked(&[1_000, 1_050]);
        assert_eq!(s.running_at_or_before(3_700, 5_200), 1_050);
    }

    #[test]
    fn old_stalls_are_forgotten() {
        let mut s = ticked(&[1_000, 9_000]);
        s.tick(9_000 + KEEP_MS + 1);
        assert!(s.gaps.iter().all(|(start, _)| *start > 1_000));
    }
}
