//! Clients of peers that keep no record of their tasks, in the simulator: they wait for tasks and
//! cancel them through any peer, on a hostile network, while a member crashes and comes back. The
//! peer asks the swarm, learns the home set, asks it again until the task ends, and sends a cancel
//! there; the invariants are checked after every step.
//!
//! Every wait is answered with the task's end (never left hanging, never a wrong "unknown"), and
//! every cancelled task ends cancelled, or completed if it finished first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use taskswarm_protocol::TaskState;
use taskswarm_tests::{NetConfig, Sim};

#[test]
fn waits_and_cancels_through_peers_that_keep_no_record_are_answered() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    for seed in 0..seeds {
        let mut sim = Sim::new(seed, 8, 2, NetConfig::hostile());
        assert!(
            sim.run_until(5_000, |s| (0..8).all(|i| s
                .scheduler(i)
                .unwrap()
                .peers()
                .count()
                == 7)),
            "seed {seed}: the peers never met"
        );
        let ids = sim.submit_sleeps(0, 40, 200);
        sim.run_until(sim.now + 100, |_| false);
        // For each task, a client of a peer outside its home set waits for it; every fourth is
        // cancelled by a client of another such peer. (Peer 3 crashes below: a client of a
        // crashed peer loses its connection with it, so none is a client's peer.)
        let mut watches = BTreeMap::new();
        let mut cancels = BTreeMap::new();
        for (n, id) in ids.iter().enumerate() {
            let home = sim.record(id).unwrap().home().to_vec();
            let outside: Vec<usize> = (0..8)
                .filter(|&i| i != 3 && !home.contains(&sim.peers[i].me()))
                .collect();
            let by = outside[n % outside.len()];
            watches.insert(*id, (by, sim.watch(by, *id).unwrap()));
            if n % 4 == 0 {
                let by = outside[(n + 1) % outside.len()];
                cancels.insert(*id, (by, sim.cancel(by, *id, "ops").unwrap()));
            }
        }
        // A member crashes meanwhile and comes back.
        sim.run_until(sim.now + 300, |_| false);
        sim.crash(3);
        sim.run_until(sim.now + 2_000, |_| false);
        sim.restart(3);
        let all_answered = sim.run_until(sim.now + 60_000, |s| {
            watches
                .iter()
                .all(|(_, (by, ticket))| s.answers.contains_key(&(*by, *ticket)))
        });
        assert!(all_answered, "seed {seed}: a wait was never answered");
        for (id, (by, ticket)) in &watches {
            let state = sim.answers[&(*by, *ticket)];
            assert!(
                state.is_some_and(TaskState::is_final),
                "seed {seed}: the wait for {id:?} ended with {state:?}"
            );
            let expected = if cancels.contains_key(id) {
                [TaskState::Cancelled, TaskState::Completed]
            } else {
                [TaskState::Completed, TaskState::Completed]
            };
            assert!(
                expected.contains(&state.unwrap()),
                "seed {seed}: {id:?} ended {state:?}"
            );
        }
        let cancelled = cancels
            .keys()
            .filter(|id| sim.record(id).unwrap().state == TaskState::Cancelled)
            .count();
        assert!(cancelled > 0, "seed {seed}: no cancel took effect");
        for (id, (by, ticket)) in &cancels {
            if let Some(answer) = sim.answers.get(&(*by, *ticket)) {
                assert!(
                    answer.is_some(),
                    "seed {seed}: {id:?} was said to be unknown"
                );
            }
        }
    }
}

/// A swarm-wide list, asked of any peer page by page while a member is down, holds every task
/// once: each record is kept by several members, so one silent peer loses none.
#[test]
fn lists_asked_of_any_peer_hold_every_task_once_while_a_member_is_down() {
    use taskswarm_protocol::listing::ListFilter;
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for seed in 0..seeds {
        let mut sim = Sim::new(seed, 6, 2, NetConfig::default());
        assert!(
            sim.run_until(5_000, |s| (0..6).all(|i| s
                .scheduler(i)
                .unwrap()
                .peers()
                .count()
                == 5)),
            "seed {seed}: the peers never met"
        );
        let mut ids = sim.submit_sleeps(0, 30, 50);
        ids.extend(sim.submit_sleeps(4, 30, 50));
        assert!(
            sim.run_until(sim.now + 60_000, |s| ids
                .iter()
                .all(|id| s.record(id).is_some_and(|r| r.state.is_final()))),
            "seed {seed}: the tasks never ended"
        );
        sim.crash(2);
        for by in [0, 1, 5] {
            let mut listed = Vec::new();
            let mut filter = ListFilter {
                state: Some(TaskState::Completed),
                ..ListFilter::default()
            };
            for _ in 0..20 {
                let ticket = sim.list(by, filter.clone(), 8).unwrap();
                assert!(
                    sim.run_until(sim.now + 10_000, |s| s.lists.contains_key(&(by, ticket))),
                    "seed {seed}: peer {by}'s list was never answered"
                );
                let page = sim.lists.remove(&(by, ticket)).unwrap();
                assert!(page.entries.len() <= 8);
                listed.extend(page.entries.iter().map(|e| e.sealed.record.id()));
                match page.next {
                    Some(next) => filter.after = Some(next),
                    None => break,
                }
            }
            let unique: std::collections::BTreeSet<_> = listed.iter().copied().collect();
            assert_eq!(
                unique.len(),
                listed.len(),
                "seed {seed}: a task listed twice"
            );
            let expected: std::collections::BTreeSet<_> = ids.iter().copied().collect();
            assert_eq!(unique, expected, "seed {seed}: peer {by}'s list");
        }
    }
}
