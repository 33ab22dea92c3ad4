//! The design's invariants, one per file, checked against a [`Sim`] after every step.
//!
//! 1. [`lost`]: an acknowledged task is never lost while a member of its home set survives.
//! 2. [`ends`]: every acknowledged task ends (checked when a run is over), and once a run has
//!    settled, every live member of its home set keeps it ended ([`ends::check_agreed`]).
//! 3. [`epochs`]: a task's epochs only grow, and at most one holder is valid per epoch.
//! 4. [`results`]: a result is recorded once (held by a majority of the home set); never from a
//!    stale or forged lease.
//!
//! The fifth (bad messages never panic a peer) is checked by the protocol's own tests.

pub mod ends;
pub mod epochs;
pub mod lost;
pub mod results;

use std::collections::BTreeMap;

use taskswarm_protocol::{PeerKey, TaskId};

use crate::Sim;

/// What the checks remember between steps.
#[derive(Debug, Default)]
pub struct Watch {
    /// The highest epoch each peer's record of each task has shown.
    pub epoch_seen: BTreeMap<(usize, TaskId), u64>,
    /// The holder each epoch of each task was given, as any record showed it.
    pub holder_of: BTreeMap<(TaskId, u64), PeerKey>,
    /// The peer that ran each epoch of each task: every holder the swarm ever had, whether or
    /// not any record heard of it.
    pub ran_under: BTreeMap<(TaskId, u64), usize>,
    /// The first final result a majority of the home set held, for each task: (state, attempt
    /// epoch, who ran it).
    pub result_of: BTreeMap<TaskId, (String, u64, Option<PeerKey>)>,
    /// Each acknowledged task's home set, once learned.
    pub home_of: BTreeMap<TaskId, Vec<PeerKey>>,
}

/// Checks invariants 1, 3 and 4.
pub fn check_safety(sim: &mut Sim) -> Result<(), String> {
    lost::check(sim)?;
    epochs::check(sim)?;
    results::check(sim)
}

/// Runs a per-record check on every record of every live peer.
fn every_record(
    sim: &mut Sim,
    check_one: fn(&mut Sim, usize, TaskId) -> Result<(), String>,
) -> Result<(), String> {
    for i in 0..sim.peers.len() {
        let ids: Vec<TaskId> = match sim.peers[i].scheduler.as_ref() {
            Some(s) => s.tasks().map(|r| r.id()).collect(),
            None => continue,
        };
        for id in ids {
            check_one(sim, i, id)?;
        }
    }
    Ok(())
}

/// Checks the safety invariants for what changed in the last step only: the records a peer
/// changed, the tasks newly acknowledged, the stored records a peer deleted. Equivalent to
/// [`check_safety`] after every step (a record that did not change cannot break an invariant it
/// kept), and cheap enough for a thousand peers.
pub fn check_step(sim: &mut Sim) -> Result<(), String> {
    for (i, id) in std::mem::take(&mut sim.changed) {
        epochs::check_one(sim, i, id)?;
        results::check_one(sim, i, id)?;
    }
    for id in std::mem::take(&mut sim.unstored) {
        lost::check_one(sim, id)?;
    }
    for (i, id, epoch) in std::mem::take(&mut sim.started) {
        epochs::check_start(sim, i, id, epoch)?;
    }
    Ok(())
}
