//! `fjord pki`: the cluster CA and the certificates it issues.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fjord_common::pki::{self, DEFAULT_VALID_DAYS};
use fjord_common::Identity;

#[derive(Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a cluster CA (ca.pem, ca.key) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate signed by the CA in DIR.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Create the control plane's key-encryption key (kek.key) in DIR; copy
    /// it to every replica (`--kek`), keep it out of backups of the Raft data.
    Kek {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct Common {
    /// Directory holding the CA; the certificate and key are written there.
    #[arg(long)]
    dir: PathBuf,
    /// Days the certificate stays valid.
    #[arg(long, default_value_t = DEFAULT_VALID_DAYS)]
    valid_days: u32,
}

#[derive(Subcommand)]
enum IssueCommand {
    /// A control-plane replica (server and client on both ports).
    Replica {
        #[arg(long)]
        id: u64,
        /// DNS name or IP address the replica is reached at (repeatable).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// A media node.
    Node {
        #[arg(long)]
        id: String,
        /// DNS name or IP address the node is reached at (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// An NREN operator (everything administrative).
    Operator {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// An institution's administrator (its own institution only).
    InstitutionAdmin {
        #[arg(long)]
        institution: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

pub fn run(args: PkiArgs) -> Result<(), pki::PkiError> {
    let files = match args.command {
        PkiCommand::Kek { dir } => {
            println!("key-encryption key {}", pki::init_kek(&dir)?.display());
            return Ok(());
        }
        PkiCommand::Init { dir } => pki::init_ca(&dir)?,
        PkiCommand::Issue(c) => {
            let (identity, sans, common) = match c {
                IssueCommand::Replica { id, sans, common } => {
                    (Identity::Replica { id }, sans, common)
                }
                IssueCommand::Node { id, sans, common } => (Identity::Node { id }, sans, common),
                IssueCommand::Operator { name, common } => {
                    (Identity::Operator { name }, Vec::new(), common)
                }
                IssueCommand::InstitutionAdmin {
                    institution,
                    name,
                    common,
                } => (
                    Identity::InstitutionAdmin { institution, name },
                    Vec::new(),
                    common,
                ),
            };
            let files = pki::issue(&common.dir, &identity, &sans, common.valid_days)?;
            println!("identity    {identity}");
            files
        }
    };
    println!("certificate {}", files.cert.display());
    println!("key         {}", files.key.display());
    Ok(())
}
