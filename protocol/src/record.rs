//! Task records: what a task's home set keeps of it — its spec, where it stands, its lease epoch
//! and holder, every attempt and every transition — and the persisted forms of what a holder keeps
//! (held tasks, and results not yet acknowledged).
//!
//! A record carries a version that its primary raises on every change; a home member takes a
//! replicated record only if its version is higher than the one it has. Records travel and are
//! stored sealed by the member that wrote them ([`crate::seal`]). Owns the record's shape and
//! its encoding for storage; the rules that change it are the scheduler's.

use bincode::{Decode, Encode};

use crate::identity::PeerKey;
use crate::retry::Ending;
use crate::task::{Envelope, Outcome, TaskId};

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum TaskState {
    /// Accepted, not running: being placed, queued at its holder, or waiting to be retried.
    Waiting,
    /// Accepted, but no live peer can run it (its last transition says why); it is placed as soon
    /// as a peer that can joins.
    Unschedulable,
    /// Its holder has started it.
    Running,
    /// It succeeded (exit code 0, or its handler returned).
    Completed,
    /// Its last attempt failed and no attempt is left.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 6] = [
        TaskState::Waiting,
        TaskState::Unschedulable,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The lower-case name used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Unschedulable => "unschedulable",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is not a task state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no task state is called {0:?}: waiting, unschedulable, running, completed, failed or cancelled"
)]
pub struct UnknownState(pub String);

impl std::str::FromStr for TaskState {
    type Err = UnknownState;

    /// Reads the lower-case name that [`TaskState::as_str`] gives.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| UnknownState(name.to_string()))
    }
}

/// One attempt that ended.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Attempt {
    /// The peer that ran it (or held it, for a lost lease).
    pub peer: PeerKey,
    /// The epoch of the lease it ran under.
    pub epoch: u64,
    /// How it ended.
    pub ending: Ending,
    /// The exit code, for a process that exited.
    pub exit_code: Option<i32>,
    /// An error message, or the last bytes of its standard error.
    pub detail: String,
    /// When it ended (wall-clock milliseconds since the Unix epoch, as the recording peer saw it).
    pub at_wall_ms: u64,
}

/// One change of a task's state.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Transition {
    /// The new state.
    pub state: TaskState,
    /// The peer concerned (the holder, the runner, the re-claimer).
    pub peer: Option<PeerKey>,
    /// The lease epoch at the time.
    pub epoch: u64,
    /// When (wall-clock milliseconds since the Unix epoch, as the recording peer saw it).
    pub at_wall_ms: u64,
    /// Why, in a few words.
    pub note: String,
}

/// The note of the transition a home-set repair writes for each member it appends (the
/// transition's peer; the state does not change): what [`TaskRecord::grant_rank`] counts.
pub const REPAIRED: &str = "home set repaired: member appended";

/// Everything a home member keeps of a task.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TaskRecord {
    /// The task, its signed spec and its home set.
    pub envelope: Envelope,
    /// Where it stands.
    pub state: TaskState,
    /// The epoch of the current lease (0 before the first placement).
    pub epoch: u64,
    /// The current lease holder, if placed.
    pub holder: Option<PeerKey>,
    /// Raised by the primary on every change.
    pub version: u64,
    /// Every attempt that ended, in order.
    pub attempts: Vec<Attempt>,
    /// Every change of state, in order.
    pub history: Vec<Transition>,
    /// The recorded result (of the last attempt).
    pub outcome: Option<Outcome>,
    /// Who ran the recorded attempt.
    pub executed_by: Option<PeerKey>,
    /// When the task was accepted (wall-clock ms, as its origin saw it).
    pub submitted_wall_ms: u64,
    /// When it ended (wall-clock ms, as its primary saw it).
    pub finished_wall_ms: Option<u64>,
}

impl TaskRecord {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.envelope.id
    }

    /// The home set, in rank order.
    pub fn home(&self) -> &[PeerKey] {
        &self.envelope.home
    }

    /// The rank `me` marks its grants with as the task's primary ([`crate::lease::next_major`]):
    /// its place among every member the home set ever had, in the order they joined (`signed`,
    /// the set the spec was signed with, then each member a repair appended, as its
    /// [`REPAIRED`] transition names it; a peer dropped and appended again counts at its last
    /// place). A repair only drops and appends, so a member's rank never changes and no two
    /// members, present or replaced, share one: a member that granted an epoch and was cut off
    /// before anyone heard of it, and then replaced, cannot see its epoch granted again by the
    /// member that moved up to its place in the set. (Past 255 members the ranks saturate.)
    pub fn grant_rank(&self, signed: &[PeerKey], me: &PeerKey) -> usize {
        let appended = self
            .history
            .iter()
            .filter(|t| t.note == REPAIRED)
            .filter_map(|t| t.peer);
        let ever: Vec<PeerKey> = signed.iter().copied().chain(appended).collect();
        ever.iter()
            .rposition(|m| m == me)
            // A set repaired without the transitions (an older record): after every known one.
            .or_else(|| {
                let place = self.home().iter().position(|m| m == me)?;
                Some(ever.len() + place)
            })
            .unwrap_or(0)
    }

    /// Appends a transition.
    pub fn transition(
        &mut self,
        state: TaskState,
        peer: Option<PeerKey>,
        at_wall_ms: u64,
        note: &str,
    ) {
        self.state = state;
        self.history.push(Transition {
            state,
            peer,
            epoch: self.epoch,
            at_wall_ms,
            note: note.to_string(),
        });
    }
}

/// A task a peer holds a lease on, as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HeldEntry {
    /// The task.
    pub envelope: Envelope,
    /// The lease epoch.
    pub epoch: u64,
}

/// A result a holder keeps until the task's primary acknowledges it, as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct OutboxEntry {
    /// The task.
    pub task: TaskId,
    /// Its home set.
    pub home: Vec<PeerKey>,
    /// The epoch the attempt ran under.
    pub epoch: u64,
    /// What it produced.
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::signed::Signed;
    use crate::task::{Task, TaskKind, TaskSpec};

    fn peer(n: u8) -> PeerKey {
        Keypair::from_secret([n; 32]).public()
    }

    #[test]
    fn every_state_reads_back_from_its_name_and_nothing_else_reads() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(
            "Completed".parse::<TaskState>(),
            Err(UnknownState("Completed".into()))
        );
        assert!("".parse::<TaskState>().is_err());
    }

    /// A waiting record of a task submitted through peer 1 and signed with home set `home`
    /// (which starts with it).
    fn record(home: &[PeerKey]) -> TaskRecord {
        let key = Keypair::from_secret([1; 32]);
        let kind = TaskKind::Handler {
            name: "echo".into(),
            input: Vec::new(),
        };
        let spec = TaskSpec {
            home: home.to_vec(),
            ..TaskSpec::new(key.public(), 1, kind)
        };
        let envelope = Task::from_signed(Signed::sign(&spec, &key))
            .map(|t| t.envelope())
            .unwrap();
        TaskRecord {
            envelope,
            state: TaskState::Waiting,
            epoch: 0,
            holder: None,
            version: 1,
            attempts: Vec::new(),
            history: Vec::new(),
            outcome: None,
            executed_by: None,
            submitted_wall_ms: 0,
            finished_wall_ms: None,
        }
    }

    /// What a repair does to the record: drops `gone`, appends `new` and says so.
    fn repair(record: &mut TaskRecord, gone: PeerKey, new: PeerKey) {
        record.envelope.home.retain(|m| *m != gone);
        record.envelope.home.push(new);
        record.transition(record.state, Some(new), 0, REPAIRED);
    }

    #[test]
    fn a_member_keeps_its_grant_rank_through_repairs_and_no_newcomer_takes_a_dropped_ones() {
        let (a, b, c, d, e) = (peer(1), peer(2), peer(3), peer(4), peer(5));
        let signed = [a, b, c];
        let mut record = record(&signed);
        let ranks = |r: &TaskRecord, who: &[PeerKey]| -> Vec<usize> {
            who.iter().map(|m| r.grant_rank(&signed, m)).collect()
        };
        assert_eq!(ranks(&record, &[a, b, c]), [0, 1, 2]);
        // `a` may have granted 2.0 just before it was cut off and dropped: `b`, now first in
        // the set, must not grant 2.0 again.
        repair(&mut record, a, d);
        assert_eq!(record.home(), [b, c, d]);
        assert_eq!(ranks(&record, &[b, c, d]), [1, 2, 3]);
        // Dropped and appended again, a member takes a new rank too.
        repair(&mut record, b, a);
        repair(&mut record, c, e);
        assert_eq!(record.home(), [d, a, e]);
        assert_eq!(ranks(&record, &[d, a, e]), [3, 4, 5]);
        // A set repaired before repairs were written down: after every rank known.
        let mut old = self::record(&signed);
        old.envelope.home = vec![b, c, d];
        assert_eq!(ranks(&old, &[b, c, d]), [1, 2, 5]);
    }
}
