//! Invariant 2: every acknowledged task ends (completed, failed after its retries, or cancelled):
//! none is stuck. A liveness property, so it is checked when a run has had time to settle.

use crate::Sim;

/// Every acknowledged task has a final record at some live peer.
pub fn check(sim: &Sim) -> Result<(), String> {
    let stuck: Vec<String> = sim
        .accepted
        .iter()
        .filter(|id| !sim.record(id).is_some_and(|r| r.state.is_final()))
        .map(|id| {
            let state = sim.record(id).map(|r| {
                format!(
                    "{} epoch {} holder {:?}",
                    r.state.as_str(),
                    r.epoch,
                    r.holder
                )
            });
            format!("{id:?}: {state:?}")
        })
        .collect();
    if stuck.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} acknowledged tasks never ended: {:?}",
            stuck.len(),
            &stuck[..stuck.len().min(5)]
        ))
    }
}

/// Once a run has settled, every live member of an ended task's home set that keeps its record
/// (in memory or on disk) keeps it ended, and ended the same way: none is left behind with an
/// older version, which would leave a client waiting there unanswered, and which it would act on
/// if it led the task later, and none keeps an end the others gave up.
pub fn check_agreed(sim: &Sim) -> Result<(), String> {
    let mut behind = Vec::new();
    for id in &sim.accepted {
        if !sim.record(id).is_some_and(|r| r.state.is_final()) {
            continue;
        }
        for (i, peer) in sim.peers.iter().enumerate() {
            let Some(scheduler) = peer.scheduler.as_ref() else {
                continue;
            };
            if let Some(record) = scheduler.task(id).filter(|r| !r.state.is_final()) {
                behind.push(format!(
                    "peer {i}: {id:?} {} at version {}",
                    record.state.as_str(),
                    record.version
                ));
            }
            if let (Some(record), Some(agreed)) = (scheduler.task(id), sim.record(id))
                && record.state.is_final()
                && super::results::ending_of(record) != super::results::ending_of(&agreed)
            {
                behind.push(format!(
                    "peer {i}: {id:?} ended {:?}, another member {:?}",
                    super::results::ending_of(record),
                    super::results::ending_of(&agreed)
                ));
            }
        }
    }
    if behind.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} records left behind their task's end: {:?}",
            behind.len(),
            &behind[..behind.len().min(5)]
        ))
    }
}
