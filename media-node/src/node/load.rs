//! Once a second: turn the core's counters into metrics and into the load
//! the next heartbeat reports (participants, tracks, packets/s, CPU).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use fjord_proto::v1 as pb;

use super::Shared;

/// CPU time this process has used, from /proc (Linux); None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Fjord targets.
    Some((utime + stime) / 100.0)
}

pub(super) async fn sample(
    shared: Arc<Shared>,
    load: Arc<Mutex<pb::HeartbeatRequest>>,
    mut stop: watch::Receiver<bool>,
) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64, process_cpu_seconds());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (counters, participants, tracks, rooms) = {
            let sfu = shared.sfu.read().expect("sfu lock");
            (
                sfu.counters(),
                sfu.participants(),
                sfu.tracks(),
                sfu.rooms(),
            )
        };
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let pps = (counters.datagrams_out.saturating_sub(last.1) as f64 / secs) as u64;
        let cpu = process_cpu_seconds();
        let cpu_permille = match (cpu, last.2) {
            (Some(c), Some(l)) => (((c - l) / secs / cores) * 1000.0).clamp(0.0, 1000.0) as u32,
            _ => 0,
        };
        last = (now, counters.datagrams_out, cpu);
        *load.lock().expect("load lock") = pb::HeartbeatRequest {
            node_id: String::new(),
            participants: participants as u32,
            tracks: tracks as u32,
            packets_per_second: pps,
            cpu_permille,
            rooms: Vec::new(), // filled at each beat
            sent_at_ms: 0,     // stamped at each beat
        };
        metrics::gauge!("fjord_media_participants").set(participants as f64);
        metrics::gauge!("fjord_media_tracks").set(tracks as f64);
        metrics::gauge!("fjord_media_rooms").set(rooms as f64);
        metrics::gauge!("fjord_media_cpu_permille").set(f64::from(cpu_permille));
        let c = &counters;
        for (name, v) in [
            ("fjord_media_datagrams_in_total", c.datagrams_in),
            ("fjord_media_datagrams_out_total", c.datagrams_out),
            ("fjord_media_control_messages_total", c.control_in),
            ("fjord_media_joins_admitted_total", c.joins_admitted),
            ("fjord_media_joins_waiting_total", c.joins_waiting),
            ("fjord_media_joins_refused_total", c.joins_refused),
            ("fjord_media_actions_refused_total", c.actions_refused),
            ("fjord_media_link_datagrams_out_total", c.link_datagrams_out),
            ("fjord_media_link_datagrams_in_total", c.link_datagrams_in),
            (
                "fjord_media_link_control_malformed_total",
                c.link_control_malformed,
            ),
            (
                "fjord_media_link_control_unassigned_total",
                c.link_control_unassigned,
            ),
            (
                "fjord_media_control_flood_closed_total",
                c.control_flood_closed,
            ),
            (
                "fjord_media_connections_refused_total",
                c.connections_refused,
            ),
            ("fjord_media_time_limit_ends_total", c.time_limit_ends),
            (
                "fjord_media_send_errors_total",
                shared.send_errors.load(Ordering::Relaxed),
            ),
        ] {
            metrics::counter!(name).absolute(v);
        }
        for (reason, v) in [
            ("malformed", c.dropped_malformed),
            ("unknown_track", c.dropped_unknown_track),
            ("not_owner", c.dropped_not_owner),
            ("disabled", c.dropped_disabled),
        ] {
            metrics::counter!("fjord_media_datagrams_dropped_total", "reason" => reason)
                .absolute(v);
        }
        metrics::counter!("fjord_media_control_malformed_total").absolute(c.control_malformed);
    }
}
