//! Tasks: what a submitter asks to run ([`TaskSpec`]), its content-derived [`TaskId`], the signed
//! form that travels ([`Envelope`]) and what a run produced ([`Outcome`]).
//!
//! Owns the rule that a task id is the hash of the canonical, signed spec bytes, so that a task
//! cannot be altered in flight without its id changing, and the rule that the spec names its home
//! set with its submitter (the peer it was submitted through) first: the home set is signed with
//! the spec, so no member can rewrite it. It never runs anything.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::identity::PeerKey;
use crate::retry::RetryPolicy;
use crate::signed::{Signable, Signed};
use crate::wire::WireError;

/// Domain prefix hashed before the spec bytes to form a [`TaskId`].
const ID_DOMAIN: &[u8] = b"taskswarm/task-id/v1";

/// A task's id: SHA-256 of the canonical encoding of its spec (which names the submitter and a
/// nonce, so two submissions of the same command are two tasks).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct TaskId([u8; 32]);

impl TaskId {
    /// The id of the spec whose canonical bytes are `spec_bytes`.
    pub fn of_spec_bytes(spec_bytes: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(ID_DOMAIN);
        hasher.update(spec_bytes);
        Self(hasher.finalize().into())
    }

    /// The raw id bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw id bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A short form for logs: the first 12 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.short())
    }
}

/// A task id string was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a task id is 64 hex digits")]
pub struct BadTaskId;

impl FromStr for TaskId {
    type Err = BadTaskId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| BadTaskId)?;
        Ok(Self(bytes))
    }
}

/// A program to run as an operating-system process.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ProcessSpec {
    /// The program, looked up on the executing peer's `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Bytes written to its standard input.
    pub stdin: Vec<u8>,
}

/// What a task runs.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum TaskKind {
    /// A process; only peers started with exec allowed take these.
    Process(ProcessSpec),
    /// A Rust handler registered by name on the executing peer: bytes in, bytes out.
    Handler {
        /// The handler's registered name.
        name: String,
        /// Its input.
        input: Vec<u8>,
    },
}

/// The most peers a home set may name.
pub const MAX_HOME: usize = 32;
/// The longest client name a spec may carry, in bytes.
pub const MAX_CLIENT: usize = 64;

/// Everything a submitter says about a task. Its canonical encoding is signed and hashed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TaskSpec {
    /// The peer it was submitted through, which signed it (its origin).
    pub submitter: PeerKey,
    /// The peers that keep its record, in rank order, the submitter first (see [`crate::home`]):
    /// chosen by the submitter and signed with the spec, so it cannot be rewritten in flight.
    pub home: Vec<PeerKey>,
    /// Who asked the submitter for it: the name of the client's API token, if it had one.
    pub client: Option<String>,
    /// Makes otherwise identical submissions distinct tasks.
    pub nonce: u64,
    /// What to run.
    pub kind: TaskKind,
    /// Per-attempt time limit in milliseconds; `None` runs without one.
    pub timeout_ms: Option<u64>,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// The placement policy for this task, instead of its primary's.
    pub placement: Option<crate::placement::Policy>,
    /// What it needs of the peer that runs it: CPU, memory, disk and labels.
    pub needs: crate::resources::Needs,
    /// Higher starts first (0 by default); waiting tasks age, see [`crate::queue`].
    pub priority: i32,
    /// The submitter's guess of how long it runs, in milliseconds: stealing moves long tasks
    /// first.
    pub cost_ms: Option<u64>,
    /// A name people know it by (a job's task names); shown, and used in dependency errors.
    pub name: Option<String>,
    /// Tasks that must complete before this one starts; their results are its inputs.
    pub after: Vec<TaskId>,
    /// Run even if a task in `after` failed or was cancelled (otherwise this one fails).
    pub run_anyway: bool,
}

impl TaskSpec {
    /// A spec of `kind` by `submitter` with every other field at its default: no home set yet (the
    /// submitting peer chooses it), no client, no timeout, the default retry policy, no placement
    /// policy of its own, no needs, priority 0, no cost hint, no name, no dependencies.
    pub fn new(submitter: PeerKey, nonce: u64, kind: TaskKind) -> Self {
        Self {
            submitter,
            home: Vec::new(),
            client: None,
            nonce,
            kind,
            timeout_ms: None,
            retry: RetryPolicy::default(),
            placement: None,
            needs: crate::resources::Needs::default(),
            priority: 0,
            cost_ms: None,
            name: None,
            after: Vec::new(),
            run_anyway: false,
        }
    }

    /// Checks what the signature alone does not: the home set starts with the submitter, names no
    /// peer twice and is not too long; the client name is not too long.
    pub fn check(&self) -> Result<(), WireError> {
        if self.home.first() != Some(&self.submitter) {
            return Err(WireError::Unauthorized(
                "a home set that does not start with the submitter",
            ));
        }
        if self.home.len() > MAX_HOME {
            return Err(WireError::Unauthorized("a home set too large"));
        }
        let mut sorted = self.home.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.home.len() {
            return Err(WireError::Unauthorized(
                "a home set that names a peer twice",
            ));
        }
        if self.client.as_ref().is_some_and(|c| c.len() > MAX_CLIENT) {
            return Err(WireError::Unauthorized("a client name too long"));
        }
        Ok(())
    }
}

/// A task a dependent waits for, as a submission names it: a task already known by id, or one
/// submitted earlier in the same submission (a job's tasks come in dependency order, so their ids
/// are known only once the earlier ones are signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// A task with this id.
    Task(TaskId),
    /// The task at this index of the same submission (an earlier one).
    Earlier(usize),
}

/// A task as a client asks for it, before the peer it is submitted through signs it: the spec
/// (its submitter, home set and `after` are filled in by that peer) and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The spec.
    pub spec: TaskSpec,
    /// What it waits for, in order (this becomes the spec's `after`).
    pub after: Vec<Dependency>,
}

impl From<TaskSpec> for Submission {
    fn from(spec: TaskSpec) -> Self {
        let after = spec.after.iter().copied().map(Dependency::Task).collect();
        Self { spec, after }
    }
}

impl Signable for TaskSpec {
    const DOMAIN: &'static [u8] = b"taskswarm/spec/v1";
    fn signer(&self) -> PeerKey {
        self.submitter
    }
}

/// A task spec signed by its submitter.
pub type SignedSpec = Signed<TaskSpec>;

/// A task as it travels between peers: its id, its signed spec and its home set (the peers that
/// keep its record and receive its results, in rank order; see [`crate::home`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    /// The task's id, which must be the hash of `spec`'s bytes.
    pub id: TaskId,
    /// The signed spec.
    pub spec: SignedSpec,
    /// The home set, in rank order; the first member is the peer the task was submitted through.
    pub home: Vec<PeerKey>,
    /// The results of the tasks in the spec's `after`, in its order: filled in by the primary
    /// when they have all ended, so the holder gives them to the run.
    pub inputs: Vec<Input>,
}

/// The result of a dependency, as its dependent's run receives it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Input {
    /// The dependency.
    pub task: TaskId,
    /// Its name, or its short id if it has none.
    pub name: String,
    /// Whether it completed (a dependent that runs anyway may get a failed one's result).
    pub completed: bool,
    /// What it produced: a process's standard output, a handler's output, or an error message.
    pub output: Vec<u8>,
}

/// A task whose signature and id have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its decoded spec.
    pub spec: TaskSpec,
    /// The signed spec, to pass on unchanged.
    pub signed: SignedSpec,
    /// Its home set, in rank order.
    pub home: Vec<PeerKey>,
    /// The results of its dependencies, once known (see [`Envelope::inputs`]).
    pub inputs: Vec<Input>,
}

impl Task {
    /// Verifies a signed spec (its signature, and that its home set starts with its submitter)
    /// and derives its id.
    pub fn from_signed(signed: SignedSpec) -> Result<Self, WireError> {
        Self::from_signed_cached(signed, &mut crate::identity::KeyCache::default())
    }

    /// As [`Task::from_signed`], with public keys kept decompressed in `keys`.
    pub fn from_signed_cached(
        signed: SignedSpec,
        keys: &mut crate::identity::KeyCache,
    ) -> Result<Self, WireError> {
        let spec = signed.open_cached(keys)?;
        spec.check()?;
        let id = TaskId::of_spec_bytes(signed.bytes());
        Ok(Self {
            id,
            home: spec.home.clone(),
            spec,
            signed,
            inputs: Vec::new(),
        })
    }

    /// Verifies an envelope: the spec's signature, that the id is the hash of the spec, and that
    /// its home set is the one the spec names or a repair of it (as many members, none twice; see
    /// [`check_repaired_home`]). Who may repair a home set is the roles' rule, not this one.
    pub fn from_envelope(envelope: Envelope) -> Result<Self, WireError> {
        Self::from_envelope_cached(envelope, &mut crate::identity::KeyCache::default())
    }

    /// As [`Task::from_envelope`], with public keys kept decompressed in `keys`.
    pub fn from_envelope_cached(
        envelope: Envelope,
        keys: &mut crate::identity::KeyCache,
    ) -> Result<Self, WireError> {
        let mut task = Self::from_signed_cached(envelope.spec, keys)?;
        if task.id != envelope.id {
            return Err(WireError::IdMismatch);
        }
        if envelope.home != task.spec.home {
            check_repaired_home(&task.spec.home, &envelope.home)?;
            task.home = envelope.home;
        }
        task.inputs = envelope.inputs;
        Ok(task)
    }

    /// The envelope to send this task in.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            id: self.id,
            spec: self.signed.clone(),
            home: self.home.clone(),
            inputs: self.inputs.clone(),
        }
    }
}

/// Checks the shape of a repaired home set against the one its spec signs: a repair replaces
/// members gone for good one for one, so the set keeps its size and names no peer twice. (Whether
/// the peer that sent it may have repaired it is the receiving role's rule.)
pub fn check_repaired_home(signed: &[PeerKey], repaired: &[PeerKey]) -> Result<(), WireError> {
    if repaired.len() != signed.len() {
        return Err(WireError::Unauthorized(
            "a repaired home set of another size than the signed one",
        ));
    }
    let mut sorted = repaired.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != repaired.len() {
        return Err(WireError::Unauthorized(
            "a home set that names a peer twice",
        ));
    }
    Ok(())
}

/// What one run of a task produced.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Outcome {
    /// A process exited (or was ended by a signal, `code` is then `None`).
    Exited {
        /// Its exit code, if it exited normally.
        code: Option<i32>,
        /// Captured standard output (capped).
        stdout: Vec<u8>,
        /// Captured standard error (capped).
        stderr: Vec<u8>,
    },
    /// A handler returned its output.
    Returned {
        /// The handler's output bytes.
        output: Vec<u8>,
    },
    /// The per-attempt timeout passed; the run was killed.
    TimedOut {
        /// Standard output captured before the kill.
        stdout: Vec<u8>,
        /// Standard error captured before the kill.
        stderr: Vec<u8>,
    },
    /// The task could not run or its handler failed.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Its program could not be started: it is missing, not executable or not a program. Another
    /// attempt would fail the same way, so none is made (peers whose programs differ are told
    /// apart by labels).
    NotStarted {
        /// Why, as the system said it.
        message: String,
    },
}

impl Outcome {
    /// Whether the run succeeded: exit code 0, or a handler that returned.
    pub fn succeeded(&self) -> bool {
        matches!(
            self,
            Outcome::Exited { code: Some(0), .. } | Outcome::Returned { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn spec(key: &Keypair, nonce: u64) -> TaskSpec {
        let kind = TaskKind::Handler {
            name: "echo".into(),
            input: b"hi".to_vec(),
        };
        TaskSpec {
            home: vec![key.public()],
            ..TaskSpec::new(key.public(), nonce, kind)
        }
    }

    #[test]
    fn id_is_stable_and_depends_on_the_nonce() {
        let key = Keypair::from_secret([1; 32]);
        let a = Task::from_signed(Signed::sign(&spec(&key, 1), &key)).unwrap();
        let b = Task::from_signed(Signed::sign(&spec(&key, 1), &key)).unwrap();
        let c = Task::from_signed(Signed::sign(&spec(&key, 2), &key)).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn envelope_with_a_foreign_id_is_rejected() {
        let key = Keypair::from_secret([1; 32]);
        let task = Task::from_signed(Signed::sign(&spec(&key, 1), &key)).unwrap();
        let mut envelope = task.envelope();
        envelope.id = TaskId::from_bytes([0; 32]);
        assert_eq!(Task::from_envelope(envelope), Err(WireError::IdMismatch));
    }

    #[test]
    fn a_home_set_is_signed_and_starts_with_the_submitter() {
        let key = Keypair::from_secret([1; 32]);
        let other = Keypair::from_secret([2; 32]).public();
        let task = Task::from_signed(Signed::sign(&spec(&key, 1), &key)).unwrap();
        let mut rewritten = task.envelope();
        rewritten.home = vec![key.public(), other];
        assert!(matches!(
            Task::from_envelope(rewritten),
            Err(WireError::Unauthorized(_))
        ));
        let not_first = TaskSpec {
            home: vec![other, key.public()],
            ..spec(&key, 2)
        };
        assert!(matches!(
            Task::from_signed(Signed::sign(&not_first, &key)),
            Err(WireError::Unauthorized(_))
        ));
        let twice = TaskSpec {
            home: vec![key.public(), other, other],
            ..spec(&key, 3)
        };
        assert!(matches!(
            Task::from_signed(Signed::sign(&twice, &key)),
            Err(WireError::Unauthorized(_))
        ));
    }

    #[test]
    fn spec_signed_by_someone_else_is_rejected() {
        let key = Keypair::from_secret([1; 32]);
        let mallory = Keypair::from_secret([2; 32]);
        let honest = Signed::sign(&spec(&key, 1), &key);
        let forged = SignedSpec::from_parts(honest.bytes().to_vec(), mallory.sign(honest.bytes()));
        assert_eq!(Task::from_signed(forged), Err(WireError::BadSignature));
    }

    #[test]
    fn task_id_parses_from_its_display() {
        let id = TaskId::of_spec_bytes(b"x");
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        assert_eq!("zz".parse::<TaskId>(), Err(BadTaskId));
    }
}
