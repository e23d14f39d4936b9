//! What the control plane and the media nodes both need, and nothing else:
//! identities read from certificates, the cluster CA, and TLS channels for
//! gRPC.
//!
//! ```text
//!  pki      fjord pki init / issue: CA and certificates (rcgen)
//!  identity spiffe://fjord/<role>/<name> in a URI SAN  ->  Identity, Role
//!  tls      rustls configs from PEM files, re-read when they change
//!  grpc     tonic over rustls: an accepting stream that knows each caller,
//!           and channels that check the server's identity
//!  client   the failover-aware control-plane client; a node's heartbeat session
//!  token    Ed25519 join and link tokens (signed by the control plane,
//!           verified offline by nodes)
//!  ratelimit, validate   token buckets; the one alphabet for names and ids
//! ```
//!
//! A media node depends on this crate and `fjord-proto` only, never on the
//! control plane's (no openraft, no redb in a node).

pub mod client;
pub mod grpc;
pub mod identity;
pub mod pki;
pub mod ratelimit;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod trace_context;
pub mod validate;

pub use identity::{Identity, Role};
pub use tls::{ClientAuth, TlsError, TlsFiles};
