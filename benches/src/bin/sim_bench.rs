//! Runs seeds of the control plane's deterministic simulation
//! (`fjord_control_plane::sim`) and prints JSON: seeds per minute, the
//! faults and writes the seeds exercised, and every violation with the
//! command that replays its seed alone.
//!
//!   cargo run --release -p fjord-benches --bin sim_bench -- --seeds 1000
//!   cargo run --release -p fjord-benches --bin sim_bench -- --seed 42
//!   cargo run --release -p fjord-benches --bin sim_bench -- --seeds 200 --inject forget-vote
//!
//! Seeds alternate between 3 and 5 replicas unless `--replicas` is given.
//! Exits 1 when any seed found a violation.

use std::time::Instant;

use clap::Parser;
use serde_json::json;

use fjord_control_plane::sim::{replay_command, run_seed, InjectedBug, SimConfig};

#[derive(Parser)]
struct Args {
    /// How many seeds to run (from --first-seed on).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Run this one seed only.
    #[arg(long)]
    seed: Option<u64>,
    /// 3 or 5 (default: alternate, odd seeds 3, even seeds 5).
    #[arg(long)]
    replicas: Option<usize>,
    /// Steps of writes and faults per seed.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Writes only, no faults.
    #[arg(long)]
    no_faults: bool,
    /// Break the system on purpose to show the checks catch it:
    /// forget-vote or lose-log-tail.
    #[arg(long)]
    inject: Option<String>,
    /// Print every step of the simulation to stderr (for one seed).
    #[arg(long)]
    trace: bool,
}

fn main() {
    let args = Args::parse();
    let bug = match args.inject.as_deref() {
        None => None,
        Some(name) => match InjectedBug::parse(name) {
            Some(b) => Some(b),
            None => {
                eprintln!("sim_bench: --inject takes forget-vote or lose-log-tail");
                std::process::exit(2);
            }
        },
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    let started = Instant::now();
    let mut failing = Vec::new();
    let mut totals = json!({});
    let mut sums = [0u64; 13];
    for (n, &seed) in seeds.iter().enumerate() {
        let config = SimConfig {
            replicas: args.replicas.unwrap_or(if seed % 2 == 1 { 3 } else { 5 }),
            steps: args.steps,
            faults: !args.no_faults,
            bug,
            trace: args.trace,
            ..Default::default()
        };
        if let Err(e) = config.validate() {
            eprintln!("sim_bench: {e}");
            std::process::exit(2);
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let report = run_seed(seed, &config, dir.path());
        for (sum, v) in sums.iter_mut().zip([
            report.writes as u64,
            report.acknowledged as u64,
            report.crashes as u64,
            report.restarts as u64,
            report.partitions as u64,
            report.clock_jumps as u64,
            report.membership_changes as u64,
            report.elections_started as u64,
            report.simulated_ms,
            report.pauses as u64,
            report.usage_events as u64,
            report.usage_events_acked,
            report.replicas_added as u64,
        ]) {
            *sum += v;
        }
        if !report.violations.is_empty() {
            eprintln!(
                "seed {seed}: {} violation(s): {}\n  replay: {}",
                report.violations.len(),
                report.violations.join("; "),
                replay_command(seed, &config)
            );
            failing.push(json!({
                "seed": seed,
                "violations": report.violations,
                "replay": replay_command(seed, &config),
            }));
        }
        if seeds.len() == 1 {
            totals = serde_json::to_value(&report).expect("a report serialises");
        }
        if (n + 1) % 50 == 0 {
            eprintln!(
                "{} of {} seeds, {} with violations, {:.0} s",
                n + 1,
                seeds.len(),
                failing.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let out = json!({
        "seeds": seeds.len(),
        "steps_per_seed": args.steps,
        "seconds": (secs * 10.0).round() / 10.0,
        "seeds_per_minute": ((seeds.len() as f64) * 60.0 / secs).round(),
        "writes": sums[0],
        "acknowledged": sums[1],
        "crashes": sums[2],
        "restarts": sums[3],
        "partitions": sums[4],
        "clock_jumps": sums[5],
        "membership_changes": sums[6],
        "elections_started": sums[7],
        "simulated_seconds": sums[8] / 1000,
        "pauses": sums[9],
        "usage_events": sums[10],
        "usage_events_acked": sums[11],
        "replicas_added": sums[12],
        "injected_bug": args.inject,
        "seeds_with_violations": failing.len(),
        "failing": failing,
        "report": totals,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    if !failing.is_empty() {
        std::process::exit(1);
    }
}
