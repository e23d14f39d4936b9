//! Files and flags an operator hands the control plane: the key-encryption
//! key file, the development identity provider's key file, an identity
//! provider's JWKS, the operator's pools file and the `--metadata` URL.
//! Each refuses what it cannot use with an error, never a panic, and what
//! it accepts holds up.
#![no_main]

use fjord_control_plane::access::Kek;
use fjord_control_plane::k8s::pools::parse_pools;
use fjord_control_plane::login::{check_jwks, dev_idp::DevIdp};
use fjord_control_plane::metadata::etcd::EtcdConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    match which % 5 {
        0 => {
            if let Some(kek) = Kek::from_file_contents(&text) {
                assert!(Kek::from_file_contents(&kek.to_file_contents()).is_some());
            }
        }
        1 => {
            let _ = DevIdp::from_file_contents(&text);
        }
        2 => {
            if let Ok(set) = check_jwks(&text) {
                assert!(!set.keys.is_empty());
            }
        }
        3 => {
            if let Ok(pools) = parse_pools(&text) {
                for p in &pools {
                    assert!(p.max_replicas >= 1 && p.min_replicas <= p.max_replicas);
                    assert!(p.node_capacity > 0 && p.headroom_pct < 100);
                    assert_eq!(pools.iter().filter(|q| q.name == p.name).count(), 1);
                }
            }
        }
        _ => {
            if let Ok(Some(endpoints)) = EtcdConfig::parse_url(&text) {
                assert!(!endpoints.is_empty());
            }
        }
    }
});
