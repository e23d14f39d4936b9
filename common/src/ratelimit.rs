//! Keyed token buckets, driven by the caller's clock so they can be tested
//! without sleeping. Used against join floods and passcode guessing, on the
//! control plane (per source address and per meeting) and on media nodes
//! (per source address and per meeting).

use std::collections::HashMap;
use std::hash::Hash;

/// A bucket that holds up to `burst` tokens and refills at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Rate {
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if self.burst == 0 || !(self.per_second > 0.0 && self.per_second.is_finite()) {
            return Err(format!(
                "{what}: burst must be at least 1 and the rate a positive number"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Token buckets by key. Memory is bounded: when `max_keys` is reached,
/// buckets that have refilled completely (they carry no information) are
/// forgotten, and if none has, the fullest ones go first.
#[derive(Debug, Clone)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        KeyedLimiter {
            rate,
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    fn refilled(&self, b: Bucket, now_ms: u64) -> f64 {
        let elapsed_s = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        (b.tokens + elapsed_s * self.rate.per_second).min(f64::from(self.rate.burst))
    }

    /// Whether `key` has a token now, without taking it.
    pub fn check(&self, key: &K, now_ms: u64) -> Result<(), u64> {
        match self.buckets.get(key) {
            None => Ok(()),
            Some(b) => {
                let tokens = self.refilled(*b, now_ms);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.retry_after_ms(tokens))
                }
            }
        }
    }

    /// Takes a token for `key`, or says in how many ms one will be there.
    pub fn take(&mut self, key: &K, now_ms: u64) -> Result<(), u64> {
        let tokens = match self.buckets.get(key) {
            Some(b) => self.refilled(*b, now_ms),
            None => {
                self.make_room(now_ms);
                f64::from(self.rate.burst)
            }
        };
        if tokens < 1.0 {
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens,
                    at_ms: now_ms,
                },
            );
            return Err(self.retry_after_ms(tokens));
        }
        self.buckets.insert(
            key.clone(),
            Bucket {
                tokens: tokens - 1.0,
                at_ms: now_ms,
            },
        );
        Ok(())
    }

    fn retry_after_ms(&self, tokens: f64) -> u64 {
        (((1.0 - tokens) / self.rate.per_second) * 1000.0).ceil() as u64
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.buckets.len() < self.max_keys {
            return;
        }
        let burst = f64::from(self.rate.burst);
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            let elapsed_s = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
            b.tokens + elapsed_s * rate.per_second < burst
        });
        if self.buckets.len() >= self.max_keys {
            // Everyone is mid-burst: forget an arbitrary tenth.
            let drop: Vec<K> = self
                .buckets
                .keys()
                .take(self.max_keys / 10 + 1)
                .cloned()
                .collect();
            for k in drop {
                self.buckets.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut l = KeyedLimiter::new(
            Rate {
                burst: 3,
                per_second: 2.0,
            },
            100,
        );
        for _ in 0..3 {
            l.take(&"a", 0).unwrap();
        }
        let wait = l.take(&"a", 0).unwrap_err();
        assert_eq!(wait, 500);
        // Another key is unaffected.
        l.take(&"b", 0).unwrap();
        // Half a second later one token is back, not two.
        l.take(&"a", 500).unwrap();
        assert!(l.take(&"a", 500).is_err());
        assert!(l.check(&"a", 1000).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let mut l = KeyedLimiter::new(
            Rate {
                burst: 1,
                per_second: 0.001,
            },
            50,
        );
        for k in 0..1000u32 {
            let _ = l.take(&k, 0);
        }
        assert!(l.len() <= 50, "{} buckets", l.len());
    }
}
