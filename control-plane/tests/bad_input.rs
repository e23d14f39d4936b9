//! Bad input on every API is refused with a clear error naming the field,
//! and changes nothing. Malformed protobuf is refused and the replica keeps
//! serving.

mod common;

use common::*;
use fjord_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::institution_service_client::InstitutionServiceClient;
use pb::meeting_service_client::MeetingServiceClient;
use pb::node_service_client::NodeServiceClient;
use tonic::Code;

fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    let s = r.expect_err("must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(needle),
        "message {:?} should name {needle:?}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_refuses_bad_input_and_changes_nothing() {
    let cluster = Cluster::start(3, silent_nodes_config()).await;
    let client = cluster.client();
    create_institution(&client, "uio", "nordic", 100).await;
    register_node(&cluster, "no-1", "nordic", 1000).await;
    let (_, ch) = client.channel_at(0);
    let visible = |c: &Cluster| {
        c.replicas[&1].replica.local_state(|s| {
            (
                s.institutions.clone(),
                s.nodes.clone(),
                s.meetings.clone(),
                s.meetings.next_id(),
            )
        })
    };
    let leader = cluster.leader().unwrap();
    let index = cluster.replicas[&leader]
        .replica
        .status()
        .last_applied_index;
    cluster
        .wait_applied(index, std::time::Duration::from_secs(5))
        .await;
    let before = visible(&cluster);

    let mut inst = InstitutionServiceClient::new(ch.clone());
    let ci = |name: &str, residency: &str, max: u32| pb::CreateInstitutionRequest {
        name: name.into(),
        residency: residency.into(),
        max_participants: max,
        home_region: String::new(),
    };
    assert_refused(
        inst.create_institution(ci("", "eu", 10)).await,
        Code::InvalidArgument,
        "name",
    );
    assert_refused(
        inst.create_institution(ci("a b", "eu", 10)).await,
        Code::InvalidArgument,
        "name",
    );
    assert_refused(
        inst.create_institution(ci(&"x".repeat(65), "eu", 10)).await,
        Code::InvalidArgument,
        "name",
    );
    assert_refused(
        inst.create_institution(ci("x", "", 10)).await,
        Code::InvalidArgument,
        "residency",
    );
    assert_refused(
        inst.create_institution(ci("x", "mars", 10)).await,
        Code::InvalidArgument,
        "region \"mars\"",
    );
    assert_refused(
        inst.create_institution(ci("x", "eu", 0)).await,
        Code::InvalidArgument,
        "max_participants",
    );
    assert_refused(
        inst.create_institution(ci("x", "eu", u32::MAX)).await,
        Code::InvalidArgument,
        "max_participants",
    );
    assert_refused(
        inst.create_institution(ci("uio", "eu", 10)).await,
        Code::AlreadyExists,
        "uio",
    );
    let mut home = ci("x", "nordic", 10);
    home.home_region = "eu".into();
    assert_refused(
        inst.create_institution(home).await,
        Code::InvalidArgument,
        "home region",
    );
    assert_refused(
        inst.get_institution(pb::GetInstitutionRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
        "nope",
    );

    // Registrations come from the node's own certificate.
    let (_, node_ch) = cluster.node_client("n").channel_at(0);
    let mut nodes = NodeServiceClient::new(node_ch);
    let rn = |id: &str, region: &str, address: &str, capacity: u32| pb::RegisterNodeRequest {
        id: id.into(),
        region: region.into(),
        address: address.into(),
        capacity,
        ..Default::default()
    };
    assert_refused(
        nodes
            .register_node(rn("other", "eu", "127.0.0.1:1", 10))
            .await,
        Code::PermissionDenied,
        "register_node",
    );
    assert_refused(
        nodes
            .register_node(rn("n", "atlantis", "127.0.0.1:1", 10))
            .await,
        Code::InvalidArgument,
        "atlantis",
    );
    assert_refused(
        nodes.register_node(rn("n", "eu", "nowhere", 10)).await,
        Code::InvalidArgument,
        "address",
    );
    assert_refused(
        nodes.register_node(rn("n", "eu", "h:0", 10)).await,
        Code::InvalidArgument,
        "address",
    );
    assert_refused(
        nodes.register_node(rn("n", "eu", "127.0.0.1:1", 0)).await,
        Code::InvalidArgument,
        "capacity",
    );
    assert_refused(
        nodes
            .register_node(rn("n", "eu", "127.0.0.1:1", u32::MAX))
            .await,
        Code::InvalidArgument,
        "capacity",
    );
    let mut nodes = NodeServiceClient::new(ch.clone());
    assert_refused(
        nodes
            .drain_node(pb::DrainNodeRequest {
                id: "ghost".into(),
                undo: false,
                evacuate: true,
            })
            .await,
        Code::NotFound,
        "ghost",
    );
    assert_refused(
        nodes
            .get_node(pb::GetNodeRequest { id: String::new() })
            .await,
        Code::InvalidArgument,
        "id",
    );

    let mut meetings = MeetingServiceClient::new(ch.clone());
    let sm = |inst: &str, participants: u32, start_ms: u64, duration_ms: u64| {
        pb::ScheduleMeetingRequest {
            institution: inst.into(),
            participants,
            start_ms,
            duration_ms,
            request_id: String::new(),
            ..Default::default()
        }
    };
    assert_refused(
        meetings.schedule_meeting(sm("", 5, 0, 0)).await,
        Code::InvalidArgument,
        "institution",
    );
    assert_refused(
        meetings.schedule_meeting(sm("ghost", 5, 0, 0)).await,
        Code::NotFound,
        "ghost",
    );
    assert_refused(
        meetings.schedule_meeting(sm("uio", 0, 0, 0)).await,
        Code::InvalidArgument,
        "participants",
    );
    assert_refused(
        meetings.schedule_meeting(sm("uio", 1_000_000, 0, 0)).await,
        Code::InvalidArgument,
        "participants",
    );
    assert_refused(
        meetings.schedule_meeting(sm("uio", 101, 0, 0)).await,
        Code::InvalidArgument,
        "limit of 100",
    );
    assert_refused(
        meetings.schedule_meeting(sm("uio", 5, 0, u64::MAX)).await,
        Code::InvalidArgument,
        "duration_ms",
    );
    assert_refused(
        meetings.schedule_meeting(sm("uio", 5, u64::MAX, 0)).await,
        Code::InvalidArgument,
        "start_ms",
    );
    assert_refused(
        meetings.schedule_meeting(sm("uio", 5, 1000, 1000)).await,
        Code::InvalidArgument,
        "past",
    );
    let mut bad_key = sm("uio", 5, 0, 0);
    bad_key.request_id = "k".repeat(500);
    assert_refused(
        meetings.schedule_meeting(bad_key).await,
        Code::InvalidArgument,
        "request_id",
    );
    assert_refused(
        meetings.get_meeting(pb::GetMeetingRequest { id: 0 }).await,
        Code::InvalidArgument,
        "id",
    );
    assert_refused(
        meetings
            .get_meeting(pb::GetMeetingRequest { id: 999 })
            .await,
        Code::NotFound,
        "999",
    );
    assert_refused(
        meetings
            .end_meeting(pb::EndMeetingRequest { id: 999 })
            .await,
        Code::NotFound,
        "999",
    );
    assert_refused(
        meetings
            .explain_meeting(pb::ExplainMeetingRequest { id: 0 })
            .await,
        Code::InvalidArgument,
        "id",
    );

    let mut cl = ClusterServiceClient::new(ch.clone());
    assert_refused(
        cl.add_member(pb::AddMemberRequest {
            id: 0,
            address: "127.0.0.1:1".into(),
        })
        .await,
        Code::InvalidArgument,
        "id",
    );
    assert_refused(
        cl.add_member(pb::AddMemberRequest {
            id: 9,
            address: "bad".into(),
        })
        .await,
        Code::InvalidArgument,
        "address",
    );
    assert_refused(
        cl.remove_member(pb::RemoveMemberRequest { id: 42 }).await,
        Code::NotFound,
        "42",
    );

    // Malformed protobuf on the wire: bytes that are not a valid message.
    let mut raw = tonic::client::Grpc::new(ch.clone());
    raw.ready().await.unwrap();
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12];
    let r: Result<tonic::Response<Vec<u8>>, _> = raw
        .unary(
            tonic::Request::new(garbage),
            "/fjord.v1.MeetingService/ScheduleMeeting".parse().unwrap(),
            RawCodec,
        )
        .await;
    let s = r.expect_err("garbage must be refused");
    assert!(s.message().contains("decode"), "{s:?}");

    // Nothing above changed the state, and the replica still serves. (Refusals
    // that only the state machine can decide, such as an unknown region, are
    // committed as no-ops; validation failures never reach the log.)
    let leader = cluster.leader().unwrap();
    let index = cluster.replicas[&leader]
        .replica
        .status()
        .last_applied_index;
    cluster
        .wait_applied(index, std::time::Duration::from_secs(5))
        .await;
    assert!(
        before == visible(&cluster),
        "refused requests must not change the state"
    );
    assert_eq!(list_nodes(&client).await.len(), 1);
    assert!(schedule(&client, "uio", 5, "ok").await.is_ok());
}

/// Sends and receives raw bytes, to put malformed protobuf on the wire.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}
