//! Bytes a replica decodes from its peers (append, vote and snapshot
//! requests, forwarded operations and their answers) and from its data
//! directory (log entries, snapshots): every decoder, in every format it
//! reads (versioned binary and the older JSON), refuses what it cannot
//! read and never panics.
#![no_main]

use fjord_control_plane::raft::{codec, Applied, NodeId, Operation, OperationOutput, TypeConfig};
use fjord_control_plane::state::Proposal;
use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(e) = codec::decode_entry(bytes) {
                // An entry read back writes again and reads the same.
                let again = codec::encode(&e).expect("a decoded entry encodes");
                let back = codec::decode_entry(&again).expect("what was written reads");
                assert_eq!(format!("{e:?}"), format!("{back:?}"));
            }
        }
        1 => {
            let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>(bytes);
        }
        2 => {
            let _ = codec::decode::<VoteRequest<NodeId>>(bytes);
        }
        3 => {
            let _ = codec::decode::<InstallSnapshotRequest<TypeConfig>>(bytes);
        }
        4 => {
            let _ = codec::decode::<Operation>(bytes);
        }
        5 => {
            let _ = codec::decode::<OperationOutput>(bytes);
        }
        6 => {
            let _ = codec::decode::<Applied>(bytes);
        }
        _ => {
            let _ = codec::decode::<Proposal>(bytes);
        }
    }
});
