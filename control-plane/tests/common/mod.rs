//! An in-process cluster of real replicas: each has its own public and peer
//! gRPC ports on loopback (TLS, certificates from a CA made in the temp
//! dir), its own redb log in a temp dir, and talks to the others over real
//! gRPC with mutual TLS. "Killing" a replica stops its servers and its Raft.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fjord_common::pki::LocalCa;
use fjord_common::TlsFiles;
use fjord_control_plane::client::{Client, ClientConfig};
use fjord_control_plane::server::{start_with_listeners, ReplicaConfig, ReplicaHandle};
use fjord_proto::v1 as pb;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: LocalCa,
    pub replicas: BTreeMap<u64, ReplicaHandle>,
    /// Public ports.
    pub addrs: BTreeMap<u64, String>,
    /// Peer ports (Raft, forwarding).
    pub peer_addrs: BTreeMap<u64, String>,
    base: ReplicaConfig,
}

pub const OPERATOR: &str = "test-operator";

async fn bind() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

pub fn fast_config() -> ReplicaConfig {
    ReplicaConfig {
        raft_heartbeat_interval_ms: 100,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        node_heartbeat_interval_ms: 100,
        node_lease_ms: 1000,
        ..ReplicaConfig::default()
    }
}

/// Fast timings and a node lease no test outlives: for tests that
/// register nodes which never heartbeat.
pub fn silent_nodes_config() -> ReplicaConfig {
    ReplicaConfig {
        node_lease_ms: 600_000,
        ..fast_config()
    }
}

impl Cluster {
    pub async fn start(n: u64, base: ReplicaConfig) -> Cluster {
        // Logs when RUST_LOG is set, for debugging a failing run.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_init(&dir.path().join("pki")).unwrap();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut peer_addrs = BTreeMap::new();
        for id in 1..=n {
            let (l, a) = bind().await;
            let (pl, pa) = bind().await;
            addrs.insert(id, a);
            peer_addrs.insert(id, pa);
            listeners.insert(id, (l, pl));
        }
        let mut c = Cluster {
            dir,
            ca,
            replicas: BTreeMap::new(),
            addrs,
            peer_addrs,
            base,
        };
        for (id, (l, pl)) in listeners {
            let peers = c.peer_addrs.clone();
            c.launch(id, l, pl, peers, false).await;
        }
        c.wait_leader(Duration::from_secs(10)).await;
        c
    }

    /// Starts replica `id` on these listeners with its data directory
    /// under the cluster's temp dir.
    async fn launch(
        &mut self,
        id: u64,
        l: tokio::net::TcpListener,
        pl: tokio::net::TcpListener,
        peers: BTreeMap<u64, String>,
        join: bool,
    ) {
        let config = ReplicaConfig {
            id,
            listen: l.local_addr().unwrap(),
            peer_listen: pl.local_addr().unwrap(),
            data_dir: self.data_dir(id),
            peers,
            join,
            tls: self.ca.replica(id).unwrap(),
            kek_file: self.ca.kek().unwrap(),
            ..self.base.clone()
        };
        self.replicas
            .insert(id, start_with_listeners(config, l, pl).await.unwrap());
    }

    fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("r{id}"))
    }

    /// Starts a replica that waits to be added with add-member; answers
    /// its peer address (the one add-member takes).
    pub async fn start_joiner(&mut self, id: u64) -> String {
        let (l, addr) = bind().await;
        let (pl, peer_addr) = bind().await;
        self.launch(id, l, pl, BTreeMap::new(), true).await;
        self.addrs.insert(id, addr);
        self.peer_addrs.insert(id, peer_addr.clone());
        peer_addr
    }

    /// Starts replica `id` again on its old ports (after `kill`), from
    /// its data directory, or with `wipe` from an empty one (a lost disk:
    /// it comes back with `join` and is caught up by the leader, being
    /// still a member).
    pub async fn restart(&mut self, id: u64, wipe: bool) {
        if wipe {
            // An in-process kill cannot stop a blocking task the replica
            // started (a snapshot of a large state still being written),
            // as a real kill would: wipe once it has finished writing.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match std::fs::remove_dir_all(self.data_dir(id)) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("wiping replica {id}'s data: {e}"),
                }
            }
        }
        let l = tokio::net::TcpListener::bind(&self.addrs[&id])
            .await
            .unwrap();
        let pl = tokio::net::TcpListener::bind(&self.peer_addrs[&id])
            .await
            .unwrap();
        let peers = if wipe {
            BTreeMap::new()
        } else {
            self.peer_addrs.clone()
        };
        self.launch(id, l, pl, peers, wipe).await;
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.replicas
            .keys()
            .map(|id| self.addrs[id].clone())
            .collect()
    }

    /// A client with the test operator's certificate.
    pub fn client(&self) -> Client {
        self.client_with(&self.ca.operator(OPERATOR).unwrap())
    }

    /// A client presenting `files` (or only trusting the CA).
    pub fn client_with(&self, files: &TlsFiles) -> Client {
        Client::from_files(&self.endpoints(), files, ClientConfig::default()).unwrap()
    }

    /// A client with node `id`'s certificate.
    pub fn node_client(&self, id: &str) -> Client {
        self.client_with(&self.ca.node(id).unwrap())
    }

    /// A participant: no certificate.
    pub fn anonymous_client(&self) -> Client {
        self.client_with(&self.ca.anonymous())
    }

    pub fn leader(&self) -> Option<u64> {
        self.replicas
            .values()
            .find(|h| h.replica.is_leader())
            .map(|h| h.replica.id)
    }

    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader elected within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn kill(&mut self, id: u64) {
        let h = self.replicas.remove(&id).expect("replica running");
        h.shutdown().await;
    }

    /// Waits until every running replica has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        for h in self.replicas.values() {
            while h.replica.status().last_applied_index < index {
                if Instant::now() >= deadline {
                    // Every replica's view, so a failure on a machine
                    // without logs still says where replication stopped.
                    let views: Vec<_> = self
                        .replicas
                        .values()
                        .map(|r| format!("{:?}", r.replica.status()))
                        .collect();
                    panic!(
                        "replica {} stuck below {index}; replicas: {views:#?}",
                        h.replica.id
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub async fn create_institution(client: &Client, name: &str, residency: &str, max: u32) {
    let req = pb::CreateInstitutionRequest {
        name: name.into(),
        residency: residency.into(),
        max_participants: max,
        home_region: String::new(),
    };
    client.create_institution(req).await.unwrap();
    client
        .sample_licence(name, &["large-meeting-1000", "webinar-10000"])
        .await
        .unwrap();
}

/// Registers node `id` with its own certificate, as a media node would.
pub async fn register_node(cluster: &Cluster, id: &str, region: &str, capacity: u32) {
    let client = cluster.node_client(id);
    let req = pb::RegisterNodeRequest {
        id: id.into(),
        region: region.into(),
        address: "127.0.0.1:7999".into(),
        capacity,
        ..Default::default()
    };
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::node_service_client::NodeServiceClient::new(ch)
                    .register_node(req)
                    .await
            }
        })
        .await
        .unwrap();
}

pub async fn schedule(
    client: &Client,
    institution: &str,
    participants: u32,
    request_id: &str,
) -> Result<pb::ScheduleMeetingResponse, tonic::Status> {
    let req = pb::ScheduleMeetingRequest {
        institution: institution.into(),
        participants,
        start_ms: 0,
        duration_ms: 3_600_000,
        request_id: request_id.into(),
        ..Default::default()
    };
    schedule_request(client, req).await
}

/// Sends a whole schedule request (a webinar, a host's ID token, ...).
pub async fn schedule_request(
    client: &Client,
    req: pb::ScheduleMeetingRequest,
) -> Result<pb::ScheduleMeetingResponse, tonic::Status> {
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::meeting_service_client::MeetingServiceClient::new(ch)
                    .schedule_meeting(req)
                    .await
            }
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn list_meetings(client: &Client) -> Vec<pb::Meeting> {
    client
        .call(|ch| async move {
            pb::meeting_service_client::MeetingServiceClient::new(ch)
                .list_meetings(pb::ListMeetingsRequest {
                    institution: String::new(),
                    include_ended: true,
                })
                .await
        })
        .await
        .unwrap()
        .into_inner()
        .meetings
}

pub async fn list_nodes(client: &Client) -> Vec<pb::MediaNode> {
    client
        .call(|ch| async move {
            pb::node_service_client::NodeServiceClient::new(ch)
                .list_nodes(pb::ListNodesRequest {})
                .await
        })
        .await
        .unwrap()
        .into_inner()
        .nodes
}
