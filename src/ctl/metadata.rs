//! `fjord ctl metadata ...`: the cloud tier's metadata store.

use clap::Subcommand;
use serde_json::{json, Value};

use fjord_control_plane::client::Client;
use fjord_proto::v1 as pb;
use pb::metadata_service_client::MetadataServiceClient;

use super::{fmt_time, Failure};

#[derive(Subcommand)]
pub enum MetadataCmd {
    /// Outbox depth, the last store revision taken in and the lag, with the
    /// leader's writer: its store, whether it reaches it, what it wrote.
    Status,
}

fn status_json(s: &pb::MetadataStatus) -> Value {
    json!({
        "replica_id": s.replica_id,
        "leader": s.leader,
        "backend": s.backend,
        "store": s.store,
        "outbox_depth": s.outbox_depth,
        "oldest_pending_ms": s.oldest_pending_ms,
        "lag_ms": s.lag_ms,
        "revision": s.revision,
        "synced_total": s.synced_total,
        "connected": s.connected,
        "last_error": s.last_error,
        "last_success_ms": s.last_success_ms,
        "seen_revision": s.seen_revision,
        "reconciles": s.reconciles,
        "written": s.written,
        "restored": s.restored,
        "edits_applied": s.edits_applied,
        "edits_refused": s.edits_refused,
    })
}

pub async fn metadata(client: &Client, c: MetadataCmd) -> Result<(Value, String), Failure> {
    match c {
        MetadataCmd::Status => {
            // The writer runs on the leader: ask every replica and show the
            // leader's answer (any answer when none leads).
            let mut answers = Vec::new();
            let mut last_error = None;
            for i in 0..client.endpoints() {
                let (_, ch) = client.channel_at(i);
                match MetadataServiceClient::new(ch)
                    .get_status(pb::MetadataStatusRequest {})
                    .await
                {
                    Ok(r) => answers.push(r.into_inner()),
                    Err(e) => last_error = Some(e),
                }
            }
            let Some(s) = answers
                .iter()
                .find(|s| s.leader)
                .or(answers.first())
                .cloned()
            else {
                return Err(last_error.expect("no endpoints answered").into());
            };
            let mut text = format!(
                "store:         {} ({})\n\
                 outbox:        {} records waiting, lag {:.1} s\n\
                 revision:      {} taken in; {} seen by the watch\n\
                 written:       {} since the cluster began\n",
                s.store,
                s.backend,
                s.outbox_depth,
                s.lag_ms as f64 / 1000.0,
                s.revision,
                s.seen_revision,
                s.synced_total,
            );
            if s.leader {
                text.push_str(&format!(
                    "writer:        replica {}, {}{}\n\
                     this term:     {} written, {} restored, {} licence edits taken in, {} refused, {} full reconciles\n",
                    s.replica_id,
                    if s.connected { "connected" } else { "NOT connected" },
                    if s.last_success_ms > 0 {
                        format!(", last success {}", fmt_time(s.last_success_ms))
                    } else {
                        String::new()
                    },
                    s.written,
                    s.restored,
                    s.edits_applied,
                    s.edits_refused,
                    s.reconciles,
                ));
                if !s.last_error.is_empty() {
                    text.push_str(&format!("last error:    {}\n", s.last_error));
                }
            } else {
                text.push_str("writer:        no replica answered as leader\n");
            }
            let json = json!({
                "status": status_json(&s),
                "replicas": answers.iter().map(status_json).collect::<Vec<_>>(),
            });
            Ok((json, text))
        }
    }
}
