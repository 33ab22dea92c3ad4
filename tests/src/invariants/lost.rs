//! Invariant 1: an acknowledged task is never lost while at least one member of its home set
//! survives. A crashed peer keeps its disk, so "survives" here means: its record is on the disk
//! of some member of its home set.

use taskswarm_protocol::{Table, TaskRecord};

use crate::Sim;

/// Every acknowledged task has its record on the disk of a member of its home set.
pub fn check(sim: &mut Sim) -> Result<(), String> {
    for id in &sim.accepted {
        if !sim.watch.home_of.contains_key(id) {
            // Learn the home set once, from any stored copy (a home set never changes).
            let home = sim.peers.iter().find_map(|p| {
                let bytes = p.disk.get(&(Table::Records, *id))?;
                TaskRecord::from_bytes(bytes)
                    .ok()
                    .map(|r| r.home().to_vec())
            });
            match home {
                Some(home) => {
                    sim.watch.home_of.insert(*id, home);
                }
                None => return Err(format!("acknowledged task {id:?} is on no disk")),
            }
        }
        let home = &sim.watch.home_of[id];
        let stored = sim
            .peers
            .iter()
            .any(|p| home.contains(&p.me()) && p.disk.contains_key(&(Table::Records, *id)));
        if !stored {
            return Err(format!(
                "acknowledged task {id:?} is on no home member's disk"
            ));
        }
    }
    Ok(())
}
