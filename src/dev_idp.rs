//! `fjord dev-idp`: the development identity provider `fjord dev` runs, so
//! hosts can sign in without a real one. It signs ID tokens with its own
//! key; the sample institutions' logins trust it.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};

use fjord_control_plane::login::dev_idp::DevIdp;

#[derive(Args)]
pub struct DevIdpArgs {
    #[command(subcommand)]
    command: DevIdpCmd,
}

#[derive(Subcommand)]
enum DevIdpCmd {
    /// Print an ID token for a host (use it with `fjord ctl meeting schedule --id-token`).
    Token {
        /// The institution whose provider issues it.
        #[arg(long)]
        institution: String,
        /// The user's stable id at the provider (the token's `sub`).
        #[arg(long)]
        subject: String,
        /// Affiliation values (eduPersonAffiliation), e.g. staff, student, member.
        #[arg(long, value_delimiter = ',', required = true)]
        affiliation: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        lifetime_s: u64,
        /// The provider's key file (default: where `fjord dev` keeps it).
        #[arg(long, env = "FJORD_DEV_IDP_KEY")]
        key: Option<PathBuf>,
    },
    /// Print the provider's public keys (JWKS), for `fjord ctl account set-login --jwks`.
    Jwks {
        #[arg(long, env = "FJORD_DEV_IDP_KEY")]
        key: Option<PathBuf>,
    },
}

/// Exit codes: 0 printed, 2 bad arguments or key file.
pub fn run(args: DevIdpArgs) -> Result<(), String> {
    match args.command {
        DevIdpCmd::Token {
            institution,
            subject,
            affiliation,
            lifetime_s,
            key,
        } => {
            fjord_common::validate::name(&institution)
                .map_err(|e| format!("--institution {institution:?}: {e}"))?;
            if subject.is_empty() || subject.len() > 255 {
                return Err("--subject: 1 to 255 characters".into());
            }
            if lifetime_s == 0 || lifetime_s > 7 * 24 * 3600 {
                return Err("--lifetime-s: 1 s to 7 days".into());
            }
            let idp = load(key)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| "the clock is before 1970")?
                .as_secs();
            let values: Vec<&str> = affiliation.iter().map(String::as_str).collect();
            let token = idp
                .token(&institution, &subject, &values, now, lifetime_s)
                .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        DevIdpCmd::Jwks { key } => {
            let idp = load(key)?;
            println!("{}", idp.jwks());
            Ok(())
        }
    }
}

fn load(key: Option<PathBuf>) -> Result<DevIdp, String> {
    let path = key.unwrap_or_else(fjord_control_plane::login::dev_idp::default_key_path);
    DevIdp::load(&path).map_err(|e| format!("{e} (is `fjord dev` running? it creates the key)"))
}
