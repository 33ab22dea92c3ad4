//! What the API and the CLI show of tasks and peers: plain, serializable views of the scheduler's
//! records. Bytes are shown as (lossy) UTF-8 text, which is what people submit and read.

use serde::{Deserialize, Serialize};
use taskswarm_protocol::resources::{self, Needs};
use taskswarm_protocol::{Counters, Outcome, PeerKey, TaskKind, TaskRecord, TaskSpec, TaskState};

use crate::keys;

/// A task as the API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task id (64 hex digits).
    pub id: String,
    /// Where it stands (in JSON: `waiting`, `unschedulable`, `running`, `completed`, `failed` or
    /// `cancelled`).
    #[serde(with = "state_name")]
    pub state: TaskState,
    /// Why it is unschedulable (such as "needs label gpu=1; no live peer has it").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its priority (higher starts first).
    #[serde(default)]
    pub priority: i32,
    /// Its name, if it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The ids of the tasks it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// What it needs of the peer that runs it, such as `cpus 2`, `memory 512 MiB`, `label gpu=1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
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
    /// What a handler returned (as text: bytes that are not UTF-8 are shown replaced).
    pub output: Option<String>,
    /// What the task produced, exactly: a handler's output, or a process's standard output. In
    /// JSON, base64 (`output_base64`); `output` and `stdout` show the same as text.
    #[serde(
        default,
        rename = "output_base64",
        with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_bytes: Option<Vec<u8>>,
    /// Why the run failed to produce an exit code or output (timeout, missing program, …).
    pub error: Option<String>,
    /// The libp2p peer id of the peer that ran the recorded attempt.
    pub executed_by: Option<String>,
    /// The peer holding the current lease.
    pub holder: Option<String>,
    /// The epoch of the current lease (the fencing token the run saw, `TASKSWARM_EPOCH`); people
    /// read it as `major.minor` ([`show_epoch`]).
    pub lease_epoch: u64,
    /// The peer the task was submitted through, which signed its spec (the first of its home set
    /// until a repair replaces it).
    pub origin: String,
    /// The client that asked for it (the name of its API token), if known.
    #[serde(default)]
    pub client: Option<String>,
    /// The peers that keep its record, in rank order (a member gone for good is replaced: see
    /// `--repair-after`).
    pub home: Vec<String>,
    /// When it was accepted (milliseconds since the Unix epoch).
    pub submitted_ms: u64,
    /// Milliseconds from acceptance to its end.
    pub duration_ms: Option<u64>,
    /// Every attempt that ended, in order.
    pub attempts: Vec<AttemptView>,
    /// Every change of state, in order.
    pub history: Vec<TransitionView>,
}

/// One ended attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// The peer that ran (or held) it.
    pub peer: String,
    /// The lease epoch it ran under.
    pub epoch: u64,
    /// `success`, `failure`, `timeout`, `lost-lease` or `cancelled`.
    pub ending: String,
    /// The exit code, for a process that exited.
    pub exit_code: Option<i32>,
    /// An error, or the tail of its standard error.
    pub detail: String,
    /// When it ended (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One change of state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionView {
    /// The new state.
    #[serde(with = "state_name")]
    pub state: TaskState,
    /// The peer concerned.
    pub peer: Option<String>,
    /// The lease epoch at the time.
    pub epoch: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Why.
    pub note: String,
}

/// The libp2p peer id string of a peer key (hex of the key if it is not a valid key).
///
/// Names are remembered per thread: making one decompresses the key and encodes it in base58,
/// which cost a tenth of the peers' CPU when every task view named its peers afresh. A swarm has
/// few peers, so the memory is small; past [`NAMES_KEPT`] names it starts afresh.
pub fn peer_name(key: &PeerKey) -> String {
    NAMES.with_borrow_mut(|names| {
        if let Some(name) = names.get(key) {
            return name.clone();
        }
        let name = keys::peer_id(key).map_or_else(|| key.to_string(), |id| id.to_string());
        if names.len() >= NAMES_KEPT {
            names.clear();
        }
        names.insert(*key, name.clone());
        name
    })
}

/// The most peer names [`peer_name`] remembers per thread.
const NAMES_KEPT: usize = 4096;

thread_local! {
    static NAMES: std::cell::RefCell<std::collections::BTreeMap<PeerKey, String>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// A task's needs in words: `cpus 2`, `memory 512 MiB`, `disk 1 GiB`, `label gpu=1`.
fn describe_needs(needs: &Needs) -> Vec<String> {
    let r = needs.resources;
    let mut words = Vec::new();
    if r.cpu_milli > 0 {
        words.push(format!("cpus {}", resources::format_cpus(r.cpu_milli)));
    }
    if r.memory > 0 {
        words.push(format!("memory {}", resources::format_bytes(r.memory)));
    }
    if r.disk > 0 {
        words.push(format!("disk {}", resources::format_bytes(r.disk)));
    }
    words.extend(needs.labels.iter().map(|l| format!("label {l}")));
    words
}

/// Bytes in JSON: standard base64.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        to: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => to.serialize_str(&STANDARD.encode(bytes)),
            None => to.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        from: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<std::borrow::Cow<str>>::deserialize(from)? else {
            return Ok(None);
        };
        STANDARD
            .decode(text.as_bytes())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// A task state in JSON: its lower-case name.
mod state_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use taskswarm_protocol::TaskState;

    pub(super) fn serialize<S: Serializer>(state: &TaskState, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(state.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<TaskState, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(from)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A lease epoch as people read it: `major.minor` (`1.0` for the first grant), with `/rank` when
/// a home member other than the first granted it. The API's JSON keeps the number.
pub fn show_epoch(epoch: u64) -> String {
    taskswarm_protocol::lease::show_epoch(epoch)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl TaskView {
    /// The view of a record this peer keeps or the scheduler verified (its spec was checked when
    /// it came in: checking it again for every view cost a signature check per task a client
    /// waits for).
    pub fn of(record: &TaskRecord) -> Self {
        let spec = record.envelope.spec.decode_verified_earlier().ok();
        let (command, handler, kind) = match spec.as_ref().map(|s| &s.kind) {
            None => (None, None, "unknown"),
            Some(TaskKind::Process(p)) => {
                let command = std::iter::once(p.program.clone()).chain(p.args.iter().cloned());
                (Some(command.collect()), None, "process")
            }
            Some(TaskKind::Handler { name, .. }) => (None, Some(name.clone()), "handler"),
        };
        let reason = Self::reason_from_record(record, spec.as_ref());
        let mut view = TaskView {
            id: record.id().to_string(),
            state: record.state,
            reason,
            priority: spec.as_ref().map_or(0, |s| s.priority),
            name: spec.as_ref().and_then(|s| s.name.clone()),
            after: spec
                .as_ref()
                .map(|s| s.after.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            needs: spec
                .as_ref()
                .map(|s| describe_needs(&s.needs))
                .unwrap_or_default(),
            kind: kind.to_string(),
            command,
            handler,
            exit_code: None,
            stdout: None,
            stderr: None,
            output: None,
            output_bytes: None,
            error: None,
            executed_by: record.executed_by.as_ref().map(peer_name),
            holder: record.holder.as_ref().map(peer_name),
            lease_epoch: record.epoch,
            origin: spec
                .as_ref()
                .map(|s| peer_name(&s.submitter))
                .or_else(|| record.home().first().map(peer_name))
                .unwrap_or_default(),
            client: spec.as_ref().and_then(|s| s.client.clone()),
            home: record.home().iter().map(peer_name).collect(),
            submitted_ms: record.submitted_wall_ms,
            duration_ms: record
                .finished_wall_ms
                .map(|at| at.saturating_sub(record.submitted_wall_ms)),
            attempts: record
                .attempts
                .iter()
                .map(|a| AttemptView {
                    peer: peer_name(&a.peer),
                    epoch: a.epoch,
                    ending: a.ending.as_str().to_string(),
                    exit_code: a.exit_code,
                    detail: a.detail.clone(),
                    at_ms: a.at_wall_ms,
                })
                .collect(),
            history: record
                .history
                .iter()
                .map(|t| TransitionView {
                    state: t.state,
                    peer: t.peer.as_ref().map(peer_name),
                    epoch: t.epoch,
                    at_ms: t.at_wall_ms,
                    note: t.note.clone(),
                })
                .collect(),
        };
        match &record.outcome {
            None => {}
            Some(Outcome::Exited {
                code,
                stdout,
                stderr,
            }) => {
                view.exit_code = *code;
                view.output_bytes = Some(stdout.clone());
                view.stdout = Some(text(stdout));
                view.stderr = Some(text(stderr));
                if code.is_none() {
                    view.error = Some("killed by a signal".into());
                }
            }
            Some(Outcome::TimedOut { stdout, stderr }) => {
                view.output_bytes = Some(stdout.clone());
                view.stdout = Some(text(stdout));
                view.stderr = Some(text(stderr));
                view.error = Some("timed out".into());
            }
            Some(Outcome::Returned { output }) => {
                view.output = Some(text(output));
                view.output_bytes = Some(output.clone());
            }
            Some(Outcome::Error { message } | Outcome::NotStarted { message }) => {
                view.error = Some(message.clone())
            }
        }
        view
    }

    /// Why a task is not running, as far as its record alone tells (a peer that keeps the record
    /// says more: its holder's queue, a retry's back-off, which dependency it waits for).
    fn reason_from_record(record: &TaskRecord, spec: Option<&TaskSpec>) -> Option<String> {
        match record.state {
            TaskState::Unschedulable => record.history.last().map(|t| t.note.clone()),
            TaskState::Waiting => Some(
                if spec.is_some_and(|s| record.envelope.inputs.len() < s.after.len()) {
                    "waiting for its dependencies".to_string()
                } else if let Some(holder) = &record.holder {
                    format!("queued on peer {}", peer_name(holder))
                } else {
                    "waiting for a free slot on a peer that can run it".to_string()
                },
            ),
            _ => None,
        }
    }

    /// Whether the task has ended.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
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
    /// Whether it is draining (`taskswarm drain`): it takes no new work and will leave.
    #[serde(default)]
    pub draining: bool,
    /// The version of taskswarm it runs.
    #[serde(default)]
    pub version: String,
    /// How long it has been running, in ms (as of its last report, plus the time since).
    #[serde(default)]
    pub uptime_ms: u64,
    /// Where its HTTP API listens (`host:port`), if it serves one.
    #[serde(default)]
    pub api: Option<String>,
    /// The CPUs it offers (`4`, `0.5`).
    #[serde(default)]
    pub cpus: String,
    /// The memory it offers (`7.6 GiB`).
    #[serde(default)]
    pub memory: String,
    /// The disk it offers.
    #[serde(default)]
    pub disk: String,
    /// Its labels (`gpu=1`).
    #[serde(default)]
    pub labels: Vec<String>,
}

impl PeerInfo {
    /// A peer as its load report (signed by it) shows it, `heard_ms_ago`.
    pub fn of_report(
        peer_id: String,
        report: &taskswarm_protocol::LoadReport,
        heard_ms_ago: u64,
    ) -> Self {
        let offer = &report.capabilities.offer;
        Self {
            peer_id,
            queued: report.queued,
            running: report.running,
            slots: report.slots,
            exec: report.capabilities.exec,
            handlers: report.capabilities.handlers.clone(),
            last_heard_ms: heard_ms_ago,
            draining: report.draining,
            version: report.about.version.clone(),
            uptime_ms: report.about.uptime_ms.saturating_add(heard_ms_ago),
            api: report.about.api.clone(),
            cpus: resources::format_cpus(offer.capacity.cpu_milli),
            memory: resources::format_bytes(offer.capacity.memory),
            disk: resources::format_bytes(offer.capacity.disk),
            labels: offer.labels.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The swarm's totals, over this peer and every peer it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmTotals {
    /// Live peers, this one included.
    pub peers: u32,
    /// Tasks they can run at once.
    pub slots: u32,
    /// Tasks they run.
    pub running: u32,
    /// Tasks in their ready queues.
    pub queued: u32,
    /// Peers draining.
    pub draining: u32,
}

impl SwarmTotals {
    /// The totals of `peers`.
    pub fn of<'a>(peers: impl IntoIterator<Item = &'a PeerInfo>) -> Self {
        peers.into_iter().fold(Self::default(), |t, p| Self {
            peers: t.peers + 1,
            slots: t.slots + p.slots,
            running: t.running + p.running,
            queued: t.queued + p.queued,
            draining: t.draining + u32::from(p.draining),
        })
    }
}

/// Every live peer's load, sampled at intervals by the serving peer: what `GET /v1/cluster/load`
/// answers (the dashboard draws it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadHistory {
    /// The time between samples, in ms.
    pub interval_ms: u64,
    /// The samples, oldest first.
    pub samples: Vec<LoadSample>,
}

/// One sample of [`LoadHistory`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSample {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Each live peer's load then, by peer id.
    pub peers: std::collections::BTreeMap<String, PeerLoad>,
}

/// One peer's load in a [`LoadSample`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLoad {
    /// Tasks queued.
    pub queued: u32,
    /// Tasks running.
    pub running: u32,
    /// Slots.
    pub slots: u32,
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
    /// Leases re-claimed from silent holders.
    pub leases_reclaimed: u64,
    /// Tasks stopped because no home member could be reached.
    pub tasks_abandoned: u64,
    /// Stored rows refused at start (unreadable, or their seal did not verify).
    #[serde(default)]
    pub restore_errors: u64,
    /// Every rejected message, by the kind of message it came in.
    #[serde(default)]
    pub rejected_by_kind: std::collections::BTreeMap<String, u64>,
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
            leases_reclaimed: c.leases_reclaimed,
            tasks_abandoned: c.tasks_abandoned,
            restore_errors: c.restore_errors,
            rejected_by_kind: c
                .rejected_by_kind
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
        }
    }
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn format_time(ms: u64) -> String {
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03}")
}

/// This peer and the peers it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This peer.
    pub me: PeerInfo,
    /// The other peers it has heard from recently, by peer id.
    pub peers: Vec<PeerInfo>,
    /// The totals over this peer and the others.
    #[serde(default)]
    pub swarm: SwarmTotals,
    /// This peer's counters.
    pub counters: CountersView,
    /// Who may connect to this peer and use its API.
    #[serde(default)]
    pub admission: crate::admission::AdmissionView,
    /// Connections refused and dropped at the network's edge.
    #[serde(default)]
    pub network: NetworkView,
    /// What the store's writer committed: transactions (fsyncs), and the rounds and rows they
    /// carried.
    #[serde(default)]
    pub store: crate::store::CommitStats,
}

/// What the network layer refused, counted since the peer started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Connections open now.
    pub connections: u64,
    /// Incoming connections that failed their handshakes (a wrong swarm key, or none) or were
    /// refused (the allowlist, the connection limits).
    pub incoming_refused: u64,
    /// Connections this peer tried to open that failed.
    pub dials_failed: u64,
    /// Load reports that members relayed from peers not on the allowlist, dropped.
    pub reports_from_strangers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_named_by_their_libp2p_ids_also_when_remembered() {
        for secret in 1..4u8 {
            let key = taskswarm_protocol::Keypair::from_secret([secret; 32]);
            let id = keys::libp2p_keypair(&key).public().to_peer_id().to_string();
            assert_eq!(peer_name(&key.public()), id);
            assert_eq!(peer_name(&key.public()), id, "the remembered name");
        }
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time(1_795_996_800_123), "2026-11-30 00:00:00.123");
    }
}
