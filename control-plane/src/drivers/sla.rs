//! The SLA's loops: the leader's evaluate tick, its probe joins and its
//! webhook deliveries; on every replica, the SLA metrics and the flush of
//! join failures the replica saw.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::webhook::{self, WebhookClient};
use crate::access::Kek;
use crate::api::SigningKeys;
use crate::raft::Replica;
use crate::sla::{budget_left_ppm, Counts, Sli, SliEvent};
use crate::state::{
    Command, EvaluateSla, NodeState, Output, RecordDelivery, RecordSli, SlaCommand,
    MAX_SLI_EVENTS_PER_COMMAND,
};

/// SLI events a replica observed itself (joins it could not serve),
/// committed in batches by [`sli_flush_loop`].
#[derive(Debug, Clone, Default)]
pub struct SliSink(Arc<Mutex<VecDeque<SliEvent>>>);

impl SliSink {
    pub fn push(&self, e: SliEvent) {
        let mut v = self.0.lock().expect("sli sink lock");
        // Bounded: if the cluster cannot commit, old observations go first.
        if v.len() >= MAX_SLI_EVENTS_PER_COMMAND {
            v.pop_front();
        }
        v.push_back(e);
    }

    fn take(&self) -> Vec<SliEvent> {
        std::mem::take(&mut *self.0.lock().expect("sli sink lock")).into()
    }

    /// Returns events that could not be committed, ahead of newer ones
    /// (the oldest go when over the bound).
    fn put_back(&self, events: Vec<SliEvent>) {
        let mut v = self.0.lock().expect("sli sink lock");
        for e in events.into_iter().rev() {
            v.push_front(e);
        }
        while v.len() > MAX_SLI_EVENTS_PER_COMMAND {
            v.pop_front();
        }
    }
}

/// Commits what the sink gathered every `every`.
pub async fn sli_flush_loop(replica: Arc<Replica>, sink: SliSink, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let events = sink.take();
        if events.is_empty() {
            continue;
        }
        let cmd = Command::Sla(SlaCommand::Record(RecordSli {
            events: events.clone(),
        }));
        if let Err(e) = replica.write(cmd).await {
            tracing::warn!(error = %e, events = events.len(), "SLI events not committed; retrying");
            sink.put_back(events);
        }
    }
}

/// How the SLA loops are timed.
#[derive(Debug, Clone, Copy)]
pub struct SlaTiming {
    pub evaluate: Duration,
    pub probe: Duration,
    pub notify: Duration,
}

/// While leader, commits an evaluation every `every`; on every replica,
/// exports the SLA metrics from the replicated state (so every replica
/// shows the same counters and Prometheus takes the max, not the sum).
pub async fn evaluate_loop(replica: Arc<Replica>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        export_metrics(&replica);
        if !replica.is_leader() {
            continue;
        }
        match replica
            .write(Command::Sla(SlaCommand::Evaluate(EvaluateSla {})))
            .await
        {
            Ok(Output::SlaEvaluated {
                fired,
                resolved,
                maintenance_started,
                drained,
            }) => {
                if fired + resolved > 0 || !maintenance_started.is_empty() {
                    tracing::info!(
                        fired,
                        resolved,
                        ?maintenance_started,
                        ?drained,
                        "SLA evaluated"
                    );
                }
            }
            Ok(other) => tracing::warn!(?other, "SLA evaluation answered unexpectedly"),
            Err(e) => {
                tracing::warn!(error = %e, "SLA evaluation not committed; retrying next tick")
            }
        }
    }
}

fn export_metrics(replica: &Replica) {
    let now = crate::raft::now_ms();
    let rows = replica.local_state(|s| {
        let book = &s.sla.book;
        // Lifetime counts summed once per institution (and per region for
        // the region-wide SLI), not scanned again for every institution.
        let mut per_institution: BTreeMap<(&str, Sli), Counts> = BTreeMap::new();
        let mut per_region: BTreeMap<&str, Counts> = BTreeMap::new();
        for (key, counts) in book.lifetime() {
            if key.sli.region_wide() {
                per_region.entry(&key.region).or_default().add(counts);
            } else {
                per_institution
                    .entry((&key.institution, key.sli))
                    .or_default()
                    .add(counts);
            }
        }
        let window = book.config.window_ms();
        s.sla_scopes()
            .into_iter()
            .map(|scope| {
                let slis = Sli::ALL.map(|sli| {
                    let lifetime = if sli.region_wide() {
                        let mut c = Counts::default();
                        for r in &scope.regions {
                            if let Some(x) = per_region.get(r.as_str()) {
                                c.add(x);
                            }
                        }
                        c
                    } else {
                        per_institution
                            .get(&(scope.name.as_str(), sli))
                            .copied()
                            .unwrap_or_default()
                    };
                    let objective = scope.objectives.get(sli);
                    let (total, bad) = book.window(&scope, sli, now, window).corrected();
                    (
                        sli,
                        lifetime,
                        objective,
                        budget_left_ppm(bad, total, objective),
                    )
                });
                let firing = book.alerts.firing_for(&scope.name).count();
                (scope.name, slis, firing)
            })
            .collect::<Vec<_>>()
    });
    for (inst, slis, firing) in rows {
        for (sli, c, objective, budget_left) in slis {
            let (total, bad) = c.corrected();
            let labels = [
                ("institution", inst.clone()),
                ("sli", sli.as_str().to_string()),
            ];
            metrics::counter!("fjord_sla_events_total", &labels).absolute(total);
            metrics::counter!("fjord_sla_bad_events_total", &labels).absolute(bad);
            metrics::counter!("fjord_sla_maintenance_events_total", &labels)
                .absolute(c.maintenance_total);
            metrics::gauge!("fjord_sla_objective_ratio", &labels).set(f64::from(objective) / 1e6);
            metrics::gauge!("fjord_sla_error_budget_remaining_ratio", &labels)
                .set(budget_left as f64 / 1e6);
        }
        metrics::gauge!("fjord_sla_alerts_firing", "institution" => inst).set(firing as f64);
    }
}

/// Joins a node the way a participant does, with a token the caller made:
/// the availability SLI's synthetic probe. The binary supplies the media
/// client (the control plane does not link it).
pub trait Prober: Send + Sync + 'static {
    /// `Ok` once the node let the probe into `meeting_id`.
    fn probe(
        &self,
        meeting_id: u64,
        join: fjord_proto::v1::JoinMeetingResponse,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// While leader, joins every ready node with a probe every `every` and
/// commits the outcomes (per region and node) to the availability SLI.
pub async fn probe_loop(
    replica: Arc<Replica>,
    keys: Arc<SigningKeys>,
    prober: Arc<dyn Prober>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !replica.is_leader() {
            continue;
        }
        let nodes = replica.local_state(|s| {
            s.nodes
                .values()
                .filter(|n| n.state == NodeState::Ready)
                .map(|n| {
                    (
                        n.id.clone(),
                        n.region.clone(),
                        n.index,
                        n.address.clone(),
                        n.certificate.clone(),
                    )
                })
                .collect::<Vec<_>>()
        });
        if nodes.is_empty() {
            continue;
        }
        let signer = match keys.signer().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no join-signing key yet; probes wait");
                continue;
            }
        };
        let probes = nodes
            .into_iter()
            .map(|(id, region, index, address, certificate)| {
                let now = crate::raft::now_ms();
                let meeting_id = fjord_common::token::PROBE_MEETING_ID_BASE + u64::from(index);
                let participant_id = crate::access::random_u64().max(1);
                let expires_at_ms = now + 30_000;
                let token = signer.sign(&fjord_proto::v1::JoinClaims {
                    meeting_id,
                    participant_id,
                    role: fjord_proto::v1::Role::Host as i32,
                    node_id: id.clone(),
                    display_name: String::new(),
                    issued_at_ms: now,
                    expires_at_ms,
                    settings: None,
                    webinar: false,
                    time_limit_s: 0,
                    warn_before_end_s: 0,
                });
                let join = fjord_proto::v1::JoinMeetingResponse {
                    token,
                    node_id: id.clone(),
                    node_address: address,
                    node_certificate: certificate,
                    participant_id,
                    role: fjord_proto::v1::Role::Host as i32,
                    expires_at_ms,
                    traceparent: String::new(),
                };
                let prober = prober.clone();
                async move {
                    let started = Instant::now();
                    let outcome = tokio::time::timeout(
                        Duration::from_secs(5),
                        prober.probe(meeting_id, join),
                    )
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                    if let Err(e) = &outcome {
                        tracing::warn!(node = %id, error = %e, "probe join failed");
                    }
                    metrics::histogram!("fjord_sla_probe_seconds")
                        .record(started.elapsed().as_secs_f64());
                    SliEvent {
                        at_ms: now,
                        institution: None,
                        region,
                        node: Some(id),
                        sli: Sli::Availability,
                        total: 1,
                        bad: u64::from(outcome.is_err()),
                    }
                }
            });
        let events = futures::future::join_all(probes).await;
        if let Err(e) = replica
            .write(Command::Sla(SlaCommand::Record(RecordSli { events })))
            .await
        {
            tracing::warn!(error = %e, "probe results not committed");
        }
    }
}

/// While leader, posts every due notification to its webhook, signed with
/// the institution's secret, and commits each attempt's outcome. A new
/// leader picks up what is pending: a notification whose last attempt
/// reached the receiver but whose commit was lost is sent again with the
/// same `X-Fjord-Notification-Id`, so receivers can drop the repeat.
pub async fn notify_loop(
    replica: Arc<Replica>,
    kek: Arc<Kek>,
    client: WebhookClient,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !replica.is_leader() {
            continue;
        }
        let now = crate::raft::now_ms();
        let due: Vec<_> = replica.local_state(|s| {
            s.sla
                .outbox
                .due(now)
                .take(32)
                .map(|n| {
                    (
                        n.id,
                        n.institution.clone(),
                        n.contact.clone(),
                        n.body.clone(),
                    )
                })
                .collect()
        });
        for (id, institution, contact, body) in due {
            let at_ms = crate::raft::now_ms();
            let secret = kek.webhook_secret(&institution);
            let headers = [
                (
                    webhook::SIGNATURE_HEADER,
                    webhook::signature(&secret, at_ms / 1000, body.as_bytes()),
                ),
                (webhook::NOTIFICATION_ID_HEADER, id.to_string()),
            ];
            let (ok, outcome) = match client.post(&contact, &body, &headers).await {
                Ok(status) => ((200..300).contains(&status), status.to_string()),
                Err(e) => (false, e),
            };
            metrics::counter!("fjord_sla_webhook_attempts_total", "outcome" => if ok { "delivered" } else { "failed" })
                .increment(1);
            if !ok {
                tracing::warn!(notification = id, %institution, %outcome, "webhook delivery failed; will retry");
            }
            let cmd = Command::Sla(SlaCommand::Delivery(RecordDelivery {
                id,
                at_ms,
                ok,
                outcome,
            }));
            if let Err(e) = replica.write(cmd).await {
                tracing::warn!(error = %e, notification = id, "delivery outcome not committed");
                break;
            }
        }
    }
}
