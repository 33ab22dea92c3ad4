//! Invariant 3: for a task, epochs only grow, and at most one holder is valid per epoch.

use crate::Sim;

/// No peer's record of a task goes back to an older epoch, and no two records name different
/// holders for the same epoch of a task.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    for (i, peer) in sim.peers.iter().enumerate() {
        let Some(scheduler) = peer.scheduler.as_ref() else {
            continue;
        };
        for record in scheduler.tasks() {
            let id = record.id();
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
        }
    }
    Ok(())
}
