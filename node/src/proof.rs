//! Proofs: a task's record with the seal of the member that wrote it, checked, and its chain told
//! for people.
//!
//! `GET /v1/tasks/{id}/proof` answers the sealed record as it travels between peers (hex of its
//! canonical bytes) with the chain a peer read from it. `taskswarm task verify ID` does not take
//! the peer's word: it decodes the bytes and checks them itself ([`check`]), the submitter's
//! signature on the spec and the home member's seal on the record, then prints the chain from the
//! submission to the result. One flipped bit anywhere fails the check.

use serde::{Deserialize, Serialize};
use taskswarm_protocol::lease::show_epoch;
use taskswarm_protocol::{SealedRecord, WireError};

use crate::view::{TaskView, peer_name};

/// What `GET /v1/tasks/{id}/proof` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofView {
    /// The task.
    pub id: String,
    /// The sealed record's canonical bytes, as hex: what a reader checks.
    pub sealed: String,
    /// The chain as the answering peer read it (check `sealed` rather than trust this).
    pub chain: Vec<String>,
}

/// Why a proof does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The bytes are not a sealed record.
    #[error("not a sealed record: {0}")]
    Decode(String),
    /// A signature or the seal does not verify, or names the wrong peer.
    #[error("the proof does not hold: {0}")]
    Invalid(#[from] WireError),
    /// The record is of another task than the one asked for.
    #[error("the record is of task {found}, not {asked}")]
    OtherTask {
        /// The task asked for.
        asked: String,
        /// The task the record is of.
        found: String,
    },
}

/// The proof of a sealed record, as the API answers it.
pub fn view(sealed: &SealedRecord) -> ProofView {
    ProofView {
        id: sealed.record.id().to_string(),
        sealed: hex::encode(sealed.to_bytes()),
        chain: chain(sealed),
    }
}

/// Decodes and checks a proof's bytes for task `id`: the spec is signed by its submitter, the id
/// is its hash, the home set is the signed one, and the seal covers this record and was signed
/// by a member of that home set. Returns the chain, read from what was checked.
pub fn check(id: &str, sealed_hex: &str) -> Result<Vec<String>, ProofError> {
    let bytes = hex::decode(sealed_hex.trim()).map_err(|e| ProofError::Decode(e.to_string()))?;
    let sealed = SealedRecord::from_bytes(&bytes).map_err(|e| ProofError::Decode(e.to_string()))?;
    let found = sealed.record.id().to_string();
    if found != id {
        return Err(ProofError::OtherTask {
            asked: id.to_string(),
            found,
        });
    }
    sealed.check()?;
    Ok(chain(&sealed))
}

/// The chain of a task from its submission to where it stands, one line per step: who submitted
/// and accepted it (the spec's signer), every transition (placed, started, re-claimed, retried,
/// ended) with its peer and epoch, every attempt with where it ran, and who sealed this version.
fn chain(sealed: &SealedRecord) -> Vec<String> {
    let record = &sealed.record;
    let task = TaskView::of(record);
    let mut lines = Vec::new();
    let client = task
        .client
        .as_deref()
        .map(|c| format!("client {c}"))
        .unwrap_or_else(|| "a client without a token".into());
    lines.push(format!(
        "submitted by {client} through {}, which signed the spec (home set {})",
        task.origin,
        task.home.join(", ")
    ));
    for t in &record.history {
        let peer = t.peer.as_ref().map(peer_name).unwrap_or_else(|| "-".into());
        lines.push(format!(
            "{}  {:<13} epoch {:<5} {}  {}",
            crate::view::format_time(t.at_wall_ms),
            t.state.as_str(),
            show_epoch(t.epoch),
            peer,
            t.note
        ));
    }
    for (n, a) in record.attempts.iter().enumerate() {
        let code = a
            .exit_code
            .map(|c| format!(" exit {c}"))
            .unwrap_or_default();
        lines.push(format!(
            "attempt {} ran on {} at epoch {}: {}{code}",
            n + 1,
            peer_name(&a.peer),
            show_epoch(a.epoch),
            a.ending.as_str()
        ));
    }
    if let Some(by) = &record.executed_by {
        lines.push(format!(
            "result recorded from {} at epoch {}",
            peer_name(by),
            show_epoch(record.epoch)
        ));
    }
    lines.push(format!(
        "version {} ({}) sealed by {}, one of {} records signed together",
        record.version,
        record.state.as_str(),
        peer_name(&sealed.seal.signer),
        sealed.seal.count
    ));
    lines
}
