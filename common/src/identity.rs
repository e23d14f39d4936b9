//! Who is on the other end of a connection, read from its certificate.
//!
//! Every Fjord certificate carries one SPIFFE-style URI SAN in the `fjord`
//! trust domain; the path says the role and the name:
//!
//! ```text
//! spiffe://fjord/replica/1
//! spiffe://fjord/node/nordic-1
//! spiffe://fjord/operator/ops-1
//! spiffe://fjord/institution/uio/admin/it-desk
//! ```
//!
//! Certificates from any CA (cert-manager, an institution's PKI) work the
//! same way as long as they carry such a URI: the identity is in the
//! certificate, never in a request field.

use std::fmt;

/// The trust domain of every Fjord identity.
pub const TRUST_DOMAIN: &str = "fjord";
const PREFIX: &str = "spiffe://fjord/";
/// Longest name in an identity (same limit as ids in the API).
pub const MAX_NAME_LEN: usize = 64;

/// What a certificate holder may do is decided by its role (see the
/// control plane's authorization table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A control-plane replica: peer RPCs (Raft, forwarding).
    Replica,
    /// A media node: register and heartbeat for itself.
    Node,
    /// An NREN operator: everything administrative.
    Operator,
    /// An institution's administrator: its own institution only.
    InstitutionAdmin,
    /// No certificate: participants joining with a meeting credential.
    Anonymous,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Replica,
        Role::Node,
        Role::Operator,
        Role::InstitutionAdmin,
        Role::Anonymous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Replica => "replica",
            Role::Node => "node",
            Role::Operator => "operator",
            Role::InstitutionAdmin => "institution_admin",
            Role::Anonymous => "anonymous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Replica { id: u64 },
    Node { id: String },
    Operator { name: String },
    InstitutionAdmin { institution: String, name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate is not valid X.509")]
    NotX509,
    #[error("certificate carries no spiffe://fjord/ identity (URI SAN)")]
    NoIdentity,
    #[error("certificate carries more than one spiffe://fjord/ identity")]
    SeveralIdentities,
    #[error("identity {uri:?} is not one of replica/ID, node/ID, operator/NAME, institution/NAME/admin/NAME")]
    BadPath { uri: String },
    #[error("name {name:?}: 1-64 of ASCII letters, digits, '-', '_', '.'")]
    BadName { name: String },
}

/// Names in identities: the same alphabet as ids in the API, so an identity
/// maps onto a node id or an institution name exactly.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName {
            name: name.chars().take(MAX_NAME_LEN + 1).collect(),
        })
    }
}

impl Identity {
    pub fn role(&self) -> Role {
        match self {
            Identity::Replica { .. } => Role::Replica,
            Identity::Node { .. } => Role::Node,
            Identity::Operator { .. } => Role::Operator,
            Identity::InstitutionAdmin { .. } => Role::InstitutionAdmin,
        }
    }

    pub fn uri(&self) -> String {
        format!("{PREFIX}{}", self.path())
    }

    fn path(&self) -> String {
        match self {
            Identity::Replica { id } => format!("replica/{id}"),
            Identity::Node { id } => format!("node/{id}"),
            Identity::Operator { name } => format!("operator/{name}"),
            Identity::InstitutionAdmin { institution, name } => {
                format!("institution/{institution}/admin/{name}")
            }
        }
    }

    /// A file-name-safe label: `replica-1`, `node-nordic-1`,
    /// `institution-uio-admin-it-desk`.
    pub fn file_stem(&self) -> String {
        self.path().replace('/', "-")
    }

    /// Checks the names (ids are positive).
    pub fn validate(&self) -> Result<(), IdentityError> {
        match self {
            Identity::Replica { id } if *id == 0 => {
                Err(IdentityError::BadName { name: "0".into() })
            }
            Identity::Replica { .. } => Ok(()),
            Identity::Node { id } => check_name(id),
            Identity::Operator { name } => check_name(name),
            Identity::InstitutionAdmin { institution, name } => {
                check_name(institution)?;
                check_name(name)
            }
        }
    }

    /// Parses `spiffe://fjord/...`.
    pub fn from_uri(uri: &str) -> Result<Identity, IdentityError> {
        let bad = || IdentityError::BadPath { uri: uri.into() };
        let path = uri.strip_prefix(PREFIX).ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').collect();
        let id = match parts.as_slice() {
            ["replica", id] => Identity::Replica {
                id: id
                    .parse()
                    .ok()
                    .filter(|v| *v > 0 && id.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(bad)?,
            },
            ["node", id] => Identity::Node { id: id.to_string() },
            ["operator", name] => Identity::Operator {
                name: name.to_string(),
            },
            ["institution", inst, "admin", name] => Identity::InstitutionAdmin {
                institution: inst.to_string(),
                name: name.to_string(),
            },
            _ => return Err(bad()),
        };
        id.validate()?;
        Ok(id)
    }

    /// The identity in a DER certificate: exactly one `spiffe://fjord/` URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::NotX509)?;
        let mut found = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    if uri.starts_with("spiffe://") {
                        if found.is_some() {
                            return Err(IdentityError::SeveralIdentities);
                        }
                        found = Some(*uri);
                    }
                }
            }
        }
        Identity::from_uri(found.ok_or(IdentityError::NoIdentity)?)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_identity_round_trips_through_its_uri() {
        for id in [
            Identity::Replica { id: 3 },
            Identity::Node {
                id: "nordic-1".into(),
            },
            Identity::Operator {
                name: "ops-1".into(),
            },
            Identity::InstitutionAdmin {
                institution: "uio".into(),
                name: "it-desk".into(),
            },
        ] {
            assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id);
        }
        assert_eq!(
            Identity::InstitutionAdmin {
                institution: "uio".into(),
                name: "it-desk".into()
            }
            .uri(),
            "spiffe://fjord/institution/uio/admin/it-desk"
        );
    }

    #[test]
    fn other_trust_domains_paths_and_names_are_refused() {
        for uri in [
            "spiffe://other/replica/1",
            "spiffe://fjord/replica/0",
            "spiffe://fjord/replica/+1",
            "spiffe://fjord/replica/x",
            "spiffe://fjord/node/",
            "spiffe://fjord/node/a/b",
            "spiffe://fjord/node/..",
            "spiffe://fjord/operator/a b",
            "spiffe://fjord/institution/uio/it-desk",
            "spiffe://fjord/admin/x",
            "https://fjord/replica/1",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri} accepted");
        }
    }
}
