//! Traces through real processes: three `fjord control-plane` replicas and
//! a `fjord media-node`, all exporting OTLP/gRPC to a real OTLP receiver
//! (the collector's trace service, served here with tonic from the
//! OpenTelemetry protos). A join is one trace: the control plane's `join`
//! span and, as its child, the node's `media_join` span, with meeting and
//! node ids as attributes. Scheduling and a node's failover leave spans too.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_benches::{media_node_with, operator, FjordCluster};
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_media_node::client::{JoinRequest, Participant};
use fjord_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

/// One received span: its service, name, ids and attributes.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Got {
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: s.trace_id.clone(),
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone(),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(&a.value)))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn wait_for(&self, what: &str, pred: impl Fn(&Got) -> bool) -> Got {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(g) = self.0.lock().unwrap().iter().find(|g| pred(g)) {
                return g.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} span; got {:#?}",
                self.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_is_one_trace_across_control_plane_and_media_node() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let service = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let cluster = FjordCluster::start_with(
        Path::new(FJORD),
        dir.path(),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--node-heartbeat-interval-ms",
            "100",
            "--node-lease-ms",
            "2000",
        ],
    );
    let cp = Arc::new(
        Client::from_files(
            &cluster.addrs,
            &operator(&cluster.ca),
            ClientConfig::default(),
        )
        .unwrap(),
    );
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "uni".into(),
        residency: "nordic".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    cp.sample_licence("uni", &[]).await.unwrap();
    let mut node = media_node_with(
        Path::new(FJORD),
        &cluster.ca,
        "n1",
        "nordic",
        &cluster.addrs.join(","),
        8,
        &["--otlp-endpoint".to_string(), endpoint.clone()],
    );
    let m = cp
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "uni".into(),
            participants: 4,
            request_id: request_id(),
            settings: Some(pb::MeetingSettings {
                disable_waiting_room: true,
                allow_join_before_host: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = m.meeting.unwrap().id;
    let participant = Participant::join(
        &cp,
        &JoinRequest {
            meeting_id: id,
            passcode: m.passcode.clone(),
            display_name: "traced".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(participant.is_admitted());

    let id_text = id.to_string();
    let schedule = receiver
        .wait_for("schedule", |g| {
            g.name == "schedule" && g.attr("meeting.id") == Some(id_text.as_str())
        })
        .await;
    assert_eq!(schedule.service, "fjord-control-plane");
    assert_eq!(schedule.attr("node.id"), Some("n1"));
    let join = receiver
        .wait_for("join", |g| {
            g.name == "join" && g.attr("meeting.id") == Some(id_text.as_str())
        })
        .await;
    assert_eq!(join.service, "fjord-control-plane");
    assert_eq!(join.attr("node.id"), Some("n1"));
    let media = receiver
        .wait_for("media_join", |g| {
            g.name == "media_join" && g.attr("meeting.id") == Some(id_text.as_str())
        })
        .await;
    assert_eq!(media.service, "fjord-media-node");
    assert_eq!(media.attr("node.id"), Some("n1"));
    assert_eq!(media.trace_id, join.trace_id, "one trace");
    assert_eq!(
        media.parent_span_id, join.span_id,
        "the node's span is the join's child"
    );
    assert!(!join.trace_id.iter().all(|b| *b == 0));

    // The node dies: the leader's failover leaves a span naming it.
    participant.close();
    node.kill9();
    let failover = receiver
        .wait_for("node_failover", |g| {
            g.name == "node_failover" && g.attr("node.ids") == Some("n1")
        })
        .await;
    assert_eq!(failover.service, "fjord-control-plane");
}
