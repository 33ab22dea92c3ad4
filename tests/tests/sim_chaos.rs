//! The swarm under a hostile network, in the simulator: delays, loss, duplicates, reordering,
//! clocks that run fast or slow, a partition (both ways, or one way in a third of the seeds)
//! that lasts from a tenth of a lease TTL to ten of them, and peers that crash and come back,
//! while the invariants are checked after every step.
//!
//! - The quick set (part of `cargo test`): 50 seeds of 12 peers (three crashes and a partition
//!   each), and one seed of 1,000 peers (one crash and a partition).
//! - Any one seed: `SEED=n cargo test -p taskswarm-tests --test sim_chaos` (a failure names its
//!   seed; the same seed replays the same run, trace hash included).
//! - With `SIM_DEBUG=1`, a run whose tasks did not all end prints every peer's record of them.
//! - With `SIM_TRACE_TASK=<id>` (the hex a failure prints in `TaskId(…)`, and `--nocapture`),
//!   every message about that task, every change of a peer's record of it and every start of it
//!   is printed to stderr, with the crashes and cuts: how seeds 738 and 761 were traced.
//! - More seeds: `SEEDS=1000 cargo test --release -p taskswarm-tests --test sim_chaos --
//!   --nocapture`.
//! - The scale run: `SIM_PEERS=10000 cargo test --release -p taskswarm-tests --test sim_chaos --
//!   --ignored --nocapture` prints gossip bytes per peer per second and makespan over ideal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{Config, Millis, TaskId};
use taskswarm_tests::{NetConfig, Sim, invariants};

/// What one run measured.
#[derive(Debug)]
struct Run {
    trace: u64,
    makespan_ms: Millis,
    ideal_ms: f64,
    gossip_per_peer_s: f64,
}

/// The shape of one run.
#[derive(Clone, Copy, Debug)]
struct Shape {
    peers: usize,
    slots: u32,
    tasks: usize,
    task_ms: u64,
    /// Load reports by fanout to this many peers (0: broadcast).
    fanout: usize,
    /// How many peers crash (one at a time) and come back; with any, a partition follows.
    crashes: usize,
    /// How often peers report their load.
    report_ms: Millis,
}

fn seeds(default: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n as u64).collect()
}

fn run(seed: u64, shape: Shape) -> Run {
    let mut chaos = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a05);
    let net = NetConfig {
        tick_ms: if shape.peers > 2_000 { 20 } else { 10 },
        ..NetConfig::hostile()
    };
    let mut sim = Sim::with_config(seed, shape.peers, net, |_| Config {
        slots: shape.slots,
        report_fanout: shape.fanout,
        report_interval_ms: shape.report_ms,
        // Two lease TTLs: the crashed peers come back in time, and the majority side of a long
        // partition repairs the home sets that lost members to the other side, which hand their
        // copies over when the cut heals.
        repair_after_ms: 3_000,
        ..Config::default()
    });
    let n = shape.peers;
    // Let the peers hear of each other: with broadcast, everyone of everyone; with fanout, each
    // peer keeps a partial view, so wait until nearly every peer knows a few.
    let known = if shape.fanout == 0 {
        sim.run_until(10_000, |s| {
            (0..n).all(|i| s.scheduler(i).unwrap().peers().count() >= n - 1)
        })
    } else {
        // Checked every 100 ms of simulated time: a check after every step would cost more than
        // the run at 10,000 peers.
        let ready = |s: &Sim| {
            let knowing = (0..n)
                .filter(|&i| s.scheduler(i).unwrap().peers().count() >= 2.min(n - 1))
                .count();
            knowing * 100 >= n * 99
        };
        while !ready(&sim) && sim.now < 10_000 {
            let next = sim.now + 100;
            sim.run_until(next, |_| false);
        }
        ready(&sim)
    };
    if !known {
        let mut sizes: Vec<usize> = (0..n)
            .map(|i| sim.scheduler(i).unwrap().peers().count())
            .collect();
        sizes.sort();
        panic!(
            "seed {seed}: peers never heard of each other: view sizes min {} p1 {} median {} max {}",
            sizes[0],
            sizes[n / 100],
            sizes[n / 2],
            sizes[n - 1]
        );
    }

    // Submit through a few peers.
    let submitters = (n / 100).clamp(3, 100);
    let mut ids: Vec<TaskId> = Vec::with_capacity(shape.tasks);
    let started = sim.now;
    for k in 0..submitters {
        let by = (k * n / submitters) % n;
        let count = shape.tasks / submitters + usize::from(k < shape.tasks % submitters);
        ids.extend(sim.submit_sleeps(by, count, shape.task_ms));
    }

    // Chaos: one peer down at a time, crashed and restarted; then one partition.
    if shape.crashes > 0 {
        let mut at = sim.now;
        for _ in 0..shape.crashes {
            at += chaos.random_range(100..1_500);
            sim.run_until(at, |_| false);
            let victim = chaos.random_range(0..n);
            sim.crash(victim);
            at += chaos.random_range(100..2_000);
            sim.run_until(at, |_| false);
            sim.restart(victim);
        }
        let mut side: Vec<usize> = (0..n).filter(|_| chaos.random_bool(0.5)).collect();
        if side.is_empty() {
            side.push(0);
        }
        at += chaos.random_range(0..500);
        sim.run_until(at, |_| false);
        // One seed in three cuts one way only (the side not heard still hears the other).
        if chaos.random_bool(1.0 / 3.0) {
            let other: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
            sim.cut_one_way(&side, &other);
        } else {
            sim.partition(&[side]);
        }
        // From a tenth of a lease TTL to ten of them: short cuts that heal before anyone takes
        // anyone for dead, and long ones in which the side with a majority of a task's home set
        // takes it over.
        let ttl = u64::from(Config::default().lease_ttl_ms);
        at += chaos.random_range(ttl / 10..10 * ttl);
        sim.run_until(at, |_| false);
        sim.heal();
    }

    let deadline = sim.now + 120_000;
    // Counting first keeps the check cheap while most tasks have ended (every task here is one
    // of `ids`).
    let all_ended = |s: &Sim| s.finals.len() >= ids.len() && s.all_final(&ids);
    let settled = if shape.peers > 2_000 {
        // Long runs say how far they are, every simulated second.
        let began = std::time::Instant::now();
        loop {
            let next = (sim.now + 1_000).min(deadline);
            if sim.run_until(next, all_ended) || sim.now >= deadline {
                break all_ended(&sim);
            }
            let done = ids.iter().filter(|id| sim.finals.contains(id)).count();
            println!(
                "  t={:.0} s: {done}/{} tasks ended; {:.0} s of real time",
                (sim.now - started) as f64 / 1000.0,
                ids.len(),
                began.elapsed().as_secs_f64()
            );
        }
    } else {
        sim.run_until(deadline, all_ended)
    };
    let makespan_ms = sim.now - started;
    if let Err(stuck) = invariants::ends::check(&sim) {
        if std::env::var("SIM_DEBUG").is_ok() {
            for id in sim.accepted.iter().filter(|id| !sim.all_final(&[**id])) {
                for (i, p) in sim.peers.iter().enumerate() {
                    let Some(s) = p.scheduler.as_ref() else {
                        println!("peer {i} down");
                        continue;
                    };
                    if let Some(r) = s.task(id) {
                        println!(
                            "peer {i} record: {} history {:?}",
                            sim.show_record(r),
                            r.history
                                .iter()
                                .map(|t| format!("{}@{:x}:{}", t.state.as_str(), t.epoch, t.note))
                                .collect::<Vec<_>>()
                        );
                    }
                    println!(
                        "peer {i}: knows {} peers, queued {}, running {}, holds it: {:?}",
                        s.peers().count(),
                        s.queued(),
                        s.running(),
                        s.held().find(|(t, _)| t == id)
                    );
                    println!("  counters {:?}", s.counters());
                }
            }
        }
        panic!(
            "seed {seed}: {stuck}\nreplay: SEED={seed} cargo test -p taskswarm-tests --test sim_chaos"
        );
    }
    assert!(
        settled,
        "seed {seed}: not every task ended; replay: SEED={seed} cargo test -p taskswarm-tests --test sim_chaos"
    );
    // The invariants were checked after every step on what changed; check every record once more.
    if let Err(broken) = invariants::check_safety(&mut sim) {
        panic!("seed {seed}: at the end: {broken}");
    }
    let seconds = sim.now as f64 / 1000.0;
    Run {
        trace: sim.trace_hash(),
        makespan_ms,
        ideal_ms: shape.tasks as f64 * shape.task_ms as f64 / (n as f64 * f64::from(shape.slots)),
        gossip_per_peer_s: sim.gossip_bytes as f64 / n as f64 / seconds,
    }
}

const SMALL: Shape = Shape {
    peers: 12,
    slots: 2,
    tasks: 120,
    task_ms: 50,
    fanout: 0,
    crashes: 3,
    report_ms: 200,
};

#[test]
fn a_hostile_network_with_crashes_and_a_partition_loses_nothing() {
    // Every seed runs; the failing ones are listed at the end, each with its first complaint.
    let mut failed: Vec<(u64, String)> = Vec::new();
    let seeds = seeds(50);
    for &seed in &seeds {
        // Every other seed reports load by fanout instead of broadcast.
        let shape = Shape {
            fanout: if seed % 2 == 1 { 4 } else { 0 },
            ..SMALL
        };
        match std::panic::catch_unwind(|| run(seed, shape)) {
            Ok(run) => {
                if std::env::var("SEED").is_ok() {
                    println!("seed {seed}: {run:?}");
                }
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push((seed, why.chars().take(300).collect()));
            }
        }
    }
    println!(
        "{} of {} seeds passed",
        seeds.len() - failed.len(),
        seeds.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed (replay one with SEED=n): {failed:#?}",
        failed.len(),
        seeds.len()
    );
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let first = run(seed, SMALL);
    let again = run(seed, SMALL);
    assert_eq!(first.trace, again.trace, "seed {seed} did not replay");
    assert_eq!(first.makespan_ms, again.makespan_ms);
}

#[test]
fn a_thousand_peers_on_a_hostile_network_with_crashes_lose_nothing() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let shape = Shape {
        peers: 1_000,
        slots: 2,
        tasks: 2_000,
        task_ms: 200,
        fanout: 8,
        crashes: 1,
        report_ms: 500,
    };
    let run = run(seed, shape);
    println!(
        "1,000 peers, seed {seed}: makespan {:.2} s, ideal {:.2} s, ratio {:.2}; gossip {:.0} B/s per peer",
        run.makespan_ms as f64 / 1000.0,
        run.ideal_ms / 1000.0,
        run.makespan_ms as f64 / run.ideal_ms,
        run.gossip_per_peer_s
    );
}

/// The scale run (`SIM_PEERS`, default 10,000): a hostile network without crashes, 4 tasks of 2 s
/// per peer, load reported every 500 ms by fanout; prints gossip bytes per peer per second and
/// makespan over ideal.
#[test]
#[ignore = "the scale run takes minutes; see docs/benchmarks.md"]
fn scale_run() {
    let peers = std::env::var("SIM_PEERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let shape = Shape {
        peers,
        slots: 2,
        tasks: peers * 4,
        task_ms: 2_000,
        fanout: 8,
        crashes: 0,
        report_ms: 500,
    };
    let began = std::time::Instant::now();
    let run = run(seed, shape);
    println!(
        "{peers} peers, seed {seed}: {} tasks of {} ms; makespan {:.2} s, ideal {:.2} s, makespan/ideal {:.3}; gossip {:.0} B/s per peer; {:.0} s of real time",
        shape.tasks,
        shape.task_ms,
        run.makespan_ms as f64 / 1000.0,
        run.ideal_ms / 1000.0,
        run.makespan_ms as f64 / run.ideal_ms,
        run.gossip_per_peer_s,
        began.elapsed().as_secs_f64()
    );
}
