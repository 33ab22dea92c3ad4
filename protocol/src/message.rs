//! The messages peers exchange: direct [`Message`]s (sent to one peer, acknowledged by the
//! transport) and [`Gossip`] (broadcast to all).
//!
//! Owns the message vocabulary and nothing else: what a peer does on receiving one is the
//! scheduler's business. Every message is encoded with [`crate::wire`].

use bincode::{Decode, Encode};

use crate::lease::SignedGrant;
use crate::load::{Capabilities, SignedLoadReport};
use crate::task::{Envelope, Outcome, TaskId};

/// A message to one peer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// Origin → chosen peer: hold and run these tasks. `grant` (signed by the sender) gives the
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
    /// A peer that handed tasks over tells their origin who holds them now (the same signed
    /// grant the new holder got; the origin reads the leases of its own tasks).
    Transferred {
        /// The grant.
        grant: SignedGrant,
    },
    /// Holder → origin: a task ran to an outcome under the lease at `epoch`.
    Completed {
        /// The task.
        task: TaskId,
        /// The epoch of the lease it ran under.
        epoch: u64,
        /// What the run produced.
        outcome: Outcome,
    },
    /// Holder → origin: these tasks have started, each under the lease at the given epoch.
    Started {
        /// `(task, epoch)` pairs.
        tasks: Vec<(TaskId, u64)>,
    },
    /// Holder → origin: cannot run this task; the lease goes back to the origin.
    Refused {
        /// The task.
        task: TaskId,
        /// The epoch of the refused lease.
        epoch: u64,
    },
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Place { .. } => "place",
            Message::StealRequest { .. } => "steal-request",
            Message::StealGrant { .. } => "steal-grant",
            Message::NothingToSteal => "nothing-to-steal",
            Message::Transferred { .. } => "transferred",
            Message::Completed { .. } => "completed",
            Message::Started { .. } => "started",
            Message::Refused { .. } => "refused",
        }
    }
}

/// A message broadcast to every peer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Gossip {
    /// A peer's load report, which is also its heartbeat.
    Load(SignedLoadReport),
}
