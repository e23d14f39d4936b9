//! SLA evaluation and dashboard cost, as JSON.
//!
//! Builds an SLA book with `--institutions` institutions (default 1,000),
//! each with 30 days of hourly join, latency and quality events and six
//! hours of per-minute ones, plus per-region probe results; then times
//! (a) one evaluation of every institution's four SLOs against the four
//! burn-rate window pairs (what the leader's tick commits), and (b)
//! rendering one institution's dashboard page (report, SVG chart, HTML).
//!
//! Usage: sla_bench [--institutions N] [--rounds R]

use std::time::{Duration, Instant};

use clap::Parser;
use fjord_control_plane::sla::report::{institution_report, RegionNodes};
use fjord_control_plane::sla::{
    InstitutionScope, Objectives, SlaBook, Sli, SliEvent, HOUR_MS, MINUTE_MS,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    institutions: usize,
    #[arg(long, default_value_t = 50)]
    rounds: usize,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    fjord_benches::percentile_ms(sorted, p)
}

fn main() {
    let args = Args::parse();
    let now = 1_795_000_000_000u64 / HOUR_MS * HOUR_MS + 30 * MINUTE_MS;
    let start = now - 30 * 24 * HOUR_MS;
    let mut book = SlaBook::default();
    let scopes: Vec<InstitutionScope> = (0..args.institutions)
        .map(|i| InstitutionScope {
            name: format!("inst-{i:04}"),
            regions: if i % 2 == 0 {
                vec!["nordic".into()]
            } else {
                vec!["eu".into(), "nordic".into()]
            },
            objectives: Objectives::default(),
        })
        .collect();
    let built = Instant::now();
    let mut events = 0u64;
    let mut record = |book: &mut SlaBook, e: SliEvent| {
        events += 1;
        book.record(&e);
    };
    for region in ["eu", "nordic"] {
        let mut t = start;
        while t < now {
            record(
                &mut book,
                SliEvent {
                    at_ms: t,
                    institution: None,
                    region: region.into(),
                    node: Some(format!("{region}-1")),
                    sli: Sli::Availability,
                    total: 2,
                    bad: u64::from(t.is_multiple_of(7 * HOUR_MS)),
                },
            );
            t += MINUTE_MS * 30;
        }
    }
    for (i, scope) in scopes.iter().enumerate() {
        let region = scope.regions[0].clone();
        let mut t = start;
        while t < now {
            // Hourly before the last six hours, per minute within them.
            let step = if now - t > 6 * HOUR_MS {
                HOUR_MS
            } else {
                MINUTE_MS
            };
            for (sli, total, bad) in [
                (
                    Sli::JoinSuccess,
                    20,
                    u64::from((t / step + i as u64).is_multiple_of(97)),
                ),
                (Sli::JoinLatency, 20, 0),
                (
                    Sli::MediaQuality,
                    60,
                    u64::from((t / step).is_multiple_of(13)),
                ),
            ] {
                record(
                    &mut book,
                    SliEvent {
                        at_ms: t,
                        institution: Some(scope.name.clone()),
                        region: region.clone(),
                        node: Some(format!("{region}-1")),
                        sli,
                        total,
                        bad,
                    },
                );
            }
            t += step;
        }
    }
    let build_s = built.elapsed().as_secs_f64();
    // Warm up (and prune once, as the leader's first tick would).
    book.evaluate(&scopes, now);
    let mut eval = Vec::with_capacity(args.rounds);
    for r in 0..args.rounds {
        let t0 = Instant::now();
        let changes = book.evaluate(&scopes, now + r as u64);
        eval.push(t0.elapsed());
        std::hint::black_box(changes);
    }
    eval.sort();
    let regions = vec![
        RegionNodes {
            region: "eu".into(),
            ready: 3,
            draining: 0,
            down: 0,
        },
        RegionNodes {
            region: "nordic".into(),
            ready: 4,
            draining: 1,
            down: 0,
        },
    ];
    let one = &scopes[1];
    let mut render = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.rounds.max(20) * 4 {
        let t0 = Instant::now();
        let report = institution_report(&book, one, &regions, now);
        let html =
            fjord_control_plane::api::http::dashboard::institution_page_html(&report, "token")
                .into_string();
        render.push(t0.elapsed());
        bytes = html.len();
    }
    render.sort();
    let out = serde_json::json!({
        "institutions": args.institutions,
        "events_recorded": events,
        "buckets": book.buckets(),
        "build_s": build_s,
        "evaluate_all_ms": {"p50": pct(&eval, 0.50), "p99": pct(&eval, 0.99), "max": eval.last().map(|d| d.as_secs_f64() * 1000.0)},
        "evaluate_per_institution_us": pct(&eval, 0.50) * 1000.0 / args.institutions as f64,
        "dashboard_page_ms": {"p50": pct(&render, 0.50), "p99": pct(&render, 0.99)},
        "dashboard_page_bytes": bytes,
        "firing_alerts": book.alerts.firing().count(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
