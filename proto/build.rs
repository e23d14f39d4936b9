//! Compiles `fjord/v1/*.proto` with protox (pure Rust), so building Fjord
//! needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "fjord/v1/common.proto",
        "fjord/v1/institution.proto",
        "fjord/v1/licence.proto",
        "fjord/v1/account.proto",
        "fjord/v1/billing.proto",
        "fjord/v1/sla.proto",
        "fjord/v1/metadata.proto",
        "fjord/v1/node.proto",
        "fjord/v1/meeting.proto",
        "fjord/v1/media.proto",
        "fjord/v1/cluster.proto",
        "fjord/v1/raft.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
