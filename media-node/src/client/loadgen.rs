//! `fjord loadgen`: schedules meetings (or webinars), joins every
//! participant through the control plane, sends audio and video for a
//! while, and reports what everyone received. In a webinar only the host
//! (the panelist) sends; every attendee receives.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use fjord_common::client::{request_id, Client};
use fjord_proto::v1 as pb;

use super::{ClientError, JoinRequest, Participant};

#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    pub institution: String,
    pub meetings: u32,
    pub participants: u32,
    pub duration: Duration,
    /// Webinars: one panelist (the host) sends, `attendees` receive.
    pub webinar: bool,
    pub attendees: u32,
}

impl LoadgenConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.meetings == 0 || self.meetings > 1000 {
            return Err("--meetings must be 1..=1000".into());
        }
        if self.webinar {
            if self.attendees == 0 || self.attendees > 10_000 {
                return Err("--attendees must be 1..=10000 with --webinar".into());
            }
        } else if self.attendees != 0 {
            return Err("--attendees needs --webinar (meetings take --participants)".into());
        } else if self.participants < 2 || self.participants > 1000 {
            return Err("--participants must be 2..=1000".into());
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            return Err("--duration-s must be 1..=3600".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadgenReport {
    /// meeting | webinar
    pub kind: &'static str,
    pub meetings: u32,
    pub participants: u32,
    pub duration_s: f64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Received copies expected from what was sent and the fan-out.
    pub packets_expected: u64,
    pub loss_ratio: f64,
    pub corrupted: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub jitter_ms_mean: f64,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    pub first_media_p50_ms: f64,
    pub first_media_p99_ms: f64,
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs the load; `progress` hears one line per stage.
pub async fn run(
    cp: &Client,
    config: &LoadgenConfig,
    progress: impl Fn(&str),
) -> Result<LoadgenReport, ClientError> {
    // Everyone in one meeting: the host and the others.
    let size = if config.webinar {
        config.attendees + 1
    } else {
        config.participants
    };
    let mut meetings = Vec::new();
    for _ in 0..config.meetings {
        let r = cp
            .schedule_meeting(pb::ScheduleMeetingRequest {
                institution: config.institution.clone(),
                participants: size,
                request_id: request_id(),
                webinar: config.webinar,
                ..Default::default()
            })
            .await
            .map_err(ClientError::Refused)?;
        let id = r.meeting.map(|m| m.id).unwrap_or_default();
        meetings.push((id, r.passcode, r.host_key));
    }
    progress(&format!("scheduled {} meetings", meetings.len()));

    let mut join_us = Histogram::<u64>::new(3).expect("valid histogram");
    let mut everyone: Vec<(u64, Participant)> = Vec::new();
    for (id, passcode, host_key) in &meetings {
        let t = Instant::now();
        let host = Participant::join(
            cp,
            &JoinRequest {
                meeting_id: *id,
                host_key: host_key.clone(),
                display_name: "host".into(),
                auto_admit: true,
                auto_consent: true,
                ..Default::default()
            },
        )
        .await?;
        let _ = join_us.record(t.elapsed().as_micros() as u64);
        everyone.push((*id, host));
        let joins = (1..size).map(|i| {
            let req = JoinRequest {
                meeting_id: *id,
                passcode: passcode.clone(),
                display_name: format!("participant {i}"),
                auto_consent: true,
                ..Default::default()
            };
            async move {
                let t = Instant::now();
                let mut p = Participant::join(cp, &req).await?;
                p.wait_admitted(Duration::from_secs(20)).await?;
                Ok::<_, ClientError>((t.elapsed(), p))
            }
        });
        for r in futures::future::join_all(joins).await {
            let (took, p) = r?;
            let _ = join_us.record(took.as_micros() as u64);
            everyone.push((*id, p));
        }
        progress(&format!("meeting {id}: {size} participants in"));
    }

    let mut senders = Vec::new();
    for (_, p) in everyone.iter_mut() {
        // In a webinar only the panelist sends (attendees may not publish).
        if !config.webinar || p.role == pb::Role::Host {
            senders.extend(p.start_media().await?);
        }
    }
    progress(&format!(
        "{} participants sending audio and video for {:?}",
        everyone.len(),
        config.duration
    ));
    let started = Instant::now();
    let mut next_report = Duration::from_secs(5);
    while started.elapsed() < config.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if started.elapsed() >= next_report {
            let received: u64 = everyone
                .iter()
                .map(|(_, p)| p.stats.snapshot().received)
                .sum();
            progress(&format!(
                "{:>4.0} s: {received} datagrams received",
                started.elapsed().as_secs_f64()
            ));
            next_report += Duration::from_secs(5);
        }
    }
    for s in &senders {
        s.abort();
    }
    // Let the last datagrams arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed = started.elapsed();

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid");
    let mut first_media = Histogram::<u64>::new(3).expect("valid");
    let (mut sent, mut received, mut expected, mut corrupted, mut jitter) =
        (0u64, 0u64, 0u64, 0u64, 0f64);
    for (_, p) in &everyone {
        let s = p.stats.snapshot();
        sent += s.sent;
        received += s.received;
        corrupted += s.corrupted;
        jitter += s.jitter_ms;
        // Everyone else in the meeting should have received each datagram.
        expected += s.sent * u64::from(size - 1);
        latency
            .add(p.stats.latency_histogram())
            .expect("same bounds");
        if let Some(ms) = s.first_media_ms {
            let _ = first_media.record((ms * 1000.0) as u64);
        }
    }
    let n = everyone.len();
    // Hosts leave last, so nobody has to hand over.
    let (hosts, others): (Vec<_>, Vec<_>) = everyone
        .into_iter()
        .partition(|(_, p)| p.role == pb::Role::Host);
    for (_, p) in others.into_iter().chain(hosts) {
        p.leave().await;
    }
    for (id, _, _) in &meetings {
        let id = *id;
        let _ = cp
            .call(|ch| async move {
                pb::meeting_service_client::MeetingServiceClient::new(ch)
                    .end_meeting(pb::EndMeetingRequest { id })
                    .await
            })
            .await;
    }
    Ok(LoadgenReport {
        kind: if config.webinar { "webinar" } else { "meeting" },
        meetings: config.meetings,
        participants: n as u32,
        duration_s: elapsed.as_secs_f64(),
        packets_sent: sent,
        packets_received: received,
        packets_expected: expected,
        loss_ratio: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(received) as f64 / expected as f64
        },
        corrupted,
        latency_p50_ms: quantile_ms(&latency, 0.5),
        latency_p99_ms: quantile_ms(&latency, 0.99),
        jitter_ms_mean: if n == 0 { 0.0 } else { jitter / n as f64 },
        join_p50_ms: quantile_ms(&join_us, 0.5),
        join_p99_ms: quantile_ms(&join_us, 0.99),
        first_media_p50_ms: quantile_ms(&first_media, 0.5),
        first_media_p99_ms: quantile_ms(&first_media, 0.99),
    })
}
