//! # taskswarm-protocol
//!
//! The pure, deterministic core of taskswarm, a peer-to-peer task scheduler with no broker and no
//! head node. Every decision a peer makes lives here; every effect (sockets, processes, clocks,
//! disks) lives in the node crate, which drives this one. The same code runs under libp2p in the
//! node and under a simulated network in the tests, so what the simulator proves is what ships.
//!
//! Nothing in this crate reads a clock, opens a socket, spawns a thread or draws OS randomness:
//! time comes in as `now` (milliseconds on the caller's monotonic clock) and randomness as an RNG
//! argument.
//!
//! ## Layout
//! - [`identity`]: ed25519 key pairs, peer keys and signatures.
//! - [`wire`]: the one place bytes are encoded and decoded (size limit, no trailing bytes,
//!   canonical form).
//! - [`signed`]: values carried as the exact bytes their author signed.
//! - [`task`]: task specs, content-derived task ids, envelopes and outcomes.
//! - [`lease`]: signed, epoch-fenced leases, granted in batches.
//! - [`load`]: signed load reports (the heartbeat) and capabilities.
//! - [`message`]: the vocabulary peers speak.
//! - [`membership`]: who is alive and how loaded, as seen from here.
//! - [`home`]: home sets (who keeps a task's record) and who is a task's primary.
//! - [`record`]: task records, attempts and histories, and what a holder stores.
//! - [`archive`]: where ended records live once they leave memory (the driver's read access).
//! - [`seal`]: the signature of the member that wrote each version of a record, in batches.
//! - [`retry`]: retry policies and backoff.
//! - [`placement`]: where a new task goes (power of two choices).
//! - [`steal`]: whom an idle peer asks for work, and what a busy peer gives.
//! - [`scheduler`]: the state machine that ties them together: events in, actions out.

pub mod archive;
pub mod home;
pub mod identity;
pub mod lease;
pub mod listing;
pub mod load;
pub mod membership;
pub mod message;
pub mod placement;
pub mod queue;
pub mod record;
pub mod resources;
pub mod retry;
pub mod scheduler;
pub mod seal;
pub mod signed;
pub mod steal;
pub mod task;
pub mod wire;

/// Milliseconds on the caller's monotonic clock. Only differences between two readings of the
/// same peer's clock mean anything.
pub type Millis = u64;

pub use archive::{Archive, MemoryArchive, NoArchive};
pub use identity::{Keypair, PeerKey, Signature};
pub use lease::{Grant, Lease, SignedGrant};
pub use load::{About, Capabilities, LoadReport, SignedLoadReport};
pub use message::{Batch, Gossip, Message};
pub use record::{Attempt, TaskRecord, TaskState, Transition, UnknownState};
pub use resources::{Label, Needs, Offer, Resources};
pub use retry::{Backoff, Ending, RetryOn, RetryPolicy};
pub use scheduler::{Action, Config, Counters, Scheduler, Table};
pub use seal::{Seal, SealedRecord};
pub use signed::{Signable, Signed};
pub use task::{
    Dependency, Envelope, Input, Outcome, ProcessSpec, SignedSpec, Submission, Task, TaskId,
    TaskKind, TaskSpec,
};
pub use wire::WireError;
