//! Invariant 4: a result is recorded once, and a completion from a stale or forged lease is never
//! recorded. Every final record of a task, at every peer and at every step, shows the same result;
//! a completed result comes from the peer that held the lease at the epoch it ran under.

use taskswarm_protocol::{TaskId, TaskState};

use crate::Sim;

/// Every final record of every task, at every live peer, agrees with the first one seen.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    super::every_record(sim, check_one)
}

/// Peer `i`'s record of task `id`, if final: checked whenever it changes.
pub fn check_one(sim: &mut Sim, i: usize, id: TaskId) -> Result<(), String> {
    let Some(record) = sim.peers[i].scheduler.as_ref().and_then(|s| s.task(&id)) else {
        return Ok(());
    };
    if !record.state.is_final() {
        return Ok(());
    }
    let epoch = record.attempts.last().map_or(record.epoch, |a| a.epoch);
    let result = (record.state.as_str().to_string(), epoch, record.executed_by);
    let first = sim
        .watch
        .result_of
        .entry(id)
        .or_insert_with(|| result.clone());
    if *first != result {
        let first = first.clone();
        let histories: Vec<String> = sim
            .peers
            .iter()
            .enumerate()
            .filter_map(|(j, p)| {
                let r = p.scheduler.as_ref()?.task(&id)?;
                let steps: Vec<String> = r
                    .history
                    .iter()
                    .map(|t| format!("{}@{}:{}", t.state.as_str(), t.epoch >> 32, t.note))
                    .collect();
                Some(format!("peer {j}: {}", steps.join(" > ")))
            })
            .collect();
        return Err(format!(
            "{id:?} has two results: {first:?} and, at peer {i}, {result:?}; home {:?}; {}",
            sim.watch
                .home_of
                .get(&id)
                .map(|h| h.iter().filter_map(|k| sim.index_of(k)).collect::<Vec<_>>()),
            histories.join("; ")
        ));
    }
    if record.state == TaskState::Completed {
        let holder = sim.watch.holder_of.get(&(id, epoch));
        if holder.is_some_and(|h| Some(*h) != record.executed_by) {
            return Err(format!(
                "{id:?} recorded a result from {:?} under epoch {epoch}, held by {holder:?}",
                record.executed_by
            ));
        }
    }
    Ok(())
}
