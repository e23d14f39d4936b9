//! The attacks an outsider with network access tries against the control
//! plane, each performed over real sockets with TLS on: peer RPCs without a
//! member replica's certificate, administrative RPCs without a certificate
//! or with the wrong one, registering and heartbeating as another node, and
//! reusing someone else's idempotency key. Each test fails if its defence is
//! removed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fjord_common::grpc::{tls_channel, ChannelOptions};
use fjord_common::TlsFiles;
use fjord_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::institution_service_client::InstitutionServiceClient;
use pb::meeting_service_client::MeetingServiceClient;
use pb::node_service_client::NodeServiceClient;
use pb::raft_service_client::RaftServiceClient;
use tonic::transport::Channel;
use tonic::Code;

fn channel(addr: &str, files: &TlsFiles) -> Channel {
    tls_channel(
        addr,
        fjord_common::tls::client_config(files).unwrap(),
        ChannelOptions {
            call_timeout: Some(Duration::from_secs(5)),
            ..ChannelOptions::default()
        },
    )
    .unwrap()
}

/// Every peer RPC with a payload that would do harm if it were run: a
/// forwarded read of every meeting (with their secrets, before this issue),
/// a vote with a huge term, an append and a snapshot from a fake leader.
async fn peer_calls(ch: Channel) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut c = RaftServiceClient::new(ch);
    let p = |s: &str| pb::RaftPayload {
        data: s.as_bytes().to_vec(),
        ..Default::default()
    };
    vec![
        (
            "forward",
            c.forward(p(r#"{"read":{"query":"meetings"}}"#))
                .await
                .map(|_| ()),
        ),
        (
            "vote",
            c.vote(p(r#"{"vote":{"leader_id":{"term":999999,"node_id":9}}}"#))
                .await
                .map(|_| ()),
        ),
        (
            "append_entries",
            c.append_entries(p("{}")).await.map(|_| ()),
        ),
        (
            "install_snapshot",
            c.install_snapshot(p("{}")).await.map(|_| ()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_rpcs_are_refused_to_everyone_but_member_replicas() {
    let cluster = Cluster::start(3, silent_nodes_config()).await;
    let term_before = cluster.replicas[&1].replica.status().term;
    let peer = cluster.peer_addrs[&1].clone();

    // No client certificate: the peer port's handshake fails.
    for (rpc, r) in peer_calls(channel(&peer, &cluster.ca.anonymous())).await {
        let s = r.expect_err(rpc);
        // The handshake's alert, or the connection it closed: either way
        // a transport failure, never a handler's answer.
        assert!(
            matches!(
                s.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ) && format!("{s:?}").contains("transport"),
            "{rpc} without a certificate: {s:?}"
        );
    }
    // Valid certificates of the wrong role, or of a replica that is not a
    // member: PERMISSION_DENIED, before the payload is even decoded.
    for files in [
        cluster.ca.operator("mallory").unwrap(),
        cluster.ca.node("n-evil").unwrap(),
        cluster.ca.institution_admin("uio", "desk").unwrap(),
        cluster.ca.replica(9).unwrap(),
    ] {
        for (rpc, r) in peer_calls(channel(&peer, &files)).await {
            let s = r.expect_err(rpc);
            assert_eq!(
                s.code(),
                Code::PermissionDenied,
                "{rpc} with {:?}: {s:?}",
                files.cert
            );
        }
    }
    // The public port does not serve the peer service at all, whoever calls.
    for files in [cluster.ca.anonymous(), cluster.ca.replica(2).unwrap()] {
        for (rpc, r) in peer_calls(channel(&cluster.addrs[&1], &files)).await {
            let s = r.expect_err(rpc);
            assert_eq!(
                s.code(),
                Code::Unimplemented,
                "{rpc} on the public port: {s:?}"
            );
        }
    }
    // Health checks need no certificate.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(
        &cluster.addrs[&1],
        &cluster.ca.anonymous(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not serving: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A member replica gets through (its garbage is refused as malformed,
    // not as unauthorised), so the refusals above are the role check.
    let member = peer_calls(channel(&peer, &cluster.ca.replica(2).unwrap())).await;
    let (_, append) = &member[2];
    assert_eq!(
        append.as_ref().unwrap_err().code(),
        Code::InvalidArgument,
        "{append:?}"
    );
    // The forged vote (term 999999) moved nobody's term there. (A real
    // election on a loaded machine may still move it by one or two.)
    for h in cluster.replicas.values() {
        let term = h.replica.status().term;
        assert!(term < term_before + 10, "term jumped to {term}");
    }
}

/// One call of every administrative RPC, against the institution `other`
/// and the meeting `meeting` (which belongs to `other`).
async fn admin_calls(
    ch: Channel,
    meeting: u64,
    other: &str,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut cl = ClusterServiceClient::new(ch.clone());
    let mut inst = InstitutionServiceClient::new(ch.clone());
    let mut nodes = NodeServiceClient::new(ch.clone());
    let mut meetings = MeetingServiceClient::new(ch.clone());
    let mut licences = pb::licence_service_client::LicenceServiceClient::new(ch.clone());
    let billing_ch = ch.clone();
    let mut accounts = pb::account_service_client::AccountServiceClient::new(ch);
    let licence = pb::SetLicenceRequest {
        institution: other.into(),
        terms: Some(pb::LicenceTerms {
            tier: "education".into(),
            staff_fte: "1".into(),
            agreement_start: "2025-10-01".into(),
            agreement_contact: "a@evil.example".into(),
            technical_contact: "t@evil.example".into(),
            ..Default::default()
        }),
        effective: String::new(),
    };
    vec![
        (
            "set licence",
            licences.set_licence(licence).await.map(|_| ()),
        ),
        (
            "get licence",
            licences
                .get_licence(pb::GetLicenceRequest {
                    institution: other.into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "licence history",
            licences
                .licence_history(pb::GetLicenceRequest {
                    institution: other.into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "give notice",
            licences
                .give_notice(pb::GiveNoticeRequest {
                    institution: other.into(),
                    date: "2026-06-01".into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "load price table",
            licences
                .load_price_table(pb::LoadPriceTableRequest {
                    toml: fjord_control_plane::licensing::price_table::BUILTIN_PRICE_TABLE
                        .replace("builtin-1", "evil-1"),
                })
                .await
                .map(|_| ()),
        ),
        (
            "configure login",
            accounts
                .configure_login(pb::ConfigureLoginRequest {
                    institution: other.into(),
                    config: None,
                })
                .await
                .map(|_| ()),
        ),
        (
            "get login",
            accounts
                .get_login(pb::GetLoginRequest {
                    institution: other.into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "list accounts",
            accounts
                .list_accounts(pb::ListAccountsRequest {
                    institution: other.into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "preview invoice",
            pb::billing_service_client::BillingServiceClient::new(billing_ch)
                .preview_invoice(pb::PreviewInvoiceRequest {
                    institution: other.into(),
                    period: "2026-10-01..2027-09-30".into(),
                })
                .await
                .map(|_| ()),
        ),
        // (Disabling another institution's account is answered as an
        // unknown account: see state::account_tests.)
        (
            "cluster status",
            cl.status(pb::StatusRequest {}).await.map(|_| ()),
        ),
        (
            "add member",
            cl.add_member(pb::AddMemberRequest {
                id: 7,
                address: "127.0.0.1:1".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "remove member",
            cl.remove_member(pb::RemoveMemberRequest { id: 2 })
                .await
                .map(|_| ()),
        ),
        (
            "create institution",
            inst.create_institution(pb::CreateInstitutionRequest {
                name: "evil".into(),
                residency: "eu".into(),
                max_participants: 10,
                home_region: String::new(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "get institution",
            inst.get_institution(pb::GetInstitutionRequest { name: other.into() })
                .await
                .map(|_| ()),
        ),
        (
            "list institutions",
            inst.list_institutions(pb::ListInstitutionsRequest {})
                .await
                .map(|_| ()),
        ),
        (
            "drain node",
            nodes
                .drain_node(pb::DrainNodeRequest {
                    id: "no-1".into(),
                    undo: false,
                    evacuate: true,
                })
                .await
                .map(|_| ()),
        ),
        (
            "get node",
            nodes
                .get_node(pb::GetNodeRequest { id: "no-1".into() })
                .await
                .map(|_| ()),
        ),
        (
            "list nodes",
            nodes.list_nodes(pb::ListNodesRequest {}).await.map(|_| ()),
        ),
        (
            "schedule meeting",
            meetings
                .schedule_meeting(pb::ScheduleMeetingRequest {
                    institution: other.into(),
                    participants: 5,
                    duration_ms: 3_600_000,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "get meeting",
            meetings
                .get_meeting(pb::GetMeetingRequest { id: meeting })
                .await
                .map(|_| ()),
        ),
        (
            "list meetings",
            meetings
                .list_meetings(pb::ListMeetingsRequest {
                    institution: other.into(),
                    include_ended: true,
                })
                .await
                .map(|_| ()),
        ),
        (
            "explain meeting",
            meetings
                .explain_meeting(pb::ExplainMeetingRequest { id: meeting })
                .await
                .map(|_| ()),
        ),
        (
            "move meeting",
            meetings
                .move_meeting(pb::MoveMeetingRequest {
                    id: meeting,
                    from_node_id: String::new(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "end meeting",
            meetings
                .end_meeting(pb::EndMeetingRequest { id: meeting })
                .await
                .map(|_| ()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrative_rpcs_refuse_participants_nodes_and_other_institutions() {
    let cluster = Cluster::start(3, silent_nodes_config()).await;
    let ops = cluster.client();
    create_institution(&ops, "uio", "nordic", 100).await;
    create_institution(&ops, "ntnu", "nordic", 100).await;
    register_node(&cluster, "no-1", "nordic", 1000).await;
    let theirs = schedule(&ops, "ntnu", 5, "ntnu-1").await.unwrap();
    let meeting = theirs.meeting.as_ref().unwrap().id;
    let index = cluster.replicas[&cluster.leader().unwrap()]
        .replica
        .status()
        .last_applied_index;
    cluster.wait_applied(index, Duration::from_secs(5)).await;
    let endpoint = cluster.addrs[&1].clone();
    let state = |c: &Cluster| {
        c.replicas[&1].replica.local_state(|s| {
            (
                s.institutions.clone(),
                s.nodes.clone(),
                s.meetings.clone(),
                s.licences.clone(),
                s.accounts.clone(),
            )
        })
    };
    let before = state(&cluster);

    let uio_admin = cluster.ca.institution_admin("uio", "it-desk").unwrap();
    for (who, files) in [
        ("a participant (no certificate)", cluster.ca.anonymous()),
        ("uio's admin", uio_admin.clone()),
        // A node may drain and read itself (its pod's preStop hook does),
        // never another node.
        ("another media node", cluster.ca.node("no-2").unwrap()),
        ("a replica", cluster.ca.replica(1).unwrap()),
    ] {
        for (rpc, r) in admin_calls(channel(&endpoint, &files), meeting, "ntnu").await {
            let s = r.expect_err(&format!("{who}: {rpc} must be refused"));
            // Without a certificate, scheduling wants a host's ID token.
            let expected = if who.starts_with("a participant") && rpc == "schedule meeting" {
                Code::Unauthenticated
            } else {
                Code::PermissionDenied
            };
            assert_eq!(s.code(), expected, "{who}: {rpc}: {s:?}");
        }
    }
    // Nothing changed, and ntnu's meeting is still open.
    let index = cluster.replicas[&cluster.leader().unwrap()]
        .replica
        .status()
        .last_applied_index;
    cluster.wait_applied(index, Duration::from_secs(5)).await;
    assert!(before == state(&cluster), "refused calls changed the state");

    // The node itself may read itself and drain itself, not undrain.
    let mut own = NodeServiceClient::new(channel(&endpoint, &cluster.ca.node("no-1").unwrap()));
    let me = own
        .get_node(pb::GetNodeRequest { id: "no-1".into() })
        .await
        .expect("a node reads itself");
    assert_eq!(me.into_inner().node.unwrap().id, "no-1");
    let undo = own
        .drain_node(pb::DrainNodeRequest {
            id: "no-1".into(),
            undo: true,
            evacuate: false,
        })
        .await
        .expect_err("a node may not undrain itself");
    assert_eq!(undo.code(), Code::InvalidArgument, "{undo:?}");
    let drained = own
        .drain_node(pb::DrainNodeRequest {
            id: "no-1".into(),
            undo: false,
            evacuate: false,
        })
        .await
        .expect("a node drains itself");
    assert_eq!(
        drained.into_inner().node.unwrap().state,
        pb::NodeState::Draining as i32
    );
    // Back in service is an operator's call.
    NodeServiceClient::new(channel(&endpoint, &cluster.ca.operator("ops").unwrap()))
        .drain_node(pb::DrainNodeRequest {
            id: "no-1".into(),
            undo: true,
            evacuate: false,
        })
        .await
        .expect("an operator undrains");

    // uio's admin does what it may for uio, and sees only uio.
    let mut m = MeetingServiceClient::new(channel(&endpoint, &uio_admin));
    let mine = m
        .schedule_meeting(pb::ScheduleMeetingRequest {
            institution: "uio".into(),
            participants: 5,
            duration_ms: 3_600_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed = m
        .list_meetings(pb::ListMeetingsRequest {
            institution: String::new(),
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner()
        .meetings;
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![mine.meeting.unwrap().id]
    );
    // The operator may do it all.
    for (rpc, r) in admin_calls(
        channel(&endpoint, &cluster.ca.operator("ops").unwrap()),
        meeting,
        "ntnu",
    )
    .await
    {
        if let Err(s) = r {
            assert_ne!(
                s.code(),
                Code::PermissionDenied,
                "operator refused {rpc}: {s:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_register_or_heartbeat_as_another() {
    let cluster = Cluster::start(1, silent_nodes_config()).await;
    register_node(&cluster, "no-1", "nordic", 1000).await;
    let endpoint = cluster.addrs[&1].clone();
    let before = cluster.replicas[&1]
        .replica
        .local_state(|s| s.nodes["no-1"].clone());

    let hijack = pb::RegisterNodeRequest {
        id: "no-1".into(),
        region: "nordic".into(),
        address: "127.0.0.1:6666".into(),
        capacity: 1000,
        certificate: b"attacker's certificate".to_vec(),
        boot: 0,
    };
    for files in [
        cluster.ca.node("evil").unwrap(),
        cluster.ca.anonymous(),
        cluster.ca.operator("ops").unwrap(),
    ] {
        let s = NodeServiceClient::new(channel(&endpoint, &files))
            .register_node(hijack.clone())
            .await
            .expect_err("registering as another node must be refused");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    }

    // A heartbeat stream claiming no-1 from evil's certificate: refused at
    // the first beat, and no-1's lease is not renewed by it.
    let mut evil = NodeServiceClient::new(channel(&endpoint, &cluster.ca.node("evil").unwrap()));
    let beats = futures::stream::iter(vec![pb::HeartbeatRequest {
        node_id: "no-1".into(),
        participants: 7,
        ..Default::default()
    }]);
    let refused = match evil.heartbeat(beats).await {
        Err(s) => s,
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .expect_err("a beat for another node must be refused"),
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Anonymous callers cannot even open the stream.
    let s = NodeServiceClient::new(channel(&endpoint, &cluster.ca.anonymous()))
        .heartbeat(futures::stream::iter(Vec::<pb::HeartbeatRequest>::new()))
        .await
        .expect_err("anonymous heartbeat stream");
    assert_eq!(s.code(), Code::PermissionDenied);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_attack = cluster.replicas[&1]
        .replica
        .local_state(|s| s.nodes["no-1"].clone());
    assert_eq!(after_attack.address, before.address);
    assert_eq!(after_attack.certificate, before.certificate);
    assert_eq!(after_attack.last_heartbeat_ms, before.last_heartbeat_ms);
    assert_eq!(after_attack.load_participants, before.load_participants);

    // no-1 itself: load figures that change on every beat cost one Raft
    // write per lease third (here 200 s), not one per beat...
    let index_before = cluster.replicas[&1].replica.status().last_log_index;
    let own = cluster.ca.node("no-1").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut first = NodeServiceClient::new(channel(&endpoint, &own))
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..50u32 {
        tx.send(pb::HeartbeatRequest {
            participants: i % 7,
            ..Default::default()
        })
        .await
        .unwrap();
        first.message().await.unwrap().expect("an answer per beat");
    }
    let writes = cluster.replicas[&1].replica.status().last_log_index - index_before;
    assert!(
        writes <= 1,
        "50 beats with changing load cost {writes} Raft writes"
    );
    // ...and a second stream of the same identity replaces the first.
    let (tx2, rx2) = tokio::sync::mpsc::channel(4);
    let mut second = NodeServiceClient::new(channel(&endpoint, &own))
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx2))
        .await
        .unwrap()
        .into_inner();
    tx2.send(pb::HeartbeatRequest::default()).await.unwrap();
    second
        .message()
        .await
        .unwrap()
        .expect("the new stream is answered");
    tx.send(pb::HeartbeatRequest::default()).await.unwrap();
    let s = first.message().await.expect_err("the old stream must end");
    assert_eq!(s.code(), Code::Aborted, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_only_its_own_caller() {
    let cluster = Cluster::start(1, silent_nodes_config()).await;
    let ops = cluster.client();
    create_institution(&ops, "uio", "nordic", 100).await;
    register_node(&cluster, "no-1", "nordic", 1000).await;
    let first = schedule(&ops, "uio", 5, "shared-key").await.unwrap();
    // The same caller retrying gets the same meeting and secrets.
    let again = schedule(&ops, "uio", 5, "shared-key").await.unwrap();
    assert_eq!(again.passcode, first.passcode);
    assert_eq!(
        again.meeting.unwrap().id,
        first.meeting.as_ref().unwrap().id
    );
    // The same key for a different request is refused, naming the key.
    let s = schedule(&ops, "uio", 6, "shared-key")
        .await
        .expect_err("a reused key with other parameters must be refused");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert!(s.message().contains("shared-key"), "{s:?}");
    assert!(!s.message().contains(&first.passcode));
    // uio's admin guessing the key gets a meeting of its own, never the
    // operator's passcode and host key.
    let admin = cluster.client_with(&cluster.ca.institution_admin("uio", "desk").unwrap());
    let theirs = schedule(&admin, "uio", 5, "shared-key").await.unwrap();
    assert_ne!(
        theirs.meeting.unwrap().id,
        first.meeting.as_ref().unwrap().id
    );
    assert_ne!(theirs.passcode, first.passcode);
    assert_ne!(theirs.host_key, first.host_key);
}

/// A TLS handshake with the public port; answers the server's leaf
/// certificate, or the error.
async fn server_certificate(
    addr: &str,
    client: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    // TLS 1.3 reports a refused client certificate only after the
    // handshake: a read then ends with the server's alert.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await {
        Ok(Err(e)) => Err(e.to_string()),
        _ => Ok(leaf),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_picked_up_and_expired_or_foreign_ones_refused() {
    let cluster = Cluster::start(1, silent_nodes_config()).await;
    let addr = cluster.addrs[&1].clone();
    let anonymous = fjord_common::tls::client_config(&cluster.ca.anonymous()).unwrap();
    let before = server_certificate(&addr, anonymous.clone()).await.unwrap();

    // Re-issue the replica's certificate in place: new connections get it,
    // without a restart.
    fjord_common::pki::issue(
        cluster.ca.dir(),
        &fjord_common::Identity::Replica { id: 1 },
        &["127.0.0.1".into()],
        30,
    )
    .unwrap();
    tokio::time::sleep(fjord_common::tls::RELOAD_CHECK + Duration::from_millis(200)).await;
    // (A fresh client: a resumed session would not show the certificate.)
    let anonymous = fjord_common::tls::client_config(&cluster.ca.anonymous()).unwrap();
    let after = server_certificate(&addr, anonymous.clone()).await.unwrap();
    assert_ne!(before, after, "the rotated certificate was not picked up");
    // The cluster still works over the rotated certificate.
    create_institution(&cluster.client(), "uio", "nordic", 10).await;

    // An expired operator certificate: refused locally with the date, and
    // by the server when presented anyway.
    let now = time::OffsetDateTime::now_utc();
    let expired = fjord_common::pki::issue_valid_between(
        cluster.ca.dir(),
        &fjord_common::Identity::Operator { name: "old".into() },
        &[],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let files = TlsFiles::with_cert(cluster.ca.ca_path(), &expired.cert, &expired.key);
    let err = files.validate().unwrap_err().to_string();
    assert!(err.contains("expired at"), "{err}");
    let presenting = |cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path| {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(fjord_common::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(fjord_common::tls::read_roots(ca).unwrap())
                .with_client_auth_cert(
                    fjord_common::tls::read_certs(cert).unwrap(),
                    fjord_common::tls::read_key(key).unwrap(),
                )
                .unwrap(),
        )
    };
    let refused = server_certificate(
        &addr,
        presenting(&expired.cert, &expired.key, &cluster.ca.ca_path()),
    )
    .await;
    assert!(
        refused.is_err(),
        "an expired client certificate was accepted"
    );

    // A certificate from another CA: refused by the server; and a client
    // trusting another CA refuses the server.
    let other_dir = tempfile::tempdir().unwrap();
    let other = fjord_common::pki::LocalCa::open_or_init(other_dir.path()).unwrap();
    let foreign = other.operator("ops").unwrap();
    let refused = server_certificate(
        &addr,
        presenting(
            foreign.cert.as_ref().unwrap(),
            foreign.key.as_ref().unwrap(),
            &cluster.ca.ca_path(),
        ),
    )
    .await;
    assert!(
        refused.is_err(),
        "a foreign client certificate was accepted"
    );
    let wrong_trust = fjord_common::tls::client_config(&other.anonymous()).unwrap();
    let err = server_certificate(&addr, wrong_trust).await.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
    // And through the client library, a ctl-like call says why.
    let c = fjord_control_plane::client::Client::from_files(
        &cluster.endpoints(),
        &other.operator("ops").unwrap(),
        fjord_control_plane::client::ClientConfig {
            retry_for: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .unwrap();
    let s = c
        .call(|ch| async move {
            ClusterServiceClient::new(ch)
                .status(pb::StatusRequest {})
                .await
        })
        .await
        .unwrap_err();
    let mut chain = s.message().to_string();
    let mut src = std::error::Error::source(&s);
    while let Some(e) = src {
        chain.push_str(&format!(": {e}"));
        src = e.source();
    }
    assert!(chain.to_lowercase().contains("issuer"), "{chain}");
}
