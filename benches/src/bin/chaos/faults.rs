//! The faults a schedule injects and how each is undone.

use super::*;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FaultCounts {
    pub(crate) replica_kills: u64,
    pub(crate) replica_pauses: u64,
    pub(crate) replica_isolations: u64,
    pub(crate) one_way_cuts: u64,
    pub(crate) node_kills: u64,
    pub(crate) node_pauses: u64,
    pub(crate) loss: u64,
    pub(crate) delay: u64,
}

/// What undoing a fault takes, due at a time.
pub(crate) enum Undo {
    RestartReplica(usize),
    Resume(ProcRef),
    RestartNode(usize),
    /// The host, and what its network suffers.
    Heal(String, &'static str),
}

pub(crate) fn inject(
    world: &mut World,
    rng: &mut SplitMix64,
    pending: &mut Vec<(Instant, Undo)>,
    counts: &mut FaultCounts,
) {
    let now = Instant::now();
    let hold = |rng: &mut SplitMix64, min: u64, span: u64| {
        now + Duration::from_millis(min + rng.below(span as usize) as u64)
    };
    // At most two replicas faulty at once (a majority may still be lost
    // for a while: writes then fail, which is allowed).
    let replicas_faulty = pending
        .iter()
        .filter(|(_, u)| {
            matches!(
                u,
                Undo::RestartReplica(_) | Undo::Resume(ProcRef::Replica(_))
            ) || matches!(u, Undo::Heal(h, _) if h.starts_with("cp"))
        })
        .count();
    let busy = |pending: &Vec<(Instant, Undo)>, host: &str| {
        pending.iter().any(|(_, u)| match u {
            Undo::RestartReplica(i) | Undo::Resume(ProcRef::Replica(i)) => REPLICAS[*i] == host,
            Undo::RestartNode(i) | Undo::Resume(ProcRef::Node(i)) => NODES[*i].0 == host,
            Undo::Heal(h, _) => h == host,
        })
    };
    let before = pending.len();
    let kind = rng.below(8);
    let r = rng.below(REPLICAS.len());
    let n = rng.below(NODES.len());
    match kind {
        0..=3 if replicas_faulty < 2 && !busy(pending, REPLICAS[r]) => match kind {
            0 => {
                world.replicas[r].kill9();
                counts.replica_kills += 1;
                pending.push((hold(rng, 300, 2000), Undo::RestartReplica(r)));
            }
            1 => {
                world.replicas[r].signal(libc::SIGSTOP);
                world.replicas[r].stopped = true;
                counts.replica_pauses += 1;
                pending.push((hold(rng, 300, 2500), Undo::Resume(ProcRef::Replica(r))));
            }
            2 => {
                for other in REPLICAS.iter().filter(|h| **h != REPLICAS[r]) {
                    let _ = world.fabric.cut(REPLICAS[r], other, true);
                }
                counts.replica_isolations += 1;
                let undo = Undo::Heal(REPLICAS[r].into(), "isolated (cut both ways)");
                pending.push((hold(rng, 500, 3000), undo));
            }
            _ => {
                let other = REPLICAS[(r + 1 + rng.below(2)) % REPLICAS.len()];
                let _ = world.fabric.cut(REPLICAS[r], other, false);
                counts.one_way_cuts += 1;
                let undo = Undo::Heal(REPLICAS[r].into(), "one-way cut");
                pending.push((hold(rng, 500, 3000), undo));
            }
        },
        4 if !busy(pending, NODES[n].0) => {
            world.nodes[n].kill9();
            counts.node_kills += 1;
            pending.push((hold(rng, 500, 2500), Undo::RestartNode(n)));
        }
        5 if !busy(pending, NODES[n].0) => {
            // Shorter than the node lease: a pause, not a death.
            world.nodes[n].signal(libc::SIGSTOP);
            world.nodes[n].stopped = true;
            counts.node_pauses += 1;
            pending.push((hold(rng, 200, 1300), Undo::Resume(ProcRef::Node(n))));
        }
        6 | 7 => {
            let hosts: Vec<&str> = REPLICAS
                .iter()
                .copied()
                .chain(NODES.iter().map(|(h, _)| *h))
                .collect();
            let h = hosts[rng.below(hosts.len())];
            if busy(pending, h) {
                return;
            }
            let what = if kind == 6 {
                let _ = world.fabric.lose(h, 5 + rng.below(25) as u32);
                counts.loss += 1;
                "packet loss"
            } else {
                // 10–150 ms, each packet by half to one and a half times
                // that: packets overtake each other.
                let ms = 10 + rng.below(141) as u64;
                let share = 20 + rng.below(81) as u32;
                match world.fabric.delay(h, ms, share, rng.next_u64()) {
                    Ok(()) => counts.delay += 1,
                    Err(e) => world.event(&format!("delay on {h} not set: {e}")),
                }
                "packet delay and reordering"
            };
            pending.push((hold(rng, 500, 3000), Undo::Heal(h.into(), what)));
        }
        _ => {}
    }
    if let Some((until, undo)) = pending.get(before) {
        world.event(&format!(
            "fault on {} for {} ms: {}",
            undo.host(),
            until.saturating_duration_since(now).as_millis(),
            undo.fault()
        ));
    }
}

impl Undo {
    pub(crate) fn host(&self) -> &str {
        match self {
            Undo::RestartReplica(i) | Undo::Resume(ProcRef::Replica(i)) => REPLICAS[*i],
            Undo::RestartNode(i) | Undo::Resume(ProcRef::Node(i)) => NODES[*i].0,
            Undo::Heal(h, _) => h,
        }
    }

    pub(crate) fn fault(&self) -> &'static str {
        match self {
            Undo::RestartReplica(_) | Undo::RestartNode(_) => "killed (SIGKILL)",
            Undo::Resume(_) => "paused (SIGSTOP)",
            Undo::Heal(_, what) => what,
        }
    }
}

pub(crate) fn apply_undo(world: &mut World, undo: Undo) {
    world.event(&format!("undo on {}: {}", undo.host(), undo.fault()));
    match undo {
        Undo::RestartReplica(i) => {
            world.check_alive();
            world.replicas[i].kill9();
            world.replicas[i] = world.spawn_replica(i);
        }
        Undo::RestartNode(i) => {
            world.nodes[i].kill9();
            world.nodes[i] = world.spawn_node(i);
        }
        Undo::Resume(p) => {
            let m = world.managed(p);
            m.signal(libc::SIGCONT);
            m.stopped = false;
        }
        Undo::Heal(h, _) => {
            let _ = world.fabric.heal(&h);
        }
    }
}
