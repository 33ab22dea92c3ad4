//! Invariant 4: a result is recorded once, and a completion from a stale or forged lease is never
//! recorded. Every final record of a task, at every peer and at every step, shows the same result;
//! a completed result comes from the peer that held the lease at the epoch it ran under.

use taskswarm_protocol::TaskState;

use crate::Sim;

/// Final records agree with the first final record seen, and completed ones name a valid lease.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    for (i, peer) in sim.peers.iter().enumerate() {
        let Some(scheduler) = peer.scheduler.as_ref() else {
            continue;
        };
        for record in scheduler.tasks().filter(|r| r.state.is_final()) {
            let id = record.id();
            let epoch = record.attempts.last().map_or(record.epoch, |a| a.epoch);
            let result = (record.state.as_str().to_string(), epoch, record.executed_by);
            let first = sim
                .watch
                .result_of
                .entry(id)
                .or_insert_with(|| result.clone());
            if *first != result {
                return Err(format!(
                    "{id:?} has two results: {first:?} and, at peer {i}, {result:?}"
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
        }
    }
    Ok(())
}
