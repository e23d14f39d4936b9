//! Host accounts and each institution's login: who may host or schedule.
//!
//! Only people in eligible roles get an account (CEN-CENELEC rules). An
//! account is kept under a pseudonymous id (a keyed hash of the identity
//! provider's issuer and subject, computed outside the state machine);
//! no name or e-mail address is stored. It is disabled, with the reason,
//! when its holder's role no longer qualifies, when the institution admin
//! disables it or removes the role, or when it organised no meeting for
//! twelve months (a sweep the leader commits; time comes from the log).
//! Active accounts count against the licence: staff accounts against staff
//! licences, student accounts against student licences.

use jiff::civil::Date;

use super::*;
use crate::licensing::{service_date, Affiliation};

/// An account that organised no meeting for this many months is disabled.
pub const INACTIVE_MONTHS: i32 = 12;
/// Most affiliation values a login maps.
pub const MAX_ELIGIBLE_VALUES: usize = 32;
/// Most accounts one institution may hold (active or not).
pub const MAX_ACCOUNTS_PER_INSTITUTION: usize = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    pub logins: BTreeMap<String, LoginConfig>,
    pub by_id: BTreeMap<String, HostAccount>,
}

/// How an institution's hosts sign in: their identity provider (OpenID
/// Connect), the keys that sign its ID tokens, and which affiliation
/// values make a host eligible, as staff or as a student.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginConfig {
    pub issuer: String,
    /// The client id Fjord is registered under at the provider.
    pub audience: String,
    /// The provider's public signing keys, a JWKS document.
    pub jwks: String,
    /// The ID-token claim holding the affiliation (a string or a list).
    pub affiliation_claim: String,
    /// Affiliation value -> the limits it gets; values not listed are not eligible.
    pub eligible: BTreeMap<String, Affiliation>,
    /// Where one provider serves many institutions (Feide): only values
    /// scoped to this domain count (`employee@uio.no`), scope removed.
    #[serde(default)]
    pub affiliation_scope: Option<String>,
}

impl LoginConfig {
    /// The best affiliation among `values` (staff over student), if any is eligible.
    pub fn affiliation_of(&self, values: &[String]) -> Option<Affiliation> {
        values
            .iter()
            .filter_map(|v| self.eligible.get(v))
            .min()
            .copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// The holder's role claim no longer qualifies (or the admin removed the role).
    RoleEnded,
    /// The institution admin or an operator disabled it.
    Disabled,
    /// It organised no meeting for twelve months.
    Inactive,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisableReason::RoleEnded => "role_ended",
            DisableReason::Disabled => "disabled",
            DisableReason::Inactive => "inactive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAccount {
    /// Pseudonymous: a keyed hash of issuer and subject.
    pub id: String,
    pub institution: String,
    pub affiliation: Affiliation,
    pub created_at_ms: u64,
    pub last_login_ms: u64,
    /// When it last scheduled a meeting.
    pub last_meeting_ms: Option<u64>,
    /// Why it is disabled, and since when; `None` while active.
    pub disabled: Option<(DisableReason, u64)>,
    /// Activated beyond the licence's count, where the licence allows overage.
    pub extra_licence: bool,
}

impl HostAccount {
    pub fn is_active(&self) -> bool {
        self.disabled.is_none()
    }

    /// The day its twelve months without a meeting run out.
    pub fn inactive_from(&self) -> Date {
        let last = self
            .last_meeting_ms
            .unwrap_or(self.created_at_ms)
            .max(self.created_at_ms);
        let day = service_date(last);
        day.checked_add(jiff::Span::new().months(INACTIVE_MONTHS))
            .unwrap_or(Date::MAX)
    }
}

impl Accounts {
    fn active_count(&self, institution: &str, affiliation: Affiliation) -> u64 {
        self.by_id
            .values()
            .filter(|a| {
                a.institution == institution && a.affiliation == affiliation && a.is_active()
            })
            .count() as u64
    }

    pub fn of_institution<'a>(
        &'a self,
        institution: &'a str,
    ) -> impl Iterator<Item = &'a HostAccount> + 'a {
        self.by_id
            .values()
            .filter(move |a| a.institution == institution)
    }
}

impl ClusterState {
    pub(super) fn configure_login(&mut self, c: &ConfigureLogin, now_ms: u64) -> Response {
        if !self.institutions.contains_key(&c.institution) {
            return Err(StateError::UnknownInstitution {
                name: c.institution.clone(),
            });
        }
        if c.config.eligible.len() > MAX_ELIGIBLE_VALUES {
            return Err(StateError::TooManyVersions {
                max: MAX_ELIGIBLE_VALUES as u32,
            });
        }
        // Accounts whose role the new mapping no longer lists lose it now.
        let still: BTreeSet<Affiliation> = c.config.eligible.values().copied().collect();
        for a in self.accounts.by_id.values_mut() {
            if a.institution == c.institution && a.is_active() && !still.contains(&a.affiliation) {
                a.disabled = Some((DisableReason::RoleEnded, now_ms));
            }
        }
        self.accounts
            .logins
            .insert(c.institution.clone(), c.config.clone());
        Ok(Output::LoginConfigured {
            institution: c.institution.clone(),
        })
    }

    /// A host signed in with a valid ID token (checked before proposing):
    /// creates, refreshes, re-enables or disables the account by its role.
    pub(super) fn login(&mut self, c: &Login, now_ms: u64) -> Response {
        let config =
            self.accounts
                .logins
                .get(&c.institution)
                .ok_or_else(|| StateError::NoLogin {
                    institution: c.institution.clone(),
                })?;
        let affiliation = config.affiliation_of(&c.affiliations);
        if let Some(existing) = self.accounts.by_id.get(&c.account) {
            if existing.institution != c.institution {
                return Err(StateError::UnknownAccount {
                    id: c.account.clone(),
                });
            }
        }
        let Some(affiliation) = affiliation else {
            // Not eligible: an existing account loses its role; none is created.
            if let Some(a) = self.accounts.by_id.get_mut(&c.account) {
                a.last_login_ms = now_ms;
                if a.is_active() {
                    a.disabled = Some((DisableReason::RoleEnded, now_ms));
                }
                return Ok(Output::Account(Box::new(a.clone())));
            }
            return Err(StateError::NotEligible {
                institution: c.institution.clone(),
            });
        };
        let was_active_as = self
            .accounts
            .by_id
            .get(&c.account)
            .filter(|a| a.is_active())
            .map(|a| a.affiliation);
        let admin_disabled = self
            .accounts
            .by_id
            .get(&c.account)
            .is_some_and(|a| matches!(a.disabled, Some((DisableReason::Disabled, _))));
        // Activating (or changing role) takes a licence of that kind.
        let mut extra_licence = false;
        if was_active_as != Some(affiliation) && !admin_disabled {
            let today = service_date(now_ms);
            let licence = self
                .licences
                .get(&c.institution)
                .and_then(|l| l.in_force(today))
                .ok_or_else(|| StateError::NoLicence {
                    institution: c.institution.clone(),
                })?;
            let held = match affiliation {
                Affiliation::Staff => licence.terms.staff_licences(),
                Affiliation::Student => u64::from(licence.terms.student_licences),
            };
            if self.accounts.active_count(&c.institution, affiliation) >= held {
                if !licence.terms.allow_overage {
                    return Err(StateError::NoFreeLicence {
                        institution: c.institution.clone(),
                        affiliation,
                        held,
                    });
                }
                extra_licence = true;
            }
            if self.accounts.of_institution(&c.institution).count() >= MAX_ACCOUNTS_PER_INSTITUTION
            {
                return Err(StateError::TooManyVersions {
                    max: MAX_ACCOUNTS_PER_INSTITUTION as u32,
                });
            }
        }
        let account = self
            .accounts
            .by_id
            .entry(c.account.clone())
            .or_insert_with(|| HostAccount {
                id: c.account.clone(),
                institution: c.institution.clone(),
                affiliation,
                created_at_ms: now_ms,
                last_login_ms: now_ms,
                last_meeting_ms: None,
                disabled: None,
                extra_licence,
            });
        account.last_login_ms = now_ms;
        match account.disabled {
            // The admin's decision stands until the admin reverses it.
            Some((DisableReason::Disabled, _)) => {}
            Some(_) => {
                // Re-qualified: active again, its twelve months start over.
                account.disabled = None;
                account.affiliation = affiliation;
                account.last_meeting_ms = Some(now_ms);
                account.extra_licence = extra_licence;
            }
            None => {
                if account.affiliation != affiliation {
                    account.affiliation = affiliation;
                    account.extra_licence = extra_licence;
                }
            }
        }
        Ok(Output::Account(Box::new(account.clone())))
    }

    pub(super) fn set_account_enabled(&mut self, c: &SetAccountEnabled, now_ms: u64) -> Response {
        let account = self
            .accounts
            .by_id
            .get(&c.id)
            .filter(|a| c.institution.as_ref().is_none_or(|i| &a.institution == i))
            .ok_or_else(|| StateError::UnknownAccount { id: c.id.clone() })?;
        let (institution, affiliation) = (account.institution.clone(), account.affiliation);
        if c.enabled && !account.is_active() {
            let eligible = self
                .accounts
                .logins
                .get(&institution)
                .is_some_and(|l| l.eligible.values().any(|a| *a == affiliation));
            if !eligible {
                return Err(StateError::NotEligible { institution });
            }
            let today = service_date(now_ms);
            let held = self
                .licences
                .get(&institution)
                .and_then(|l| l.in_force(today))
                .map(|v| match affiliation {
                    Affiliation::Staff => v.terms.staff_licences(),
                    Affiliation::Student => u64::from(v.terms.student_licences),
                })
                .unwrap_or(0);
            let overage = self
                .licences
                .get(&institution)
                .and_then(|l| l.in_force(today))
                .is_some_and(|v| v.terms.allow_overage);
            let over = self.accounts.active_count(&institution, affiliation) >= held;
            if over && !overage {
                return Err(StateError::NoFreeLicence {
                    institution,
                    affiliation,
                    held,
                });
            }
            let a = self.accounts.by_id.get_mut(&c.id).expect("looked up above");
            a.disabled = None;
            a.extra_licence = over;
            // Enabled again: its twelve months start over.
            a.last_meeting_ms = Some(now_ms);
        } else if !c.enabled && account.is_active() {
            let a = self.accounts.by_id.get_mut(&c.id).expect("looked up above");
            a.disabled = Some((DisableReason::Disabled, now_ms));
        }
        Ok(Output::Account(Box::new(
            self.accounts.by_id[&c.id].clone(),
        )))
    }

    /// Disables every account that organised no meeting for twelve months.
    pub(super) fn sweep_accounts(&mut self, now_ms: u64) -> Response {
        let today = service_date(now_ms);
        let mut disabled = Vec::new();
        for a in self.accounts.by_id.values_mut() {
            if a.is_active() && a.inactive_from() <= today {
                a.disabled = Some((DisableReason::Inactive, now_ms));
                disabled.push(a.id.clone());
            }
        }
        Ok(Output::AccountsSwept { disabled })
    }

    /// The host of a meeting scheduled through an account: active, of this
    /// institution, and still in an eligible role.
    pub(super) fn host_account(
        &self,
        id: &str,
        institution: &str,
    ) -> Result<Affiliation, StateError> {
        let a = self
            .accounts
            .by_id
            .get(id)
            .filter(|a| a.institution == institution)
            .ok_or_else(|| StateError::UnknownAccount { id: id.to_string() })?;
        match a.disabled {
            Some((reason, _)) => Err(StateError::AccountDisabled {
                id: id.to_string(),
                reason,
            }),
            None => Ok(a.affiliation),
        }
    }

    pub(super) fn note_meeting_scheduled(&mut self, account: &str, now_ms: u64) {
        if let Some(a) = self.accounts.by_id.get_mut(account) {
            a.last_meeting_ms = Some(now_ms);
        }
    }
}
