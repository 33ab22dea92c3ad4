//! Invariant 4: a result is recorded once, and a completion from a stale or forged lease is never
//! recorded.
//!
//! A result counts once a majority of the task's home set holds it: only then is anyone told of
//! it (the holder that ran it, a client waiting, the task's dependents). A primary writes the
//! end to its own store first, so for a moment one peer holds an end no other has; if it then
//! crashes, or finds itself on the minority side of a cut, that end may give way to the one the
//! others record. So the check is that no two different results are ever each held by a
//! majority of the home set (checked after every step, over the live peers' records), and (with
//! [`super::ends::check_agreed`]) that every member keeps the same one once the run settles. And
//! any final record's completed result comes from the peer that held the lease at the epoch it
//! ran under.

use taskswarm_protocol::{PeerKey, TaskId, TaskRecord, TaskState, home};

use crate::Sim;

/// No two results of a task are each held by a majority of its home set.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    super::every_record(sim, check_one)
}

/// How a final record says its task ended: (state, attempt epoch, who ran it).
pub fn ending_of(record: &TaskRecord) -> (String, u64, Option<PeerKey>) {
    let epoch = record.attempts.last().map_or(record.epoch, |a| a.epoch);
    (record.state.as_str().to_string(), epoch, record.executed_by)
}

/// Peer `i`'s record of task `id`, if final: checked whenever it changes.
pub fn check_one(sim: &mut Sim, i: usize, id: TaskId) -> Result<(), String> {
    let Some(record) = sim.peers[i].scheduler.as_ref().and_then(|s| s.task(&id)) else {
        return Ok(());
    };
    if !record.state.is_final() {
        return Ok(());
    }
    let result = ending_of(record);
    let epoch = result.1;
    let held_by_majority = {
        let members = record.home();
        let holders = members
            .iter()
            .filter_map(|m| sim.index_of(m))
            .filter(|j| {
                sim.peers[*j]
                    .scheduler
                    .as_ref()
                    .and_then(|s| s.task(&id))
                    .is_some_and(|r| r.state.is_final() && ending_of(r) == result)
            })
            .count();
        holders >= home::quorum(members.len())
    };
    if !held_by_majority {
        return check_holder(sim, id, record.state, epoch, record.executed_by);
    }
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
    let (state, by) = (record.state, record.executed_by);
    check_holder(sim, id, state, epoch, by)
}

/// A completed result comes from the peer that held the lease at the epoch it ran under.
fn check_holder(
    sim: &Sim,
    id: TaskId,
    state: TaskState,
    epoch: u64,
    executed_by: Option<PeerKey>,
) -> Result<(), String> {
    if state == TaskState::Completed {
        let holder = sim.watch.holder_of.get(&(id, epoch));
        if holder.is_some_and(|h| Some(*h) != executed_by) {
            return Err(format!(
                "{id:?} recorded a result from {executed_by:?} under epoch {epoch}, held by {holder:?}"
            ));
        }
    }
    Ok(())
}
