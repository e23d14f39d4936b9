//! The media node's metric catalogue: every `fjord_*` metric it emits, with
//! HELP text, described to the recorder at start.

use fjord_common::telemetry::MetricDescription as M;

/// Every metric the media node emits.
pub const CATALOGUE: &[M] = &[
    M::counter(
        "fjord_connection_log_deleted_total",
        "Connection-log entries deleted by the retention sweep.",
    ),
    M::counter(
        "fjord_connection_log_write_errors_total",
        "Connection-log writes that failed.",
    ),
    M::counter(
        "fjord_media_actions_refused_total",
        "Participant actions refused by the meeting's security settings.",
    ),
    M::counter(
        "fjord_media_connections_refused_total",
        "QUIC connections refused (node full, draining or rate-limited).",
    ),
    M::counter(
        "fjord_media_control_flood_closed_total",
        "Participant connections closed for flooding the control stream.",
    ),
    M::counter(
        "fjord_media_control_malformed_total",
        "Undecodable participant control frames dropped.",
    ),
    M::counter(
        "fjord_media_control_messages_total",
        "Participant control messages received.",
    ),
    M::counter(
        "fjord_media_datagrams_dropped_total",
        "Media datagrams dropped, by reason (malformed, unknown_track, not_owner, disabled).",
    ),
    M::counter(
        "fjord_media_datagrams_in_total",
        "Media datagrams received from participants.",
    ),
    M::counter(
        "fjord_media_datagrams_out_total",
        "Media datagrams forwarded to participants.",
    ),
    M::counter(
        "fjord_media_handshakes_failed_total",
        "Participant QUIC handshakes that failed.",
    ),
    M::counter(
        "fjord_media_joins_admitted_total",
        "Participants let into a meeting.",
    ),
    M::counter(
        "fjord_media_joins_refused_total",
        "Joins refused (bad token, locked meeting, full room, ...).",
    ),
    M::counter(
        "fjord_media_joins_waiting_total",
        "Participants put in a waiting room.",
    ),
    M::counter(
        "fjord_media_link_control_malformed_total",
        "Undecodable cascade-link control frames dropped.",
    ),
    M::counter(
        "fjord_media_link_control_unassigned_total",
        "Cascade-link control frames for meetings this node does not carry.",
    ),
    M::counter(
        "fjord_media_link_datagrams_in_total",
        "Media datagrams received over cascade links.",
    ),
    M::counter(
        "fjord_media_link_datagrams_out_total",
        "Media datagrams sent over cascade links.",
    ),
    M::counter(
        "fjord_media_link_dial_failures_total",
        "Cascade-link dials to a peer node that failed.",
    ),
    M::counter(
        "fjord_media_retries_sent_total",
        "Retransmissions sent to participants that asked for them.",
    ),
    M::counter(
        "fjord_media_silent_closes_total",
        "Participant connections this node closed after 1.5 s of running without hearing them.",
    ),
    M::counter(
        "fjord_media_stalls_total",
        "Times this process was not running for over 250 ms (stopped, or its machine too busy).",
    ),
    M::counter(
        "fjord_media_send_errors_total",
        "Datagram sends that failed at the socket.",
    ),
    M::counter(
        "fjord_media_time_limit_ends_total",
        "Meetings ended at their tier's time limit.",
    ),
    M::counter(
        "fjord_usage_events_journaled_total",
        "Usage events appended to the node's journal.",
    ),
    M::counter(
        "fjord_usage_events_reported_total",
        "Usage events the control plane acknowledged.",
    ),
    M::counter(
        "fjord_usage_journal_write_errors_total",
        "Usage-journal appends that failed.",
    ),
    M::counter(
        "fjord_usage_report_failures_total",
        "Usage reports to the control plane that failed (retried).",
    ),
    M::histogram(
        "fjord_media_join_latency_seconds",
        "Joins with a valid token, from the join call (the token's issue) to reaching media or being turned away, by outcome.",
    )
    .unit(metrics::Unit::Seconds),
    M::gauge(
        "fjord_media_cpu_permille",
        "Process CPU use over the last load sample, in thousandths of one core.",
    ),
    M::gauge(
        "fjord_media_participants",
        "Participants connected to this node.",
    ),
    M::gauge("fjord_media_rooms", "Meetings this node carries."),
    M::gauge("fjord_media_tracks", "Media tracks this node forwards."),
    M::gauge(
        "fjord_usage_journal_pending",
        "Usage events journaled but not yet acknowledged by the control plane.",
    ),
];

/// Describes the media node's metrics (and the shared ones) to the
/// installed recorder.
pub fn describe_metrics() {
    fjord_common::telemetry::describe(fjord_common::telemetry::CATALOGUE);
    fjord_common::telemetry::describe(CATALOGUE);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_the_media_node_emits_is_described() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let missing = fjord_common::telemetry::undescribed_metric_names(&dir, super::CATALOGUE);
        assert!(missing.is_empty(), "undescribed metrics: {missing:?}");
    }
}
