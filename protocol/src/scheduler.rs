//! The scheduler state machine: one per peer, the same code under libp2p and in the simulator.
//!
//! It owns every decision a peer makes about tasks: accepting submissions, placing them, holding
//! and dispatching them into the peer's slots, stealing and giving work, recording results, and
//! reporting its load. It never performs IO, reads a clock or draws OS randomness: the caller
//! hands in `now` and an RNG, and carries out the [`Action`]s it emits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::RngCore;

use crate::Millis;
use crate::identity::{Keypair, PeerKey};
use crate::lease::{Grant, Lease, SignedGrant};
use crate::load::{Capabilities, LoadReport};
use crate::membership::{Membership, Observed, PeerView};
use crate::message::{Gossip, Message};
use crate::placement::{self, Candidate};
use crate::signed::Signed;
use crate::steal;
use crate::task::{Envelope, Outcome, SignedSpec, Task, TaskId, TaskSpec};
use crate::wire::{self, WireError};

/// Settings of one peer's scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How many tasks this peer runs at once.
    pub slots: u32,
    /// What this peer can run.
    pub capabilities: Capabilities,
    /// Where this peer listens, advertised in its load reports (opaque bytes for the node).
    pub addrs: Vec<Vec<u8>>,
    /// How often the peer broadcasts its load report (its heartbeat).
    pub report_interval_ms: Millis,
    /// How long a silent peer stays a member.
    pub peer_timeout_ms: Millis,
    /// How long a steal request may go unanswered before another is sent.
    pub steal_timeout_ms: Millis,
    /// The time to live of the leases this peer grants.
    pub lease_ttl_ms: u32,
    /// The most tasks in one placement message.
    pub place_batch_max: usize,
    /// How long to wait before sending a failed message again.
    pub resend_after_ms: Millis,
    /// How often a failed message is sent again before it is given up.
    pub resend_attempts: u32,
    /// The most completions and transfers held while waiting for an earlier hand-over notice.
    pub early_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            slots: 4,
            capabilities: Capabilities::default(),
            addrs: Vec::new(),
            report_interval_ms: 200,
            peer_timeout_ms: 3_000,
            steal_timeout_ms: 1_000,
            lease_ttl_ms: 2_000,
            place_batch_max: 256,
            resend_after_ms: 500,
            resend_attempts: 10,
            early_max: 10_000,
        }
    }
}

/// Where a task stands, as its origin records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskState {
    /// Accepted, not yet started (being placed, or queued at its holder).
    Waiting,
    /// Its holder has started it.
    Running,
    /// It ran and succeeded (exit code 0, or its handler returned).
    Completed,
    /// It ran and did not succeed.
    Failed,
}

impl TaskState {
    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Failed)
    }

    /// The lower-case name used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
        }
    }
}

/// The record an origin keeps of each task submitted through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// The verified task.
    pub task: Task,
    /// Where it stands.
    pub state: TaskState,
    /// The epoch of the current lease (0 before the first placement).
    pub epoch: u64,
    /// The current lease holder, if placed.
    pub holder: Option<PeerKey>,
    /// When it was accepted, on the origin's clock.
    pub submitted_at: Millis,
    /// When its result was recorded.
    pub finished_at: Option<Millis>,
    /// The recorded result.
    pub outcome: Option<Outcome>,
    /// Who ran the recorded attempt.
    pub executed_by: Option<PeerKey>,
}

/// What the driver must do. Poll them with [`Scheduler::poll_action`] after every input.
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
        /// What to run.
        spec: TaskSpec,
    },
    /// A task record changed (see [`Scheduler::task`]): store it and wake anyone waiting on it.
    Persist {
        /// The task.
        task: TaskId,
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
    /// Well-formed messages their sender may not send (a lease granted by a third party, …).
    pub rejected_unauthorized: u64,
    /// Completions under an epoch older than the task's current one.
    pub completions_stale: u64,
    /// Completions of tasks that already have a result.
    pub completions_duplicate: u64,
    /// Completions and transfers dropped because too many were waiting.
    pub early_dropped: u64,
    /// Steal requests sent.
    pub steal_requests: u64,
    /// Tasks received by stealing.
    pub tasks_stolen: u64,
    /// Tasks given to thieves.
    pub tasks_given: u64,
    /// Tasks started in this peer's slots.
    pub tasks_executed: u64,
    /// Messages given up after every resend failed.
    pub messages_given_up: u64,
}

impl Counters {
    fn count(&mut self, error: &WireError) {
        let counter = match error {
            WireError::Oversize { .. } => &mut self.rejected_oversize,
            WireError::Malformed(_) | WireError::TrailingBytes(_) | WireError::NonCanonical => {
                &mut self.rejected_malformed
            }
            WireError::BadSignature => &mut self.rejected_signature,
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

/// A task this peer holds a lease on.
#[derive(Clone, Debug)]
struct Held {
    task: Task,
    epoch: u64,
    running: bool,
}

/// A message to send again after `due`.
#[derive(Clone, Debug)]
struct Resend {
    due: Millis,
    to: PeerKey,
    message: Message,
}

/// A completion that names an epoch the origin has not yet heard of.
#[derive(Clone, Debug)]
struct EarlyCompletion {
    from: PeerKey,
    epoch: u64,
    outcome: Outcome,
}

/// One peer's scheduler.
///
/// # How it is driven
/// The driver (the node's event loop, or the simulator) owns the scheduler and calls:
/// - **inputs**, each with the current monotonic time in milliseconds and, where a choice is
///   random, an RNG: [`submit`](Self::submit) for new tasks, [`handle_message`](Self::handle_message)
///   and [`handle_gossip`](Self::handle_gossip) with the exact bytes received and the
///   authenticated sender, [`handle_finished`](Self::handle_finished) when an executed task ends,
///   [`handle_send_failed`](Self::handle_send_failed) when a message could not be delivered, and
///   [`tick`](Self::tick) regularly (every few tens of milliseconds: it reports load, steals and
///   resends);
/// - **then outputs**: [`poll_action`](Self::poll_action) until it returns `None`, carrying out each
///   [`Action`] in order;
/// - **getters** at any time: [`task`](Self::task), [`tasks`](Self::tasks),
///   [`peers`](Self::peers), [`counters`](Self::counters), [`queued`](Self::queued),
///   [`running`](Self::running).
///
/// It never blocks and never fails on network input: bad bytes are counted and dropped.
#[derive(Debug)]
pub struct Scheduler {
    key: Keypair,
    me: PeerKey,
    config: Config,
    members: Membership,
    records: BTreeMap<TaskId, TaskRecord>,
    unplaced: VecDeque<TaskId>,
    held: BTreeMap<TaskId, Held>,
    ready: VecDeque<TaskId>,
    running: u32,
    steal_pending: Option<(PeerKey, Millis)>,
    early_completions: BTreeMap<TaskId, EarlyCompletion>,
    early_transfers: BTreeMap<TaskId, Vec<Lease>>,
    resends: VecDeque<Resend>,
    send_failures: BTreeMap<PeerKey, u32>,
    report_seq: u64,
    last_report_at: Option<Millis>,
    counters: Counters,
    actions: VecDeque<Action>,
}

impl Scheduler {
    /// A scheduler for the peer with key `key`.
    pub fn new(key: Keypair, mut config: Config) -> Self {
        config.capabilities.handlers.sort();
        config.capabilities.handlers.dedup();
        config.slots = config.slots.max(1);
        Self {
            me: key.public(),
            key,
            config,
            members: Membership::default(),
            records: BTreeMap::new(),
            unplaced: VecDeque::new(),
            held: BTreeMap::new(),
            ready: VecDeque::new(),
            running: 0,
            steal_pending: None,
            early_completions: BTreeMap::new(),
            early_transfers: BTreeMap::new(),
            resends: VecDeque::new(),
            send_failures: BTreeMap::new(),
            report_seq: 0,
            last_report_at: None,
            counters: Counters::default(),
            actions: VecDeque::new(),
        }
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

    /// The record of a task submitted through this peer.
    pub fn task(&self, id: &TaskId) -> Option<&TaskRecord> {
        self.records.get(id)
    }

    /// Every task submitted through this peer, in id order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.records.values()
    }

    /// The peers this peer knows, with their last load reports.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerKey, &PeerView)> {
        self.members.iter()
    }

    /// What was rejected and done so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Tasks waiting in this peer's ready queue.
    pub fn queued(&self) -> usize {
        self.ready.len()
    }

    /// Tasks running in this peer's slots.
    pub fn running(&self) -> u32 {
        self.running
    }

    // ----- outputs -----

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- inputs -----

    /// Accepts tasks signed by their submitters, records them with this peer as their origin and
    /// places them. Returns each task's id, or why its spec was rejected. Submitting a task that is
    /// already recorded returns its id again and changes nothing.
    pub fn submit(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        specs: Vec<SignedSpec>,
    ) -> Vec<Result<TaskId, WireError>> {
        let mut fresh = Vec::new();
        let results = specs
            .into_iter()
            .map(|signed| {
                let task = Task::from_signed(signed, self.me)?;
                let id = task.id;
                if let std::collections::btree_map::Entry::Vacant(entry) = self.records.entry(id) {
                    entry.insert(new_record(task, now));
                    fresh.push(id);
                }
                Ok(id)
            })
            .collect();
        self.place(rng, fresh);
        self.dispatch();
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
        let message = match wire::decode::<Message>(bytes) {
            Ok(message) => message,
            Err(error) => return self.counters.count(&error),
        };
        self.send_failures.remove(&from);
        match message {
            Message::Place { tasks, grant } => self.on_tasks_granted(from, tasks, &grant, false),
            Message::StealRequest {
                free_slots,
                capabilities,
            } => self.on_steal_request(now, from, free_slots, &capabilities),
            Message::StealGrant { tasks, grant } => {
                self.clear_steal(from);
                self.on_tasks_granted(from, tasks, &grant, true);
            }
            Message::NothingToSteal => {
                self.clear_steal(from);
                if let Some(view) = self.members.get_mut(&from) {
                    view.estimated_queued = 0;
                }
            }
            Message::Transferred { grant } => self.on_transferred(now, from, &grant),
            Message::Completed {
                task,
                epoch,
                outcome,
            } => self.on_completed(now, from, task, epoch, outcome),
            Message::Started { tasks } => self.on_started(from, &tasks),
            Message::Refused { task, epoch } => self.on_refused(rng, from, task, epoch),
        }
        self.maybe_steal(now, rng);
        self.dispatch();
    }

    /// Takes a broadcast message. Bad bytes and bad signatures are counted and dropped.
    pub fn handle_gossip(&mut self, now: Millis, rng: &mut dyn RngCore, bytes: &[u8]) {
        let report = match wire::decode::<Gossip>(bytes).and_then(|Gossip::Load(r)| r.open()) {
            Ok(report) => report,
            Err(error) => return self.counters.count(&error),
        };
        if report.peer == self.me {
            return;
        }
        let (peer, addrs) = (report.peer, report.addrs.clone());
        self.send_failures.remove(&peer);
        if self.members.observe(report, now) == Observed::New {
            self.actions
                .push_back(Action::PeerDiscovered { peer, addrs });
            let waiting: Vec<TaskId> = self.unplaced.drain(..).collect();
            self.place(rng, waiting);
        }
        self.maybe_steal(now, rng);
        self.dispatch();
    }

    /// A task this peer executed has ended.
    pub fn handle_finished(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        task: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let Some(held) = self.held.get(&task) else {
            return;
        };
        if held.epoch != epoch || !held.running {
            return;
        }
        let origin = held.task.origin;
        self.held.remove(&task);
        self.running = self.running.saturating_sub(1);
        if origin == self.me {
            self.on_completed(now, self.me, task, epoch, outcome);
        } else {
            let message = Message::Completed {
                task,
                epoch,
                outcome,
            };
            self.send(origin, message);
        }
        self.maybe_steal(now, rng);
        self.dispatch();
    }

    /// A message this peer sent could not be delivered.
    pub fn handle_send_failed(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        to: PeerKey,
        message: Message,
    ) {
        match message {
            Message::StealRequest { .. } => {
                self.clear_steal(to);
                self.members.remove(&to);
            }
            Message::Place { tasks, .. } => {
                self.members.remove(&to);
                let ids: Vec<TaskId> = tasks
                    .iter()
                    .map(|t| t.id)
                    .filter(|id| self.take_back(id, to))
                    .collect();
                self.place(rng, ids);
            }
            Message::NothingToSteal | Message::Started { .. } => {}
            message => self.schedule_resend(now, to, message),
        }
        self.maybe_steal(now, rng);
        self.dispatch();
    }

    /// Time passes: report load when due, forget silent peers, resend, steal and dispatch.
    pub fn tick(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if self
            .last_report_at
            .is_none_or(|at| now.saturating_sub(at) >= self.config.report_interval_ms)
        {
            self.report(now);
        }
        self.members.expire(now, self.config.peer_timeout_ms);
        if let Some((_, asked_at)) = self.steal_pending
            && now.saturating_sub(asked_at) >= self.config.steal_timeout_ms
        {
            self.steal_pending = None;
        }
        self.resend_due(now);
        if !self.unplaced.is_empty() {
            let waiting: Vec<TaskId> = self.unplaced.drain(..).collect();
            self.place(rng, waiting);
        }
        self.maybe_steal(now, rng);
        self.dispatch();
    }

    // ----- placement -----

    fn place(&mut self, rng: &mut dyn RngCore, ids: Vec<TaskId>) {
        if ids.is_empty() {
            return;
        }
        let mut candidates = self.candidates();
        let mut batches: BTreeMap<PeerKey, Vec<TaskId>> = BTreeMap::new();
        for id in ids {
            let Some(record) = self.records.get(&id) else {
                continue;
            };
            let fitting: Vec<usize> = (0..candidates.len())
                .filter(|&i| self.can_run(&candidates[i].peer, &record.task.spec))
                .collect();
            let subset: Vec<Candidate> = fitting.iter().map(|&i| candidates[i]).collect();
            let Some(choice) = placement::power_of_two(rng, &subset) else {
                self.unplaced.push_back(id);
                continue;
            };
            let chosen = &mut candidates[fitting[choice]];
            chosen.load += 1;
            batches.entry(chosen.peer).or_default().push(id);
        }
        for (peer, ids) in batches {
            if let Some(view) = self.members.get_mut(&peer) {
                view.estimated_load = view.estimated_load.saturating_add(ids.len() as u32);
            }
            self.place_on(peer, ids);
        }
    }

    /// Everyone who could take work, with this peer first.
    fn candidates(&self) -> Vec<Candidate> {
        let mine = Candidate {
            peer: self.me,
            load: self.ready.len() as u32 + self.running,
            slots: self.config.slots,
        };
        std::iter::once(mine)
            .chain(self.members.iter().map(|(peer, view)| Candidate {
                peer: *peer,
                load: view.estimated_load,
                slots: view.report.slots,
            }))
            .collect()
    }

    fn can_run(&self, peer: &PeerKey, spec: &TaskSpec) -> bool {
        if *peer == self.me {
            return self.config.capabilities.can_run(spec);
        }
        self.members
            .get(peer)
            .is_some_and(|v| v.report.capabilities.can_run(spec))
    }

    /// Gives the tasks (all recorded here) to `peer` under new leases.
    fn place_on(&mut self, peer: PeerKey, ids: Vec<TaskId>) {
        let mut leases = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(record) = self.records.get_mut(id) else {
                continue;
            };
            record.epoch += 1;
            record.holder = Some(peer);
            record.state = TaskState::Waiting;
            leases.push(Lease {
                task: *id,
                epoch: record.epoch,
                holder: peer,
                granted_by: self.me,
                ttl_ms: self.config.lease_ttl_ms,
            });
            self.actions.push_back(Action::Persist { task: *id });
        }
        if peer == self.me {
            for lease in leases {
                if let Some(record) = self.records.get(&lease.task) {
                    let task = record.task.clone();
                    self.hold(task, lease.epoch);
                }
            }
            return;
        }
        for chunk in leases.chunks(self.config.place_batch_max.max(1)) {
            let tasks: Vec<Envelope> = chunk
                .iter()
                .filter_map(|l| self.records.get(&l.task).map(|r| r.task.envelope()))
                .collect();
            let grant = self.sign_grant(chunk.to_vec());
            self.send(peer, Message::Place { tasks, grant });
        }
    }

    /// Takes a task placed on `peer` back after the placement failed; false if it moved on since.
    fn take_back(&mut self, id: &TaskId, peer: PeerKey) -> bool {
        match self.records.get_mut(id) {
            Some(record) if record.holder == Some(peer) && !record.state.is_final() => {
                record.holder = None;
                record.state = TaskState::Waiting;
                true
            }
            _ => false,
        }
    }

    fn sign_grant(&self, leases: Vec<Lease>) -> SignedGrant {
        Signed::sign(
            &Grant {
                granted_by: self.me,
                leases,
            },
            &self.key,
        )
    }

    // ----- holding and running -----

    fn hold(&mut self, task: Task, epoch: u64) {
        match self.held.get(&task.id) {
            Some(held) if held.epoch >= epoch => {}
            Some(_) => {
                // A newer lease on a task already queued here: keep its place, take the epoch.
                if let Some(held) = self.held.get_mut(&task.id) {
                    held.epoch = epoch;
                }
            }
            None => {
                self.ready.push_back(task.id);
                self.held.insert(
                    task.id,
                    Held {
                        task,
                        epoch,
                        running: false,
                    },
                );
            }
        }
    }

    /// Starts ready tasks while slots are free.
    fn dispatch(&mut self) {
        let mut started: BTreeMap<PeerKey, Vec<(TaskId, u64)>> = BTreeMap::new();
        while self.running < self.config.slots {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(held) = self.held.get_mut(&id) else {
                continue;
            };
            held.running = true;
            self.running += 1;
            self.counters.tasks_executed += 1;
            let (origin, epoch, spec) = (held.task.origin, held.epoch, held.task.spec.clone());
            self.actions.push_back(Action::Execute {
                task: id,
                epoch,
                spec,
            });
            started.entry(origin).or_default().push((id, epoch));
        }
        for (origin, tasks) in started {
            if origin == self.me {
                self.on_started(self.me, &tasks);
            } else {
                self.send(origin, Message::Started { tasks });
            }
        }
    }

    /// Verifies tasks handed over by `from` (placed or stolen) and queues them here.
    fn on_tasks_granted(
        &mut self,
        from: PeerKey,
        tasks: Vec<Envelope>,
        grant: &SignedGrant,
        stolen: bool,
    ) {
        let grant = match self.verify_grant_from(from, grant) {
            Ok(grant) => grant,
            Err(error) => return self.counters.count(&error),
        };
        if grant.leases.len() != tasks.len() {
            return self
                .counters
                .count(&WireError::Unauthorized("leases do not match tasks"));
        }
        for (envelope, lease) in tasks.into_iter().zip(grant.leases) {
            let task = match Task::from_envelope(envelope) {
                Ok(task) => task,
                Err(error) => {
                    self.counters.count(&error);
                    continue;
                }
            };
            if lease.task != task.id || lease.holder != self.me {
                self.counters.count(&WireError::Unauthorized(
                    "lease is not for this task and peer",
                ));
                continue;
            }
            if !stolen && task.origin != from {
                self.counters.count(&WireError::Unauthorized(
                    "placed by a peer that is not the origin",
                ));
                continue;
            }
            if !self.config.capabilities.can_run(&task.spec) {
                let refusal = Message::Refused {
                    task: task.id,
                    epoch: lease.epoch,
                };
                self.send(task.origin, refusal);
                continue;
            }
            if stolen {
                self.counters.tasks_stolen += 1;
            }
            self.hold(task, lease.epoch);
        }
    }

    fn verify_grant_from(&self, from: PeerKey, grant: &SignedGrant) -> Result<Grant, WireError> {
        let grant = grant.verify()?;
        if grant.granted_by != from {
            return Err(WireError::Unauthorized(
                "grant signed by someone other than the sender",
            ));
        }
        Ok(grant)
    }

    // ----- stealing -----

    fn maybe_steal(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let free = self.config.slots.saturating_sub(self.running);
        if free == 0 || !self.ready.is_empty() || self.steal_pending.is_some() {
            return;
        }
        let queues: Vec<(PeerKey, u32)> = self
            .members
            .iter()
            .map(|(peer, view)| (*peer, view.estimated_queued))
            .collect();
        let Some(victim) = steal::choose_victim(rng, &queues) else {
            return;
        };
        self.steal_pending = Some((victim, now));
        self.counters.steal_requests += 1;
        let request = Message::StealRequest {
            free_slots: free,
            capabilities: self.config.capabilities.clone(),
        };
        self.send(victim, request);
    }

    fn clear_steal(&mut self, from: PeerKey) {
        if self.steal_pending.is_some_and(|(victim, _)| victim == from) {
            self.steal_pending = None;
        }
    }

    fn on_steal_request(
        &mut self,
        now: Millis,
        thief: PeerKey,
        free_slots: u32,
        capabilities: &Capabilities,
    ) {
        let queue = self
            .ready
            .iter()
            .filter_map(|id| self.held.get(id).map(|h| (*id, &h.task.spec)));
        let queue: Vec<(TaskId, &TaskSpec)> = queue.collect();
        let chosen = steal::choose_tasks(queue.into_iter(), free_slots, capabilities);
        if chosen.is_empty() {
            return self.send(thief, Message::NothingToSteal);
        }
        let chosen_set: BTreeSet<TaskId> = chosen.iter().copied().collect();
        self.ready.retain(|id| !chosen_set.contains(id));
        let mut tasks = Vec::with_capacity(chosen.len());
        let mut leases = Vec::with_capacity(chosen.len());
        for id in chosen {
            let Some(held) = self.held.remove(&id) else {
                continue;
            };
            leases.push(Lease {
                task: id,
                epoch: held.epoch + 1,
                holder: thief,
                granted_by: self.me,
                ttl_ms: self.config.lease_ttl_ms,
            });
            tasks.push(held.task);
        }
        self.counters.tasks_given += tasks.len() as u64;
        let grant = self.sign_grant(leases.clone());
        let origins: BTreeSet<PeerKey> = tasks.iter().map(|t| t.origin).collect();
        let envelopes = tasks.iter().map(Task::envelope).collect();
        self.send(
            thief,
            Message::StealGrant {
                tasks: envelopes,
                grant: grant.clone(),
            },
        );
        for origin in origins {
            if origin == self.me {
                for lease in &leases {
                    self.apply_transfer(now, *lease);
                }
            } else {
                self.send(
                    origin,
                    Message::Transferred {
                        grant: grant.clone(),
                    },
                );
            }
        }
    }

    // ----- records (as origin) -----

    fn on_transferred(&mut self, now: Millis, from: PeerKey, grant: &SignedGrant) {
        let grant = match self.verify_grant_from(from, grant) {
            Ok(grant) => grant,
            Err(error) => return self.counters.count(&error),
        };
        for lease in grant.leases {
            if self.records.contains_key(&lease.task) {
                self.apply_transfer(now, lease);
            }
        }
    }

    /// Moves a task's record to a new holder if the lease is the next link of its chain, or keeps
    /// the lease until the links before it arrive.
    fn apply_transfer(&mut self, now: Millis, lease: Lease) {
        let Some(record) = self.records.get_mut(&lease.task) else {
            return;
        };
        if record.state.is_final() || lease.epoch <= record.epoch {
            return;
        }
        if lease.epoch > record.epoch + 1 || record.holder != Some(lease.granted_by) {
            if self.early_transfers.len() >= self.config.early_max {
                self.counters.early_dropped += 1;
            } else {
                self.early_transfers
                    .entry(lease.task)
                    .or_default()
                    .push(lease);
            }
            return;
        }
        record.epoch = lease.epoch;
        record.holder = Some(lease.holder);
        record.state = TaskState::Waiting;
        self.actions.push_back(Action::Persist { task: lease.task });
        self.apply_early(now, lease.task);
    }

    /// Applies transfers and a completion that were waiting for the record to catch up.
    fn apply_early(&mut self, now: Millis, id: TaskId) {
        if let Some(waiting) = self.early_transfers.remove(&id) {
            for lease in waiting {
                self.apply_transfer(now, lease);
            }
        }
        let epoch = self.records.get(&id).map(|r| r.epoch);
        if let Some(early) = self.early_completions.get(&id)
            && Some(early.epoch) == epoch
            && let Some(early) = self.early_completions.remove(&id)
        {
            self.on_completed(now, early.from, id, early.epoch, early.outcome);
        }
    }

    fn on_started(&mut self, from: PeerKey, tasks: &[(TaskId, u64)]) {
        for (id, epoch) in tasks {
            if let Some(record) = self.records.get_mut(id)
                && record.epoch == *epoch
                && record.holder == Some(from)
                && record.state == TaskState::Waiting
            {
                record.state = TaskState::Running;
                self.actions.push_back(Action::Persist { task: *id });
            }
        }
    }

    /// Records a result if it comes from the current holder under the current epoch.
    fn on_completed(
        &mut self,
        now: Millis,
        from: PeerKey,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let Some(record) = self.records.get_mut(&id) else {
            self.counters.rejected_unauthorized += 1;
            return;
        };
        if record.state.is_final() {
            self.counters.completions_duplicate += 1;
        } else if epoch < record.epoch {
            self.counters.completions_stale += 1;
        } else if epoch > record.epoch {
            if self.early_completions.len() >= self.config.early_max {
                self.counters.early_dropped += 1;
            } else {
                let early = EarlyCompletion {
                    from,
                    epoch,
                    outcome,
                };
                self.early_completions.insert(id, early);
            }
        } else if record.holder != Some(from) {
            self.counters.rejected_unauthorized += 1;
        } else {
            record.state = if outcome.succeeded() {
                TaskState::Completed
            } else {
                TaskState::Failed
            };
            record.outcome = Some(outcome);
            record.executed_by = Some(from);
            record.finished_at = Some(now);
            self.actions.push_back(Action::Persist { task: id });
        }
    }

    fn on_refused(&mut self, rng: &mut dyn RngCore, from: PeerKey, id: TaskId, epoch: u64) {
        let current = self.records.get(&id).map(|r| r.epoch);
        if current == Some(epoch) && self.take_back(&id, from) {
            self.place(rng, vec![id]);
        }
    }

    // ----- sending -----

    fn send(&mut self, to: PeerKey, message: Message) {
        self.actions.push_back(Action::Send { to, message });
    }

    /// Sends a failed message again later, unless its receiver has failed too often in a row.
    fn schedule_resend(&mut self, now: Millis, to: PeerKey, message: Message) {
        let failures = self.send_failures.entry(to).or_insert(0);
        *failures += 1;
        if *failures > self.config.resend_attempts {
            self.counters.messages_given_up += 1;
            return;
        }
        self.resends.push_back(Resend {
            due: now + self.config.resend_after_ms,
            to,
            message,
        });
    }

    fn resend_due(&mut self, now: Millis) {
        while self.resends.front().is_some_and(|r| r.due <= now) {
            if let Some(resend) = self.resends.pop_front() {
                self.send(resend.to, resend.message);
            }
        }
    }

    fn report(&mut self, now: Millis) {
        self.report_seq += 1;
        self.last_report_at = Some(now);
        let report = LoadReport {
            peer: self.me,
            seq: self.report_seq,
            queued: self.ready.len() as u32,
            running: self.running,
            slots: self.config.slots,
            capabilities: self.config.capabilities.clone(),
            addrs: self.config.addrs.clone(),
        };
        let gossip = Gossip::Load(Signed::sign(&report, &self.key));
        self.actions.push_back(Action::Broadcast { gossip });
    }

    /// Replaces the advertised addresses (the node learns them after the scheduler is built).
    pub fn set_addrs(&mut self, addrs: Vec<Vec<u8>>) {
        self.config.addrs = addrs;
    }
}

fn new_record(task: Task, now: Millis) -> TaskRecord {
    TaskRecord {
        task,
        state: TaskState::Waiting,
        epoch: 0,
        holder: None,
        submitted_at: now,
        finished_at: None,
        outcome: None,
        executed_by: None,
    }
}
