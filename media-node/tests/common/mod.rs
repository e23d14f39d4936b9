//! A real control plane (in-process replica, real gRPC, redb log on disk)
//! and real media nodes (quinn on loopback) for end-to-end tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_common::pki::LocalCa;
use fjord_common::TlsFiles;
use fjord_control_plane::client::{Client, ClientConfig};
use fjord_control_plane::server::{start_with_listeners, ReplicaConfig, ReplicaHandle};
use fjord_media_node::node::{self, MediaNodeConfig, MediaNodeHandle};
use fjord_proto::v1 as pb;

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub ca: LocalCa,
    pub replica: ReplicaHandle,
    pub endpoints: Vec<String>,
    pub nodes: BTreeMap<String, MediaNodeHandle>,
}

pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Stack {
    /// One control-plane replica, institution `uni` (residency nordic), and
    /// the given media nodes `(id, region, capacity)`.
    pub async fn start(nodes: &[(&str, &str, u32)]) -> Stack {
        Self::start_with(ReplicaConfig::default(), nodes).await
    }

    pub async fn start_with(base: ReplicaConfig, nodes: &[(&str, &str, u32)]) -> Stack {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_init(&dir.path().join("pki")).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let pl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = pl.local_addr().unwrap().to_string();
        let config = ReplicaConfig {
            id: 1,
            listen: l.local_addr().unwrap(),
            peer_listen: pl.local_addr().unwrap(),
            data_dir: dir.path().join("r1"),
            peers: [(1, peer_addr)].into_iter().collect(),
            tls: ca.replica(1).unwrap(),
            kek_file: ca.kek().unwrap(),
            raft_heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            node_heartbeat_interval_ms: 200,
            node_lease_ms: 2000,
            ..base
        };
        let replica = start_with_listeners(config, l, pl).await.unwrap();
        let mut stack = Stack {
            dir,
            ca,
            replica,
            endpoints: vec![addr],
            nodes: BTreeMap::new(),
        };
        stack
            .client()
            .create_institution(pb::CreateInstitutionRequest {
                name: "uni".into(),
                residency: "nordic".into(),
                max_participants: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        stack
            .client()
            .sample_licence("uni", &["large-meeting-1000", "webinar-10000"])
            .await
            .unwrap();
        for (id, region, capacity) in nodes {
            stack.add_node(id, region, *capacity).await;
        }
        stack
    }

    pub async fn add_node(&mut self, id: &str, region: &str, capacity: u32) {
        self.add_node_with(id, region, capacity, |_| {}).await
    }

    /// As [`add_node`](Self::add_node), with changes to the node's config.
    pub async fn add_node_with(
        &mut self,
        id: &str,
        region: &str,
        capacity: u32,
        change: impl FnOnce(&mut MediaNodeConfig),
    ) {
        let mut c = MediaNodeConfig::new(
            id,
            region,
            "127.0.0.1:0".parse().unwrap(),
            self.endpoints.clone(),
            self.ca.node(id).unwrap(),
        );
        c.capacity = capacity;
        change(&mut c);
        let h = node::start(c).await.unwrap();
        self.nodes.insert(id.to_string(), h);
    }

    /// An operator's client: schedules, moves, drains (and may join).
    pub fn client(&self) -> Client {
        self.client_with(&self.ca.operator("test-operator").unwrap())
    }

    /// A participant's client: trusts the CA, presents no certificate.
    pub fn participant_client(&self) -> Client {
        self.client_with(&self.ca.anonymous())
    }

    pub fn client_with(&self, files: &TlsFiles) -> Client {
        Client::from_files(
            &self.endpoints,
            files,
            ClientConfig {
                retry_for: Duration::from_secs(10),
                ..ClientConfig::default()
            },
        )
        .unwrap()
    }

    /// Schedules a meeting of the test institution with `settings`.
    pub async fn schedule(
        &self,
        participants: u32,
        settings: pb::MeetingSettings,
    ) -> pb::ScheduleMeetingResponse {
        self.client()
            .schedule_meeting(pb::ScheduleMeetingRequest {
                institution: "uni".into(),
                participants,
                settings: Some(settings),
                request_id: fjord_control_plane::client::request_id(),
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

/// No waiting room, no waiting for the host: participants get straight in.
pub fn open_settings() -> pb::MeetingSettings {
    pb::MeetingSettings {
        disable_waiting_room: true,
        allow_join_before_host: true,
        ..Default::default()
    }
}
