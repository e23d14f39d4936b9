//! Rate limits on meeting joins, held by the leader so they hold for the
//! whole cluster: a caller spreading its attempts over every replica gets
//! no more than one budget (followers ask the leader, like a read). A new
//! leader starts with fresh buckets.
//!
//! ```text
//!  JoinMeeting ──Admit──▶ guard ── refused: RESOURCE_EXHAUSTED
//!      │ credential checked
//!      ├─ wrong ──Failed──▶ guard   (counts against the source; PIN guesses
//!      │                             also against the meeting)
//!      └─ right ──Joined──▶ guard   (counts against the meeting: a leaked
//!                                    passcode cannot flood it)
//! ```
//!
//! Wrong guesses never lock the right credential out: a meeting's budget is
//! spent only by admitted joins (and, for the 8-digit PIN, by wrong PINs,
//! which then only shut out further PIN attempts). Passcodes (80 bits) and
//! host keys (128 bits) are limited per source only.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ratelimit::{KeyedLimiter, Rate};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JoinLimits {
    /// Every attempt from one source address (join floods).
    pub per_source: Rate,
    /// Admitted joins to one meeting (a leaked passcode in a flood).
    pub per_meeting: Rate,
    /// Wrong PINs for one meeting: when spent, the meeting takes no PIN
    /// attempts until it refills (passcodes and host keys still work).
    pub pin_failures_per_meeting: Rate,
    /// Failed attempts from one source address.
    pub failures_per_source: Rate,
}

impl Default for JoinLimits {
    fn default() -> Self {
        JoinLimits {
            per_source: Rate {
                burst: 200,
                per_second: 50.0,
            },
            per_meeting: Rate {
                burst: 1000,
                per_second: 200.0,
            },
            pin_failures_per_meeting: Rate {
                burst: 10,
                per_second: 0.2,
            },
            failures_per_source: Rate {
                burst: 10,
                per_second: 0.2,
            },
        }
    }
}

impl JoinLimits {
    pub fn validate(&self) -> Result<(), String> {
        self.per_source.validate("join per-source rate")?;
        self.per_meeting.validate("join per-meeting rate")?;
        self.pin_failures_per_meeting
            .validate("failed PINs per-meeting rate")?;
        self.failures_per_source
            .validate("failed joins per-source rate")
    }
}

/// One step of a join attempt, sent to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStep {
    /// Before the credential is looked at.
    Admit {
        source: IpAddr,
        meeting: u64,
        pin: bool,
    },
    /// The credential was wrong.
    Failed {
        source: IpAddr,
        meeting: u64,
        pin: bool,
    },
    /// The credential was right: a participant is about to be let in.
    Joined { meeting: u64 },
}

/// Keys kept per limiter before idle ones are forgotten.
const LIMITER_KEYS: usize = 100_000;

/// The buckets; pure, driven by the caller's clock.
pub struct JoinGuards {
    per_source: KeyedLimiter<IpAddr>,
    per_meeting: KeyedLimiter<u64>,
    pin_failures_per_meeting: KeyedLimiter<u64>,
    failures_per_source: KeyedLimiter<IpAddr>,
}

impl JoinGuards {
    pub fn new(l: &JoinLimits) -> Self {
        JoinGuards {
            per_source: KeyedLimiter::new(l.per_source, LIMITER_KEYS),
            per_meeting: KeyedLimiter::new(l.per_meeting, LIMITER_KEYS),
            pin_failures_per_meeting: KeyedLimiter::new(l.pin_failures_per_meeting, LIMITER_KEYS),
            failures_per_source: KeyedLimiter::new(l.failures_per_source, LIMITER_KEYS),
        }
    }

    /// Applies one step: `Err(ms)` says how long to wait.
    pub fn step(&mut self, step: GuardStep, now_ms: u64) -> Result<(), u64> {
        match step {
            GuardStep::Admit {
                source,
                meeting,
                pin,
            } => {
                self.failures_per_source.check(&source, now_ms)?;
                if pin {
                    self.pin_failures_per_meeting.check(&meeting, now_ms)?;
                }
                self.per_source.take(&source, now_ms)
            }
            GuardStep::Failed {
                source,
                meeting,
                pin,
            } => {
                let _ = self.failures_per_source.take(&source, now_ms);
                if pin {
                    let _ = self.pin_failures_per_meeting.take(&meeting, now_ms);
                }
                Ok(())
            }
            GuardStep::Joined { meeting } => self.per_meeting.take(&meeting, now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn wrong_guesses_from_many_sources_never_lock_out_the_right_credential() {
        let mut g = JoinGuards::new(&JoinLimits::default());
        // 100 sources, 100 wrong passcodes each, at one instant.
        for s in 1..=100u8 {
            for _ in 0..100 {
                let admitted = g.step(
                    GuardStep::Admit {
                        source: ip(s),
                        meeting: 7,
                        pin: false,
                    },
                    0,
                );
                if admitted.is_ok() {
                    g.step(
                        GuardStep::Failed {
                            source: ip(s),
                            meeting: 7,
                            pin: false,
                        },
                        0,
                    )
                    .unwrap();
                }
            }
            // Each source is cut off after its failure budget.
            assert!(g
                .step(
                    GuardStep::Admit {
                        source: ip(s),
                        meeting: 7,
                        pin: false
                    },
                    0
                )
                .is_err());
        }
        // The host, from its own address, still gets in.
        g.step(
            GuardStep::Admit {
                source: ip(200),
                meeting: 7,
                pin: false,
            },
            0,
        )
        .unwrap();
        g.step(GuardStep::Joined { meeting: 7 }, 0).unwrap();
    }

    #[test]
    fn pin_guesses_are_also_limited_per_meeting_but_only_for_pins() {
        let mut g = JoinGuards::new(&JoinLimits::default());
        for s in 1..=10u8 {
            let step = GuardStep::Admit {
                source: ip(s),
                meeting: 7,
                pin: true,
            };
            g.step(step, 0).unwrap();
            g.step(
                GuardStep::Failed {
                    source: ip(s),
                    meeting: 7,
                    pin: true,
                },
                0,
            )
            .unwrap();
        }
        let fresh = |pin| GuardStep::Admit {
            source: ip(99),
            meeting: 7,
            pin,
        };
        assert!(g.step(fresh(true), 0).is_err(), "PIN attempts stop");
        assert!(g.step(fresh(false), 0).is_ok(), "the passcode still works");
        // Another meeting's PIN is unaffected.
        assert!(g
            .step(
                GuardStep::Admit {
                    source: ip(98),
                    meeting: 8,
                    pin: true
                },
                0
            )
            .is_ok());
    }
}
