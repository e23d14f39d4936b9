//! A passcode-guessing flood: 10,000 wrong-passcode joins from 100 source
//! addresses (127.0.0.10-109), spread over all three replicas. Nobody is
//! admitted, and while the flood runs the host (host key) and a participant
//! with the right passcode each get in within a second. The limits hold for
//! the cluster: a source spreading over the replicas is cut off after one
//! failure budget, not three.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fjord_common::grpc::{tls_channel, ChannelOptions};
use fjord_proto::v1 as pb;
use pb::meeting_service_client::MeetingServiceClient;
use tonic::transport::Channel;
use tonic::Code;

const SOURCES: u8 = 100;
const GUESSES_PER_SOURCE: u64 = 100;

fn channel_from(addr: &str, files: &fjord_common::TlsFiles, source: IpAddr) -> Channel {
    tls_channel(
        addr,
        fjord_common::tls::client_config(files).unwrap(),
        ChannelOptions {
            // 300 handshakes start at once on two cores.
            connect_timeout: Duration::from_secs(10),
            call_timeout: Some(Duration::from_secs(10)),
            local_address: Some(source),
            ..ChannelOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_wrong_passcodes_admit_nobody_and_lock_out_neither_host_nor_guest() {
    let cluster = Cluster::start(
        3,
        // Production Raft timings: the flood loads two cores.
        fjord_control_plane::server::ReplicaConfig {
            node_lease_ms: 600_000,
            ..Default::default()
        },
    )
    .await;
    let ops = cluster.client();
    create_institution(&ops, "uio", "nordic", 100).await;
    register_node(&cluster, "no-1", "nordic", 1000).await;
    let meeting = schedule(&ops, "uio", 50, "target").await.unwrap();
    let id = meeting.meeting.as_ref().unwrap().id;
    let endpoints = cluster.endpoints();
    let anonymous = cluster.ca.anonymous();

    // The flood: each source sends its guesses round-robin over the replicas.
    let admitted = Arc::new(AtomicU64::new(0));
    let denied = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let flooding = Arc::new(AtomicBool::new(true));
    let mut flood = Vec::new();
    for s in 0..SOURCES {
        let source = IpAddr::from([127, 0, 0, 10 + s]);
        let clients: Vec<_> = endpoints
            .iter()
            .map(|e| MeetingServiceClient::new(channel_from(e, &anonymous, source)))
            .collect();
        let (admitted, denied, limited, sent) = (
            admitted.clone(),
            denied.clone(),
            limited.clone(),
            sent.clone(),
        );
        flood.push(tokio::spawn(async move {
            for i in 0..GUESSES_PER_SOURCE {
                let mut c = clients[i as usize % clients.len()].clone();
                let r = c
                    .join_meeting(pb::JoinMeetingRequest {
                        meeting_id: id,
                        passcode: format!("{:020x}", (u64::from(s) << 32) | i),
                        display_name: "bomber".into(),
                        ..Default::default()
                    })
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                    Err(st) if st.code() == Code::PermissionDenied => {
                        denied.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(st) if st.code() == Code::ResourceExhausted => {
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(st) => panic!("unexpected answer to a wrong passcode: {st:?}"),
                };
            }
        }));
    }

    // While it runs, the host and a guest join, again and again, each from
    // its own address and each through every replica in turn.
    let host_src = IpAddr::from([127, 0, 0, 2]);
    let guest_src = IpAddr::from([127, 0, 0, 3]);
    let mut host_times = Vec::new();
    let mut guest_times = Vec::new();
    while sent.load(Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut round = 0usize;
    while sent.load(Ordering::Relaxed) < SOURCES as u64 * GUESSES_PER_SOURCE * 9 / 10 && round < 60
    {
        let e = &endpoints[round % endpoints.len()];
        let mut host = MeetingServiceClient::new(channel_from(e, &anonymous, host_src));
        let t = Instant::now();
        let r = host
            .join_meeting(pb::JoinMeetingRequest {
                meeting_id: id,
                host_key: meeting.host_key.clone(),
                display_name: "host".into(),
                ..Default::default()
            })
            .await
            .expect("the host must get in during the flood");
        host_times.push(t.elapsed());
        assert_eq!(r.get_ref().role, pb::Role::Host as i32);
        let mut guest = MeetingServiceClient::new(channel_from(e, &anonymous, guest_src));
        let t = Instant::now();
        guest
            .join_meeting(pb::JoinMeetingRequest {
                meeting_id: id,
                passcode: meeting.passcode.clone(),
                display_name: "guest".into(),
                ..Default::default()
            })
            .await
            .expect("a participant with the right passcode must get in during the flood");
        guest_times.push(t.elapsed());
        round += 1;
    }
    let during = sent.load(Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    flooding.store(false, Ordering::Relaxed);
    assert!(
        round >= 3,
        "the flood ended before the host could try ({during} sent)"
    );

    let total = SOURCES as u64 * GUESSES_PER_SOURCE;
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        0,
        "a wrong passcode got in"
    );
    assert_eq!(
        denied.load(Ordering::Relaxed) + limited.load(Ordering::Relaxed),
        total
    );
    // Cluster-wide: each source got one failure budget (10), not one per
    // replica, although it spread its guesses over all three.
    let budget = fjord_control_plane::api::JoinLimits::default()
        .failures_per_source
        .burst as u64;
    assert!(
        denied.load(Ordering::Relaxed) <= SOURCES as u64 * (budget + 1),
        "{} wrong passcodes were checked: more than one budget per source",
        denied.load(Ordering::Relaxed)
    );
    host_times.sort();
    guest_times.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "flood of {total}: host joins p50 {:?} p99 {:?} max {:?}; guest p50 {:?} p99 {:?} max {:?} ({} each, during {during} sent guesses)",
        pct(&host_times, 0.5),
        pct(&host_times, 0.99),
        host_times.last().unwrap(),
        pct(&guest_times, 0.5),
        pct(&guest_times, 0.99),
        guest_times.last().unwrap(),
        host_times.len(),
    );
    assert!(*host_times.last().unwrap() < Duration::from_secs(1));
    assert!(*guest_times.last().unwrap() < Duration::from_secs(1));
}
