//! The in-memory harness: peers that share work through placement and stealing, on a simulated
//! network, deterministic per seed, with the invariants checked after every step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use taskswarm_protocol::TaskState;
use taskswarm_tests::{NetConfig, Sim, invariants};

/// One peer gets all the work before it has heard of anyone; the four idle peers steal it.
#[test]
fn idle_peers_steal_from_the_one_that_was_given_everything() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 5, 2, NetConfig::default());
        let ids = sim.submit_sleeps(0, 200, 20);
        let done = sim.run_until(60_000, |s| s.all_final(&ids));
        assert!(done, "seed {seed}: not every task ended by t={}", sim.now);
        for id in &ids {
            assert_eq!(
                sim.record(id).unwrap().state,
                TaskState::Completed,
                "seed {seed}"
            );
        }
        for (i, peer) in sim.peers.iter().enumerate() {
            assert!(
                !peer.executed.is_empty(),
                "seed {seed}: peer {i} executed nothing"
            );
        }
        let executed: usize = sim.peers.iter().map(|p| p.executed.len()).sum();
        assert_eq!(
            executed,
            ids.len(),
            "seed {seed}: a task ran twice without failures"
        );
        // 200 tasks × 20 ms over 10 slots is 400 ms of ideal makespan.
        assert!(sim.now < 600, "seed {seed}: makespan {} ms", sim.now);
        assert_eq!(
            sim.accepted.len(),
            ids.len(),
            "seed {seed}: every submission acknowledged"
        );
    }
}

/// Once peers know each other's loads, placement spreads a burst and stealing evens the rest.
#[test]
fn a_burst_after_gossip_is_spread_by_placement() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 5, 2, NetConfig::default());
        let everyone_known = sim.run_until(5_000, |s| {
            (0..5).all(|i| s.scheduler(i).unwrap().peers().count() == 4)
        });
        assert!(everyone_known, "seed {seed}");
        let start = sim.now;
        let ids = sim.submit_sleeps(0, 100, 50);
        assert!(sim.run_until(60_000, |s| s.all_final(&ids)), "seed {seed}");
        for (i, peer) in sim.peers.iter().enumerate() {
            assert!(
                peer.executed.len() >= 10,
                "seed {seed}: peer {i} ran {}",
                peer.executed.len()
            );
        }
        // 100 × 50 ms over 10 slots: 500 ms ideal.
        assert!(
            sim.now - start < 750,
            "seed {seed}: makespan {} ms",
            sim.now - start
        );
        // Every record is kept by three peers.
        for id in &ids {
            let keepers = (0..5)
                .filter(|&i| sim.scheduler(i).unwrap().task(id).is_some())
                .count();
            assert_eq!(keepers, 3, "seed {seed}");
        }
        invariants::ends::check(&sim).unwrap();
    }
}

/// The same seed gives the same run, event for event.
#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 4, 2, NetConfig::default());
        let ids = sim.submit_sleeps(0, 50, 10);
        sim.run_until(10_000, |s| s.all_final(&ids));
        (
            sim.now,
            sim.peers
                .iter()
                .map(|p| p.executed.clone())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}
