//! The availability SLI's probe joins: the control plane's leader signs a
//! token for a probe meeting on each ready node and joins it here as a
//! participant would, over QUIC, through the node's real join path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use fjord_control_plane::drivers::sla::Prober;
use fjord_control_plane::server::ProberHandle;
use fjord_media_node::client::media::ReceiveStats;
use fjord_media_node::client::{JoinRequest, Participant};
use fjord_proto::v1 as pb;

pub struct MediaProber;

impl Prober for MediaProber {
    fn probe(
        &self,
        meeting_id: u64,
        join: pb::JoinMeetingResponse,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>> {
        Box::pin(async move {
            let req = JoinRequest {
                meeting_id,
                ..Default::default()
            };
            let stats = Arc::new(ReceiveStats::new(Instant::now()));
            let p = Participant::enter(&req, join, stats)
                .await
                .map_err(|e| e.to_string())?;
            let admitted = p.is_admitted();
            p.close();
            if admitted {
                Ok(())
            } else {
                Err("the node did not let the probe in".into())
            }
        })
    }
}

pub fn handle() -> ProberHandle {
    ProberHandle(Arc::new(MediaProber))
}
