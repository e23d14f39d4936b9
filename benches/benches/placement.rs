//! Placement decisions per second at 10 to 10,000 nodes.
//!
//! Nodes are spread over the nordic and eu regions, a tenth are draining or
//! down, and each carries a few reservations, so every filter does real work.

use std::collections::BTreeSet;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fjord_control_plane::model::{Node, NodeState, NodeTable, Reservation, Reservations};
use fjord_control_plane::placement::{place, PlacementRequest, SplitMix64, Strategy, Trigger};

fn cluster(n: usize) -> NodeTable {
    let mut rng = SplitMix64::new(42);
    (0..n)
        .map(|i| {
            let mut reservations = Reservations::default();
            for m in 0..4u64 {
                let start = rng.next_u64() % 7_200_000;
                reservations.insert(
                    i as u64 * 10 + m,
                    Reservation {
                        start_ms: start,
                        end_ms: start + 3_600_000,
                        participants: 20 + (rng.next_u64() % 80) as u32,
                    },
                );
            }
            Node {
                id: format!("node-{i:05}"),
                region: if i % 3 == 0 {
                    "eu".into()
                } else {
                    "nordic".into()
                },
                address: "127.0.0.1:7201".into(),
                index: i as u32 + 1,
                capacity: 1000,
                state: match i % 10 {
                    0 => NodeState::Draining,
                    1 => NodeState::Down,
                    _ => NodeState::Ready,
                },
                last_heartbeat_ms: 0,
                load_participants: (rng.next_u64() % 300) as u32,
                registered_at_ms: 0,
                certificate: Vec::new(),
                reservations,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let allowed: BTreeSet<String> = ["eu", "nordic"].iter().map(|s| s.to_string()).collect();
    let mut group = c.benchmark_group("placement");
    for n in [10usize, 100, 1_000, 10_000] {
        let nodes = cluster(n);
        group.throughput(Throughput::Elements(1));
        for strategy in [Strategy::LeastLoaded, Strategy::PowerOfTwo] {
            group.bench_with_input(
                BenchmarkId::new(strategy.as_str(), n),
                &nodes,
                |b, nodes| {
                    let mut rng = SplitMix64::new(7);
                    b.iter(|| {
                        let req = PlacementRequest {
                            participants: 50,
                            start_ms: 1_000_000,
                            end_ms: 4_600_000,
                            now_ms: 1_000_000,
                            allowed_regions: &allowed,
                            home_region: "nordic",
                            strategy,
                            trigger: Trigger::Scheduled,
                            exclude: None,
                        };
                        place(&req, nodes, &mut rng)
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
