//! Invariant 1: an acknowledged task is never lost while at least one member of its home set
//! survives. A crashed peer keeps its disk, so "survives" here means: its record is on the disk
//! of some member of its home set (the set it was given, or a repair of it).

use taskswarm_protocol::{SealedRecord, Table, TaskId};

use crate::Sim;

/// Every acknowledged task has its record on the disk of a member of its home set.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    let accepted: Vec<TaskId> = sim.accepted.iter().copied().collect();
    accepted.into_iter().try_for_each(|id| check_one(sim, id))
}

/// Task `id` (if acknowledged) has its record on the disk of a member of its home set: checked
/// when it is acknowledged and whenever a peer deletes a stored record of it.
pub fn check_one(sim: &mut Sim, id: TaskId) -> Result<(), String> {
    if !sim.accepted.contains(&id) {
        return Ok(());
    }
    if !sim.watch.home_of.contains_key(&id) {
        let home = sim.peers.iter().find_map(|p| {
            let bytes = p
                .disk
                .get(&(Table::Records, id))
                .or_else(|| p.disk.get(&(Table::Ended, id)))?;
            SealedRecord::from_bytes(bytes)
                .ok()
                .map(|r| r.record.home().to_vec())
        });
        match home {
            Some(home) => {
                sim.watch.home_of.insert(id, home);
            }
            None => return Err(format!("acknowledged task {id:?} is on no disk")),
        }
    }
    // A repair may have replaced members of the set first learned: a peer counts as a member if
    // the set first learned names it, or the copy it keeps does (a replaced member drops its copy
    // only once it has the repaired record, which names its successor).
    let first = &sim.watch.home_of[&id];
    let stored = sim.peers.iter().any(|peer| {
        let disk = &peer.disk;
        let row = disk
            .get(&(Table::Records, id))
            .or_else(|| disk.get(&(Table::Ended, id)));
        row.is_some_and(|bytes| {
            first.contains(&peer.me())
                || SealedRecord::from_bytes(bytes)
                    .is_ok_and(|r| r.record.home().contains(&peer.me()))
        })
    });
    if !stored {
        return Err(format!(
            "acknowledged task {id:?} is on no home member's disk"
        ));
    }
    Ok(())
}
