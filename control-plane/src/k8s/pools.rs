//! The operator's pools file (`fjord operator --pools`, written by the
//! chart from its values): a JSON list of media pools and their limits.

use serde::Deserialize;

use super::decide::PoolSpec;

/// The largest pools file read (a chart's values hold a handful of pools).
pub const MAX_POOLS_FILE_BYTES: usize = 64 * 1024;
/// The most pools one release runs.
pub const MAX_POOLS: usize = 64;

/// Why a pools file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolsError {
    #[error("pools file of {bytes} bytes is over the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("pools file is not a JSON list of pools: {detail}")]
    Syntax { detail: String },
    #[error("more than {max} pools")]
    TooMany { max: usize },
    #[error("pool name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("pool {name} is listed twice")]
    Duplicate { name: String },
    #[error("pool {name}: min_replicas must not exceed max_replicas (at least 1)")]
    BadReplicas { name: String },
    #[error("pool {name}: node_capacity above 0, headroom_pct below 100")]
    BadCapacity { name: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolEntry {
    name: String,
    min_replicas: u32,
    max_replicas: u32,
    node_capacity: u32,
    #[serde(default = "default_headroom")]
    headroom_pct: u32,
}

fn default_headroom() -> u32 {
    20
}

/// Parses and checks a pools file: `[{"name", "min_replicas",
/// "max_replicas", "node_capacity", "headroom_pct"?}, ...]`.
pub fn parse_pools(text: &str) -> Result<Vec<PoolSpec>, PoolsError> {
    if text.len() > MAX_POOLS_FILE_BYTES {
        return Err(PoolsError::TooLarge {
            bytes: text.len(),
            max: MAX_POOLS_FILE_BYTES,
        });
    }
    let entries: Vec<PoolEntry> = serde_json::from_str(text).map_err(|e| PoolsError::Syntax {
        detail: e.to_string().chars().take(200).collect(),
    })?;
    if entries.len() > MAX_POOLS {
        return Err(PoolsError::TooMany { max: MAX_POOLS });
    }
    let mut out: Vec<PoolSpec> = Vec::with_capacity(entries.len());
    for p in entries {
        if let Err(e) = fjord_common::validate::name(&p.name) {
            return Err(PoolsError::BadName {
                name: p.name.chars().take(64).collect(),
                reason: e.to_string(),
            });
        }
        if out.iter().any(|q| q.name == p.name) {
            return Err(PoolsError::Duplicate { name: p.name });
        }
        if p.min_replicas > p.max_replicas || p.max_replicas == 0 {
            return Err(PoolsError::BadReplicas { name: p.name });
        }
        if p.node_capacity == 0 || p.headroom_pct >= 100 {
            return Err(PoolsError::BadCapacity { name: p.name });
        }
        out.push(PoolSpec {
            name: p.name,
            min_replicas: p.min_replicas,
            max_replicas: p.max_replicas,
            node_capacity: p.node_capacity,
            headroom_pct: p.headroom_pct,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_pools_file_parses_with_the_default_headroom() {
        let pools = parse_pools(
            r#"[{"name":"nordic-a","min_replicas":1,"max_replicas":4,"node_capacity":200},
                {"name":"eu","min_replicas":0,"max_replicas":2,"node_capacity":100,"headroom_pct":35}]"#,
        )
        .unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].headroom_pct, 20);
        assert_eq!(pools[1].headroom_pct, 35);
        assert_eq!(pools[1].max_replicas, 2);
    }

    #[test]
    fn bad_pools_files_are_refused_with_the_reason() {
        let cases = [
            ("{}", "Syntax"),
            (
                r#"[{"name":"a","min_replicas":1,"max_replicas":1,"node_capacity":1,"x":1}]"#,
                "Syntax",
            ),
            (
                r#"[{"name":"a b","min_replicas":1,"max_replicas":1,"node_capacity":1}]"#,
                "BadName",
            ),
            (
                r#"[{"name":"a","min_replicas":2,"max_replicas":1,"node_capacity":1}]"#,
                "BadReplicas",
            ),
            (
                r#"[{"name":"a","min_replicas":0,"max_replicas":0,"node_capacity":1}]"#,
                "BadReplicas",
            ),
            (
                r#"[{"name":"a","min_replicas":0,"max_replicas":1,"node_capacity":0}]"#,
                "BadCapacity",
            ),
            (
                r#"[{"name":"a","min_replicas":0,"max_replicas":1,"node_capacity":1,"headroom_pct":100}]"#,
                "BadCapacity",
            ),
            (
                r#"[{"name":"a","min_replicas":0,"max_replicas":1,"node_capacity":1},{"name":"a","min_replicas":0,"max_replicas":1,"node_capacity":1}]"#,
                "Duplicate",
            ),
        ];
        for (text, want) in cases {
            let err = parse_pools(text).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{text}: {err:?}");
        }
        let big = " ".repeat(MAX_POOLS_FILE_BYTES + 1);
        assert!(matches!(
            parse_pools(&big),
            Err(PoolsError::TooLarge { .. })
        ));
    }
}
