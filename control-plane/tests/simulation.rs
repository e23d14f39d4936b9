//! The deterministic simulation (`fjord_control_plane::sim`), the quick
//! set CI runs on every change: seeds of 3 and 5 replicas with faults, 0
//! violations allowed; a seed replays exactly; a deliberately broken
//! replica (one that forgets its vote, or loses acknowledged log entries,
//! when it restarts) is caught. `sim_bench` runs the long set.

use fjord_control_plane::sim::{replay_command, run_seed, InjectedBug, SeedReport, SimConfig};

fn seed(seed: u64, config: &SimConfig) -> SeedReport {
    let dir = tempfile::tempdir().unwrap();
    run_seed(seed, config, dir.path())
}

fn quick_seeds() -> u64 {
    std::env::var("FJORD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

#[test]
fn seeds_with_faults_find_no_violation() {
    let mut failures = Vec::new();
    let mut acknowledged = 0;
    let mut crashes = 0;
    let mut partitions = 0;
    for s in 1..=quick_seeds() {
        let config = SimConfig {
            replicas: if s % 2 == 1 { 3 } else { 5 },
            steps: 120,
            ..Default::default()
        };
        let report = seed(s, &config);
        acknowledged += report.acknowledged;
        crashes += report.crashes;
        partitions += report.partitions;
        if !report.violations.is_empty() {
            failures.push(format!(
                "seed {s}: {:?}\n  replay: {}",
                report.violations,
                replay_command(s, &config)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The seeds did something: writes committed through crashes and
    // partitions.
    assert!(
        acknowledged > 100,
        "only {acknowledged} writes acknowledged"
    );
    assert!(
        crashes > 0 && partitions > 0,
        "{crashes} crashes, {partitions} partitions"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig {
        steps: 80,
        ..Default::default()
    };
    let a = seed(7, &config);
    let b = seed(7, &config);
    assert_eq!(a, b);
    assert!(a.acknowledged > 0, "{a:?}");
}

/// The first seed (of `budget`) on which the checks catch `bug`.
fn caught(bug: InjectedBug, budget: u64) -> Option<(u64, Vec<String>)> {
    (1..=budget).find_map(|s| {
        let config = SimConfig {
            replicas: 3,
            steps: 150,
            bug: Some(bug),
            ..Default::default()
        };
        let r = seed(s, &config);
        (!r.violations.is_empty()).then_some((s, r.violations))
    })
}

#[test]
fn a_replica_that_forgets_its_vote_is_caught() {
    let (seed, violations) = caught(InjectedBug::ForgetVoteOnRestart, 60)
        .expect("no seed of 60 caught a forgotten vote");
    assert!(
        violations.iter().any(|v| v.contains("vote went back")),
        "seed {seed}: {violations:?}"
    );
}

#[test]
fn a_replica_that_loses_acknowledged_entries_is_caught() {
    let found = caught(InjectedBug::LoseLogTailOnRestart, 60);
    assert!(found.is_some(), "no seed of 60 caught lost log entries");
}
