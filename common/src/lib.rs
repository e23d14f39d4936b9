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
//! ```

pub mod grpc;
pub mod identity;
pub mod pki;
pub mod tls;

pub use identity::{Identity, Role};
pub use tls::{ClientAuth, TlsError, TlsFiles};
