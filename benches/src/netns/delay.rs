//! Packet delay with jitter, hence reordering, in user space: an
//! `iptables ... -j NFQUEUE` rule in a host's namespace hands a share of
//! what it sends to a thread of this process (bound to the queue inside
//! that namespace), which lets each packet go after its own random delay.
//! It needs no `netem` in the kernel, only netfilter's queue; the rule
//! carries `--queue-bypass`, so packets flow undelayed if the thread is
//! gone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjord_control_plane::placement::SplitMix64;

use super::NetnsError;

/// How long the thread sleeps between looks at its queue and its held
/// packets (the delay's resolution).
const TICK: Duration = Duration::from_millis(1);

/// What one delay did, once stopped.
#[derive(Debug, Default, Clone, Copy)]
pub struct DelayStats {
    pub delayed: u64,
    /// Packets let go before one that had arrived earlier.
    pub reordered: u64,
}

/// A running delay on one host; [`Delay::stop`] lets every held packet go.
pub struct Delay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<DelayStats, NetnsError>>>,
}

struct Held {
    due: Instant,
    arrival: u64,
    msg: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.arrival) == (other.due, other.arrival)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.arrival).cmp(&(other.due, other.arrival))
    }
}

fn queue_err(what: &str, e: std::io::Error) -> NetnsError {
    super::failed(format!("netfilter queue: {what}"), e)
}

impl Delay {
    /// Starts the thread: it enters the namespace at `netns_path`, binds
    /// queue `queue_num` and holds each packet for `ms / 2 ..= 3 * ms / 2`
    /// milliseconds, at random from `seed`. Returns once the queue is
    /// bound, so a rule added afterwards never meets an unbound queue.
    pub fn start(
        netns_path: String,
        queue_num: u16,
        ms: u64,
        seed: u64,
    ) -> Result<Delay, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("delay-q{queue_num}"))
            .spawn(move || {
                let bound = (|| -> Result<nfq::Queue, NetnsError> {
                    super::enter_path(&netns_path)?;
                    let mut q = nfq::Queue::open().map_err(|e| queue_err("open", e))?;
                    q.bind(queue_num).map_err(|e| queue_err("bind", e))?;
                    // Full queue: let packets through rather than drop
                    // them (a delay fault, not a loss fault).
                    q.set_fail_open(queue_num, true)
                        .map_err(|e| queue_err("fail-open", e))?;
                    q.set_nonblocking(true);
                    Ok(q)
                })();
                let mut q = match bound {
                    Ok(q) => {
                        let _ = ready_tx.send(Ok(()));
                        q
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let result = hold_and_release(&mut q, &stopping, ms, seed);
                let _ = q.unbind(queue_num);
                result
            })
            .map_err(|e| queue_err("spawn", e))?;
        let failed = |stderr: String| super::failed(format!("netfilter queue {queue_num}"), stderr);
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Delay {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(stderr)) => {
                let _ = thread.join();
                Err(failed(stderr))
            }
            Err(_) => {
                let _ = thread.join();
                Err(failed("the thread ended before binding".into()))
            }
        }
    }

    /// Lets every held packet go and ends the thread.
    pub fn stop(mut self) -> Result<DelayStats, NetnsError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(super::failed("netfilter queue thread".into(), "panicked")),
            None => Ok(DelayStats::default()),
        }
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hold_and_release(
    q: &mut nfq::Queue,
    stop: &AtomicBool,
    ms: u64,
    seed: u64,
) -> Result<DelayStats, NetnsError> {
    let mut rng = SplitMix64::new(seed);
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut stats = DelayStats::default();
    let mut arrivals = 0u64;
    let mut highest_released: Option<u64> = None;
    loop {
        loop {
            match q.recv() {
                Ok(msg) => {
                    let ms = ms / 2 + rng.next_u64() % (ms + 1);
                    held.push(Reverse(Held {
                        due: Instant::now() + Duration::from_millis(ms),
                        arrival: arrivals,
                        msg,
                    }));
                    arrivals += 1;
                    stats.delayed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(queue_err("recv", e)),
            }
        }
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        while held.peek().is_some_and(|h| stopping || h.0.due <= now) {
            let Reverse(mut h) = held.pop().expect("peeked");
            if highest_released.is_some_and(|top| h.arrival < top) {
                stats.reordered += 1;
            }
            highest_released = highest_released.max(Some(h.arrival));
            h.msg.set_verdict(nfq::Verdict::Accept);
            q.verdict(h.msg).map_err(|e| queue_err("verdict", e))?;
        }
        if stopping {
            return Ok(stats);
        }
        std::thread::sleep(TICK);
    }
}
