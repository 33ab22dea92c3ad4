//! Home-set repair in the simulator: a member lost for good is replaced in every home set it was
//! in, within the grace period and a scan, so each task has its full set of copies again; a
//! member that returns after it was replaced hands its copies over. The invariants are checked
//! after every step. `SEED=n` replays one seed, `SEEDS=n` runs the first n.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{Config, Millis, PeerKey, SealedRecord, Table, TaskId};
use taskswarm_tests::{NetConfig, Sim, invariants, seeds};

const PEERS: usize = 5;
const REPLICAS: usize = 3;
const GRACE: Millis = 5_000;
const TTL: Millis = 1_500;

/// 5 peers of `slots` slots with a grace period of 5 s that know each other, and `each` tasks of
/// `ms` ms submitted to each peer, acknowledged.
fn swarm(seed: u64, slots: u32, each: usize, ms: u64) -> (Sim, Vec<TaskId>) {
    let mut sim = Sim::with_config(seed, PEERS, NetConfig::default(), |_| Config {
        slots,
        repair_after_ms: GRACE,
        ..Config::default()
    });
    assert!(sim.run_until(3_000, |s| {
        (0..PEERS).all(|i| s.scheduler(i).unwrap().peers().count() == PEERS - 1)
    }));
    let mut ids = Vec::new();
    for by in 0..PEERS {
        ids.extend(sim.submit_sleeps(by, each, ms));
    }
    let by = sim.now + 500;
    assert!(
        sim.run_until(by, |s| ids.iter().all(|id| s.accepted.contains(id))),
        "seed {seed}: submissions not acknowledged"
    );
    (sim, ids)
}

/// The peers that keep `id` on disk, each with the home set its copy names.
fn copies(sim: &Sim, id: &TaskId) -> Vec<(usize, Vec<PeerKey>, u64)> {
    sim.peers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_up())
        .filter_map(|(i, p)| {
            let row = p
                .disk
                .get(&(Table::Ended, *id))
                .or_else(|| p.disk.get(&(Table::Records, *id)))?;
            let sealed = SealedRecord::from_bytes(row).ok()?;
            Some((i, sealed.record.home().to_vec(), sealed.record.version))
        })
        .collect()
}

/// Whether every task has its full set of copies on live peers, none naming `dead`: every member
/// of the newest record's set keeps that version on disk.
fn repaired(sim: &Sim, ids: &[TaskId], dead: &PeerKey) -> Result<(), String> {
    for id in ids {
        let Some(newest) = sim.record(id) else {
            return Err(format!("{id:?} is kept by no live peer"));
        };
        let home = newest.home();
        if home.contains(dead) || home.len() != REPLICAS {
            return Err(format!("{id:?} still has home {home:?}"));
        }
        let copies = copies(sim, id);
        for member in home {
            let kept = copies.iter().any(|(i, h, version)| {
                sim.peers[*i].me() == *member && h == home && *version == newest.version
            });
            if !kept {
                return Err(format!(
                    "{id:?}: member {:?} lacks version {}",
                    sim.index_of(member),
                    newest.version
                ));
            }
        }
    }
    Ok(())
}

/// One peer dies for good at a random moment while the tasks run; within the grace period, a
/// lease TTL (to be taken for dead) and a second of scans, every task (ended or not) has three
/// live copies again, and nothing was lost or recorded twice.
fn lost_for_good(seed: u64) {
    let mut chaos = ChaCha8Rng::seed_from_u64(seed ^ 0x7e9a);
    let (mut sim, ids) = swarm(seed, 2, 40, 50);
    let dying = chaos.random_range(0..PEERS);
    sim.run_until(sim.now + chaos.random_range(0..1_000), |_| false);
    sim.crash(dying);
    let dead = sim.peers[dying].me();
    let crashed_at = sim.now;
    let settled = sim.run_until(sim.now + 30_000, |s| s.all_final(&ids));
    assert!(settled, "seed {seed}: tasks did not all end");
    let deadline = crashed_at + TTL + GRACE + 1_000;
    let done = sim.run_until(deadline, |s| repaired(s, &ids, &dead).is_ok());
    if !done {
        panic!(
            "seed {seed} (peer {dying} died at {crashed_at}): not repaired by {deadline}: {}",
            repaired(&sim, &ids, &dead).unwrap_err()
        );
    }
    println!(
        "seed {seed}: peer {dying} died at {crashed_at} ms; every home set repaired {} ms later",
        sim.now - crashed_at
    );
    if let Err(broken) = invariants::check_safety(&mut sim) {
        panic!("seed {seed}: at the end: {broken}");
    }
}

#[test]
fn a_member_lost_for_good_is_replaced_in_every_home_set_within_the_grace_period() {
    for seed in seeds(0..20) {
        lost_for_good(seed);
    }
}

/// One peer is away longer than the grace period while tasks wait for a slot (so their records
/// are unfinished), and comes back: it hands over the copies it was replaced in (keeps none of a
/// task whose set no longer names it), and every task still ends once.
fn returns_after_replacement(seed: u64) {
    // Long tasks, so that many are still unfinished when the away peer comes back.
    let (mut sim, ids) = swarm(seed, 1, 12, 1_000);
    let away = (seed as usize) % PEERS;
    sim.run_until(sim.now + 300, |_| false);
    sim.crash(away);
    sim.run_until(sim.now + TTL + GRACE + 1_500, |_| false);
    sim.restart(away);
    let me = sim.peers[away].me();
    let handed_over = sim.run_until(sim.now + 5_000, |s| {
        s.peers[away].disk.keys().all(|(table, id)| {
            *table != Table::Records
                || s.record(id)
                    .is_none_or(|newest| newest.home().contains(&me))
        })
    });
    assert!(
        handed_over,
        "seed {seed}: peer {away} keeps copies of tasks it was replaced in"
    );
    let settled = sim.run_until(sim.now + 60_000, |s| s.all_final(&ids));
    if !settled && std::env::var("SIM_DEBUG").is_ok() {
        sim.print_unended(&ids);
    }
    assert!(settled, "seed {seed}: tasks did not all end");
    if let Err(broken) = invariants::check_safety(&mut sim) {
        panic!("seed {seed}: at the end: {broken}");
    }
}

#[test]
fn a_member_back_after_its_replacement_hands_its_copies_over() {
    for seed in seeds(0..20) {
        returns_after_replacement(seed);
    }
}
