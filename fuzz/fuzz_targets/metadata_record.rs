//! What the control plane reads back from the cloud tier (etcd): keys
//! and values anyone with write access there can put. The record decoder
//! and the judge never panic; a licence edit the judge takes in applies
//! to the state as a command (or is refused by it), never panicking.
#![no_main]

use fjord_control_plane::metadata::sync::{judge, Verdict};
use fjord_control_plane::metadata::MetadataRecord;
use fjord_control_plane::state::{LicenceCommand, MetaKey, Request};
use fjord_fuzz::{cluster_state, Script, NOW};
use libfuzzer_sys::fuzz_target;

const KNOWN: [&str; 4] = [
    "institutions/uio",
    "licences/uio/0000000001",
    "meetings/00000000000000000001",
    "nodes/nordic-1",
];

fuzz_target!(|data: &[u8]| {
    let mut s = Script::new(data);
    let pick = s.byte();
    let own_path;
    let path: &str = match pick % 6 {
        n @ 0..=3 => KNOWN[n as usize],
        4 => "licences/uio/0000000002",
        _ => {
            own_path = String::from_utf8_lossy(s.chunk()).into_owned();
            &own_path
        }
    };
    if let Some(key) = MetaKey::parse(path) {
        assert_eq!(MetaKey::parse(&key.path()), Some(key));
    }
    let value = s.rest();
    if let Ok(record) = MetadataRecord::decode(value) {
        assert_eq!(MetadataRecord::decode(&record.encode()).ok(), Some(record));
    }
    let state = cluster_state();
    let found = if pick & 0x80 == 0 { Some(value) } else { None };
    if let Verdict::LicenceEdit { edit, .. } = judge(state, path, found) {
        let mut s = state.clone();
        let _ = s.apply(&Request {
            now_ms: NOW,
            seed: 2,
            strategy: Default::default(),
            op_id: 0,
            command: LicenceCommand::Set(*edit).into(),
        });
    }
});
