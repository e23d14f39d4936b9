//! A coarse profile of a node's reserved load: the most reserved at any
//! instant of each of [`SLOTS`] fixed slots of [`SLOT_MS`], from the slot of
//! the node's earliest reservation on.
//!
//! Placement ranks nodes by their peak over a meeting's window. The exact
//! peak is a walk of the reservation index; the profile answers in a few
//! array reads with bounds that are usually tight: the slots wholly inside
//! the window bound the peak from below, the slots the window touches
//! bound it from above. Placement asks the index only when those bounds
//! still leave the answer open, so its results stay exact.
//!
//! The profile follows every change of the index at the cost of two exact
//! slot queries (the slots a reservation only partly covers): a slot wholly
//! inside a reservation rises or falls by exactly its participants.

/// One slot: a quarter of an hour, so an hour's meeting covers three slots
/// wholly.
pub const SLOT_MS: u64 = 15 * 60 * 1000;
/// Slots profiled: eight hours from the earliest reservation.
pub const SLOTS: usize = 32;

#[derive(Debug, Clone, Default)]
pub(super) struct Profile {
    /// The first profiled slot (its start ÷ [`SLOT_MS`]): the slot of the
    /// earliest step. None while nothing is reserved.
    first: Option<u64>,
    /// The most reserved at any instant of each slot.
    maxima: [u32; SLOTS],
    /// The last step: nothing is reserved from it on.
    last_step_ms: u64,
}

/// Start of slot `k` (saturating: slots near the end of time).
fn slot_start(k: u64) -> u64 {
    k.saturating_mul(SLOT_MS)
}

impl Profile {
    /// Bounds on the most reserved at any instant of `[start, end)`: a
    /// lower bound, and an upper bound unless the window reaches past the
    /// profile while reservations go on there.
    pub(super) fn bounds(&self, start_ms: u64, end_ms: u64) -> (u32, Option<u32>) {
        let Some(first) = self.first else {
            return (0, Some(0));
        };
        if end_ms <= start_ms {
            return (0, Some(0));
        }
        let last = first + SLOTS as u64;
        let (ks, ke) = (start_ms / SLOT_MS, (end_ms - 1) / SLOT_MS);
        let (mut lower, mut upper) = (0u32, 0u32);
        // Slots before `first` hold nothing: no step is earlier.
        for k in ks.max(first)..=ke.min(last - 1) {
            let m = self.maxima[(k - first) as usize];
            upper = upper.max(m);
            if slot_start(k) >= start_ms && slot_start(k + 1) <= end_ms {
                lower = lower.max(m);
            }
        }
        // Past the profile: nothing from the last step on, unknown before.
        let beyond_unknown = ke >= last && slot_start(last) < self.last_step_ms;
        (lower, (!beyond_unknown).then_some(upper))
    }

    /// Follows a change of `delta` participants over `[a, b)` already
    /// made to the index, whose steps now span `span` (None: empty).
    /// `peak(start, end)` is the index's exact peak over a window.
    pub(super) fn changed(
        &mut self,
        a: u64,
        b: u64,
        delta: i64,
        span: Option<(u64, u64)>,
        peak: impl Fn(u64, u64) -> u32,
    ) {
        let Some((min_t, max_t)) = span else {
            *self = Profile::default();
            return;
        };
        self.last_step_ms = max_t;
        let new_first = min_t / SLOT_MS;
        let slot_peak = |k: u64| peak(slot_start(k), slot_start(k + 1));
        let Some(old_first) = self.first else {
            self.first = Some(new_first);
            for (i, m) in self.maxima.iter_mut().enumerate() {
                *m = slot_peak(new_first + i as u64);
            }
            return;
        };
        // The change itself, in the old frame.
        let last = old_first + SLOTS as u64;
        if a < b {
            for k in (a / SLOT_MS).max(old_first)..=((b - 1) / SLOT_MS).min(last - 1) {
                let m = &mut self.maxima[(k - old_first) as usize];
                *m = if a <= slot_start(k) && slot_start(k + 1) <= b {
                    (i64::from(*m) + delta).clamp(0, i64::from(u32::MAX)) as u32
                } else {
                    slot_peak(k)
                };
            }
        }
        // Then the frame follows the earliest step.
        if new_first != old_first {
            let d = new_first.abs_diff(old_first);
            let fresh = if d >= SLOTS as u64 {
                0..SLOTS
            } else if new_first > old_first {
                self.maxima.rotate_left(d as usize);
                SLOTS - d as usize..SLOTS
            } else {
                self.maxima.rotate_right(d as usize);
                0..d as usize
            };
            for i in fresh {
                self.maxima[i] = slot_peak(new_first + i as u64);
            }
            self.first = Some(new_first);
        }
    }

    /// The profile built afresh from the index (tests compare it).
    #[cfg(test)]
    pub(super) fn rebuilt(span: Option<(u64, u64)>, peak: impl Fn(u64, u64) -> u32) -> Profile {
        let mut p = Profile::default();
        p.changed(0, 0, 0, span, peak);
        p
    }

    #[cfg(test)]
    pub(super) fn same_as(&self, other: &Profile) -> bool {
        self.first == other.first
            && self.last_step_ms == other.last_step_ms
            && (self.first.is_none() || self.maxima == other.maxima)
    }
}
