//! Named internal events: each one counts (`fjord_*` metrics) and, where an
//! operator would want it, logs.

use crate::placement::Outcome;
use crate::state::{Command, Output, Response, StateError};

/// Called once per applied command on every replica.
pub fn command_applied(cmd: &Command, resp: &Response) {
    let outcome = match resp {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("fjord_commands_applied_total", "command" => cmd.kind(), "outcome" => outcome)
        .increment(1);
    match resp {
        Ok(Output::Scheduled { decision, .. }) | Ok(Output::Moved { decision, .. }) => {
            placement(&decision.outcome)
        }
        Ok(Output::Evacuated { moved, .. }) => {
            metrics::counter!("fjord_meetings_evacuated_total").increment(moved.len() as u64);
        }
        Err(StateError::NoCapacity { decision, .. }) => placement(&decision.outcome),
        Ok(Output::NodesDown { nodes, replaced }) if !nodes.is_empty() => {
            metrics::counter!("fjord_nodes_lease_expired_total").increment(nodes.len() as u64);
            metrics::counter!("fjord_meetings_replaced_total").increment(replaced.len() as u64);
        }
        _ => {}
    }
}

fn placement(o: &Outcome) {
    let outcome = match o {
        Outcome::Placed { .. } => "placed",
        Outcome::Cascaded { .. } => "cascaded",
        Outcome::Refused { .. } => "refused",
    };
    metrics::counter!("fjord_placements_total", "outcome" => outcome).increment(1);
}

use fjord_common::telemetry::MetricDescription as M;
use metrics::Unit;

/// Every metric the control plane emits, with its HELP text.
pub const CATALOGUE: &[M] = &[
    M::counter("fjord_accounts_disabled_inactive_total", "Host accounts the leader's sweep disabled after twelve months without organising a meeting."),
    M::counter("fjord_api_requests_total", "gRPC API requests answered, by method and status code."),
    M::counter("fjord_authz_denied_total", "API calls refused because the caller's role may not make them, by RPC and role."),
    M::counter("fjord_billing_exports_total", "Billing exports and previews computed by this replica."),
    M::counter("fjord_commands_applied_total", "Replicated commands applied to the state machine, by command kind and outcome (ok or an error id)."),
    M::counter("fjord_forwarded_requests_total", "Writes this replica forwarded to the leader because the client sent them to a follower."),
    M::counter("fjord_heartbeat_streams_superseded_total", "Node heartbeat streams closed because the same node opened a newer one."),
    M::counter("fjord_heartbeats_stale_total", "Node heartbeats read more than a second after they were sent (the replica was paused or stalled): evidence of the past, not committed as life now."),
    M::counter("fjord_join_denied_total", "Join-token requests refused (wrong passcode, ended meeting, ...)."),
    M::counter("fjord_join_rate_limited_total", "Join-token requests refused by the per-meeting or per-source rate limit."),
    M::counter("fjord_join_tokens_issued_total", "Join tokens issued to participants."),
    M::counter("fjord_ledger_rows_dropped_total", "Raw usage-ledger sessions dropped after the audit window, once a closed period billed them."),
    M::counter("fjord_malformed_messages_total", "Undecodable messages dropped, by source."),
    M::counter("fjord_meetings_evacuated_total", "Meetings moved off draining nodes by evacuation."),
    M::counter("fjord_meetings_replaced_total", "Meetings placed again because their node was declared down."),
    M::counter("fjord_nodes_lease_expired_total", "Media nodes declared down because their heartbeat lease expired."),
    M::counter("fjord_placements_total", "Placement decisions, by outcome (placed, cascaded, refused)."),
    M::counter("fjord_raft_elections_started_total", "Elections this replica started, by reason."),
    M::counter("fjord_raft_log_appends_total", "Raft log entries appended to this replica's write-ahead log."),
    M::counter("fjord_raft_log_bytes_written_total", "Bytes written to this replica's Raft write-ahead log.").unit(Unit::Bytes),
    M::counter("fjord_raft_log_fsyncs_total", "fsync calls on this replica's Raft write-ahead log (one per appended batch)."),
    M::counter("fjord_raft_apply_lock_waits_total", "Applies that had to wait for a snapshot's copy of the state to finish (without blocking the replica's thread)."),
    M::counter("fjord_raft_peer_rpc_errors_total", "Replica-to-replica RPCs that failed, by RPC."),
    M::counter("fjord_raft_peer_unreachable_total", "Replica-to-replica RPCs not sent because the peer was unreachable, by RPC."),
    M::counter("fjord_sign_ins_limited_total", "Host sign-ins refused by the rate limit."),
    M::counter("fjord_usage_events_received_total", "Usage events received from media nodes (resent ones included)."),
    M::counter("fjord_sla_events_total", "SLI events outside announced maintenance, per institution and SLI (from the replicated state: every replica exports the same value)."),
    M::counter("fjord_sla_bad_events_total", "SLI events outside maintenance that missed the indicator (failed probe or join, slow join, poor minute), per institution and SLI."),
    M::counter("fjord_sla_maintenance_events_total", "SLI events inside announced maintenance, per institution and SLI (left out of alerts)."),
    M::counter("fjord_sla_webhook_attempts_total", "Webhook delivery attempts to contact points, by outcome (delivered or failed)."),
    M::gauge("fjord_sla_objective_ratio", "The SLO's objective as a ratio of good events, per institution and SLI."),
    M::gauge("fjord_sla_error_budget_remaining_ratio", "Error budget left over the SLO window (1 untouched, below 0 overspent), per institution and SLI."),
    M::gauge("fjord_sla_alerts_firing", "SLO burn-rate alerts firing now, per institution."),
    M::histogram("fjord_sla_probe_seconds", "Time a synthetic probe join took, connect to admission.").unit(Unit::Seconds),
    M::gauge("fjord_host_accounts", "Host accounts, by state (active or disabled)."),
    M::gauge("fjord_ledger_open_sessions", "Usage-ledger sessions open now (joined, not yet left)."),
    M::gauge("fjord_ledger_revision", "The usage ledger's revision: the count of ledger changes committed."),
    M::gauge("fjord_ledger_rows", "Raw closed sessions the usage ledger holds."),
    M::gauge("fjord_media_nodes", "Registered media nodes, by state (ready, draining, down)."),
    M::gauge("fjord_raft_is_leader", "1 while this replica is the Raft leader, else 0."),
    M::gauge("fjord_raft_last_applied_index", "The last Raft log index this replica applied."),
    M::gauge("fjord_raft_snapshot_bytes", "Size of the last snapshot this replica built or installed.").unit(Unit::Bytes),
    M::gauge("fjord_raft_term", "This replica's current Raft term."),
    M::gauge("fjord_metadata_outbox_depth", "Metadata records changed and not yet written to the metadata store (from the replicated state)."),
    M::gauge("fjord_metadata_outbox_oldest_seconds", "Age of the oldest change not yet written to the metadata store (0 when the outbox is empty)."),
    M::gauge("fjord_metadata_revision", "The metadata store revision up to which the control plane has taken in changes made there."),
    M::gauge("fjord_metadata_synced_records", "Records written to the metadata store and cleared from the outbox since the cluster began."),
    M::counter("fjord_metadata_records_written_total", "Records this replica's writer put to (or deleted from) the metadata store."),
    M::counter("fjord_metadata_restored_total", "Keys put back in the metadata store after a change made there that the control plane does not take in."),
    M::counter("fjord_metadata_edits_total", "Licence versions written in the metadata store, by result (applied, refused, malformed, no_licence)."),
    M::counter("fjord_metadata_reconciles_total", "Full comparisons of the metadata store with the state."),
    M::counter("fjord_metadata_store_errors_total", "Metadata store operations that failed, by error (unreachable, refused, config)."),
    M::histogram("fjord_metadata_sync_lag_seconds", "From a change to its record being written to the metadata store.").unit(Unit::Seconds),
    M::counter("fjord_operator_actions_total", "Actions the Kubernetes operator took, by action and result."),
    M::counter("fjord_operator_observe_errors_total", "Operator rounds skipped because a side could not be observed (kubernetes, control_plane)."),
    M::histogram("fjord_proposal_writes", "Client writes carried by one Raft proposal (group commit batch size)."),
];

/// Describes the control plane's metrics (and the shared ones) to the
/// installed recorder.
pub fn describe_metrics() {
    fjord_common::telemetry::describe(fjord_common::telemetry::CATALOGUE);
    fjord_common::telemetry::describe(CATALOGUE);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_the_control_plane_emits_is_described() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let missing = fjord_common::telemetry::undescribed_metric_names(&dir, super::CATALOGUE);
        assert!(missing.is_empty(), "undescribed metrics: {missing:?}");
    }
}
