//! The one binary encoding of everything the control plane writes to disk
//! or sends between replicas: log entries, votes, snapshots, Raft RPCs and
//! forwarded operations.
//!
//! Every blob starts with a format byte. Format 1 is MessagePack with named
//! fields: self-describing, so a field added with `#[serde(default)]` is
//! read from older blobs and ignored by older readers, which lets the state
//! grow (licences, the ledger, alerts) without a format change per field;
//! numbers and bytes are binary, so it is several times smaller and faster
//! than JSON. Blobs that start with `{` or `[` are JSON, which is how
//! clusters wrote logs and snapshots before format 1: they are still read.

use openraft::{Entry, EntryPayload};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{LegacyTypeConfig, TypeConfig};

/// MessagePack, structs as maps with field names.
pub const FORMAT_MSGPACK_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding format 1: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("decoding legacy JSON: {0}")]
    Legacy(#[from] serde_json::Error),
    #[error("empty blob")]
    Empty,
    #[error("unknown format byte {0:#04x}")]
    UnknownFormat(u8),
}

/// Encodes `value` in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_MSGPACK_V1);
    rmp_serde::encode::write_named(&mut out, value)?;
    Ok(out)
}

/// Decodes a blob in any format this version reads.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_MSGPACK_V1) => Ok(rmp_serde::from_slice(&bytes[1..])?),
        Some(b'{') | Some(b'[') => Ok(serde_json::from_slice(bytes)?),
        Some(&other) => Err(CodecError::UnknownFormat(other)),
    }
}

/// Decodes a log entry, including entries of JSON logs written before
/// proposals carried batches (one request per entry).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, CodecError> {
    if matches!(bytes.first(), Some(b'{')) {
        let old: Entry<LegacyTypeConfig> = serde_json::from_slice(bytes)?;
        let payload = match old.payload {
            EntryPayload::Blank => EntryPayload::Blank,
            EntryPayload::Normal(r) => EntryPayload::Normal(r.into()),
            EntryPayload::Membership(m) => EntryPayload::Membership(m),
        };
        return Ok(Entry {
            log_id: old.log_id,
            payload,
        });
    }
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, NodeCommand, RegisterNode, Request};

    fn request() -> Request {
        Request {
            now_ms: 1,
            seed: 2,
            strategy: crate::placement::Strategy::LeastLoaded,
            op_id: 3,
            command: Command::Node(NodeCommand::Register(RegisterNode {
                id: "osl-1".into(),
                region: "nordic".into(),
                address: "127.0.0.1:1".into(),
                capacity: 9,
                certificate: vec![0, 200, 255],
                boot: 0,
            })),
        }
    }

    #[test]
    fn round_trips_and_reads_legacy_json() {
        let r = request();
        let bin = encode(&r).unwrap();
        assert_eq!(bin[0], FORMAT_MSGPACK_V1);
        assert_eq!(decode::<Request>(&bin).unwrap(), r);
        let json = serde_json::to_vec(&r).unwrap();
        assert!(bin.len() < json.len(), "{} !< {}", bin.len(), json.len());
        assert_eq!(decode::<Request>(&json).unwrap(), r);
    }

    #[test]
    fn refuses_unknown_and_garbage() {
        assert!(matches!(
            decode::<Request>(&[]).unwrap_err(),
            CodecError::Empty
        ));
        assert!(matches!(
            decode::<Request>(&[7, 1, 2]).unwrap_err(),
            CodecError::UnknownFormat(7)
        ));
        assert!(decode::<Request>(&[FORMAT_MSGPACK_V1, 0xc1]).is_err());
        let bin = encode(&request()).unwrap();
        assert!(decode::<Request>(&bin[..bin.len() / 2]).is_err());
    }
}
