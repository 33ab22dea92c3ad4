//! Invariant 1: an acknowledged task is never lost while at least one member of its home set
//! survives. A crashed peer keeps its disk, so "survives" here means: its record is on the disk
//! of some member of its home set.

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
    let home = &sim.watch.home_of[&id];
    let stored = home.iter().any(|member| {
        sim.index_of(member).is_some_and(|i| {
            let disk = &sim.peers[i].disk;
            disk.contains_key(&(Table::Records, id)) || disk.contains_key(&(Table::Ended, id))
        })
    });
    if !stored {
        return Err(format!(
            "acknowledged task {id:?} is on no home member's disk"
        ));
    }
    Ok(())
}
