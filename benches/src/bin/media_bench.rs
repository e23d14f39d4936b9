//! Media benchmarks on loopback, printing JSON. A real control-plane
//! replica and a real media node run in this process, participants join
//! through the control plane and talk QUIC to the node.
//!
//!   cargo run --release -p fjord-benches --bin media_bench -- join --runs 50
//!   cargo run --release -p fjord-benches --bin media_bench -- forward --seconds 5
//!
//! `join`: time from the start of a join (control-plane JoinMeeting call) to
//! the first media datagram received from the speaker already in the room.
//! `forward`: datagrams/s a node forwards in a 10-participant meeting (one
//! sender flooding 1,200-byte datagrams, nine receivers), next to quinn's own
//! point-to-point datagram rate measured in the same run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;

use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_control_plane::server::{start_with_listener, ReplicaConfig, ReplicaHandle};
use fjord_media_node::client::{JoinRequest, Participant, StreamProfile};
use fjord_media_node::node::{self, MediaNodeConfig, MediaNodeHandle};
use fjord_media_node::tls;
use fjord_proto::v1 as pb;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Join latency: join call to first media received.
    Join {
        #[arg(long, default_value_t = 50)]
        runs: u32,
    },
    /// Forwarded datagrams/s in a meeting vs quinn point-to-point.
    Forward {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        participants: u32,
        #[arg(long, default_value_t = 1200)]
        datagram_bytes: usize,
    },
}

struct Stack {
    _dir: tempfile::TempDir,
    _replica: ReplicaHandle,
    node: MediaNodeHandle,
    cp: Client,
}

async fn stack() -> anyhow::Result<Stack> {
    let dir = tempfile::tempdir()?;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?.to_string();
    let replica = start_with_listener(
        ReplicaConfig {
            id: 1,
            listen: l.local_addr()?,
            data_dir: dir.path().join("r1"),
            peers: [(1, addr.clone())].into_iter().collect(),
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            raft_heartbeat_interval_ms: 50,
            ..ReplicaConfig::default()
        },
        l,
    )
    .await?;
    let cp = Client::new(std::slice::from_ref(&addr), ClientConfig::default())?;
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "bench".into(),
        residency: "eu".into(),
        max_participants: 1000,
        ..Default::default()
    })
    .await?;
    let mut c = MediaNodeConfig::new("bench-node", "eu", "127.0.0.1:0".parse()?, vec![addr]);
    c.capacity = 10_000;
    let node = node::start(c).await?;
    Ok(Stack {
        _dir: dir,
        _replica: replica,
        node,
        cp,
    })
}

async fn open_meeting(cp: &Client, participants: u32) -> anyhow::Result<(u64, String)> {
    let r = cp
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "bench".into(),
            participants,
            request_id: request_id(),
            settings: Some(pb::MeetingSettings {
                disable_waiting_room: true,
                allow_join_before_host: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok((r.meeting.map(|m| m.id).unwrap_or_default(), r.passcode))
}

fn join_req(id: u64, passcode: &str, name: &str) -> JoinRequest {
    JoinRequest {
        meeting_id: id,
        passcode: passcode.into(),
        display_name: name.into(),
        ..Default::default()
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn join_latency(runs: u32) -> anyhow::Result<serde_json::Value> {
    let s = stack().await?;
    let (id, passcode) = open_meeting(&s.cp, runs + 1).await?;
    let mut speaker = Participant::join(&s.cp, &join_req(id, &passcode, "speaker")).await?;
    let audio = speaker.publish(pb::TrackKind::Audio).await?;
    speaker
        .send(pb::client_message::Msg::SetMuted(pb::SetMuted {
            participant_id: 0,
            muted: false,
        }))
        .await?;
    let _sending = speaker.send_stream(audio, StreamProfile::audio());
    let mut to_joined = Histogram::<u64>::new(3)?;
    let mut to_media = Histogram::<u64>::new(3)?;
    for i in 0..runs {
        let t = Instant::now();
        let p = Participant::join(&s.cp, &join_req(id, &passcode, &format!("p{i}"))).await?;
        let joined = t.elapsed();
        // Audio arrives every 20 ms; wait for the first datagram.
        while p.stats.snapshot().first_media_ms.is_none() {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "no media after join");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let first = p.stats.snapshot().first_media_ms.unwrap_or_default();
        to_joined.record(joined.as_micros() as u64)?;
        to_media.record((first * 1000.0) as u64)?;
        p.leave().await;
    }
    s.node.stop().await;
    Ok(json!({
        "benchmark": "join_latency",
        "runs": runs,
        "join_to_admitted_ms": {"p50": ms(&to_joined, 0.5), "p99": ms(&to_joined, 0.99)},
        "join_to_first_media_ms": {"p50": ms(&to_media, 0.5), "p99": ms(&to_media, 0.99)},
        "note": "first media includes up to 20 ms waiting for the speaker's next audio packet",
    }))
}

/// quinn's own rate: one connection, one side floods datagrams, the other counts.
async fn quinn_point_to_point(seconds: u64, len: usize) -> anyhow::Result<f64> {
    let id = tls::node_identity()?;
    let server = quinn::Endpoint::server(id.server_config, "127.0.0.1:0".parse()?)?;
    let addr: SocketAddr = server.local_addr()?;
    let counter = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), conn.read_datagram()).await
        {
            n += 1;
            last = Instant::now();
            first.get_or_insert(last);
        }
        let span = first.map(|f| last.duration_since(f)).unwrap_or_default();
        (n, span)
    });
    let (_ep, conn, _send, _recv) =
        fjord_media_node::client::connect(addr, &id.certificate).await?;
    let payload = bytes::Bytes::from(vec![0xab; len]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        conn.send_datagram_wait(payload.clone()).await?;
    }
    let (n, span) = counter.await?;
    Ok(n as f64 / span.as_secs_f64().max(1e-3))
}

async fn forward(seconds: u64, participants: u32, len: usize) -> anyhow::Result<serde_json::Value> {
    let p2p = quinn_point_to_point(seconds, len).await?;
    let s = stack().await?;
    let (id, passcode) = open_meeting(&s.cp, participants).await?;
    let mut sender = Participant::join(&s.cp, &join_req(id, &passcode, "sender")).await?;
    let mut receivers = Vec::new();
    for i in 1..participants {
        receivers.push(Participant::join(&s.cp, &join_req(id, &passcode, &format!("r{i}"))).await?);
    }
    let track = sender.publish(pb::TrackKind::Video).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before: u64 = receivers.iter().map(|r| r.stats.snapshot().received).sum();
    let node_before = s.node.counters();
    let t = Instant::now();
    let sent = sender
        .send_flood(track, len, Duration::from_secs(seconds))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed = t.elapsed().as_secs_f64();
    let received: u64 = receivers
        .iter()
        .map(|r| r.stats.snapshot().received)
        .sum::<u64>()
        - before;
    let node_after = s.node.counters();
    let forwarded_out = node_after.datagrams_out - node_before.datagrams_out;
    let forwarded_pps = received as f64 / elapsed;
    s.node.stop().await;
    Ok(json!({
        "benchmark": "forwarding",
        "participants": participants,
        "fan_out": participants - 1,
        "datagram_bytes": len,
        "seconds": seconds,
        "quinn_point_to_point_datagrams_per_s": p2p.round(),
        "sender_datagrams_per_s": (sent as f64 / seconds as f64).round(),
        "node_routed_copies_per_s": (forwarded_out as f64 / elapsed).round(),
        "received_datagrams_per_s": forwarded_pps.round(),
        "ratio_forwarded_to_point_to_point": (forwarded_pps / p2p * 1000.0).round() / 1000.0,
        "delivery_ratio": if forwarded_out == 0 { 0.0 } else { received as f64 / forwarded_out as f64 },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "note": "node, sender and all receivers share this machine's cores",
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = match args.mode {
        Mode::Join { runs } => join_latency(runs).await?,
        Mode::Forward {
            seconds,
            participants,
            datagram_bytes,
        } => forward(seconds, participants, datagram_bytes).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
