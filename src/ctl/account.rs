//! `fjord ctl account ...`: host accounts and how an institution's hosts sign in.

use clap::Subcommand;
use serde_json::{json, Value};

use fjord_control_plane::client::Client;
use fjord_proto::v1 as pb;
use pb::account_service_client::AccountServiceClient;

use super::{fmt_time, usage, Failure};

#[derive(Subcommand)]
pub enum AccountCmd {
    /// An institution's host accounts (pseudonymous ids), active and disabled.
    List {
        #[arg(long)]
        institution: String,
    },
    /// Disable a host account (it can no longer schedule).
    Disable { id: String },
    /// Enable a disabled host account again (it takes a licence).
    Enable { id: String },
    /// Sign in with an ID token from the institution's identity provider;
    /// creates the host account on first use. No certificate needed.
    Login {
        #[arg(long)]
        institution: String,
        #[arg(long, env = "FJORD_ID_TOKEN", hide_env_values = true)]
        id_token: String,
    },
    /// Set how an institution's hosts sign in: its OpenID Connect provider.
    SetLogin {
        institution: String,
        /// The provider's issuer (the `iss` of its ID tokens).
        #[arg(long)]
        issuer: String,
        /// Fjord's client id at the provider (the tokens' `aud`).
        #[arg(long)]
        audience: String,
        /// A file with the provider's public keys (JWKS).
        #[arg(long)]
        jwks: std::path::PathBuf,
        /// Eligible affiliation values and the limits they get: VALUE=staff|student,...
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "staff=staff,employee=staff,faculty=staff,student=student"
        )]
        eligible: Vec<String>,
        /// The ID-token claim with the affiliation.
        #[arg(long, default_value = "eduperson_affiliation")]
        affiliation_claim: String,
        /// For a provider shared by many institutions: count only values scoped to this domain.
        #[arg(long)]
        affiliation_scope: Option<String>,
    },
    /// Show how an institution's hosts sign in.
    GetLogin { institution: String },
}

impl AccountCmd {
    /// Signing in needs no certificate: the ID token is the credential.
    pub fn needs_certificate(&self) -> bool {
        !matches!(self, AccountCmd::Login { .. })
    }
}

fn account_json(a: &pb::HostAccount) -> Value {
    json!({"id": a.id, "institution": a.institution, "affiliation": a.affiliation,
           "active": a.active, "disabled_reason": a.disabled_reason,
           "disabled_at_ms": a.disabled_at_ms, "created_at_ms": a.created_at_ms,
           "last_login_ms": a.last_login_ms, "last_meeting_ms": a.last_meeting_ms,
           "extra_licence": a.extra_licence, "inactive_from": a.inactive_from})
}

const HEADER: &str = "ID                            INSTITUTION  ROLE     STATE               LAST MEETING           INACTIVE FROM\n";

fn account_line(a: &pb::HostAccount) -> String {
    let state = if a.active {
        if a.extra_licence {
            "active (extra)".to_string()
        } else {
            "active".to_string()
        }
    } else {
        format!("disabled: {}", a.disabled_reason)
    };
    format!(
        "{:<29} {:<12} {:<8} {:<19} {:<22} {}\n",
        a.id,
        a.institution,
        a.affiliation,
        state,
        fmt_time(a.last_meeting_ms),
        a.inactive_from
    )
}

fn one(r: pb::AccountResponse) -> (Value, String) {
    let a = r.account.unwrap_or_default();
    (account_json(&a), format!("{HEADER}{}", account_line(&a)))
}

pub async fn account(client: &Client, c: AccountCmd) -> Result<(Value, String), Failure> {
    match c {
        AccountCmd::List { institution } => {
            let r = client
                .call(|ch| {
                    let institution = institution.clone();
                    async move {
                        AccountServiceClient::new(ch)
                            .list_accounts(pb::ListAccountsRequest { institution })
                            .await
                    }
                })
                .await?
                .into_inner();
            let json = json!(r.accounts.iter().map(account_json).collect::<Vec<_>>());
            let text = std::iter::once(HEADER.to_string())
                .chain(r.accounts.iter().map(account_line))
                .collect();
            Ok((json, text))
        }
        AccountCmd::Disable { id } | AccountCmd::Enable { id } if id.is_empty() => {
            Err(usage("an account id is needed".into()))
        }
        AccountCmd::Disable { id } => {
            let r = client
                .call(|ch| {
                    let id = id.clone();
                    async move {
                        AccountServiceClient::new(ch)
                            .disable_account(pb::SetAccountRequest { id })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(one(r))
        }
        AccountCmd::Enable { id } => {
            let r = client
                .call(|ch| {
                    let id = id.clone();
                    async move {
                        AccountServiceClient::new(ch)
                            .enable_account(pb::SetAccountRequest { id })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(one(r))
        }
        AccountCmd::Login {
            institution,
            id_token,
        } => {
            let r = client
                .call(|ch| {
                    let req = pb::LoginRequest {
                        institution: institution.clone(),
                        id_token: id_token.clone(),
                    };
                    async move { AccountServiceClient::new(ch).login(req).await }
                })
                .await?
                .into_inner();
            Ok(one(r))
        }
        AccountCmd::SetLogin {
            institution,
            issuer,
            audience,
            jwks,
            eligible,
            affiliation_claim,
            affiliation_scope,
        } => {
            let jwks_text = std::fs::read_to_string(&jwks)
                .map_err(|e| usage(format!("--jwks {}: {e}", jwks.display())))?;
            let mut map = std::collections::HashMap::new();
            for pair in &eligible {
                let (value, role) = pair.split_once('=').ok_or_else(|| {
                    usage(format!("--eligible {pair:?}: expected VALUE=staff|student"))
                })?;
                map.insert(value.to_string(), role.to_string());
            }
            let req = pb::ConfigureLoginRequest {
                institution,
                config: Some(pb::LoginConfig {
                    issuer,
                    audience,
                    jwks: jwks_text,
                    affiliation_claim,
                    eligible: map,
                    affiliation_scope: affiliation_scope.unwrap_or_default(),
                }),
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move { AccountServiceClient::new(ch).configure_login(req).await }
                })
                .await?
                .into_inner();
            Ok((
                json!({"institution": r.institution}),
                format!("login for {} set\n", r.institution),
            ))
        }
        AccountCmd::GetLogin { institution } => {
            let r = client
                .call(|ch| {
                    let institution = institution.clone();
                    async move {
                        AccountServiceClient::new(ch)
                            .get_login(pb::GetLoginRequest { institution })
                            .await
                    }
                })
                .await?
                .into_inner();
            let c = r.config.unwrap_or_default();
            let mut eligible: Vec<_> = c.eligible.iter().collect();
            eligible.sort();
            let json = json!({"issuer": c.issuer, "audience": c.audience,
                "affiliation_claim": c.affiliation_claim, "affiliation_scope": c.affiliation_scope,
                "eligible": c.eligible, "jwks": serde_json::from_str::<Value>(&c.jwks).unwrap_or(Value::Null)});
            let text = format!(
                "issuer: {}\naudience: {}\naffiliation claim: {}{}\neligible: {}\n",
                c.issuer,
                c.audience,
                c.affiliation_claim,
                if c.affiliation_scope.is_empty() {
                    String::new()
                } else {
                    format!(" (scoped to {})", c.affiliation_scope)
                },
                eligible
                    .iter()
                    .map(|(v, a)| format!("{v}={a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok((json, text))
        }
    }
}
