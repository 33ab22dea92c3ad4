//! Invariant 3: for a task, epochs only grow, and at most one holder is valid per epoch.
//!
//! Checked on every record (no record names two holders for one epoch) and on every attempt any
//! peer started (no two peers ever ran one epoch of a task, even when no record heard of one of
//! them: a primary that died before its grant was replicated).

use taskswarm_protocol::TaskId;

use crate::Sim;

/// No peer's record of a task goes back to an older epoch, and no two records name different
/// holders for the same epoch of a task.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    super::every_record(sim, check_one)
}

/// Peer `i`'s record of task `id` (if it has one): checked whenever it changes.
pub fn check_one(sim: &mut Sim, i: usize, id: TaskId) -> Result<(), String> {
    let Some(record) = sim.peers[i].scheduler.as_ref().and_then(|s| s.task(&id)) else {
        return Ok(());
    };
    let seen = sim.watch.epoch_seen.entry((i, id)).or_insert(0);
    if record.epoch < *seen {
        return Err(format!(
            "peer {i}'s record of {id:?} went back from epoch {seen} to {}",
            record.epoch
        ));
    }
    *seen = record.epoch;
    if let Some(holder) = record.holder {
        let valid = sim
            .watch
            .holder_of
            .entry((id, record.epoch))
            .or_insert(holder);
        if *valid != holder {
            return Err(format!(
                "{id:?} epoch {} has two holders: {valid:?} and {holder:?}",
                record.epoch
            ));
        }
    }
    Ok(())
}

/// Peer `i` started an attempt of `id` under `epoch`: no other peer ever ran that epoch.
pub fn check_start(sim: &mut Sim, i: usize, id: TaskId, epoch: u64) -> Result<(), String> {
    let first = *sim.watch.ran_under.entry((id, epoch)).or_insert(i);
    if first != i {
        return Err(format!(
            "{id:?} epoch {} was run by two holders: peers {first} and {i}",
            taskswarm_protocol::lease::show_epoch(epoch)
        ));
    }
    Ok(())
}
