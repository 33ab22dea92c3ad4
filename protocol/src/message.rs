//! The messages peers exchange: direct [`Message`]s (sent to one peer, acknowledged by the
//! transport) and [`Gossip`] (broadcast to all).
//!
//! Owns the message vocabulary and nothing else: what a peer does on receiving one is the
//! scheduler's business. Every message is encoded with [`crate::wire`].
//!
//! On the wire, one request carries a [`Batch`]: one or more encoded messages to the same peer,
//! in the order they were sent, so a burst of small messages (a start and a completion per task)
//! costs one request instead of one each. A batch is only framing: each message in it is decoded,
//! checked and counted on its own.

use bincode::{Decode, Encode};

use crate::lease::SignedGrant;
use crate::listing::{ListAnswer, ListFilter};
use crate::load::{Capabilities, SignedLoadReport};
use crate::seal::SealedRecord;
use crate::task::{Envelope, Outcome, TaskId};

/// A message to one peer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// Home member → home member: keep these records (new tasks, or newer versions), each sealed
    /// by the member that wrote it.
    Store {
        /// The records.
        records: Vec<SealedRecord>,
    },
    /// Home member → sender of `Store`: these records are stored durably, at these versions.
    Stored {
        /// `(task, version)` pairs.
        acks: Vec<(TaskId, u64)>,
    },
    /// Primary → chosen peer: hold and run these tasks. `grant` (signed by the sender) gives the
    /// receiver a lease on each, in the same order.
    Place {
        /// The tasks.
        tasks: Vec<Envelope>,
        /// Their leases.
        grant: SignedGrant,
    },
    /// An idle peer asks a busy one for work it can start at once.
    StealRequest {
        /// How many tasks the thief can start now.
        free_slots: u32,
        /// What the thief can run.
        capabilities: Capabilities,
    },
    /// Victim → thief: these tasks are yours, with leases at a higher epoch signed by the victim.
    StealGrant {
        /// The tasks.
        tasks: Vec<Envelope>,
        /// Their leases.
        grant: SignedGrant,
    },
    /// Victim → thief: nothing fits; ask someone else.
    NothingToSteal,
    /// A peer that handed tasks over tells their home sets who holds them now (the same signed
    /// grant the new holder got; each member reads the leases of the tasks it keeps).
    Transferred {
        /// The grant.
        grant: SignedGrant,
    },
    /// Holder → home set: these tasks have started, each under the lease at the given epoch.
    Started {
        /// `(task, epoch)` pairs.
        tasks: Vec<(TaskId, u64)>,
    },
    /// Holder → home set: an attempt ended under the lease at `epoch`. Sent again until the
    /// primary answers [`Message::Recorded`].
    Completed {
        /// The task.
        task: TaskId,
        /// The epoch of the lease it ran under.
        epoch: u64,
        /// What the attempt produced.
        outcome: Outcome,
    },
    /// Primary → holder: these completions are settled (recorded and replicated, or rejected as
    /// stale); stop sending them.
    Recorded {
        /// `(task, epoch)` pairs.
        tasks: Vec<(TaskId, u64)>,
    },
    /// Holder → home set: cannot run this task; the lease goes back to the primary.
    Refused {
        /// The task.
        task: TaskId,
        /// The epoch of the refused lease.
        epoch: u64,
    },
    /// Primary → holder: do you still hold these tasks under these epochs (or have their
    /// results, or handed them on)? Sent for leases that have not changed for a while.
    Confirm {
        /// `(task, epoch)` pairs.
        tasks: Vec<(TaskId, u64)>,
    },
    /// Holder → primary: of the tasks you asked about, these I do not hold; re-claim them.
    Missing {
        /// `(task, epoch)` pairs.
        tasks: Vec<(TaskId, u64)>,
    },
    /// A member → home set: cancel this task.
    Cancel {
        /// The task.
        task: TaskId,
        /// The client that asked (the name of its API token), if any: recorded in the history.
        by: Option<String>,
    },
    /// Primary → holder: stop this task (it was cancelled); the lease at `epoch` is void.
    Abort {
        /// The task.
        task: TaskId,
        /// The epoch of the voided lease.
        epoch: u64,
    },
    /// Any peer → a few peers (in fanout mode, instead of a broadcast): its signed load report,
    /// and a sample of the peers it knows, so that partial views keep mixing and newcomers become
    /// known.
    Load {
        /// The report; its peer must be the sender.
        report: SignedLoadReport,
        /// Peers the sender knows.
        peers: Vec<crate::identity::PeerKey>,
    },
    /// A peer that has just met the receiver, or hears it again after taking it for dead → the
    /// receiver: send me the records of the home sets we share (the sender sends its own the same
    /// way). Across a one-way cut, only one side took the other for dead; this brings the other
    /// side's records level too.
    CatchUp,
    /// A peer → one it could not reach lately (a message to it was not delivered): nothing to
    /// do; that it is delivered tells the sender the way is open again.
    Probe,
    /// Any peer → any peer: do you keep the record of this task?
    Query {
        /// The asker's number for the question.
        query: u64,
        /// The task.
        task: TaskId,
    },
    /// The answer to a [`Message::Query`].
    Answer {
        /// The question's number.
        query: u64,
        /// The record, if this peer keeps it, with its seal.
        record: Option<Box<SealedRecord>>,
    },
    /// Any peer → any peer: a page of the records you keep that match (a client's swarm-wide
    /// list; see [`crate::listing`]).
    List {
        /// The asker's number for the question.
        query: u64,
        /// Which records.
        filter: ListFilter,
        /// The most entries wanted.
        limit: u32,
    },
    /// The answer to a [`Message::List`].
    Listed {
        /// The question's number.
        query: u64,
        /// The entries, in the list's order.
        answer: ListAnswer,
    },
    /// A holder → members of the home sets of tasks it would start: a start check. Answered at
    /// once with [`Message::Pong`]; a holder starts a task in a freed slot only once a majority
    /// of its home set answered a round sent after the slot freed.
    Ping {
        /// The holder's number for the round.
        round: u64,
    },
    /// The answer to a [`Message::Ping`].
    Pong {
        /// The round answered.
        round: u64,
    },
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Store { .. } => "store",
            Message::Stored { .. } => "stored",
            Message::Place { .. } => "place",
            Message::StealRequest { .. } => "steal-request",
            Message::StealGrant { .. } => "steal-grant",
            Message::NothingToSteal => "nothing-to-steal",
            Message::Transferred { .. } => "transferred",
            Message::Started { .. } => "started",
            Message::Completed { .. } => "completed",
            Message::Recorded { .. } => "recorded",
            Message::Refused { .. } => "refused",
            Message::Confirm { .. } => "confirm",
            Message::Missing { .. } => "missing",
            Message::Cancel { .. } => "cancel",
            Message::Abort { .. } => "abort",
            Message::Load { .. } => "load",
            Message::CatchUp => "catch-up",
            Message::Probe => "probe",
            Message::Query { .. } => "query",
            Message::Answer { .. } => "answer",
            Message::List { .. } => "list",
            Message::Listed { .. } => "listed",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
        }
    }
}

/// A message broadcast to every peer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Gossip {
    /// A peer's load report, which is also its heartbeat.
    Load(SignedLoadReport),
}

/// Messages to one peer, each already encoded, in order: the body of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Batch {
    /// The encoded messages.
    pub frames: Vec<Vec<u8>>,
}
