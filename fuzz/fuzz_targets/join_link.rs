//! Join links as a participant pastes them (`fjord join --link`): the
//! parser never panics, and a link the control plane writes reads back.
#![no_main]

use fjord_control_plane::api::join_link;
use fjord_media_node::client::JoinRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = JoinRequest::from_link(text) {
        // Passcodes the control plane issues are digits; such a link
        // written again reads the same.
        if r.passcode.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let again = JoinRequest::from_link(&join_link(r.meeting_id, &r.passcode))
                .expect("a written link reads");
            assert_eq!(again.meeting_id, r.meeting_id);
            assert_eq!(again.passcode, r.passcode);
        }
    }
});
