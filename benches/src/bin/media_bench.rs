//! Media benchmarks on loopback, printing JSON. A real control-plane
//! replica and a real media node run in this process (participants join
//! through the control plane and talk QUIC to the node), except `recovery`,
//! which runs real `fjord` processes so that a node can be `kill -9`ed.
//!
//!   cargo build --release
//!   ./target/release/media_bench join --runs 50
//!   ./target/release/media_bench forward --seconds 5 --fan-outs 1,10,50
//!   ./target/release/media_bench latency --seconds 5 --fan-out 10
//!   ./target/release/media_bench recovery --runs 20
//!   ./target/release/media_bench move --runs 20
//!   ./target/release/media_bench capacity --seconds 4
//!
//! `join`: join call to the first media datagram from a speaker already in
//! the room. `forward`: datagrams/s a node forwards at each fan-out (one
//! sender flooding 1,200-byte datagrams), next to quinn's own point-to-point
//! rate measured in the same run. `latency`: one-way latency through the
//! node at 70% of the forwarding rate just measured, next to point-to-point
//! at the same rate. `recovery`: `kill -9` of the node carrying a meeting to
//! the first media datagram again at each participant. `move`: the longest
//! media gap a participant sees while `meeting move` switches it over.
//! `capacity`: the
//! largest all-video meeting and webinar this machine carries at >= 99%
//! delivery.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;

use fjord_common::pki::LocalCa;
use fjord_control_plane::api::JoinLimits;
use fjord_control_plane::client::{request_id, Client, ClientConfig};
use fjord_control_plane::ratelimit::Rate;
use fjord_control_plane::server::{start_with_listeners, ReplicaConfig, ReplicaHandle};
use fjord_media_node::client::session::Session;
use fjord_media_node::client::{JoinRequest, Participant, ReceiveStats, StreamProfile};
use fjord_media_node::node::{self, MediaNodeConfig, MediaNodeHandle};
use fjord_media_node::tls;
use fjord_proto::v1 as pb;

#[derive(Parser)]
struct Args {
    /// The fjord binary (`recovery` runs it as separate processes).
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
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
    /// Forwarded datagrams/s at several fan-outs vs quinn point-to-point.
    Forward {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
        fan_outs: Vec<u32>,
        #[arg(long, default_value_t = 1200)]
        datagram_bytes: usize,
    },
    /// Latency added by the node at 70% of its forwarding rate.
    Latency {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        fan_out: u32,
        #[arg(long, default_value_t = 70)]
        load_percent: u32,
    },
    /// kill -9 of a media node to first media again (real processes).
    Recovery {
        #[arg(long, default_value_t = 20)]
        runs: u32,
    },
    /// Longest media gap per participant while a meeting is moved.
    Move {
        #[arg(long, default_value_t = 20)]
        runs: u32,
    },
    /// Largest 720p-like meeting and webinar carried at >= 99% delivery.
    Capacity {
        #[arg(long, default_value_t = 4)]
        seconds: u64,
    },
}

struct Stack {
    _dir: tempfile::TempDir,
    ca: LocalCa,
    _replica: ReplicaHandle,
    node: MediaNodeHandle,
    cp: Arc<Client>,
    endpoint: String,
}

async fn stack() -> anyhow::Result<Stack> {
    let dir = tempfile::tempdir()?;
    let ca = fjord_benches::local_ca(dir.path());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?.to_string();
    let pl = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let replica = start_with_listeners(
        ReplicaConfig {
            id: 1,
            listen: l.local_addr()?,
            peer_listen: pl.local_addr()?,
            data_dir: dir.path().join("r1"),
            peers: [(1, pl.local_addr()?.to_string())].into_iter().collect(),
            tls: ca.replica(1)?,
            kek_file: ca.kek()?,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            raft_heartbeat_interval_ms: 50,
            // Thousands of viewers join from one loopback address.
            join_limits: JoinLimits {
                per_source: Rate {
                    burst: 100_000,
                    per_second: 100_000.0,
                },
                per_meeting: Rate {
                    burst: 100_000,
                    per_second: 100_000.0,
                },
                ..JoinLimits::default()
            },
            ..ReplicaConfig::default()
        },
        l,
        pl,
    )
    .await?;
    let cp = Arc::new(Client::from_files(
        std::slice::from_ref(&addr),
        &fjord_benches::operator(&ca),
        ClientConfig::default(),
    )?);
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "bench".into(),
        residency: "eu".into(),
        max_participants: 10_000,
        ..Default::default()
    })
    .await?;
    cp.sample_licence("bench", &["large-meeting-1000", "webinar-5000"])
        .await?;
    let mut c = MediaNodeConfig::new(
        "bench-node",
        "eu",
        "127.0.0.1:0".parse()?,
        vec![addr.clone()],
        ca.node("bench-node")?,
    );
    c.capacity = 10_000;
    c.sfu.joins_per_source = Rate {
        burst: 100_000,
        per_second: 100_000.0,
    };
    c.sfu.joins_per_meeting = c.sfu.joins_per_source;
    let node = node::start(c).await?;
    Ok(Stack {
        _dir: dir,
        ca,
        _replica: replica,
        node,
        cp,
        endpoint: addr,
    })
}

async fn open_meeting(cp: &Client, participants: u32) -> anyhow::Result<(u64, String)> {
    let (id, passcode, _) = open_kind(cp, participants, false).await?;
    Ok((id, passcode))
}

/// A meeting or a webinar: id, passcode and host key.
async fn open_kind(
    cp: &Client,
    participants: u32,
    webinar: bool,
) -> anyhow::Result<(u64, String, String)> {
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
            webinar,
            ..Default::default()
        })
        .await?;
    Ok((
        r.meeting.map(|m| m.id).unwrap_or_default(),
        r.passcode,
        r.host_key,
    ))
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
    let id = tls::node_identity(Arc::new(quinn::rustls::server::NoClientAuth))?;
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
    fjord_media_node::client::wait_for_datagram_size(&conn, len).await;
    let payload = bytes::Bytes::from(vec![0xab; len]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        conn.send_datagram_wait(payload.clone()).await?;
    }
    let (n, span) = counter.await?;
    Ok(n as f64 / span.as_secs_f64().max(1e-3))
}

/// A meeting with one participant publishing a video track and `fan_out`
/// receivers subscribed to it.
async fn sender_and_receivers(
    s: &Stack,
    fan_out: u32,
) -> anyhow::Result<(Participant, Vec<Participant>, u32)> {
    let (id, passcode) = open_meeting(&s.cp, fan_out + 1).await?;
    let mut sender = Participant::join(&s.cp, &join_req(id, &passcode, "sender")).await?;
    let mut receivers = Vec::new();
    for i in 0..fan_out {
        receivers.push(Participant::join(&s.cp, &join_req(id, &passcode, &format!("r{i}"))).await?);
    }
    let track = sender.publish(pb::TrackKind::Video).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((sender, receivers, track))
}

/// One meeting, one sender flooding, `fan_out` receivers.
async fn forward_once(seconds: u64, fan_out: u32, len: usize) -> anyhow::Result<serde_json::Value> {
    let s = stack().await?;
    let (sender, receivers, track) = sender_and_receivers(&s, fan_out).await?;
    let before: u64 = receivers.iter().map(|r| r.stats.received()).sum();
    let node_before = s.node.counters();
    let t = Instant::now();
    let sent = sender
        .send_flood(track, len, Duration::from_secs(seconds))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed = t.elapsed().as_secs_f64();
    let received: u64 = receivers.iter().map(|r| r.stats.received()).sum::<u64>() - before;
    let node_after = s.node.counters();
    let routed = node_after.datagrams_out - node_before.datagrams_out;
    let forwarded_pps = received as f64 / elapsed;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for r in receivers {
        r.close();
    }
    sender.close();
    s.node.stop().await;
    Ok(json!({
        "fan_out": fan_out,
        "sender_datagrams_per_s": (sent as f64 / seconds as f64).round(),
        "node_routed_copies_per_s": (routed as f64 / elapsed).round(),
        "received_datagrams_per_s": forwarded_pps.round(),
        "received_datagrams_per_s_per_core": (forwarded_pps / cores as f64).round(),
        "delivery_ratio": if routed == 0 { 0.0 } else { received as f64 / routed as f64 },
    }))
}

async fn forward(seconds: u64, fan_outs: &[u32], len: usize) -> anyhow::Result<serde_json::Value> {
    let p2p = quinn_point_to_point(seconds, len).await?;
    let mut runs = Vec::new();
    for f in fan_outs {
        let mut r = forward_once(seconds, *f, len).await?;
        let fwd = r["received_datagrams_per_s"].as_f64().unwrap_or(0.0);
        r["ratio_forwarded_to_point_to_point"] = json!((fwd / p2p * 1000.0).round() / 1000.0);
        eprintln!("fan-out {f}: {r}");
        runs.push(r);
    }
    Ok(json!({
        "benchmark": "forwarding",
        "datagram_bytes": len,
        "seconds": seconds,
        "quinn_point_to_point_datagrams_per_s": p2p.round(),
        "runs": runs,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "note": "node, sender and all receivers share this machine's cores",
    }))
}

/// One-way latency of `pps` paced datagrams over one quinn connection.
async fn point_to_point_latency(
    pps: u32,
    len: usize,
    seconds: u64,
) -> anyhow::Result<Histogram<u64>> {
    let id = tls::node_identity(Arc::new(quinn::rustls::server::NoClientAuth))?;
    let server = quinn::Endpoint::server(id.server_config, "127.0.0.1:0".parse()?)?;
    let addr: SocketAddr = server.local_addr()?;
    let stats = Arc::new(ReceiveStats::new(Instant::now()));
    let rx = stats.clone();
    let counter = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        while let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(500), conn.read_datagram()).await
        {
            rx.record(&d);
        }
    });
    let (_ep, conn, _send, _recv) =
        fjord_media_node::client::connect(addr, &id.certificate).await?;
    let sending = ReceiveStats::new(Instant::now());
    fjord_media_node::client::send_paced(
        &conn,
        &sending,
        1,
        len,
        pps,
        Duration::from_secs(seconds),
    )
    .await;
    counter.await?;
    Ok(stats.latency_histogram())
}

async fn latency(
    seconds: u64,
    fan_out: u32,
    load_percent: u32,
) -> anyhow::Result<serde_json::Value> {
    let len = 1200;
    // The node's rate at this fan-out, measured now, sets the load.
    let max = forward_once(seconds.min(3), fan_out, len).await?;
    let max_in = max["sender_datagrams_per_s"].as_f64().unwrap_or(0.0)
        * max["delivery_ratio"].as_f64().unwrap_or(0.0);
    let pps = (max_in * f64::from(load_percent) / 100.0).max(1.0) as u32;
    let p2p = point_to_point_latency(pps, len, seconds).await?;

    let s = stack().await?;
    let (sender, receivers, track) = sender_and_receivers(&s, fan_out).await?;
    let sent = sender
        .send_paced(track, len, pps, Duration::from_secs(seconds))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut via = Histogram::<u64>::new(3)?;
    let mut received = 0;
    for r in &receivers {
        via.add(r.stats.latency_histogram())?;
        received += r.stats.received();
    }
    for r in receivers {
        r.close();
    }
    s.node.stop().await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "benchmark": "forwarding_latency",
        "fan_out": fan_out,
        "load_percent_of_measured_max": load_percent,
        "measured_max_input_datagrams_per_s": max_in.round(),
        "offered_datagrams_per_s": pps,
        "sent": sent,
        "delivery_ratio": received as f64 / (sent.max(1) * u64::from(fan_out)) as f64,
        "point_to_point_latency_ms": {"p50": ms(&p2p, 0.5), "p99": ms(&p2p, 0.99)},
        "via_node_latency_ms": {"p50": ms(&via, 0.5), "p99": ms(&via, 0.99)},
        "added_by_node_ms": {"p50": ms(&via, 0.5) - ms(&p2p, 0.5), "p99": ms(&via, 0.99) - ms(&p2p, 0.99)},
    }))
}

/// `kill -9` of the node carrying a two-person meeting, then the time until
/// each participant (re-joining by itself) receives media again. A fresh
/// spare node is started before each kill, so there is always one to move
/// to. Uses the control plane's default heartbeat and lease.
async fn recovery(bin: &std::path::Path, runs: u32) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let hb = ReplicaConfig::default().node_heartbeat_interval_ms;
    let lease = ReplicaConfig::default().node_lease_ms;
    let (_cp, cp_addr) = fjord_benches::control_plane(bin, dir.path(), hb, lease);
    let ca = fjord_benches::local_ca(dir.path());
    let cp = Arc::new(Client::from_files(
        std::slice::from_ref(&cp_addr),
        &fjord_benches::operator(&ca),
        ClientConfig::default(),
    )?);
    cp.create_institution(pb::CreateInstitutionRequest {
        name: "bench".into(),
        residency: "eu".into(),
        max_participants: 100,
        ..Default::default()
    })
    .await?;
    cp.sample_licence("bench", &[]).await?;
    let mut nodes = std::collections::BTreeMap::new();
    let mut next = 0;
    let mut spawn = |nodes: &mut std::collections::BTreeMap<String, fjord_benches::Proc>| {
        next += 1;
        let id = format!("n{next}");
        nodes.insert(
            id.clone(),
            fjord_benches::media_node(bin, &ca, &id, "eu", &cp_addr, 100),
        );
    };
    spawn(&mut nodes);
    let (id, passcode) = open_meeting(&cp, 2).await?;
    let sessions: Vec<Session> = (0..2)
        .map(|i| Session::start(cp.clone(), join_req(id, &passcode, &format!("p{i}")), true))
        .collect();
    let mut times = Vec::new();
    for run in 0..runs {
        spawn(&mut nodes);
        for s in &sessions {
            let g = s
                .state
                .generation
                .load(std::sync::atomic::Ordering::Acquire);
            s.wait_media_after(g.saturating_sub(1), Duration::from_secs(20))
                .await
                .ok_or_else(|| anyhow::anyhow!("no media before run {run}"))?;
        }
        let victim = sessions[0].node();
        let gens: Vec<u64> = sessions
            .iter()
            .map(|s| {
                s.state
                    .generation
                    .load(std::sync::atomic::Ordering::Acquire)
            })
            .collect();
        let killed = Instant::now();
        nodes
            .get_mut(&victim)
            .ok_or_else(|| anyhow::anyhow!("unknown node {victim}"))?
            .kill9();
        for (s, g) in sessions.iter().zip(gens) {
            let back = s
                .wait_media_after(g, Duration::from_secs(20))
                .await
                .ok_or_else(|| anyhow::anyhow!("run {run}: no media after the kill"))?;
            times.push(back - killed);
        }
        eprintln!("run {run}: {:?}", &times[times.len() - 2..]);
        nodes.remove(&victim);
    }
    times.sort();
    Ok(json!({
        "benchmark": "node_death_recovery",
        "runs": runs,
        "samples": times.len(),
        "node_heartbeat_interval_ms": hb,
        "node_lease_ms": lease,
        "kill_to_first_media_ms": {
            "p50": fjord_benches::percentile_ms(&times, 0.5),
            "p99": fjord_benches::percentile_ms(&times, 0.99),
            "max": fjord_benches::percentile_ms(&times, 1.0),
        },
    }))
}

/// Runs a meeting of `speakers` sending 720p-like video and audio plus
/// `listeners`, for `seconds`; returns the delivery ratio and latency p99.
/// A meeting where `speakers` send to everyone; with no speakers but one
/// and listeners, a webinar (the speaker joins as the host, the panelist).
async fn carry(
    s: &Stack,
    speakers: u32,
    listeners: u32,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let webinar = speakers == 1 && listeners > 0;
    let (id, passcode, host_key) = open_kind(&s.cp, speakers + listeners, webinar).await?;
    let mut ps = Vec::new();
    for i in 0..speakers + listeners {
        let mut req = join_req(id, &passcode, &format!("p{i}"));
        if webinar && i == 0 {
            req.passcode.clear();
            req.host_key = host_key.clone();
        }
        ps.push(Participant::join(&s.cp, &req).await?);
    }
    let mut senders = Vec::new();
    for p in ps.iter_mut().take(speakers as usize) {
        senders.extend(p.start_media().await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base: Vec<(u64, u64)> = ps
        .iter()
        .map(|p| (p.stats.received(), p.stats.snapshot().lost))
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (mut got, mut lost) = (0u64, 0u64);
    let mut lat = Histogram::<u64>::new(3)?;
    for (p, (r0, l0)) in ps.iter().zip(base) {
        let snap = p.stats.snapshot();
        got += snap.received - r0;
        lost += snap.lost.saturating_sub(l0);
        lat.add(p.stats.latency_histogram())?;
    }
    for t in senders {
        t.abort();
    }
    for p in ps {
        p.close();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivery = got as f64 / (got + lost).max(1) as f64;
    Ok((delivery, lat.value_at_quantile(0.99) as f64 / 1000.0))
}

/// Moves a four-person meeting (two speakers) back and forth between two
/// nodes `runs` times; for each participant and move, the longest silence
/// between two datagrams while switching over.
async fn move_gap(runs: u32) -> anyhow::Result<serde_json::Value> {
    let s = stack().await?;
    let mut c = MediaNodeConfig::new(
        "bench-node-2",
        "eu",
        "127.0.0.1:0".parse()?,
        vec![s.endpoint.clone()],
        s.ca.node("bench-node-2")?,
    );
    c.capacity = 10_000;
    let second = node::start(c).await?;
    let cp = s.cp.clone();
    let (id, passcode) = open_meeting(&cp, 4).await?;
    let sessions: Vec<Session> = (0..4)
        .map(|i| Session::start(cp.clone(), join_req(id, &passcode, &format!("p{i}")), i < 2))
        .collect();
    for p in &sessions {
        p.wait_media_after(0, Duration::from_secs(20))
            .await
            .ok_or_else(|| anyhow::anyhow!("no media"))?;
    }
    let mut gaps = Vec::new();
    let mut lost = 0;
    for run in 1..=u64::from(runs) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for p in &sessions {
            p.stats.take_max_gap();
        }
        cp.move_meeting(pb::MoveMeetingRequest {
            id,
            from_node_id: String::new(),
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while sessions
            .iter()
            .any(|p| p.state.moves.load(std::sync::atomic::Ordering::Relaxed) < run)
        {
            anyhow::ensure!(Instant::now() < deadline, "move {run} did not complete");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Media on the new node, then the switch's gaps are all in.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for p in &sessions {
            gaps.push(p.stats.take_max_gap());
            lost += p
                .state
                .rejoins_after_loss
                .load(std::sync::atomic::Ordering::Relaxed);
        }
    }
    gaps.sort();
    for p in sessions {
        p.stop().await;
    }
    second.stop().await;
    s.node.stop().await;
    Ok(json!({
        "benchmark": "meeting_move_gap",
        "runs": runs,
        "samples": gaps.len(),
        "participants_dropped": lost,
        "longest_media_gap_ms": {
            "p50": fjord_benches::percentile_ms(&gaps, 0.5),
            "p99": fjord_benches::percentile_ms(&gaps, 0.99),
            "max": fjord_benches::percentile_ms(&gaps, 1.0),
        },
        "note": "audio alone arrives every 20 ms, so ~20 ms is no gap at all",
    }))
}

async fn capacity(seconds: u64) -> anyhow::Result<serde_json::Value> {
    let s = stack().await?;
    let ok = |d: f64, p99: f64| d >= 0.99 && p99 <= 100.0;
    let mut meeting = Vec::new();
    let mut best_meeting = 0;
    for n in [8u32, 16, 24, 32, 40, 48, 56, 64] {
        let (d, p99) = carry(&s, n, 0, seconds).await?;
        eprintln!("meeting of {n} all sending video: delivery {d:.4}, p99 {p99} ms");
        meeting.push(json!({"participants": n, "delivery": d, "latency_p99_ms": p99}));
        if !ok(d, p99) {
            break;
        }
        best_meeting = n;
    }
    let mut webinar = Vec::new();
    let mut best_webinar = 0;
    for v in [100u32, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200] {
        let (d, p99) = carry(&s, 1, v, seconds).await?;
        eprintln!("webinar with {v} viewers: delivery {d:.4}, p99 {p99} ms");
        webinar.push(json!({"viewers": v, "delivery": d, "latency_p99_ms": p99}));
        if !ok(d, p99) {
            break;
        }
        best_webinar = v;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    s.node.stop().await;
    Ok(json!({
        "benchmark": "capacity",
        "criterion": "delivery >= 99% and latency p99 <= 100 ms",
        "video_profile": "30 fps ~1.5 Mbit/s (~200 datagrams/s) + 50/s audio per sender",
        "all_video_meeting": {"largest_ok": best_meeting, "steps": meeting,
            "participants_per_core": f64::from(best_meeting) / cores as f64},
        "webinar_one_speaker": {"largest_ok_viewers": best_webinar, "steps": webinar},
        "cores": cores,
        "note": "every participant runs in this process on the same cores as the node",
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = match args.mode {
        Mode::Join { runs } => join_latency(runs).await?,
        Mode::Forward {
            seconds,
            fan_outs,
            datagram_bytes,
        } => forward(seconds, &fan_outs, datagram_bytes).await?,
        Mode::Latency {
            seconds,
            fan_out,
            load_percent,
        } => latency(seconds, fan_out, load_percent).await?,
        Mode::Recovery { runs } => recovery(&args.fjord, runs).await?,
        Mode::Move { runs } => move_gap(runs).await?,
        Mode::Capacity { seconds } => capacity(seconds).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
