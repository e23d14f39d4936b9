//! When this process was not running: SIGSTOP, a VM paused by its host,
//! a machine too busy to schedule it. A QUIC connection's idle timer that
//! fires after such a stall fires late, and what arrived during it is read
//! only when the process runs again: nothing was served while it was
//! stopped. Sans-IO: the shell ticks it from a timer and asks it, when a
//! connection falls silent, until when its participant was served.

use std::collections::VecDeque;

/// A gap between ticks longer than this is a stall (the shell ticks every
/// 50 ms).
pub const STALL_MS: u64 = 250;
/// Stalls older than this are forgotten (idle timeouts are far shorter).
const KEEP_MS: u64 = 120_000;
/// At most this many stalls are kept.
const KEEP_STALLS: usize = 256;
/// How long after a stall what arrived during it may still be being read.
pub const BACKLOG_MS: u64 = 300;

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

    /// When a participant last heard at `heard_ms` was last served: a
    /// hearing inside a stall, or within [`BACKLOG_MS`] after one (what
    /// arrived while the process was stopped is read and counted only when
    /// it runs again), moves back to the stall's start.
    pub fn served_until(&self, heard_ms: u64, now_ms: u64) -> u64 {
        let open = self
            .last_tick_ms
            .filter(|last| now_ms > last.saturating_add(STALL_MS))
            .map(|last| (last, now_ms));
        self.gaps
            .iter()
            .copied()
            .chain(open)
            .find(|(start, end)| *start < heard_ms && heard_ms <= end.saturating_add(BACKLOG_MS))
            .map_or(heard_ms, |(start, _)| start)
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
        assert_eq!(s.served_until(1_120, 1_160), 1_120);
    }

    #[test]
    fn a_time_inside_a_stall_moves_back_to_its_start() {
        // Stopped from just after 1,050 until 5,200.
        let s = ticked(&[1_000, 1_050, 5_200, 5_250]);
        assert_eq!(s.served_until(3_700, 5_260), 1_050);
        assert_eq!(
            s.served_until(5_230, 5_260),
            1_050,
            "read late: the backlog"
        );
        assert_eq!(s.served_until(900, 5_260), 900);
    }

    #[test]
    fn a_stall_not_yet_ticked_counts_too() {
        // The connection's timer ran before the tick after the stall.
        let s = ticked(&[1_000, 1_050]);
        assert_eq!(s.served_until(3_700, 5_200), 1_050);
    }

    #[test]
    fn a_hearing_of_what_arrived_during_a_stall_is_served_until_the_stall_began() {
        // Stopped from just after 1,050 until 5,200.
        let s = ticked(&[
            1_000, 1_050, 5_200, 5_250, 5_300, 5_350, 5_400, 5_450, 5_500, 5_550,
        ]);
        assert_eq!(s.served_until(3_000, 5_560), 1_050, "inside");
        assert_eq!(
            s.served_until(5_300, 5_560),
            1_050,
            "the backlog, read late"
        );
        assert_eq!(
            s.served_until(5_200 + BACKLOG_MS + 1, 5_560),
            5_501,
            "heard since"
        );
        assert_eq!(s.served_until(1_000, 5_560), 1_000, "before");
    }

    #[test]
    fn old_stalls_are_forgotten() {
        let mut s = ticked(&[1_000, 9_000]);
        s.tick(9_000 + KEEP_MS + 1);
        assert!(s.gaps.iter().all(|(start, _)| *start > 1_000));
    }
}
