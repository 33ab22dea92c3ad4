//! The holder's side: tasks this peer holds leases on, its slots, the results it keeps until their
//! primary acknowledges them, and the rule that a peer cut off from every home member of a task
//! stops it (the home set is about to re-claim it). A task starts only once a majority of its home
//! set answered a recent start check ([`start_checks`]).

mod start_checks;

use std::collections::BTreeSet;

use rand::RngCore;

use std::collections::BTreeMap;

use super::peers::Peers;
use super::stealing::Stealing;
use super::{Action, Ctx, Scheduler, Table};
use crate::Millis;
use crate::identity::PeerKey;
use crate::lease::SignedGrant;
use crate::message::Message;
use crate::queue::ReadyQueue;
use crate::record::{HeldEntry, OutboxEntry};
use crate::resources::Resources;
use crate::task::TaskSpec;
use crate::task::{Envelope, Outcome, Task, TaskId};
use crate::wire::WireError;

/// How deep into the ready queue a start looks for a task that fits the free resources.
const FIT_WINDOW: usize = 64;
/// How many of the next tasks in the ready queue start checks are sent for (to the members of
/// their home sets).
const CHECKED_AHEAD: usize = 8;

/// The holder's own state: the tasks this peer holds leases on (queued or running), its slots in
/// use and what they take of its capacity, and the results it keeps until their primary
/// acknowledges them. Its fields change only in this module: other roles read it, or hand tasks
/// in and out, through the methods below.
#[derive(Clone, Debug)]
pub(super) struct Holding {
    held: BTreeMap<TaskId, Held>,
    ready: ReadyQueue,
    running: u32,
    /// What the running tasks need, summed: a task starts only if it fits in what is left.
    in_use: Resources,
    outbox: BTreeMap<TaskId, Pending>,
    /// Tasks this peer gave to a thief, with the epoch it held each at, oldest first (at most
    /// [`HANDED_OVER_KEPT`]): a placement at that epoch or older arriving late, or twice, is not
    /// taken again, or this peer could hand the task on under an epoch it already granted.
    handed_over: BTreeMap<TaskId, u64>,
    handed_over_order: std::collections::VecDeque<TaskId>,
    checks: start_checks::StartChecks,
}

/// How many tasks given to thieves a holder remembers.
const HANDED_OVER_KEPT: usize = 4096;

/// A task this peer holds a lease on.
#[derive(Clone, Debug)]
pub(super) struct Held {
    pub(super) task: Task,
    pub(super) epoch: u64,
    running: bool,
}

/// A result waiting for its primary's acknowledgement.
#[derive(Clone, Debug)]
struct Pending {
    entry: OutboxEntry,
    last_sent: Millis,
}

impl Holding {
    pub(super) fn new(ageing_ms: Millis) -> Self {
        Self {
            held: BTreeMap::new(),
            ready: ReadyQueue::new(ageing_ms),
            running: 0,
            in_use: Resources::default(),
            outbox: BTreeMap::new(),
            handed_over: BTreeMap::new(),
            handed_over_order: std::collections::VecDeque::new(),
            checks: start_checks::StartChecks::new(),
        }
    }

    /// Tasks waiting in the ready queue.
    pub(super) fn queued(&self) -> usize {
        self.ready.len()
    }

    /// Whether this peer holds nothing: no task queued or running, and no result waiting for its
    /// primary's acknowledgement.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty() && self.outbox.is_empty()
    }

    /// Forgets the queued tasks (not the running ones) whose home set `to_whom` names a peer to
    /// hand them to, and returns them with their epochs and that peer.
    fn take_queued(
        &mut self,
        ctx: &mut Ctx<'_>,
        to_whom: impl Fn(&[PeerKey]) -> Option<PeerKey>,
    ) -> Vec<(TaskId, u64, PeerKey)> {
        let queued: Vec<(TaskId, PeerKey)> = self
            .held
            .iter()
            .filter(|(_, h)| !h.running)
            .filter_map(|(id, h)| Some((*id, to_whom(&h.task.home)?)))
            .collect();
        queued
            .into_iter()
            .filter_map(|(id, to)| Some((id, self.release(ctx, id)?.epoch, to)))
            .collect()
    }

    /// Tasks running in this peer's slots.
    pub(super) fn running(&self) -> u32 {
        self.running
    }

    /// The leases held, with their epochs.
    pub(super) fn leases(&self) -> impl Iterator<Item = (TaskId, u64)> + '_ {
        self.held.iter().map(|(id, h)| (*id, h.epoch))
    }

    /// The home sets of the tasks held.
    pub(super) fn homes(&self) -> impl Iterator<Item = &[PeerKey]> {
        self.held.values().map(|h| h.task.home.as_slice())
    }

    /// The home set of a task held, or whose result is kept.
    pub(super) fn home_of(&self, id: &TaskId) -> Option<&[PeerKey]> {
        match self.held.get(id) {
            Some(held) => Some(&held.task.home),
            None => self.outbox.get(id).map(|p| p.entry.home.as_slice()),
        }
    }

    /// Whether this peer holds the task, or keeps its result.
    pub(super) fn has(&self, id: &TaskId) -> bool {
        self.held.contains_key(id) || self.outbox.contains_key(id)
    }

    /// Takes back a kept result at start.
    pub(super) fn keep(&mut self, entry: OutboxEntry) {
        let pending = Pending {
            entry,
            last_sent: 0,
        };
        self.outbox.insert(pending.entry.task, pending);
    }

    /// The queue in start order, with each task's spec, and its length: what a victim chooses
    /// from.
    pub(super) fn queue(&self) -> (impl Iterator<Item = (TaskId, &TaskSpec)>, usize) {
        let queue = self
            .ready
            .iter()
            .filter_map(|id| self.held.get(&id).map(|h| (id, &h.task.spec)));
        (queue, self.ready.len())
    }

    /// Gives up queued tasks (to a thief): they leave the queue and the lease table.
    pub(super) fn give_up(&mut self, ids: &[TaskId]) -> Vec<Held> {
        let given: Vec<Held> = ids
            .iter()
            .filter_map(|id| {
                self.ready.remove(id);
                self.held.remove(id)
            })
            .collect();
        for held in &given {
            if self.handed_over_order.len() >= HANDED_OVER_KEPT
                && let Some(oldest) = self.handed_over_order.pop_front()
            {
                self.handed_over.remove(&oldest);
            }
            self.handed_over.insert(held.task.id, held.epoch);
            self.handed_over_order.push_back(held.task.id);
        }
        given
    }
}

/// The holder's handlers: each borrows only the room, what it reads of the others, and the
/// context ([`Ctx`]).
impl Holding {
    /// Queues a task under the lease at `epoch` (or moves a queued one to a newer epoch).
    ///
    /// A task placed again by its primary (major epoch above 1: its holder was lost, or it is
    /// retried) goes to the front of the queue: it is older than anything queued behind it, and
    /// its recovery should not wait for the queue to drain.
    fn hold(&mut self, ctx: &mut Ctx<'_>, task: Task, epoch: u64, now: Millis) {
        if self.handed_over.get(&task.id).is_some_and(|e| *e >= epoch) {
            // A late or repeated placement of a task this peer has since handed on.
            return;
        }
        match self.held.get_mut(&task.id) {
            Some(held) if held.epoch >= epoch => {}
            Some(held) => {
                held.epoch = epoch;
                let entry = HeldEntry {
                    envelope: held.task.envelope(),
                    epoch,
                };
                ctx.write(Table::Held, task.id, Some(&entry));
            }
            None => {
                let priority = task.spec.priority;
                if crate::lease::major(epoch) > 1 {
                    self.ready.push_front(task.id, priority);
                } else {
                    self.ready.push(task.id, priority, now);
                }
                let entry = HeldEntry {
                    envelope: task.envelope(),
                    epoch,
                };
                ctx.write(Table::Held, task.id, Some(&entry));
                let held = Held {
                    task,
                    epoch,
                    running: false,
                };
                self.held.insert(held.task.id, held);
            }
        }
    }

    /// Forgets a held task (it ended, moved on, or was abandoned).
    fn release(&mut self, ctx: &mut Ctx<'_>, id: TaskId) -> Option<Held> {
        let held = self.held.remove(&id)?;
        if held.running {
            self.running = self.running.saturating_sub(1);
            self.in_use = self.in_use.minus(&held.task.spec.needs.resources);
        } else {
            self.ready.remove(&id);
        }
        ctx.write::<HeldEntry>(Table::Held, id, None);
        Some(held)
    }

    /// Starts ready tasks while slots are free, highest priority first, each only if what it
    /// needs fits in what the running tasks leave of this peer's capacity (a task that does not
    /// fit yet lets one behind it start), only if this peer heard a majority of its home set
    /// lately ([`start_window`]), and only if a majority of that set answered a start check sent
    /// less than `start_check_ms` ago ([`start_checks`]). Asks the members the next tasks need.
    /// Returns what started, with each task's home set.
    fn dispatch(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
    ) -> Vec<(TaskId, u64, Vec<PeerKey>)> {
        let mut started = Vec::new();
        let lately = start_window(ctx);
        let base = ctx.config.start_check_ms;
        while self.running < ctx.config.slots {
            let free = ctx.config.capabilities.offer.capacity.minus(&self.in_use);
            let (held, checks, me) = (&self.held, &self.checks, ctx.me);
            let fits = |id: TaskId| {
                held.get(&id).is_none_or(|h| {
                    h.task.spec.needs.resources.fits_in(&free)
                        && peers.hears_quorum(&h.task.home, now, lately)
                        && checks.passed(me, &h.task.home, now, base)
                })
            };
            let Some(id) = self.ready.pop_first_fitting(FIT_WINDOW, fits) else {
                break;
            };
            let Some(held) = self.held.get_mut(&id) else {
                continue;
            };
            held.running = true;
            self.running += 1;
            self.in_use = self.in_use.plus(&held.task.spec.needs.resources);
            ctx.counters.tasks_executed += 1;
            let (epoch, spec) = (held.epoch, Box::new(held.task.spec.clone()));
            ctx.push(Action::Execute {
                task: id,
                epoch,
                spec,
                inputs: held.task.inputs.clone(),
            });
            started.push((id, epoch, held.task.home.clone()));
        }
        self.ask_checks(ctx, peers, now, lately);
        started
    }

    /// With tasks waiting, sends a start check to the members of the next tasks' home sets (the
    /// first [`CHECKED_AHEAD`] that could start but for the check) whose last answer is half of
    /// `start_check_ms` old, so that the next start need not wait for one.
    fn ask_checks(&mut self, ctx: &mut Ctx<'_>, peers: &Peers, now: Millis, lately: Millis) {
        if self.ready.is_empty() {
            return;
        }
        let capacity = &ctx.config.capabilities.offer.capacity;
        let me = ctx.me;
        let wanted: BTreeSet<PeerKey> = self
            .ready
            .iter()
            .filter_map(|id| self.held.get(&id))
            .filter(|h| {
                h.task.spec.needs.resources.fits_in(capacity)
                    && peers.hears_quorum(&h.task.home, now, lately)
            })
            .take(CHECKED_AHEAD)
            .flat_map(|h| h.task.home.iter().copied())
            .filter(|m| *m != me && peers.alive(m))
            .collect();
        let base = ctx.config.start_check_ms;
        let retry_after = Millis::from(ctx.config.report_interval_ms);
        for (peer, round) in self.checks.ask(wanted, now, base, retry_after) {
            ctx.send(peer, Message::Ping { round });
        }
    }

    /// `from` answered a start check. Only a round this peer sent it counts.
    fn on_pong(&mut self, ctx: &mut Ctx<'_>, from: PeerKey, round: u64, now: Millis) {
        if !self.checks.on_answer(from, round, now) {
            let error = WireError::Unauthorized("an answer to a check nobody sent");
            ctx.reject("pong", &error);
        }
    }

    /// Forgets what `peer` answered (it was taken for dead, or left).
    pub(super) fn forget_checks(&mut self, peer: &PeerKey) {
        self.checks.forget(peer);
    }

    /// An attempt ended: the held task it ran, if it is still this peer's to report (not aborted
    /// or moved on meanwhile; an attempt under an older lease of this same peer reports under the
    /// current one).
    fn finished(&mut self, ctx: &mut Ctx<'_>, id: TaskId, epoch: u64) -> Option<Held> {
        match self.held.get(&id) {
            Some(held) if held.epoch >= epoch && held.running => self.release(ctx, id),
            _ => None,
        }
    }

    /// Keeps a result until its primary acknowledges it, and sends it to the live home members.
    fn keep_result(&mut self, ctx: &mut Ctx<'_>, peers: &Peers, entry: OutboxEntry, now: Millis) {
        ctx.write(Table::Outbox, entry.task, Some(&entry));
        send_completion(ctx, peers, &entry);
        let pending = Pending {
            entry,
            last_sent: now,
        };
        self.outbox.insert(pending.entry.task, pending);
    }

    /// Forgets a kept result (settled, or recorded here).
    fn drop_result(&mut self, ctx: &mut Ctx<'_>, id: &TaskId) -> Option<OutboxEntry> {
        let pending = self.outbox.remove(id)?;
        ctx.write::<OutboxEntry>(Table::Outbox, *id, None);
        Some(pending.entry)
    }

    /// The primary settled these completions: stop sending them. Only a home member of the task
    /// may say so (anyone else could make this peer drop a result nobody recorded).
    fn on_recorded(&mut self, ctx: &mut Ctx<'_>, from: PeerKey, tasks: &[(TaskId, u64)]) {
        for (id, epoch) in tasks {
            if self.home_of(id).is_some_and(|home| !home.contains(&from)) {
                let error = WireError::Unauthorized("a settlement from outside the home set");
                ctx.reject("recorded", &error);
                continue;
            }
            if self.outbox.get(id).is_some_and(|p| p.entry.epoch == *epoch) {
                self.drop_result(ctx, id);
            }
        }
    }

    /// The primary asks whether this peer still holds tasks: answer with the ones it does not
    /// (neither queued nor running under that epoch or a later one, nor handed on, nor finished
    /// with a result waiting to be acknowledged). Only a home member of each task may ask.
    fn on_confirm(
        &self,
        ctx: &mut Ctx<'_>,
        stealing: &Stealing,
        from: PeerKey,
        tasks: &[(TaskId, u64)],
    ) {
        let foreign = tasks
            .iter()
            .filter(|(id, _)| {
                self.home_of(id)
                    .or_else(|| stealing.home_of(id))
                    .is_some_and(|home| !home.contains(&from))
            })
            .count();
        for _ in 0..foreign {
            let error = WireError::Unauthorized("a lease check from outside the home set");
            ctx.reject("confirm", &error);
        }
        if foreign > 0 {
            return;
        }
        let missing: Vec<(TaskId, u64)> = tasks
            .iter()
            .filter(|(id, epoch)| {
                let held = self.held.get(id).is_some_and(|h| h.epoch >= *epoch);
                let done = self.outbox.get(id).is_some_and(|p| p.entry.epoch >= *epoch);
                !held && !done && !stealing.has_given(id)
            })
            .copied()
            .collect();
        if !missing.is_empty() {
            ctx.send(from, Message::Missing { tasks: missing });
        }
    }

    /// The primary voided the lease (the task was cancelled): stop it. Only a home member of the
    /// task may.
    fn on_abort(&mut self, ctx: &mut Ctx<'_>, from: PeerKey, id: TaskId, epoch: u64) {
        let Some(held) = self.held.get(&id) else {
            return;
        };
        if !held.task.home.contains(&from) {
            let error = WireError::Unauthorized("an abort from outside the home set");
            return ctx.reject("abort", &error);
        }
        if held.epoch == epoch {
            self.abort(ctx, id);
        }
    }

    /// Stops a held task: forgets it, and kills its attempt if it runs.
    fn abort(&mut self, ctx: &mut Ctx<'_>, id: TaskId) {
        if let Some(held) = self.release(ctx, id)
            && held.running
        {
            ctx.push(Action::Abort {
                task: id,
                epoch: held.epoch,
            });
        }
    }

    /// Stops held tasks of which this peer has not heard a majority of the home set within
    /// `window` (itself included if it is a member): it is on the minority side of a partition,
    /// or most of the set is down. The majority side is about to re-claim them, and their
    /// results could not be recorded. (A home set of one or two needs one member heard.)
    fn cut_off(&mut self, ctx: &mut Ctx<'_>, peers: &Peers, now: Millis, window: Millis) {
        let cut_off: Vec<TaskId> = self
            .held
            .iter()
            .filter(|(_, h)| !peers.hears_quorum(&h.task.home, now, window))
            .map(|(id, _)| *id)
            .collect();
        for id in cut_off {
            ctx.counters.tasks_abandoned += 1;
            self.abort(ctx, id);
        }
    }

    /// Stops every held task (this peer was cut off from everyone for too long).
    fn abandon_all(&mut self, ctx: &mut Ctx<'_>) {
        let held: Vec<TaskId> = self.held.keys().copied().collect();
        ctx.counters.tasks_abandoned += held.len() as u64;
        for id in held {
            self.abort(ctx, id);
        }
    }

    /// The kept results due to be sent again, marked as sent now.
    fn due_results(&mut self, now: Millis, after: Millis) -> Vec<OutboxEntry> {
        self.outbox
            .values_mut()
            .filter(|p| now.saturating_sub(p.last_sent) >= after)
            .map(|p| {
                p.last_sent = now;
                p.entry.clone()
            })
            .collect()
    }
}

/// How lately a holder must have heard a majority of a task's home set to start it: two load
/// reports' time (every peer reports every interval), and never more than half a lease TTL. On
/// the minority side of a fresh cut, what was queued stops starting this soon, so few tasks
/// begin there that the majority will re-claim and run again.
fn start_window(ctx: &Ctx<'_>) -> Millis {
    let ttl = Millis::from(ctx.config.lease_ttl_ms);
    (2 * ctx.config.report_interval_ms).min(ttl / 2)
}

/// Sends a kept result to every live home member (the primary records it; the others will need
/// it only if they become primary before it is settled).
fn send_completion(ctx: &mut Ctx<'_>, peers: &Peers, entry: &OutboxEntry) {
    let message = Message::Completed {
        task: entry.task,
        epoch: entry.epoch,
        outcome: entry.outcome.clone(),
    };
    for member in &entry.home {
        if *member != ctx.me && peers.alive(member) {
            ctx.send(*member, message.clone());
        }
    }
}

/// The scheduler's side of the holder: routing between the holder and the other roles.
impl Scheduler {
    /// Queues a task this peer now holds a lease on.
    pub(super) fn hold(&mut self, task: Task, epoch: u64) {
        let now = self.last_now;
        let (holding, _, _, mut ctx) = self.holder();
        holding.hold(&mut ctx, task, epoch, now);
    }

    /// Stops a held task (cancelled, or cut off).
    pub(super) fn abort_held(&mut self, id: TaskId) {
        let (holding, _, _, mut ctx) = self.holder();
        holding.abort(&mut ctx, id);
    }

    /// Whether this peer keeps the record of `id` and leads it. The record names the home set as
    /// it stands (repaired since the task was placed here, maybe), so a holder that keeps the
    /// record reads the set from it rather than from the envelope it was placed with.
    fn leads_kept(&self, id: &TaskId, now: Millis) -> bool {
        self.home
            .entry(id)
            .is_some_and(|e| self.is_primary(e.record.home(), now))
    }

    /// Whether the record of `id` this peer keeps has moved past a lease at `epoch`: it ended,
    /// or names a later epoch.
    fn keeps_newer(&self, id: &TaskId, epoch: u64) -> bool {
        self.home
            .entry(id)
            .is_some_and(|e| e.record.state.is_final() || e.record.epoch > epoch)
    }

    /// Starts what fits, and tells the tasks' primaries (this peer's own record, or a `Started`
    /// to each other primary).
    pub(super) fn dispatch(&mut self, now: Millis) {
        let (holding, peers, _, mut ctx) = self.holder();
        let started = holding.dispatch(&mut ctx, peers, now);
        let mut to_others: std::collections::BTreeMap<PeerKey, Vec<(TaskId, u64)>> =
            std::collections::BTreeMap::new();
        for (id, epoch, home) in started {
            let home = self
                .home
                .entry(&id)
                .map_or(home, |e| e.record.home().to_vec());
            match self.peers.primary_of(&home) {
                Some(primary) if primary == self.me => {
                    self.on_started(now, self.me, &[(id, epoch)])
                }
                Some(primary) => to_others.entry(primary).or_default().push((id, epoch)),
                None => {}
            }
        }
        for (primary, tasks) in to_others {
            self.send(primary, Message::Started { tasks });
        }
    }

    /// Verifies tasks handed over by `from` (placed by their primary, or stolen from a victim this
    /// peer asked) and queues them here. A placement must come from the task's primary as this
    /// peer sees it ([`Scheduler::may_lead`]); either way the grant must be signed by the sender
    /// and give this peer a lease on each task, in order.
    pub(super) fn on_tasks_granted(
        &mut self,
        now: Millis,
        from: PeerKey,
        tasks: Vec<Envelope>,
        grant: &SignedGrant,
        stolen: bool,
    ) -> BTreeSet<PeerKey> {
        let kind = if stolen { "steal-grant" } else { "place" };
        let mut homes = BTreeSet::new();
        let grant = match self.verify_grant_from(from, grant) {
            Ok(grant) => grant,
            Err(error) => {
                self.reject(kind, &error);
                return homes;
            }
        };
        if grant.leases.len() != tasks.len() {
            self.reject(kind, &WireError::Unauthorized("leases do not match tasks"));
            return homes;
        }
        for (envelope, lease) in tasks.into_iter().zip(grant.leases) {
            let task = match Task::from_envelope_cached(envelope, self.verifier.keys()) {
                Ok(task) => task,
                Err(error) => {
                    self.reject(kind, &error);
                    continue;
                }
            };
            if lease.task != task.id || lease.holder != self.me {
                let error = WireError::Unauthorized("lease is not for this task and peer");
                self.reject(kind, &error);
                continue;
            }
            if !stolen && !self.may_lead(&from, &task.home, now) {
                let error = WireError::Unauthorized("placed by a peer that is not its primary");
                self.reject(kind, &error);
                continue;
            }
            // A lease older than this peer's own copy of the record (the task ended, or was
            // placed since at a later epoch) comes from a peer that has not caught up, such as
            // the primary of the other side of a healed cut: refused, and a member that sent it
            // is sent the newer record.
            if self.keeps_newer(&task.id, lease.epoch) {
                let error = WireError::Unauthorized("a lease older than the record kept here");
                self.reject(kind, &error);
                if task.home.contains(&from) {
                    self.home.send_ours(from, task.id);
                }
                continue;
            }
            // A draining peer takes no new work: it hands the task back as one it cannot run.
            if self.peers.draining() || !self.config.capabilities.can_run(&task.spec) {
                let refusal = Message::Refused {
                    task: task.id,
                    epoch: lease.epoch,
                };
                for member in task.home.clone() {
                    self.send(member, refusal.clone());
                }
                continue;
            }
            if stolen {
                self.counters.tasks_stolen += 1;
            }
            homes.extend(task.home.iter().copied());
            self.hold(task, lease.epoch);
        }
        homes
    }

    /// An attempt this peer ran ended: recorded here if this peer is the task's primary,
    /// otherwise kept and sent to the home set until the primary acknowledges it.
    pub(super) fn on_finished(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let (holding, _, _, mut ctx) = self.holder();
        let Some(held) = holding.finished(&mut ctx, id, epoch) else {
            return;
        };
        let (epoch, home) = (held.epoch, held.task.home);
        if self.leads_kept(&id, now) {
            self.on_completed(now, rng, self.me, id, epoch, outcome);
            return;
        }
        let entry = OutboxEntry {
            task: id,
            home,
            epoch,
            outcome,
        };
        let (holding, peers, _, mut ctx) = self.holder();
        holding.keep_result(&mut ctx, peers, entry, now);
    }

    pub(super) fn on_recorded(&mut self, from: PeerKey, tasks: &[(TaskId, u64)]) {
        let (holding, _, _, mut ctx) = self.holder();
        holding.on_recorded(&mut ctx, from, tasks);
    }

    pub(super) fn on_confirm(&mut self, from: PeerKey, tasks: &[(TaskId, u64)]) {
        let (holding, _, stealing, mut ctx) = self.holder();
        holding.on_confirm(&mut ctx, stealing, from, tasks);
    }

    pub(super) fn on_pong(&mut self, now: Millis, from: PeerKey, round: u64) {
        let (holding, _, _, mut ctx) = self.holder();
        holding.on_pong(&mut ctx, from, round, now);
    }

    pub(super) fn on_abort(&mut self, from: PeerKey, id: TaskId, epoch: u64) {
        let (holding, _, _, mut ctx) = self.holder();
        holding.on_abort(&mut ctx, from, id, epoch);
    }

    /// Stops held tasks whose home set this peer has not heard for two thirds of the lease TTL
    /// (once it has been up long enough to judge).
    pub(super) fn scan_held(&mut self, now: Millis) {
        if !self.settled(now) {
            return;
        }
        let window = Millis::from(self.config.lease_ttl_ms) * 2 / 3;
        let (holding, peers, _, mut ctx) = self.holder();
        holding.cut_off(&mut ctx, peers, now, window);
    }

    /// Hands the queued tasks back to their primaries (this peer is draining): each is forgotten
    /// here and reported `Missing` to the primary, which places it elsewhere at once. One whose
    /// home set has no other live member to lead it stays, and runs here.
    pub(super) fn give_back_queued(&mut self) {
        let me = self.me;
        let (holding, peers, _, mut ctx) = self.holder();
        let primary = |home: &[PeerKey]| peers.primary_of(home).filter(|p| *p != me);
        let queued = holding.take_queued(&mut ctx, primary);
        let mut back: std::collections::BTreeMap<PeerKey, Vec<(TaskId, u64)>> =
            std::collections::BTreeMap::new();
        for (id, epoch, primary) in queued {
            back.entry(primary).or_default().push((id, epoch));
        }
        for (primary, tasks) in back {
            self.send(primary, Message::Missing { tasks });
        }
    }

    /// Stops everything held (this peer was frozen).
    pub(super) fn abandon_all(&mut self) {
        let (holding, _, _, mut ctx) = self.holder();
        holding.abandon_all(&mut ctx);
    }

    /// Sends again the results and records that wait for an acknowledgement. A kept result of a
    /// task this peer has since become primary of is recorded here.
    pub(super) fn resend_due(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let after = self.config.resend_after_ms;
        for entry in self.holding.due_results(now, after) {
            let id = entry.task;
            if self.leads_kept(&id, now) {
                let (holding, _, _, mut ctx) = self.holder();
                holding.drop_result(&mut ctx, &id);
                self.on_completed(now, rng, self.me, id, entry.epoch, entry.outcome);
            } else {
                let (_, peers, _, mut ctx) = self.holder();
                send_completion(&mut ctx, peers, &entry);
            }
        }
        let (home, peers, ctx) = self.member();
        home.resend(&ctx, peers, now);
        home.catch_up_due(&ctx, peers, now);
        let (stealing, _, peers, mut ctx) = self.thief();
        stealing.resend_notices(&mut ctx, peers, now);
    }
}
