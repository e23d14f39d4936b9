//! Fjord media node and participant client.
//!
//! ```text
//!  client/ (fjord join, loadgen)            node/ (fjord media-node)
//!  JoinMeeting ──▶ control plane ──token──▶  quinn endpoint
//!  QUIC: control stream (wire::frame) ────▶  ├─ per connection: control + datagram tasks
//!        media datagrams (wire header) ───▶  │     └─ sfu::Sfu (sans-IO core: rooms, policy, routing)
//!                                            └─ control-plane session (register, heartbeat, drain)
//! ```

pub mod agent;
pub mod client;
pub mod node;
pub mod sfu;
pub mod telemetry;
pub mod tls;
pub mod wire;
