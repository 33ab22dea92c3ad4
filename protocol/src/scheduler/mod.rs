//! The scheduler state machine: one per peer, the same code under libp2p and in the simulator.
//!
//! It owns every decision a peer makes about tasks, in the roles every peer plays at once. Each
//! role keeps its state in a room of its own, a struct whose fields change only in the role's
//! module (the compiler keeps the walls); the other roles read it, or hand work in and out,
//! through its methods:
//! - **peers** (`peers::Peers`): who is alive and how loaded, this peer's boot and freezes;
//! - **home member and primary** (`records::Home`, with its children placing, dependency gating
//!   and replicating): keeps the records of the tasks whose home set it is in; as a task's
//!   *primary* (first live member) it places it, records its results, re-claims it when its
//!   holder dies, retries and cancels it, and replicates each sealed change to the other members
//!   before it acknowledges anything;
//! - **holder** (`holding::Holding`): queues the tasks it holds leases on, runs them in its
//!   slots, keeps each result until the primary acknowledges it, and stops work it can no longer
//!   report (cut off from every home member);
//! - **thief and victim** (`stealing::Stealing`): steals work when idle, gives work when asked;
//! - **asker** (`asking::Asking`): asks the others about tasks it does not keep, for clients'
//!   views, waits and cancels and for dependencies, and takes answers only from the peers asked.
//!
//! A role's handlers are methods on its room; each borrows the room, what it reads of the others
//! (see the accessors `member`, `primary`, `holder`, `thief` and `asker`) and a small `Ctx`, and
//! nothing else. Work one role gives another (the primary placing a task on its own peer, say) is
//! handed over (`records::Handoff`) and routed by the scheduler at the end of the input.
//!
//! The scheduler itself routes each input to the roles, and holds what every role shares: the
//! key, the settings, the placement policy, the signature checker, the counters and the actions.
//! It never performs IO, reads a clock or draws OS randomness: the caller hands in `now` and an
//! RNG, and carries out the [`Action`]s it emits.

mod asking;
mod holding;
mod listing;
mod peers;
mod records;
mod stealing;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::RngCore;

use crate::Millis;
use crate::identity::{Keypair, PeerKey};
use crate::lease::{Grant, Lease, SignedGrant};
use crate::load::{Capabilities, LoadReport};
use crate::membership::{Observed, PeerView};
use crate::message::{Gossip, Message};
use crate::record::{HeldEntry, OutboxEntry, TaskRecord};
use crate::seal::{SealedRecord, Verifier};
use crate::signed::Signed;
use crate::task::{Outcome, Task, TaskId, TaskSpec};
use crate::wire::{self, WireError};

pub use crate::record::TaskState;

/// The most peers a [`Message::Load`] names, and that are taken from one.
const MAX_SAMPLE: usize = 4;

/// Settings of one peer's scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How many tasks this peer runs at once.
    pub slots: u32,
    /// What this peer can run.
    pub capabilities: Capabilities,
    /// Where this peer listens, advertised in its load reports (opaque bytes for the node).
    pub addrs: Vec<Vec<u8>>,
    /// How many peers keep each task's record (the home set), this one included.
    pub replicas: usize,
    /// How often the peer reports its load (its heartbeat).
    pub report_interval_ms: Millis,
    /// How recent a start check a majority of a task's home set must have answered for this
    /// peer to start the task (see `holding::start_checks`): on the side of a fresh partition
    /// cut off from that majority, starts stop within this time of the cut (or twice a member's
    /// round trip, if longer). Checks go at most twice per member in this time, and only while
    /// tasks wait.
    pub start_check_ms: Millis,
    /// How this peer chooses where the tasks it places go.
    pub placement: crate::placement::Policy,
    /// Where load reports go. 0: broadcast to every peer ([`Action::Broadcast`]), right for
    /// swarms of tens of peers. k > 0: sent directly ([`Message::Load`]) to k random known peers,
    /// to the home members of every task this peer holds (so primaries hear their holders), to
    /// the other home members and the holder of every unfinished task whose record it keeps (so
    /// they agree on who is primary), and to a couple of peers heard of but not yet heard from:
    /// the gossip a peer receives stays bounded by its work, not by the size of the swarm, and
    /// each peer keeps a partial view of the swarm.
    pub report_fanout: usize,
    /// The lease time to live: a peer not heard from for this long is taken for dead, and the
    /// tasks it held are re-claimed.
    pub lease_ttl_ms: u32,
    /// How long a steal request may go unanswered before another is sent.
    pub steal_timeout_ms: Millis,
    /// The most tasks in one placement message.
    pub place_batch_max: usize,
    /// How long to wait before sending an unacknowledged message again.
    pub resend_after_ms: Millis,
    /// How long a queued task waits to be worth one more level of priority (see
    /// [`crate::queue`]): a task of priority `p` is never passed by one of priority `P` queued
    /// more than `(P − p) · ageing_ms` after it.
    pub ageing_ms: Millis,
    /// The most completions and transfers held while waiting for an earlier hand-over notice.
    pub early_max: usize,
    /// How long a query for a task this peer does not keep may wait for answers.
    pub query_timeout_ms: Millis,
    /// How long a task may wait for a dependency that no live peer answers for (none keeps its
    /// record) before it fails, saying so.
    pub dependency_timeout_ms: Millis,
    /// How often a client's wait for a task this peer does not keep asks again
    /// ([`Scheduler::watch`]).
    pub watch_every_ms: Millis,
    /// The most unfinished records of other origins' tasks this peer keeps per origin, and their
    /// specs' bytes: a member cannot fill another's memory and disk with records of its own.
    pub records_per_origin: usize,
    /// See [`Config::records_per_origin`].
    pub record_bytes_per_origin: u64,
    /// How long an ended record stays in memory after it ended (or was read back from the
    /// archive), once its replication has settled; then it lives only on disk (see
    /// [`crate::archive`]).
    pub ended_in_memory_ms: Millis,
    /// The most unfinished records the primary's scan (re-claims, retries, lease confirmations)
    /// visits per tick; a pass over a larger backlog goes on over the next ticks, so a tick's cost
    /// does not grow with the backlog (a pass starts every [`Config::report_interval_ms`]).
    pub scan_per_tick: usize,
    /// How long a home member must be gone (not heard from, or left) before the primary replaces
    /// it with the next peer by rendezvous rank, so the task has its full home set again (see
    /// `records/rehoming.rs`). A member back within it is a restart, not a departure.
    pub repair_after_ms: Millis,
    /// What this peer tells about itself in its load reports (its uptime is filled in at each
    /// report: the scheduler's `now`, which the driver starts at 0).
    pub about: crate::load::About,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            slots: 4,
            capabilities: Capabilities::default(),
            addrs: Vec::new(),
            replicas: crate::home::DEFAULT_REPLICAS,
            report_interval_ms: 200,
            start_check_ms: 50,
            report_fanout: 0,
            placement: crate::placement::Policy::PowerOfTwo,
            lease_ttl_ms: 1_500,
            steal_timeout_ms: 1_000,
            place_batch_max: 256,
            resend_after_ms: 500,
            ageing_ms: 10_000,
            early_max: 10_000,
            query_timeout_ms: 2_000,
            dependency_timeout_ms: 60_000,
            watch_every_ms: 250,
            records_per_origin: 200_000,
            record_bytes_per_origin: 512 * 1024 * 1024,
            ended_in_memory_ms: 5_000,
            scan_per_tick: 2_000,
            repair_after_ms: 300_000,
            about: crate::load::About::default(),
        }
    }
}

/// The tasks a message names whose ended records a home member needs to answer it as it would
/// have before they left memory: a stale record (answered with the ended one), a late completion
/// (told it is settled), a cancel and a question (answered with how the task ended). The other
/// messages about an unknown task are ignored, as they are about an ended one.
fn recalled_for(message: &Message) -> Vec<TaskId> {
    match message {
        Message::Store { records } => records.iter().map(|r| r.record.id()).collect(),
        Message::Completed { task, .. }
        | Message::Cancel { task, .. }
        | Message::Query { task, .. } => vec![*task],
        _ => Vec::new(),
    }
}

/// The durable tables a peer keeps. Every row is keyed by task id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Records of the tasks whose home set this peer is in ([`TaskRecord`]).
    Records,
    /// Tasks this peer holds leases on ([`HeldEntry`]).
    Held,
    /// Results this peer produced that their primary has not yet acknowledged ([`OutboxEntry`]).
    Outbox,
    /// Records of ended tasks ([`TaskRecord`]): written once a record ends (and its row in
    /// [`Table::Records`] deleted), read back only through the [`crate::Archive`], never at start.
    Ended,
}

/// What the driver must do. Poll them with [`Scheduler::poll_action`] after every input, and carry
/// them out in order; make every [`Action::Write`] durable before sending any message that
/// follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message to one peer. If it cannot be delivered, tell
    /// [`Scheduler::handle_send_failed`].
    Send {
        /// The receiver.
        to: PeerKey,
        /// The message.
        message: Message,
    },
    /// Broadcast to every peer.
    Broadcast {
        /// The gossip.
        gossip: Gossip,
    },
    /// Start a task in a free slot; report its end with [`Scheduler::handle_finished`].
    Execute {
        /// The task.
        task: TaskId,
        /// The epoch of the lease it runs under (the task may use it to fence side effects).
        epoch: u64,
        /// What to run (boxed: a spec is large next to the other actions).
        spec: Box<TaskSpec>,
        /// The results of the tasks it depends on, in its spec's `after` order.
        inputs: Vec<crate::task::Input>,
    },
    /// Stop a running attempt (its lease is void: cancelled, or this peer was cut off).
    Abort {
        /// The task.
        task: TaskId,
        /// The epoch it runs under.
        epoch: u64,
    },
    /// Write (or, with `None`, delete) a row of a durable table.
    Write {
        /// The table.
        table: Table,
        /// The row.
        key: TaskId,
        /// The encoded row, or `None` to delete it.
        value: Option<Vec<u8>>,
    },
    /// A task's record here changed (see [`Scheduler::task`]): wake anyone waiting on it.
    Changed {
        /// The task.
        task: TaskId,
    },
    /// These submissions are stored on their home sets: acknowledge them to the client.
    Accepted {
        /// The tasks.
        tasks: Vec<TaskId>,
    },
    /// A page of the swarm's tasks, for [`Scheduler::list`]'s `ticket`.
    Listed {
        /// The number [`Scheduler::list`] returned.
        ticket: u64,
        /// The page.
        page: crate::listing::Page,
    },
    /// The answer to a [`Scheduler::query`].
    Answer {
        /// The query's number.
        query: u64,
        /// The record, if some peer keeps it, with its seal (checked).
        record: Option<Box<SealedRecord>>,
    },
    /// A stored row of this task, read back from the archive because something named the task,
    /// did not verify (it changed on disk, or cannot be read) and was ignored: say so. The other
    /// members of its home set still keep the record, and send it when they next meet this peer.
    RowRefused {
        /// The task.
        task: TaskId,
        /// Why, in a few words.
        reason: String,
    },
    /// A peer was heard from for the first time; these are its advertised addresses.
    PeerDiscovered {
        /// The peer.
        peer: PeerKey,
        /// Its addresses.
        addrs: Vec<Vec<u8>>,
    },
}

/// Counts of what this peer rejected, dropped or did. Monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages that did not decode (truncated, unknown, trailing bytes, not canonical).
    pub rejected_malformed: u64,
    /// Messages over the size limit.
    pub rejected_oversize: u64,
    /// Specs, leases or load reports whose signature did not verify.
    pub rejected_signature: u64,
    /// Tasks whose id did not match their spec.
    pub rejected_id_mismatch: u64,
    /// Well-formed messages their sender may not send (a lease granted by a third party, a
    /// completion from a peer that does not hold the lease, …).
    pub rejected_unauthorized: u64,
    /// Completions under an epoch older than the task's current one (a re-claimed lease).
    pub completions_stale: u64,
    /// Completions of tasks that already have a result.
    pub completions_duplicate: u64,
    /// Completions and transfers dropped because too many were waiting.
    pub early_dropped: u64,
    /// Tasks this peer placed as a primary: leases it granted to a holder (itself included).
    pub placements: u64,
    /// Attempts that ended without success and were given another (failed, timed out, or lost
    /// with their holder), as this peer decided as a primary.
    pub retries: u64,
    /// Steal requests sent.
    pub steal_requests: u64,
    /// Tasks received by stealing.
    pub tasks_stolen: u64,
    /// Tasks given to thieves.
    pub tasks_given: u64,
    /// Tasks started in this peer's slots.
    pub tasks_executed: u64,
    /// Leases this peer re-claimed from holders it took for dead.
    pub leases_reclaimed: u64,
    /// Tasks this peer stopped because it could reach none of their home members.
    pub tasks_abandoned: u64,
    /// Stored rows that could not be read back, or whose seal did not verify.
    pub restore_errors: u64,
    /// Ended records that left memory (they stay on disk; see [`crate::archive`]).
    pub evicted: u64,
    /// Ended records read back from the archive.
    pub recalled: u64,
    /// Home sets this peer repaired as primary (a member gone for good replaced).
    pub rehomed: u64,
    /// Records this peer dropped because it was replaced in their home sets while away.
    pub handed_over: u64,
    /// Every rejected message (or part of one: a record, a task) by the kind of message it came
    /// in, whatever the reason: a bad signature or seal, a forged id, a sender without the role.
    pub rejected_by_kind: BTreeMap<&'static str, u64>,
}

impl Counters {
    fn count(&mut self, error: &WireError) {
        let counter = match error {
            WireError::Oversize { .. } => &mut self.rejected_oversize,
            WireError::Malformed(_) | WireError::TrailingBytes(_) | WireError::NonCanonical => {
                &mut self.rejected_malformed
            }
            WireError::BadSignature | WireError::BadSeal(_) => &mut self.rejected_signature,
            WireError::IdMismatch => &mut self.rejected_id_mismatch,
            WireError::Unauthorized(_) => &mut self.rejected_unauthorized,
        };
        *counter += 1;
    }

    /// All rejected messages and parts of messages.
    pub fn rejected(&self) -> u64 {
        self.rejected_malformed
            + self.rejected_oversize
            + self.rejected_signature
            + self.rejected_id_mismatch
            + self.rejected_unauthorized
    }
}

/// What a role may use besides its own room: who this peer is, its settings, and where its
/// outputs go (the actions for the driver, the counters).
pub(super) struct Ctx<'a> {
    key: &'a Keypair,
    me: PeerKey,
    config: &'a Config,
    wall_offset_ms: i64,
    placer: &'a mut crate::placement::Placer,
    verifier: &'a mut Verifier,
    counters: &'a mut Counters,
    actions: &'a mut VecDeque<Action>,
    archive: &'a dyn crate::Archive,
}

impl Ctx<'_> {
    fn send(&mut self, to: PeerKey, message: Message) {
        self.actions.push_back(Action::Send { to, message });
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn write<T: bincode::Encode>(&mut self, table: Table, key: TaskId, value: Option<&T>) {
        let value = value.map(wire::encode);
        self.actions.push_back(Action::Write { table, key, value });
    }

    /// Counts a rejected message (or part of one) of `kind`, and why.
    fn reject(&mut self, kind: &'static str, error: &WireError) {
        self.counters.count(error);
        *self.counters.rejected_by_kind.entry(kind).or_default() += 1;
    }

    /// Signs leases granted by this peer.
    fn sign_grant(&self, leases: Vec<Lease>) -> SignedGrant {
        let grant = Grant {
            granted_by: self.me,
            leases,
        };
        Signed::sign(&grant, self.key)
    }

    /// The wall-clock time at monotonic `now`, for histories shown to people.
    fn wall(&self, now: Millis) -> u64 {
        (now as i64).saturating_add(self.wall_offset_ms).max(0) as u64
    }

    /// Whether this peer acts as the primary of a task with this home set, in the view `peers`.
    fn is_primary(&self, peers: &peers::Peers, home: &[PeerKey], now: Millis) -> bool {
        peers.is_primary(home, now, Millis::from(self.config.lease_ttl_ms))
    }

    /// What `peer` runs, as this peer knows it (its own configuration, or the peer's last report).
    fn capabilities_of<'p>(
        &'p self,
        peers: &'p peers::Peers,
        peer: &PeerKey,
    ) -> Option<&'p Capabilities> {
        if *peer == self.me {
            return Some(&self.config.capabilities);
        }
        peers.view(peer).map(|v| &v.report.capabilities)
    }

    /// Verifies a hand-over notice: it comes from the granter, or from the peer every lease in it
    /// names as the new holder (a thief relays the grant it was given).
    fn verify_transfer_from(
        &mut self,
        from: PeerKey,
        grant: &SignedGrant,
    ) -> Result<Grant, WireError> {
        let grant = grant.verify_cached(self.verifier.keys())?;
        if grant.granted_by != from && grant.leases.iter().any(|l| l.holder != from) {
            return Err(WireError::Unauthorized(
                "hand-over notice from neither the granter nor the new holder",
            ));
        }
        Ok(grant)
    }
}

/// Every role's room, borrowed apart, for a handler to take the ones it needs.
pub(super) struct Rooms<'a> {
    peers: &'a mut peers::Peers,
    home: &'a mut records::Home,
    holding: &'a mut holding::Holding,
    stealing: &'a mut stealing::Stealing,
    asking: &'a mut asking::Asking,
}

/// One peer's scheduler.
///
/// # How it is driven
/// The driver (the node's event loop, or the simulator) owns the scheduler and calls:
/// - **once at start**: [`set_wall_offset`](Self::set_wall_offset) (for timestamps shown to
///   people) and [`restore`](Self::restore) for every row of its durable tables;
/// - **inputs**, each with the current monotonic time in milliseconds and, where a choice is
///   random, an RNG: [`submit`](Self::submit), [`cancel`](Self::cancel) and
///   [`query`](Self::query) for clients; [`handle_message`](Self::handle_message) and
///   [`handle_gossip`](Self::handle_gossip) with the exact bytes received and the authenticated
///   sender; [`handle_finished`](Self::handle_finished) when an executed attempt ends;
///   [`handle_delivered`](Self::handle_delivered) and
///   [`handle_send_failed`](Self::handle_send_failed) when a message was or could not be
///   delivered; and
///   [`tick`](Self::tick) regularly (every few tens of milliseconds: it reports load, re-claims,
///   resends and steals);
/// - **then outputs**: [`poll_action`](Self::poll_action) until it returns `None`, carrying out each
///   [`Action`] in order (writes durable before the sends after them);
/// - **getters** at any time: [`task`](Self::task), [`tasks`](Self::tasks),
///   [`peers`](Self::peers), [`counters`](Self::counters), [`queued`](Self::queued),
///   [`running`](Self::running).
///
/// It never blocks and never fails on network input: bad bytes are counted and dropped. A clone
/// is a snapshot of the peer's whole state (the fuzz targets and tests start many runs from one).
#[derive(Clone, Debug)]
pub struct Scheduler {
    key: Keypair,
    me: PeerKey,
    config: Config,
    wall_offset_ms: i64,
    last_scan_at: Millis,
    /// The `now` of the latest input, for work done outside one (restoring held tasks).
    last_now: Millis,
    // The rooms: each role's own state, changed only in its module.
    /// The other peers as this one sees them, and its own standing (see [`peers::Peers`]).
    peers: peers::Peers,
    /// The home member's and primary's state (see [`records::Home`]).
    home: records::Home,
    /// The holder's state (see [`holding::Holding`]).
    holding: holding::Holding,
    /// The thief's and the victim's state (see [`stealing::Stealing`]).
    stealing: stealing::Stealing,
    /// Questions out and clients' waits (see [`asking::Asking`]).
    asking: asking::Asking,
    /// Swarm-wide lists being gathered (see [`listing::Listing`]).
    listing: listing::Listing,
    // Shared by every role.
    /// The placement policy and its memory.
    placer: crate::placement::Placer,
    /// Checks seals and signatures, keeping public keys decompressed and recent batches' roots.
    verifier: Verifier,
    counters: Counters,
    actions: VecDeque<Action>,
    /// Where ended records are read back from (see [`crate::archive`]).
    archive: std::sync::Arc<dyn crate::Archive>,
}

impl Scheduler {
    /// A scheduler for the peer with key `key`.
    pub fn new(key: Keypair, mut config: Config) -> Self {
        let me = key.public();
        let placement = config.placement;
        let ageing_ms = config.ageing_ms;
        config.capabilities.handlers.sort();
        config.capabilities.handlers.dedup();
        config.slots = config.slots.max(1);
        config.replicas = config.replicas.max(1);
        Self {
            me,
            key,
            config,
            wall_offset_ms: 0,
            last_scan_at: 0,
            last_now: 0,
            peers: peers::Peers::new(me),
            home: records::Home::new(),
            holding: holding::Holding::new(ageing_ms),
            stealing: stealing::Stealing::default(),
            asking: asking::Asking::default(),
            listing: listing::Listing::default(),
            placer: crate::placement::Placer::new(placement),
            verifier: Verifier::default(),
            counters: Counters::default(),
            actions: VecDeque::new(),
            archive: std::sync::Arc::new(crate::NoArchive),
        }
    }

    /// Where this peer's ended records are read back from once they leave memory (see
    /// [`crate::archive`]). Without one, an evicted record is forgotten.
    pub fn set_archive(&mut self, archive: std::sync::Arc<dyn crate::Archive>) {
        self.archive = archive;
    }

    // ----- getters -----

    /// This peer's identity.
    pub fn me(&self) -> PeerKey {
        self.me
    }

    /// This peer's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The record of a task whose home set this peer is in, if it is in memory (unfinished, or
    /// ended lately: see [`Scheduler::look_up`]).
    pub fn task(&self, id: &TaskId) -> Option<&TaskRecord> {
        self.home.entry(id).map(|e| &e.record)
    }

    /// The record of a task whose home set this peer is in, read back from the archive if it
    /// ended and left memory (see [`crate::archive`]).
    pub fn look_up(&mut self, id: &TaskId) -> Option<&TaskRecord> {
        self.recall(self.last_now, id);
        self.home.entry(id).map(|e| &e.record)
    }

    /// The record of a task whose home set this peer is in, with the seal of its current version:
    /// the proof of where the task stands (see [`crate::seal`]).
    pub fn sealed(&mut self, id: &TaskId) -> Option<SealedRecord> {
        self.recall(self.last_now, id);
        self.seal_changed();
        self.home.entry(id).and_then(|e| e.sealed())
    }

    /// Every record this peer keeps, in id order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.home.entries().map(|e| &e.record)
    }

    /// The peers this peer knows, with their last load reports.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerKey, &PeerView)> {
        self.peers.iter()
    }

    /// What was rejected and done so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Tasks waiting in this peer's ready queue.
    pub fn queued(&self) -> usize {
        self.holding.queued()
    }

    /// Tasks running in this peer's slots.
    pub fn running(&self) -> u32 {
        self.holding.running()
    }

    /// The tasks this peer holds leases on, with their epochs.
    pub fn held(&self) -> impl Iterator<Item = (TaskId, u64)> + '_ {
        self.holding.leases()
    }

    // ----- outputs -----

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.flush();
        self.actions.pop_front()
    }

    // ----- set-up -----

    /// Tells the scheduler the wall clock minus the monotonic clock, in milliseconds. Used only to
    /// timestamp histories shown to people; no decision reads it.
    pub fn set_wall_offset(&mut self, offset_ms: i64) {
        self.wall_offset_ms = offset_ms;
    }

    /// Replaces the advertised addresses (the node learns them after the scheduler is built).
    pub fn set_addrs(&mut self, addrs: Vec<Vec<u8>>) {
        self.config.addrs = addrs;
    }

    /// Takes back one row of a durable table, at start. A row that cannot be read, or a record
    /// whose seal does not verify (it changed on disk), is counted, skipped and returned as an
    /// error saying why; the peer gets the record again from the other members of its home set.
    /// Held tasks come back ready to run again (at-least-once execution).
    pub fn restore(&mut self, table: Table, bytes: &[u8]) -> Result<(), WireError> {
        let restored = match table {
            Table::Records | Table::Ended => {
                SealedRecord::from_bytes(bytes).and_then(|r| self.restore_record(r))
            }
            Table::Held => wire::decode::<HeldEntry>(bytes).and_then(|h| self.restore_held(h)),
            Table::Outbox => wire::decode::<OutboxEntry>(bytes).map(|o| self.holding.keep(o)),
        };
        if restored.is_err() {
            self.counters.restore_errors += 1;
        }
        self.peers.rejoin();
        restored
    }

    fn restore_held(&mut self, held: HeldEntry) -> Result<(), WireError> {
        let task = Task::from_envelope_cached(held.envelope, self.verifier.keys())?;
        self.hold(task, held.epoch);
        Ok(())
    }

    // ----- inputs -----

    /// Accepts tasks submitted through this peer: completes each spec (this peer as submitter
    /// and first of its home set, its dependencies' ids), signs it, and places it. Returns each
    /// task's id in order, or why it was refused; an [`Action::Accepted`] follows once each is
    /// stored on its home set. The caller makes nonces unique: submitting the same spec with the
    /// same nonce again is the same task, and returns its id again.
    pub fn submit(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        submissions: Vec<crate::task::Submission>,
    ) -> Vec<Result<TaskId, WireError>> {
        self.boot(now);
        if self.peers.leaving() || self.peers.draining() {
            let leaving = WireError::Unauthorized("this peer is leaving the swarm");
            return submissions.iter().map(|_| Err(leaving.clone())).collect();
        }
        let results = self.accept(now, rng, submissions);
        self.finish_input(now, rng);
        results
    }

    /// Takes a direct message with its authenticated sender. Bad bytes are counted and dropped.
    pub fn handle_message(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        bytes: &[u8],
    ) {
        self.boot(now);
        self.on_message(now, rng, from, bytes);
        self.finish_input(now, rng);
    }

    /// One message, checked and handled; the caller ends the input.
    fn on_message(&mut self, now: Millis, rng: &mut dyn RngCore, from: PeerKey, bytes: &[u8]) {
        if self.peers.leaving() {
            // It said goodbye: it takes no more work and changes no more records.
            return;
        }
        let message = match wire::decode::<Message>(bytes) {
            Ok(message) => message,
            Err(error) => return self.counters.count(&error),
        };
        // A peer heard again after it was taken for dead is met anew, whatever it sent first (a
        // record, a placement, an answer may come before its next load report): it is brought
        // level, and does not count towards a majority here until it is, so this peer does not
        // act on records the other side of a healed cut has moved past.
        let was_gone = self.peers.taken_for_dead(&from);
        self.peers.heard_from(from, now);
        if was_gone && self.peers.alive(&from) {
            self.catch_up(from, now);
            self.send(from, Message::CatchUp);
        }
        // A message about an ended task this peer keeps only on disk is answered as if the
        // record had never left memory.
        for id in recalled_for(&message) {
            self.recall(now, &id);
        }
        // Who may send what. Every rule is checked by the role that handles the message; a
        // message that breaks one changes nothing and is counted (`rejected_by_kind`).
        match message {
            // From a home member of each record's task, to a member; each record sealed by a
            // home member, with the home set its spec signs.
            Message::Store { records } => {
                let (home, peers, mut ctx) = self.member();
                home.on_store(&mut ctx, peers, now, from, records);
            }
            // From a home member of the task.
            Message::Stored { acks } => {
                let (home, peers, mut ctx) = self.member();
                home.on_stored(&mut ctx, peers, from, &acks);
            }
            // From the task's primary as this peer sees it (a home member, and no member ranked
            // before it heard from lately), with a grant it signed naming this peer.
            Message::Place { tasks, grant } => {
                self.on_tasks_granted(now, from, tasks, &grant, false);
            }
            // From any member: the transport admitted it (the swarm key, the allowlist), and
            // asking proves it alive. What it gets is only what its capabilities can run, under
            // leases signed here that the tasks' home sets check.
            Message::StealRequest {
                free_slots,
                capabilities,
            } => {
                let (stealing, holding, _, mut ctx) = self.thief();
                stealing.give(&mut ctx, holding, from, free_slots, &capabilities);
            }
            // From a peer this one asked for work and has not heard back from, with a grant it
            // signed naming this peer.
            Message::StealGrant { tasks, grant } => {
                if self.stealing.answered(from) {
                    let homes = self.on_tasks_granted(now, from, tasks, &grant, true);
                    self.relay_transfer(now, rng, homes, &grant);
                } else {
                    let error = WireError::Unauthorized("a steal grant nobody asked for");
                    self.reject("steal-grant", &error);
                }
            }
            Message::NothingToSteal => {
                if self.stealing.answered(from) {
                    self.peers.note_nothing_queued(&from);
                } else {
                    let error = WireError::Unauthorized("an answer to a steal nobody asked for");
                    self.reject("nothing-to-steal", &error);
                }
            }
            // From the granter or the new holder; a member applies it only if the granter held
            // the task at the epoch before.
            Message::Transferred { grant } => self.on_transferred(now, rng, from, &grant),
            // From the holder of the task at that epoch.
            Message::Started { tasks } => self.on_started(now, from, &tasks),
            // From the holder of the task at the current epoch (a later epoch waits for its
            // hand-over notice).
            Message::Completed {
                task,
                epoch,
                outcome,
            } => self.on_completed(now, rng, from, task, epoch, outcome),
            // From a home member of the task whose result this peer keeps.
            Message::Recorded { tasks } => self.on_recorded(from, &tasks),
            // From the holder of the task at that epoch.
            Message::Refused { task, epoch } => {
                let (home, mut others, mut ctx) = self.primary();
                home.on_refused(&mut ctx, &mut others, now, rng, from, task, epoch);
            }
            // From a home member of each task asked about.
            Message::Confirm { tasks } => self.on_confirm(from, &tasks),
            // From the holder of each task at that epoch.
            Message::Missing { tasks } => {
                let (home, mut others, mut ctx) = self.primary();
                home.on_missing(&mut ctx, &mut others, now, rng, from, &tasks);
            }
            // From a home member, or a live member carrying an authorized client's decision.
            Message::Cancel { task, by } => {
                if self.may_cancel(from, &task) {
                    self.on_cancel(now, task, from, by.as_deref());
                } else {
                    let error = WireError::Unauthorized("a cancel from an unknown peer");
                    self.reject("cancel", &error);
                }
            }
            // From a home member of the task.
            Message::Abort { task, epoch } => self.on_abort(from, task, epoch),
            // A report signed by its sender.
            Message::Load { report, peers } => self.on_load(now, from, report, peers),
            // From any member: it is sent only records of home sets it is in, and a member
            // already being caught up is not caught up again.
            Message::CatchUp => {
                if !self.home.is_catching_up(&from) {
                    self.catch_up(from, now);
                }
            }
            // From any member: it asks for nothing.
            Message::Probe => {}
            // From any member: records are not secret among members.
            Message::Query { query, task } => {
                let record = self
                    .home
                    .entry(&task)
                    .and_then(|e| e.sealed())
                    .map(Box::new);
                self.send(from, Message::Answer { query, record });
            }
            // From a peer that was asked this question, once, about the task asked; a record in
            // it must hold (spec and seal).
            Message::Answer { query, record } => self.on_answer(now, from, query, record),
            // From any member: the answer is all it asks, and costs as little as the question.
            Message::Ping { round } => self.send(from, Message::Pong { round }),
            // From a peer this one sent a start check of that round (or a later one).
            Message::Pong { round } => self.on_pong(now, from, round),
            // From any member: records are not secret among members.
            Message::List {
                query,
                filter,
                limit,
            } => self.on_list(now, from, query, filter, limit),
            // From a peer asked that question, once; each entry for a task whose home set names
            // the sender (see `listing`).
            Message::Listed { query, answer } => self.on_listed(from, query, answer),
        }
    }

    /// Takes a request: a [`crate::message::Batch`] of messages from `from`, each checked and
    /// handled as by [`Scheduler::handle_message`], as one input (one seal for the records they
    /// change, one round of sends). A batch that does not decode is counted and dropped whole.
    pub fn handle_batch(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        bytes: &[u8],
    ) {
        self.boot(now);
        match wire::decode::<crate::message::Batch>(bytes) {
            // One input for the whole batch: the records its messages change are sealed
            // together, and what they cause is sent in one round.
            Ok(batch) => {
                for frame in &batch.frames {
                    self.on_message(now, rng, from, frame);
                }
                self.finish_input(now, rng);
            }
            Err(error) => self.counters.count(&error),
        }
    }

    /// Tells this peer of another (a bootstrap peer, say) that it may not have heard from yet. In
    /// fanout mode ([`Config::report_fanout`]) it is sent this peer's next reports until it is
    /// heard from; with broadcast, gossip makes this unnecessary.
    pub fn introduce(&mut self, peer: PeerKey) {
        self.peers.introduce(peer);
    }

    /// Takes a broadcast message. Bad bytes and bad signatures are counted and dropped.
    pub fn handle_gossip(&mut self, now: Millis, rng: &mut dyn RngCore, bytes: &[u8]) {
        self.boot(now);
        match wire::decode::<Gossip>(bytes) {
            Ok(Gossip::Load(report)) => self.observe_report(now, report, None),
            Err(error) => self.counters.count(&error),
        }
        self.finish_input(now, rng);
    }

    /// Takes a signed load report (from gossip, or sent directly by `sender`): bad signatures
    /// and reports relayed by someone other than their peer are counted and dropped.
    fn observe_report(
        &mut self,
        now: Millis,
        report: crate::load::SignedLoadReport,
        sender: Option<PeerKey>,
    ) {
        let kind = if sender.is_some() { "load" } else { "gossip" };
        let report = match report.open_cached(self.verifier.keys()) {
            Ok(report) => report,
            Err(error) => return self.reject(kind, &error),
        };
        if sender.is_some_and(|s| s != report.peer) {
            let error = WireError::Unauthorized("a load report sent by another peer");
            return self.reject(kind, &error);
        }
        if report.peer == self.me {
            return;
        }
        if report.leaving {
            // A signed goodbye: what it held and led is taken over now, not after a TTL.
            let (peer, boot) = (report.peer, report.boot);
            let known = self.peers.alive(&peer);
            self.peers.left(peer, boot, now);
            if known {
                self.take_for_dead(now, &[peer]);
            }
            return;
        }
        let (peer, addrs) = (report.peer, report.addrs.clone());
        if self.peers.observe(report, now) == Observed::New {
            self.actions
                .push_back(Action::PeerDiscovered { peer, addrs });
            self.catch_up(peer, now);
            self.send(peer, Message::CatchUp);
        }
    }

    /// Sends `peer` the records of the home sets they share (it has just been met, or heard or
    /// reached again after a cut): until it has them, it does not count towards a majority here.
    fn catch_up(&mut self, peer: PeerKey, now: Millis) {
        self.peers.met(peer, now);
        let (home, _, ctx) = self.member();
        home.catch_up(&ctx, peer, now);
        if self.home.is_catching_up(&peer) {
            self.peers.syncing(peer);
        }
    }

    /// A load report sent directly (fanout mode), with peers the sender knows.
    fn on_load(
        &mut self,
        now: Millis,
        from: PeerKey,
        report: crate::load::SignedLoadReport,
        peers: Vec<PeerKey>,
    ) {
        self.observe_report(now, report, Some(from));
        for peer in peers.into_iter().take(MAX_SAMPLE) {
            self.peers.introduce(peer);
        }
    }

    /// An attempt this peer executed has ended.
    pub fn handle_finished(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        task: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        self.boot(now);
        self.on_finished(now, rng, task, epoch, outcome);
        self.finish_input(now, rng);
    }

    /// A message this peer sent could not be delivered (or its acknowledgement did not come
    /// back). Until something sent to `to` is delivered again, `to` does not count towards a
    /// majority of any home set here: across a one-way cut, hearing a peer is not reaching it.
    pub fn handle_send_failed(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        to: PeerKey,
        message: Message,
    ) {
        self.boot(now);
        self.peers.unreachable(to, now);
        match message {
            // A failed send is not a death: the peer may be restarting, or the connection may
            // have dropped with the acknowledgement. It is unreachable (above) until a message
            // to it arrives, and taken for dead only after a TTL of silence; taking it for dead
            // at once re-claimed the tasks it was running, and ran them twice.
            Message::StealRequest { .. } => {
                self.stealing.undelivered(&to);
            }
            Message::Place { grant, .. } => {
                // Our own grant: its bytes were signed here.
                let leases = grant.decode_verified_earlier().map(|g| g.leases);
                let (home, mut others, mut ctx) = self.primary();
                home.on_placement_failed(
                    &mut ctx,
                    &mut others,
                    now,
                    rng,
                    to,
                    &leases.unwrap_or_default(),
                );
            }
            Message::StealGrant { tasks, .. } => {
                let (stealing, _, peers, mut ctx) = self.thief();
                stealing.grant_undelivered(&mut ctx, peers, &tasks);
            }
            // A hand-over notice must arrive, or the home set would wait for it forever (it
            // holds later transfers and the completion back until it has every link): send it
            // again while the member lives, on the resend timer (a dead peer's dial fails at
            // once, and sending at once would spin).
            Message::Transferred { grant } if self.alive(&to) => {
                self.stealing.notice_undelivered(to, grant, now);
            }
            Message::Query { query, .. } => self.on_answer(now, to, query, None),
            // Everything else is sent again on a timer until acknowledged, or is advisory.
            _ => {}
        }
        self.finish_input(now, rng);
    }

    /// A message this peer sent to `to` was delivered (the receiver acknowledged the bytes).
    pub fn handle_delivered(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        to: PeerKey,
        message: &Message,
    ) {
        self.boot(now);
        if self.peers.reached(&to) {
            // The way to `to` is open again: bring it level before counting on it.
            self.catch_up(to, now);
        }
        if let Message::StealGrant { tasks, grant } = message {
            let (stealing, _, _, _) = self.thief();
            let members = stealing.grant_delivered(tasks);
            self.relay_transfer(now, rng, members, grant);
            self.finish_input(now, rng);
        }
    }

    /// Leaves the swarm (the peer is shutting down): stops everything it holds, as if it had
    /// been cut off, and says so in a signed load report, on which the others take it for dead
    /// at once: the tasks it held are re-claimed and placed elsewhere, and the next member leads
    /// what it led, without waiting for its lease TTL. From then on it takes no work, leads
    /// nothing and answers no peer; its later reports say it is leaving too.
    pub fn leave(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.boot(now);
        self.peers.leave();
        self.abandon_all();
        self.report(now, rng);
        self.finish_input(now, rng);
    }

    /// Drains this peer: it takes no new work (submissions are refused, placements handed back,
    /// nothing stolen), leads nothing (its load report says it is draining, and the next member
    /// of each home set it led leads it), and hands its queued tasks back to their primaries
    /// (`Missing`), which place them elsewhere at once; it finishes the tasks it runs and
    /// delivers their results. [`Scheduler::is_drained`] then says it may leave
    /// ([`Scheduler::leave`]).
    pub fn drain(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.boot(now);
        if !self.peers.leaving() && !self.peers.draining() {
            self.peers.drain();
            self.report(now, rng);
            self.give_back_queued();
        }
        self.finish_input(now, rng);
    }

    /// Whether this peer is draining (see [`Scheduler::drain`]).
    pub fn is_draining(&self) -> bool {
        self.peers.draining()
    }

    /// Whether a draining peer is done: it runs nothing, holds nothing queued, and every result
    /// it kept was acknowledged by its primary.
    pub fn is_drained(&self) -> bool {
        self.peers.draining() && self.holding.is_empty()
    }

    /// Whether this peer is leaving (see [`Scheduler::leave`]).
    pub fn is_leaving(&self) -> bool {
        self.peers.leaving()
    }

    /// Time passes: report load, forget silent peers, re-claim, retry, resend, steal, dispatch.
    /// A peer that is leaving only reports, every interval, that it is.
    pub fn tick(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.boot(now);
        if self.peers.leaving() {
            if self.peers.report_due(now, self.config.report_interval_ms) {
                self.report(now, rng);
            }
            return self.finish_input(now, rng);
        }
        self.peers.ticked(now);
        if self.peers.report_due(now, self.config.report_interval_ms) {
            self.report(now, rng);
        }
        let ttl = Millis::from(self.config.lease_ttl_ms);
        let gone = self.peers.expire(now, ttl);
        self.take_for_dead(now, &gone);
        self.stealing.expire(now, self.config.steal_timeout_ms);
        // A pass of the primary's scan starts every report interval; a pass over more records
        // than one tick visits goes on at the next ticks until it has visited them all.
        let pass_due = now.saturating_sub(self.last_scan_at) >= self.config.report_interval_ms;
        if pass_due || self.home.scanning() {
            if pass_due {
                self.last_scan_at = now;
                self.scan_held(now);
            }
            let (home, mut others, mut ctx) = self.primary();
            home.scan_records(&mut ctx, &mut others, now, rng);
        }
        self.evict_ended(now);
        self.resend_due(now, rng);
        for peer in self.peers.due_probes(now, self.config.resend_after_ms) {
            self.send(peer, Message::Probe);
        }
        let (asking, peers, mut ctx) = self.asker();
        asking.expire(&mut ctx, now);
        asking.ask_watched(&mut ctx, peers, now, rng);
        self.expire_lists(now);
        self.finish_input(now, rng);
    }

    // ----- shared helpers -----

    /// `gone` are taken for dead (already out of the peers' view, or taken out here): the records
    /// they led and this peer now leads are brought level on the other members (see
    /// `Home::level_after_deaths` for when).
    fn take_for_dead(&mut self, now: Millis, gone: &[PeerKey]) {
        if gone.is_empty() {
            return;
        }
        for peer in gone {
            self.peers.remove(peer);
            self.holding.forget_checks(peer);
            self.forget_list_answers_from(peer);
        }
        let (home, peers, ctx) = self.member();
        home.level_after_deaths(&ctx, peers, now, gone);
    }

    /// Runs first in every input: notes the start, and notices a freeze.
    fn boot(&mut self, now: Millis) {
        self.last_now = self.last_now.max(now);
        let home = &self.home;
        self.peers.retain_syncing(|p| home.is_catching_up(p));
        let frozen_after = Millis::from(self.config.lease_ttl_ms) * 2 / 3;
        if self.peers.wake(now, frozen_after) {
            // The driver ticks every few tens of milliseconds; a gap this long means this peer
            // was frozen or starved. It heard nobody meanwhile, whatever is arriving now, and its
            // leases may have been re-claimed: stop everything it holds before doing anything
            // else (such as starting the tasks it had queued). And, as after a restart, it must
            // hear the others again before it takes anyone for dead: others may have taken over
            // as primary of its tasks meanwhile.
            self.abandon_all();
        }
    }

    /// Whether this peer has been up long enough to have heard every live peer, so that its view
    /// of who is dead can be acted on.
    fn settled(&self, now: Millis) -> bool {
        self.peers
            .settled(now, Millis::from(self.config.lease_ttl_ms))
    }

    /// Whether `peer` is alive in this peer's view (this peer always is).
    fn alive(&self, peer: &PeerKey) -> bool {
        self.peers.alive(peer)
    }

    /// Whether `peer` was heard from within `window` ms (this peer always was).
    fn heard_within(&self, peer: &PeerKey, now: Millis, window: Millis) -> bool {
        self.peers.heard_within(peer, now, window)
    }

    /// Whether this peer acts as the primary of a task with this home set (see
    /// [`peers::Peers::is_primary`]).
    fn is_primary(&self, home: &[PeerKey], now: Millis) -> bool {
        let ttl = Millis::from(self.config.lease_ttl_ms);
        self.peers.is_primary(home, now, ttl)
    }

    /// Whether `peer` may act as the primary of a task with this home set, as this peer sees it:
    /// it is a member, and no member ranked before it was heard from within half a lease TTL
    /// (this peer itself counts only while it acts as primary). A primary that took over from a
    /// member it found silent for a TTL passes; one that takes over while an earlier member is
    /// plainly alive does not.
    fn may_lead(&self, peer: &PeerKey, home: &[PeerKey], now: Millis) -> bool {
        let Some(rank) = home.iter().position(|m| m == peer) else {
            return false;
        };
        let lately = Millis::from(self.config.lease_ttl_ms) / 2;
        home[..rank].iter().all(|m| {
            if *m == self.me {
                !self.is_primary(home, now)
            } else {
                !self.heard_within(m, now, lately) || self.peers.is_draining(m)
            }
        })
    }

    /// Whether `from` may cancel `task`: a home member may; so may any other member this peer
    /// knows by its signed load reports, which carries the decision of a client its API
    /// authorized (named in the message).
    fn may_cancel(&self, from: PeerKey, task: &TaskId) -> bool {
        let home_member = self
            .home
            .entry(task)
            .is_some_and(|e| e.record.home().contains(&from));
        home_member || self.peers.view(&from).is_some()
    }

    fn verify_grant_from(
        &mut self,
        from: PeerKey,
        grant: &SignedGrant,
    ) -> Result<Grant, WireError> {
        let grant = grant.verify_cached(self.verifier.keys())?;
        if grant.granted_by != from {
            return Err(WireError::Unauthorized(
                "grant signed by someone other than the sender",
            ));
        }
        Ok(grant)
    }

    /// Counts a rejected message (or part of one) of `kind`, and why.
    fn reject(&mut self, kind: &'static str, error: &WireError) {
        self.counters.count(error);
        *self.counters.rejected_by_kind.entry(kind).or_default() += 1;
    }

    /// The context and the rooms, borrowed apart: what a role's handler is given a part of.
    fn split(&mut self) -> (Ctx<'_>, Rooms<'_>) {
        let Scheduler {
            key,
            me,
            config,
            wall_offset_ms,
            peers,
            home,
            holding,
            stealing,
            asking,
            placer,
            verifier,
            counters,
            actions,
            archive,
            ..
        } = self;
        let ctx = Ctx {
            key,
            me: *me,
            config,
            wall_offset_ms: *wall_offset_ms,
            placer,
            verifier,
            counters,
            actions,
            archive: &**archive,
        };
        let rooms = Rooms {
            peers,
            home,
            holding,
            stealing,
            asking,
        };
        (ctx, rooms)
    }

    /// The home member's handler: its room, the peers' view (who is alive), and the context.
    fn member(&mut self) -> (&mut records::Home, &peers::Peers, Ctx<'_>) {
        let (ctx, rooms) = self.split();
        (rooms.home, rooms.peers, ctx)
    }

    /// The primary's handler: its room (the home member's), the other rooms it reads (see
    /// [`records::Others`]), and the context.
    fn primary(&mut self) -> (&mut records::Home, records::Others<'_>, Ctx<'_>) {
        let (ctx, rooms) = self.split();
        let others = records::Others {
            peers: rooms.peers,
            holding: rooms.holding,
            stealing: rooms.stealing,
        };
        (rooms.home, others, ctx)
    }

    /// Carries out what the home role handed to the other roles during this input: tasks it
    /// placed on this peer go to the holder, cancelled ones it holds are stopped, watches of
    /// tasks that ended are answered, and dependencies it does not keep are asked for.
    fn route_handoffs(&mut self, now: Millis, rng: &mut dyn RngCore) {
        for handoff in self.home.take_handoffs() {
            match handoff {
                records::Handoff::Hold { task, epoch } => self.hold(*task, epoch),
                records::Handoff::Abort(id) => self.abort_held(id),
                records::Handoff::Ended(id) => self.asking.end_local_watches(id),
                records::Handoff::Ask { task, targets } => {
                    let query =
                        self.asking
                            .ask_for_dependency(rng, now, task, targets.iter().copied());
                    for peer in targets {
                        self.send(peer, Message::Query { query, task });
                    }
                }
            }
        }
    }

    /// The holder's handler: its room, what it reads of the peers' view and of the tasks given
    /// away, and the context. It borrows nothing else.
    fn holder(
        &mut self,
    ) -> (
        &mut holding::Holding,
        &peers::Peers,
        &stealing::Stealing,
        Ctx<'_>,
    ) {
        let (ctx, rooms) = self.split();
        (rooms.holding, rooms.peers, rooms.stealing, ctx)
    }

    fn send(&mut self, to: PeerKey, message: Message) {
        self.actions.push_back(Action::Send { to, message });
    }

    /// Ends every input: gate dependents, steal if idle, start what fits. (What changed is sealed
    /// and sent when the driver takes the actions: see [`Scheduler::flush`].)
    fn finish_input(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.route_handoffs(now, rng);
        let (home, mut others, mut ctx) = self.primary();
        home.release_dependents(&mut ctx, &mut others, now, rng);
        self.route_handoffs(now, rng);
        self.maybe_steal(now, rng);
        self.dispatch(now);
    }

    /// Seals the records changed since the driver last took the actions, and sends what was
    /// batched meanwhile, one message per receiver and kind. Runs when the driver takes the first
    /// action: a driver that handles several inputs before it carries out their actions (the
    /// node's group commit) gets one seal, and one `Store` per member, for all of them.
    fn flush(&mut self) {
        debug_assert!(
            !self.home.has_handoffs(),
            "every input routes the home role's handoffs before its end"
        );
        self.seal_changed();
        for (ticket, task) in self.asking.take_ended() {
            let record = self
                .home
                .entry(&task)
                .and_then(|e| e.sealed())
                .map(Box::new);
            self.actions.push_back(Action::Answer {
                query: ticket,
                record,
            });
        }
        self.start_ahead_of_writes();
        let (home, _, mut ctx) = self.member();
        home.flush(&mut ctx);
    }

    /// Moves ahead of the writes waiting among the actions the attempts of tasks whose lease
    /// this peer stored before them: an attempt needs only its own lease on disk, so a slot that
    /// frees up is filled without waiting for the round's commit (the finished attempt's result,
    /// say). A task held and started in the same round still starts after its lease is written.
    fn start_ahead_of_writes(&mut self) {
        if !self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Execute { .. }))
        {
            return;
        }
        let leases_written: BTreeSet<TaskId> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Write {
                    table: Table::Held,
                    key,
                    ..
                } => Some(*key),
                _ => None,
            })
            .collect();
        let (ahead, behind): (VecDeque<Action>, VecDeque<Action>) =
            self.actions.drain(..).partition(
                |a| matches!(a, Action::Execute { task, .. } if !leases_written.contains(task)),
            );
        self.actions = ahead;
        self.actions.extend(behind);
    }

    fn report(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let (boot, seq) = self.peers.next_report(now, rng);
        let report = LoadReport {
            peer: self.me,
            boot,
            seq,
            queued: self.holding.queued() as u32,
            running: self.holding.running(),
            slots: self.config.slots,
            capabilities: self.config.capabilities.clone(),
            addrs: self.config.addrs.clone(),
            leaving: self.peers.leaving(),
            draining: self.peers.draining(),
            about: crate::load::About {
                uptime_ms: now,
                ..self.config.about.clone()
            },
        };
        let signed = Signed::sign(&report, &self.key);
        if self.config.report_fanout == 0 {
            let gossip = Gossip::Load(signed);
            self.actions.push_back(Action::Broadcast { gossip });
            return;
        }
        let known: Vec<PeerKey> = self.peers.keys();
        let sample: Vec<PeerKey> =
            rand::seq::IndexedRandom::choose_multiple(known.as_slice(), rng, MAX_SAMPLE)
                .copied()
                .collect();
        let mut targets: BTreeSet<PeerKey> = rand::seq::IndexedRandom::choose_multiple(
            known.as_slice(),
            rng,
            self.config.report_fanout,
        )
        .copied()
        .collect();
        for _ in 0..2 {
            if let Some(candidate) = self.peers.next_candidate() {
                targets.insert(candidate);
            }
        }
        // Liveness is judged by reports: holders must be heard by the home sets of what they
        // hold, and home members by each other, or two of them could both act as primary.
        for home in self.holding.homes() {
            targets.extend(home.iter().copied());
        }
        for entry in self.home.entries() {
            if !entry.record.state.is_final() {
                targets.extend(entry.record.home().iter().copied());
                targets.extend(entry.record.holder);
            }
        }
        targets.remove(&self.me);
        for to in targets {
            let message = Message::Load {
                report: signed.clone(),
                peers: sample.clone(),
            };
            self.send(to, message);
        }
    }
}
