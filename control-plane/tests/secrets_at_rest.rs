//! No meeting secret and no private key is stored in plaintext: after
//! meetings are scheduled and joined (which creates the join-signing key)
//! and snapshots are taken, the raw bytes of every replica's files hold no
//! passcode, host key, PIN or signing-key seed, and neither do the answers
//! of the administrative reads. A retried schedule still answers the same
//! secrets, derived again from what the log holds.

mod common;

use std::time::Duration;

use common::*;
use fjord_control_plane::access::Kek;
use fjord_proto::v1 as pb;
use pb::meeting_service_client::MeetingServiceClient;
use prost::Message;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every file under `dir`, read raw.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_private_key_is_in_the_log_snapshots_or_answers() {
    let cluster = Cluster::start(
        3,
        fjord_control_plane::server::ReplicaConfig {
            node_lease_ms: 600_000,
            // Snapshots (and log compaction) happen during the test.
            snapshot_every_entries: 10,
            ..fast_config()
        },
    )
    .await;
    let ops = cluster.client();
    create_institution(&ops, "uio", "nordic", 100).await;
    register_node(&cluster, "no-1", "nordic", 100_000).await;
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let m = schedule(&ops, "uio", 2, &format!("k{i}")).await.unwrap();
        ids.push(m.meeting.as_ref().unwrap().id);
        secrets.push((m.passcode.clone(), m.host_key.clone()));
    }
    // A retry answers the same secrets.
    let again = schedule(&ops, "uio", 2, "k0").await.unwrap();
    assert_eq!((again.passcode, again.host_key), secrets[0].clone());
    // Joins create the signing key; the host reads the PIN.
    let anonymous = cluster.anonymous_client();
    let mut pins = Vec::new();
    for (id, (passcode, host_key)) in ids.iter().zip(&secrets) {
        let (id, passcode, host_key) = (*id, passcode.clone(), host_key.clone());
        anonymous
            .call(|ch| {
                let passcode = passcode.clone();
                async move {
                    MeetingServiceClient::new(ch)
                        .join_meeting(pb::JoinMeetingRequest {
                            meeting_id: id,
                            passcode,
                            display_name: "p".into(),
                            ..Default::default()
                        })
                        .await
                }
            })
            .await
            .unwrap();
        let pin = anonymous
            .call(|ch| {
                let host_key = host_key.clone();
                async move {
                    MeetingServiceClient::new(ch)
                        .get_meeting_pin(pb::GetMeetingPinRequest { id, host_key })
                        .await
                }
            })
            .await
            .unwrap()
            .into_inner()
            .pin;
        assert_eq!(pin.len(), 8);
        pins.push(pin);
    }
    // What administrators can read about the meetings.
    let mut answers = Vec::new();
    for id in &ids {
        let id = *id;
        let r = ops
            .call(|ch| async move {
                MeetingServiceClient::new(ch)
                    .explain_meeting(pb::ExplainMeetingRequest { id })
                    .await
            })
            .await
            .unwrap();
        answers.push(r.into_inner().encode_to_vec());
    }
    answers.push(
        pb::ListMeetingsResponse {
            meetings: list_meetings(&ops).await,
        }
        .encode_to_vec(),
    );

    // Let every replica apply and snapshot.
    let leader = cluster.leader().unwrap();
    let index = cluster.replicas[&leader]
        .replica
        .status()
        .last_applied_index;
    cluster.wait_applied(index, Duration::from_secs(10)).await;
    for h in cluster.replicas.values() {
        h.replica.raft.trigger().snapshot().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster
        .replicas
        .values()
        .all(|h| h.replica.status().snapshot_index > 0));

    // The signing key's seed, as every replica derives it.
    let kek = Kek::load(&cluster.ca.kek().unwrap()).unwrap();
    let salt = cluster.replicas[&1]
        .replica
        .local_state(|s| s.access.salt.clone())
        .expect("joins created the signing key");
    let seed = kek.join_key_seed(&salt);
    assert!(cluster.replicas[&1]
        .replica
        .local_state(|s| s.access.key.is_none()));

    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for ((passcode, host_key), pin) in secrets.iter().zip(&pins) {
        needles.push(("passcode".into(), passcode.as_bytes().to_vec()));
        needles.push(("host key".into(), host_key.as_bytes().to_vec()));
        // Eight digits alone could turn up inside a timestamp by chance:
        // look for the PIN as a JSON string and as a protobuf string field.
        needles.push(("PIN".into(), format!("\"{pin}\"").into_bytes()));
        needles.push(("PIN".into(), [&[8u8][..], pin.as_bytes()].concat()));
    }
    needles.push(("signing key seed".into(), seed.to_vec()));
    needles.push(("signing key seed (hex)".into(), hex(&seed).into_bytes()));
    let mut checked = 0;
    for id in cluster.replicas.keys() {
        for (path, bytes) in files(&cluster.dir.path().join(format!("r{id}"))) {
            checked += bytes.len();
            for (what, needle) in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "a {what} is in {} in plaintext",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 0);
    for a in &answers {
        for (what, needle) in &needles {
            assert!(
                !contains(a, needle),
                "an administrative answer carries a {what}"
            );
        }
    }
    // The same test on the snapshot bytes as built in memory (what travels
    // to a replica that installs it).
    for h in cluster.replicas.values() {
        let snapshot = h.replica.local_state(|s| serde_json::to_vec(s).unwrap());
        for (what, needle) in &needles {
            assert!(!contains(&snapshot, needle), "the state carries a {what}");
        }
    }
}
