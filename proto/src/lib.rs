//! Fjord's gRPC API: the generated protobuf messages and tonic services.
//!
//! The `.proto` sources live in `fjord/v1/`; `build.rs` compiles them with
//! protox, so no `protoc` binary is needed.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("fjord.v1");
}
