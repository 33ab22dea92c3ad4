//! Partitions in the simulator: cuts that last many lease TTLs, one-way cuts, and a three-way
//! split, while the invariants are checked after every step. A task's primary acts only while it
//! hears a majority of the task's home set, and a holder keeps running a task only while it
//! does; so the minority side of a cut stops deciding before the majority side (which waits a
//! whole TTL of silence) takes over, no task ends with two results, and every task ends once the
//! network heals. Every run names its seed; `SEED=n cargo test -p taskswarm-tests --test
//! sim_partition` replays one, and `SEEDS=n` runs the first n of each test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{Config, Millis, TaskId, home};
use taskswarm_tests::{NetConfig, Sim, invariants, seeds};

fn ttl() -> Millis {
    Millis::from(Config::default().lease_ttl_ms)
}

/// `n` peers of 2 slots that know each other.
fn peers(seed: u64, n: usize) -> Sim {
    let net = NetConfig {
        max_delay_ms: 10,
        ..NetConfig::default()
    };
    let keep_ended = std::env::var("SIM_DEBUG").is_ok();
    let mut sim = Sim::with_config(seed, n, net, |_| Config {
        slots: 2,
        ended_in_memory_ms: if keep_ended {
            1_000_000
        } else {
            Config::default().ended_in_memory_ms
        },
        ..Config::default()
    });
    assert!(sim.run_until(3_000, |s| {
        (0..n).all(|i| s.scheduler(i).unwrap().peers().count() == n - 1)
    }));
    sim
}

/// How a cut is made.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Both ways between the two sides.
    Both,
    /// Only what the first side sends is lost.
    OneWay,
}

/// Submits `count` tasks of `ms` through each of `by`, and waits until they are acknowledged.
fn submit(sim: &mut Sim, seed: u64, by: &[usize], count: usize, ms: u64) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for &i in by {
        ids.extend(sim.submit_sleeps(i, count, ms));
    }
    let by_then = sim.now + 1_000;
    assert!(
        sim.run_until(by_then, |s| ids.iter().all(|id| s.accepted.contains(id))),
        "seed {seed}: submissions not acknowledged"
    );
    ids
}

/// After the run: every task ended, every live member agrees on how, and no safety invariant
/// broke at the end either.
fn ends_and_agrees(sim: &mut Sim, seed: u64, ids: &[TaskId], what: &str) {
    let deadline = sim.now + 60_000;
    let ended = sim.run_until(deadline, |s| s.all_final(ids));
    if let Err(stuck) = invariants::ends::check(sim) {
        panic!("seed {seed} ({what}): {stuck}");
    }
    assert!(ended, "seed {seed} ({what}): tasks did not end");
    sim.run_until(sim.now + 5_000, |_| false);
    if let Err(behind) = invariants::ends::check_agreed(sim) {
        panic!("seed {seed} ({what}): {behind}");
    }
    if let Err(broken) = invariants::check_safety(sim) {
        panic!("seed {seed} ({what}): at the end: {broken}");
    }
}

/// One attempt, as the simulator saw it start.
#[derive(Debug)]
struct Start {
    at: Millis,
    peer: usize,
}

/// The tasks that ran more than once, with each attempt.
fn ran_twice(sim: &Sim) -> BTreeMap<TaskId, Vec<Start>> {
    let mut starts: BTreeMap<TaskId, Vec<Start>> = BTreeMap::new();
    for (at, peer, task, _) in &sim.start_log {
        starts.entry(*task).or_default().push(Start {
            at: *at,
            peer: *peer,
        });
    }
    starts.retain(|_, s| s.len() > 1);
    starts
}

/// One run: 5 peers, 60 tasks of 300 ms through peer 0 and 20 through peer 4, then a cut between
/// a random two and the other three for 5-20 s (several TTLs), with 10 more tasks submitted on
/// each side during the cut; then the network heals. A task that ran twice must have started
/// first before the cut was detected (on the minority side, whose holder is cut off before the
/// majority re-claims), or, across a one-way cut, on the side not heard.
fn partition_run(seed: u64, cut: Cut) {
    let mut chaos = ChaCha8Rng::seed_from_u64(seed ^ 0x9a27);
    let mut sim = peers(seed, 5);
    let mut ids = submit(&mut sim, seed, &[0], 60, 300);
    ids.extend(submit(&mut sim, seed, &[4], 20, 300));
    let mut order: Vec<usize> = (0..5).collect();
    for i in (1..5).rev() {
        order.swap(i, chaos.random_range(0..=i));
    }
    let (minority, majority) = (order[..2].to_vec(), order[2..].to_vec());
    let cut_at = sim.now + chaos.random_range(0..600);
    let lasts = chaos.random_range(5_000..20_000);
    let what = format!("{cut:?} cut {minority:?} | {majority:?} at {cut_at} for {lasts} ms");
    sim.run_until(cut_at, |_| false);
    match cut {
        Cut::Both => sim.partition(std::slice::from_ref(&minority)),
        Cut::OneWay => sim.cut_one_way(&minority, &majority),
    }
    sim.run_until(cut_at + 2 * ttl(), |_| false);
    // Work submitted on each side during the cut: its home set is chosen among the peers its
    // origin takes for alive. It is acknowledged once its home set stored it: on the side it was
    // submitted on during a cut both ways, or after the heal if a member is across a one-way cut.
    let mut during = sim.submit_sleeps(minority[0], 10, 100);
    during.extend(sim.submit_sleeps(majority[0], 10, 100));
    ids.extend(&during);
    sim.run_until(cut_at + lasts, |_| false);
    sim.heal();
    let by_then = sim.now + 10_000;
    assert!(
        sim.run_until(by_then, |s| during.iter().all(|id| s.accepted.contains(id))),
        "seed {seed} ({what}): submissions made during the cut not acknowledged after the heal"
    );
    ends_and_agrees(&mut sim, seed, &ids, &what);
    let detected = cut_at + ttl();
    if std::env::var("SIM_DEBUG").is_ok() {
        for (task, starts) in ran_twice(&sim) {
            println!("{task:?}: {starts:?}");
            for (i, p) in sim.peers.iter().enumerate() {
                if let Some(r) = p.scheduler.as_ref().and_then(|s| s.task(&task)) {
                    println!(
                        "  peer {i} v{}: {:?}",
                        r.version,
                        r.history
                            .iter()
                            .map(|t| format!(
                                "{}@{}:{}:{}",
                                t.state.as_str(),
                                t.epoch >> 32,
                                t.note,
                                t.at_wall_ms % 100_000
                            ))
                            .collect::<Vec<_>>()
                    );
                }
            }
            for (i, p) in sim.peers.iter().enumerate() {
                println!(
                    "  peer {i} counters {:?}",
                    p.scheduler.as_ref().map(|s| s.counters().clone())
                );
            }
        }
    }
    // A holder starts a task only if a majority of its home set answered a start check sent
    // less than `start_check_ms` ago: on the cut-off side, starts stop that long after the cut
    // (give or take a message in flight each way).
    let starts_stop = cut_at + Config::default().start_check_ms + 2 * 10;
    for (task, starts) in ran_twice(&sim) {
        // Across a one-way cut, the side that is not heard does not know it until something it
        // sends fails: a holder there runs on what it held, while the other side re-claims it
        // (and, once the cut heals, what it ran there, if its result has not reached the other
        // side yet). Those aside, only the last attempt may start after starts stopped.
        let held_at_cut = |s: &Start| matches!(cut, Cut::OneWay) && minority.contains(&s.peer);
        let others: Vec<&Start> = starts.iter().filter(|s| !held_at_cut(s)).collect();
        let late = others.iter().rev().skip(1).find(|s| s.at > starts_stop);
        assert!(
            late.is_none(),
            "seed {seed} ({what}): {task:?} ran twice, and began more than {} ms after the cut at {cut_at} (detected at {detected}): {starts:?}; {:?}",
            starts_stop - cut_at,
            sim.record(&task).map(|r| r
                .history
                .iter()
                .map(|t| format!("{}@{}:{}", t.state.as_str(), t.epoch >> 32, t.note))
                .collect::<Vec<_>>()),
        );
    }
}

/// 30 seeds of a cut both ways that lasts 5-20 s (3-13 lease TTLs).
#[test]
fn a_long_partition_leaves_one_side_deciding_and_every_task_ends_once_healed() {
    for seed in seeds(0..30) {
        partition_run(seed, Cut::Both);
    }
}

/// 30 seeds of a one-way cut: the minority hears the majority, which does not hear it.
#[test]
fn a_one_way_cut_leaves_one_side_deciding_and_every_task_ends_once_healed() {
    for seed in seeds(0..30) {
        partition_run(seed, Cut::OneWay);
    }
}

/// A three-way split of 5 peers ({0, 1} | {2, 3} | {4}) for 10 s: a task whose home set has no
/// majority on any side (one member on each) is neither placed, re-claimed nor recorded by
/// anyone while the split lasts; it waits, and ends once the network heals.
#[test]
fn a_task_whose_home_set_is_split_three_ways_waits_and_ends_once_healed() {
    for seed in seeds(0..10) {
        let mut sim = peers(seed, 5);
        let ids = submit(&mut sim, seed, &[0], 60, 300);
        let side = |i: usize| match i {
            0 | 1 => 0,
            2 | 3 => 1,
            _ => 2,
        };
        let split_three_ways: Vec<TaskId> = ids
            .iter()
            .filter(|id| {
                let record = sim.record(id).unwrap();
                let mut on_side = [0usize; 3];
                for m in record.home() {
                    on_side[side(sim.index_of(m).unwrap())] += 1;
                }
                on_side
                    .iter()
                    .all(|n| *n < home::quorum(record.home().len()))
            })
            .copied()
            .collect();
        let cut_at = sim.now + 200;
        sim.run_until(cut_at, |_| false);
        sim.partition(&[vec![0, 1], vec![2, 3], vec![4]]);
        let epochs_at_cut: Vec<Option<u64>> = split_three_ways
            .iter()
            .map(|id| sim.record(id).map(|r| r.epoch))
            .collect();
        sim.run_until(cut_at + 10_000, |_| false);
        // A holder may start what it had queued until it finds itself cut off (2/3 of a TTL);
        // after that nothing of these tasks runs, and no one re-claims them.
        let cut_off_by = cut_at + ttl() * 2 / 3 + 50;
        for (at, peer, task, epoch) in &sim.start_log {
            assert!(
                *at < cut_off_by || !split_three_ways.contains(task),
                "seed {seed}: {task:?}, split three ways, started at {at} on peer {peer} under epoch {epoch:#x} during the split"
            );
        }
        for (id, before) in split_three_ways.iter().zip(epochs_at_cut) {
            let after = sim.record(id).map(|r| r.epoch);
            assert!(
                after <= before || sim.record(id).is_some_and(|r| r.state.is_final()),
                "seed {seed}: {id:?}, split three ways, was placed again during the split ({before:?} -> {after:?})"
            );
        }
        sim.heal();
        ends_and_agrees(&mut sim, seed, &ids, "three-way split");
        println!(
            "seed {seed}: {} of {} tasks had their home set split three ways; all ended once healed",
            split_three_ways.len(),
            ids.len()
        );
    }
}
