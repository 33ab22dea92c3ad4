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
