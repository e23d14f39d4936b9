//! Host accounts and institutions' logins over gRPC, and the sign-in every
//! host-scheduled meeting goes through ([`sign_in`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use fjord_proto::v1 as pb;
use fjord_proto::v1::account_service_server::AccountService;

use super::authz::{authorize, Rpc};
use super::{finish, validate, ApiError};
use crate::access::Kek;
use crate::licensing::Affiliation;
use crate::login;
use crate::raft::Replica;
use crate::state::{
    AccountCommand, Command, ConfigureLogin, HostAccount, Login, LoginConfig, Output, Query,
    QueryOutput, SetAccountEnabled,
};

pub struct AccountApi {
    replica: Arc<Replica>,
    kek: Arc<Kek>,
    sign_ins: Arc<SignInLimiter>,
}

/// Sign-ins per source address on this replica: each costs a signature
/// check (and a new account a Raft write), and the Login RPC needs no
/// certificate, so a flood from one address is cut off before that work.
pub struct SignInLimiter(std::sync::Mutex<fjord_common::ratelimit::KeyedLimiter<std::net::IpAddr>>);

impl SignInLimiter {
    pub fn new(rate: fjord_common::ratelimit::Rate) -> Self {
        SignInLimiter(std::sync::Mutex::new(
            fjord_common::ratelimit::KeyedLimiter::new(rate, 100_000),
        ))
    }

    /// Takes one sign-in for `source` now, or says how long to wait.
    pub fn take(&self, source: std::net::IpAddr) -> Result<(), ApiError> {
        let now = crate::raft::now_ms();
        self.0
            .lock()
            .expect("sign-in limiter lock poisoned")
            .take(&source, now)
            .map_err(|retry_after_ms| {
                metrics::counter!("fjord_sign_ins_limited_total").increment(1);
                ApiError::RateLimited { retry_after_ms }
            })
    }
}

impl Default for SignInLimiter {
    fn default() -> Self {
        SignInLimiter::new(fjord_common::ratelimit::Rate {
            burst: 30,
            per_second: 10.0,
        })
    }
}

/// The caller's address, for per-source limits.
pub fn source_of<T>(req: &Request<T>) -> std::net::IpAddr {
    fjord_common::grpc::peer_info(req)
        .map(|p| p.remote.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
}

/// Signs a host in: validates `id_token` against the institution's login,
/// then commits the login (creating, refreshing, re-enabling or disabling
/// the account by its role). Answers the account, which must be active.
pub async fn sign_in(
    replica: &Replica,
    kek: &Kek,
    institution: &str,
    id_token: &str,
) -> Result<HostAccount, ApiError> {
    let config = match replica.local_state(|s| s.accounts.logins.get(institution).cloned()) {
        Some(c) => c,
        // Not here yet (a follower behind): ask the leader.
        None => match replica
            .read(Query::Login {
                institution: institution.to_string(),
            })
            .await?
        {
            QueryOutput::Login(c) => *c,
            other => unreachable!("login query answered {other:?}"),
        },
    };
    let verified = login::verify(&config, id_token).map_err(ApiError::Login)?;
    let account = kek.account_id(&verified.issuer, &verified.subject);
    // A known, active account whose role is unchanged needs no write: the
    // schedule itself re-checks the account in the state machine. Anything
    // else (new, disabled, role changed or lost) is committed as a login.
    let affiliation = config.affiliation_of(&verified.affiliations);
    let known = replica.local_state(|s| {
        s.accounts
            .by_id
            .get(&account)
            .filter(|a| {
                a.institution == institution && a.is_active() && Some(a.affiliation) == affiliation
            })
            .cloned()
    });
    if let Some(a) = known {
        return Ok(a);
    }
    let out = replica
        .write(Command::Account(AccountCommand::Login(Login {
            institution: institution.to_string(),
            account,
            affiliations: verified.affiliations,
        })))
        .await?;
    match out {
        Output::Account(a) => match a.disabled {
            None => Ok(*a),
            Some((reason, _)) => {
                Err(crate::state::StateError::AccountDisabled { id: a.id, reason }.into())
            }
        },
        other => unreachable!("login answered {other:?}"),
    }
}

fn affiliation_name(a: Affiliation) -> &'static str {
    a.as_str()
}

fn config_from(c: pb::LoginConfig) -> Result<LoginConfig, ApiError> {
    let text = |field: &'static str, v: &str, max: usize| {
        if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
            Err(ApiError::invalid(
                field,
                format!("1 to {max} printable characters, no spaces"),
            ))
        } else {
            Ok(())
        }
    };
    text("config.issuer", &c.issuer, 255)?;
    text("config.audience", &c.audience, 255)?;
    let claim = if c.affiliation_claim.is_empty() {
        login::dev_idp::AFFILIATION_CLAIM.to_string()
    } else {
        c.affiliation_claim
    };
    text("config.affiliation_claim", &claim, 255)?;
    login::check_jwks(&c.jwks).map_err(|e| ApiError::invalid("config.jwks", e.to_string()))?;
    if c.eligible.is_empty() || c.eligible.len() > crate::state::accounts_max_eligible() {
        return Err(ApiError::invalid(
            "config.eligible",
            "1 to 32 affiliation values, each staff or student",
        ));
    }
    let mut eligible = BTreeMap::new();
    for (value, affiliation) in c.eligible {
        text("config.eligible", &value, 64)?;
        let a = match affiliation.as_str() {
            "staff" => Affiliation::Staff,
            "student" => Affiliation::Student,
            _ => {
                return Err(ApiError::invalid(
                    "config.eligible",
                    format!("{value:?} maps to {affiliation:?}; expected staff or student"),
                ))
            }
        };
        eligible.insert(value, a);
    }
    let scope = Some(c.affiliation_scope).filter(|s| !s.is_empty());
    if let Some(s) = &scope {
        validate::name("config.affiliation_scope", s)?;
    }
    Ok(LoginConfig {
        issuer: c.issuer,
        audience: c.audience,
        jwks: c.jwks,
        affiliation_claim: claim,
        eligible,
        affiliation_scope: scope,
    })
}

fn config_out(c: &LoginConfig) -> pb::LoginConfig {
    pb::LoginConfig {
        issuer: c.issuer.clone(),
        audience: c.audience.clone(),
        jwks: c.jwks.clone(),
        affiliation_claim: c.affiliation_claim.clone(),
        eligible: c
            .eligible
            .iter()
            .map(|(v, a)| (v.clone(), affiliation_name(*a).to_string()))
            .collect(),
        affiliation_scope: c.affiliation_scope.clone().unwrap_or_default(),
    }
}

pub fn account_out(a: &HostAccount) -> pb::HostAccount {
    pb::HostAccount {
        id: a.id.clone(),
        institution: a.institution.clone(),
        affiliation: affiliation_name(a.affiliation).to_string(),
        active: a.is_active(),
        disabled_reason: a
            .disabled
            .map(|(r, _)| r.as_str().to_string())
            .unwrap_or_default(),
        disabled_at_ms: a.disabled.map_or(0, |(_, at)| at),
        created_at_ms: a.created_at_ms,
        last_login_ms: a.last_login_ms,
        last_meeting_ms: a.last_meeting_ms.unwrap_or(0),
        extra_licence: a.extra_licence,
        inactive_from: a.inactive_from().to_string(),
    }
}

/// Account ids are `acct-` and 24 hex digits.
fn account_id(field: &'static str, id: &str) -> Result<(), ApiError> {
    let ok =
        id.len() <= 64 && id.starts_with("acct-") && id[5..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "an account id (acct-...)"))
    }
}

impl AccountApi {
    pub fn new(replica: Arc<Replica>, kek: Arc<Kek>, sign_ins: Arc<SignInLimiter>) -> Self {
        AccountApi {
            replica,
            kek,
            sign_ins,
        }
    }

    async fn set_enabled(
        &self,
        id: String,
        enabled: bool,
        own: Option<String>,
    ) -> Result<pb::AccountResponse, ApiError> {
        account_id("id", &id)?;
        let out = self
            .replica
            .write(Command::Account(AccountCommand::SetEnabled(
                SetAccountEnabled {
                    id,
                    enabled,
                    institution: own,
                },
            )))
            .await?;
        match out {
            Output::Account(a) => Ok(pb::AccountResponse {
                account: Some(account_out(&a)),
            }),
            other => unreachable!("set_account_enabled answered {other:?}"),
        }
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn configure_login(
        &self,
        req: Request<pb::ConfigureLoginRequest>,
    ) -> Result<Response<pb::ConfigureLoginResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::ConfigureLogin)?;
            let r = req.into_inner();
            validate::name("institution", &r.institution)?;
            caller.check_institution(&r.institution)?;
            let config = config_from(r.config.unwrap_or_default())?;
            let out = self
                .replica
                .write(Command::Account(AccountCommand::ConfigureLogin(
                    ConfigureLogin {
                        institution: r.institution,
                        config,
                    },
                )))
                .await?;
            match out {
                Output::LoginConfigured { institution } => {
                    Ok(pb::ConfigureLoginResponse { institution })
                }
                other => unreachable!("configure_login answered {other:?}"),
            }
        };
        finish("configure_login", r.await).map(Response::new)
    }

    async fn get_login(
        &self,
        req: Request<pb::GetLoginRequest>,
    ) -> Result<Response<pb::GetLoginResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::GetLogin)?;
            let r = req.into_inner();
            validate::name("institution", &r.institution)?;
            caller.check_institution(&r.institution)?;
            match self
                .replica
                .read(Query::Login {
                    institution: r.institution,
                })
                .await?
            {
                QueryOutput::Login(c) => Ok(pb::GetLoginResponse {
                    config: Some(config_out(&c)),
                }),
                other => unreachable!("login query answered {other:?}"),
            }
        };
        finish("get_login", r.await).map(Response::new)
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::ListAccounts)?;
            let r = req.into_inner();
            validate::name("institution", &r.institution)?;
            caller.check_institution(&r.institution)?;
            match self
                .replica
                .read(Query::Accounts {
                    institution: r.institution,
                })
                .await?
            {
                QueryOutput::Accounts(v) => Ok(pb::ListAccountsResponse {
                    accounts: v.iter().map(account_out).collect(),
                }),
                other => unreachable!("accounts query answered {other:?}"),
            }
        };
        finish("list_accounts", r.await).map(Response::new)
    }

    async fn disable_account(
        &self,
        req: Request<pb::SetAccountRequest>,
    ) -> Result<Response<pb::AccountResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::DisableAccount)?;
            let own = caller.own_institution().map(str::to_string);
            self.set_enabled(req.into_inner().id, false, own).await
        };
        finish("disable_account", r.await).map(Response::new)
    }

    async fn enable_account(
        &self,
        req: Request<pb::SetAccountRequest>,
    ) -> Result<Response<pb::AccountResponse>, Status> {
        let r = async {
            let caller = authorize(&req, Rpc::EnableAccount)?;
            let own = caller.own_institution().map(str::to_string);
            self.set_enabled(req.into_inner().id, true, own).await
        };
        finish("enable_account", r.await).map(Response::new)
    }

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::AccountResponse>, Status> {
        let source = source_of(&req);
        let r = async {
            authorize(&req, Rpc::Login)?;
            self.sign_ins.take(source)?;
            let r = req.into_inner();
            validate::name("institution", &r.institution)?;
            let a = sign_in(&self.replica, &self.kek, &r.institution, &r.id_token).await?;
            Ok(pb::AccountResponse {
                account: Some(account_out(&a)),
            })
        };
        finish("login", r.await).map(Response::new)
    }
}
