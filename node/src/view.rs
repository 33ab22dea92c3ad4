//! What the API and the CLI show of tasks and peers: plain, serializable views of the scheduler's
//! records. Bytes are shown as (lossy) UTF-8 text, which is what people submit and read.

use serde::{Deserialize, Serialize};
use taskswarm_protocol::{Counters, Millis, Outcome, PeerKey, TaskKind, TaskRecord};

use crate::keys;

/// A task as the API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task id (64 hex digits).
    pub id: String,
    /// `waiting`, `running`, `completed` or `failed`.
    pub state: String,
    /// `process` or `handler`.
    pub kind: String,
    /// The program and its arguments, for process tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The handler name, for handler tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The exit code of a process that exited normally.
    pub exit_code: Option<i32>,
    /// Captured standard output (process tasks).
    pub stdout: Option<String>,
    /// Captured standard error (process tasks).
    pub stderr: Option<String>,
    /// What a handler returned.
    pub output: Option<String>,
    /// Why the run failed to produce an exit code or output (timeout, missing program, …).
    pub error: Option<String>,
    /// The libp2p peer id of the peer that ran the recorded attempt.
    pub executed_by: Option<String>,
    /// The peer holding the current lease.
    pub holder: Option<String>,
    /// The epoch of the current lease (the fencing token the run saw).
    pub lease_epoch: u64,
    /// The peer the task was submitted through (it keeps this record).
    pub origin: String,
    /// Milliseconds from acceptance to the recorded result.
    pub duration_ms: Option<u64>,
}

/// The libp2p peer id string of a peer key (hex of the key if it is not a valid key).
pub fn peer_name(key: &PeerKey) -> String {
    keys::peer_id(key).map_or_else(|| key.to_string(), |id| id.to_string())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl TaskView {
    /// The view of a record.
    pub fn of(record: &TaskRecord) -> Self {
        let (command, handler, kind) = match &record.task.spec.kind {
            TaskKind::Process(p) => {
                let command = std::iter::once(p.program.clone()).chain(p.args.iter().cloned());
                (Some(command.collect()), None, "process")
            }
            TaskKind::Handler { name, .. } => (None, Some(name.clone()), "handler"),
        };
        let mut view = TaskView {
            id: record.task.id.to_string(),
            state: record.state.as_str().to_string(),
            kind: kind.to_string(),
            command,
            handler,
            exit_code: None,
            stdout: None,
            stderr: None,
            output: None,
            error: None,
            executed_by: record.executed_by.as_ref().map(peer_name),
            holder: record.holder.as_ref().map(peer_name),
            lease_epoch: record.epoch,
            origin: peer_name(&record.task.origin),
            duration_ms: record
                .finished_at
                .map(|at: Millis| at.saturating_sub(record.submitted_at)),
        };
        match &record.outcome {
            None => {}
            Some(Outcome::Exited {
                code,
                stdout,
                stderr,
            }) => {
                view.exit_code = *code;
                view.stdout = Some(text(stdout));
                view.stderr = Some(text(stderr));
                if code.is_none() {
                    view.error = Some("killed by a signal".into());
                }
            }
            Some(Outcome::TimedOut { stdout, stderr }) => {
                view.stdout = Some(text(stdout));
                view.stderr = Some(text(stderr));
                view.error = Some("timed out".into());
            }
            Some(Outcome::Returned { output }) => view.output = Some(text(output)),
            Some(Outcome::Error { message }) => view.error = Some(message.clone()),
        }
        view
    }

    /// Whether the task has ended.
    pub fn is_final(&self) -> bool {
        self.state == "completed" || self.state == "failed"
    }
}

/// A peer as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Tasks in its ready queue (as last reported).
    pub queued: u32,
    /// Tasks it runs (as last reported).
    pub running: u32,
    /// Tasks it can run at once.
    pub slots: u32,
    /// Whether it runs process tasks.
    pub exec: bool,
    /// Its registered handlers.
    pub handlers: Vec<String>,
    /// Milliseconds since its last load report arrived (0 for this peer).
    pub last_heard_ms: u64,
}

/// The rejection and work counters of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    /// Messages or parts rejected as malformed (truncated, trailing bytes, non-canonical).
    pub rejected_malformed: u64,
    /// Messages over the size limit.
    pub rejected_oversize: u64,
    /// Bad signatures.
    pub rejected_signature: u64,
    /// Task ids that did not match their spec.
    pub rejected_id_mismatch: u64,
    /// Messages their sender may not send.
    pub rejected_unauthorized: u64,
    /// Completions under an old epoch.
    pub completions_stale: u64,
    /// Completions of tasks that already had a result.
    pub completions_duplicate: u64,
    /// Steal requests sent.
    pub steal_requests: u64,
    /// Tasks received by stealing.
    pub tasks_stolen: u64,
    /// Tasks given to thieves.
    pub tasks_given: u64,
    /// Tasks started here.
    pub tasks_executed: u64,
    /// Messages given up after repeated delivery failures.
    pub messages_given_up: u64,
}

impl From<&Counters> for CountersView {
    fn from(c: &Counters) -> Self {
        Self {
            rejected_malformed: c.rejected_malformed,
            rejected_oversize: c.rejected_oversize,
            rejected_signature: c.rejected_signature,
            rejected_id_mismatch: c.rejected_id_mismatch,
            rejected_unauthorized: c.rejected_unauthorized,
            completions_stale: c.completions_stale,
            completions_duplicate: c.completions_duplicate,
            steal_requests: c.steal_requests,
            tasks_stolen: c.tasks_stolen,
            tasks_given: c.tasks_given,
            tasks_executed: c.tasks_executed,
            messages_given_up: c.messages_given_up,
        }
    }
}

/// This peer and the peers it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This peer.
    pub me: PeerInfo,
    /// The other peers it has heard from recently, by peer id.
    pub peers: Vec<PeerInfo>,
    /// This peer's counters.
    pub counters: CountersView,
}
