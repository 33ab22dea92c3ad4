//! The holder's side: tasks this peer holds leases on, its slots, the results it keeps until their
//! primary acknowledges them, and the rule that a peer cut off from every home member of a task
//! stops it (the home set is about to re-claim it).

use std::collections::BTreeSet;

use rand::RngCore;

use std::collections::BTreeMap;

use super::{Action, Scheduler, Table};
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
}

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
        }
    }

    /// Tasks waiting in the ready queue.
    pub(super) fn queued(&self) -> usize {
        self.ready.len()
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
        ids.iter()
            .filter_map(|id| {
                self.ready.remove(id);
                self.held.remove(id)
            })
            .collect()
    }

    /// Takes back a task given up whose grant never arrived, at the front of the queue.
    pub(super) fn take_back(&mut self, held: Held, now: Millis) {
        let Held { task, epoch, .. } = held;
        self.ready.push_front(task.id, task.spec.priority, now);
        let held = Held {
            task,
            epoch,
            running: false,
        };
        self.held.insert(held.task.id, held);
    }
}

impl Scheduler {
    /// Queues a task under the lease at `epoch` (or moves a queued one to a newer epoch).
    ///
    /// A task placed again by its primary (major epoch above 1: its holder was lost, or it is
    /// retried) goes to the front of the queue: it is older than anything queued behind it, and
    /// its recovery should not wait for the queue to drain.
    pub(super) fn hold(&mut self, task: Task, epoch: u64) {
        match self.holding.held.get_mut(&task.id) {
            Some(held) if held.epoch >= epoch => {}
            Some(held) => {
                held.epoch = epoch;
                let entry = HeldEntry {
                    envelope: held.task.envelope(),
                    epoch,
                };
                self.write(Table::Held, task.id, Some(&entry));
            }
            None => {
                let priority = task.spec.priority;
                if epoch >> 32 > 1 {
                    self.holding
                        .ready
                        .push_front(task.id, priority, self.last_now);
                } else {
                    self.holding.ready.push(task.id, priority, self.last_now);
                }
                let entry = HeldEntry {
                    envelope: task.envelope(),
                    epoch,
                };
                self.write(Table::Held, task.id, Some(&entry));
                self.holding.held.insert(
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

    /// Forgets a held task (it ended, moved on, or was abandoned).
    pub(super) fn release(&mut self, id: TaskId) -> Option<Held> {
        let held = self.holding.held.remove(&id)?;
        if held.running {
            self.holding.running = self.holding.running.saturating_sub(1);
            self.holding.in_use = self.holding.in_use.minus(&held.task.spec.needs.resources);
        } else {
            self.holding.ready.remove(&id);
        }
        self.write::<HeldEntry>(Table::Held, id, None);
        Some(held)
    }

    /// Starts ready tasks while slots are free, highest priority first, each only if what it
    /// needs fits in what the running tasks leave of this peer's capacity (a task that does not
    /// fit yet lets one behind it start), and tells their primaries.
    pub(super) fn dispatch(&mut self, now: Millis) {
        let mut started: std::collections::BTreeMap<PeerKey, Vec<(TaskId, u64)>> =
            std::collections::BTreeMap::new();
        while self.holding.running < self.config.slots {
            let free = self
                .config
                .capabilities
                .offer
                .capacity
                .minus(&self.holding.in_use);
            let held = &self.holding.held;
            let fits = |id: TaskId| {
                held.get(&id)
                    .is_none_or(|h| h.task.spec.needs.resources.fits_in(&free))
            };
            let Some(id) = self.holding.ready.pop_first_fitting(FIT_WINDOW, fits) else {
                break;
            };
            let Some(held) = self.holding.held.get_mut(&id) else {
                continue;
            };
            held.running = true;
            self.holding.running += 1;
            self.holding.in_use = self.holding.in_use.plus(&held.task.spec.needs.resources);
            self.counters.tasks_executed += 1;
            let (epoch, spec) = (held.epoch, Box::new(held.task.spec.clone()));
            let inputs = held.task.inputs.clone();
            let home = held.task.home.clone();
            self.actions.push_back(Action::Execute {
                task: id,
                epoch,
                spec,
                inputs,
            });
            match self.primary_of(&home) {
                Some(primary) if primary == self.me => {
                    self.on_started(now, self.me, &[(id, epoch)])
                }
                Some(primary) => started.entry(primary).or_default().push((id, epoch)),
                None => {}
            }
        }
        for (primary, tasks) in started {
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
            if !self.config.capabilities.can_run(&task.spec) {
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

    /// An attempt ended here: record it if this peer is the primary, otherwise keep the result
    /// and send it to the home set until the primary acknowledges it.
    pub(super) fn on_finished(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        match self.holding.held.get(&id) {
            // An attempt that started under an older lease of this same peer (the primary placed
            // the task here again) reports under the current one.
            Some(held) if held.epoch >= epoch && held.running => {}
            // Aborted or moved on while it ran: its result is not ours to report.
            _ => return,
        }
        let Some(held) = self.release(id) else {
            return;
        };
        let epoch = held.epoch;
        let home = held.task.home;
        if self.is_primary(&home, now) && self.home.keeps(&id) {
            self.on_completed(now, rng, self.me, id, epoch, outcome);
            return;
        }
        let entry = OutboxEntry {
            task: id,
            home,
            epoch,
            outcome,
        };
        self.write(Table::Outbox, id, Some(&entry));
        let pending = Pending {
            entry,
            last_sent: now,
        };
        self.send_completion(&pending.entry);
        self.holding.outbox.insert(id, pending);
    }

    /// Sends a kept result to every live home member (the primary records it; the others will
    /// need it only if they become primary before it is settled).
    fn send_completion(&mut self, entry: &OutboxEntry) {
        let message = Message::Completed {
            task: entry.task,
            epoch: entry.epoch,
            outcome: entry.outcome.clone(),
        };
        let members: Vec<PeerKey> = entry
            .home
            .iter()
            .filter(|m| **m != self.me && self.alive(m))
            .copied()
            .collect();
        for member in members {
            self.send(member, message.clone());
        }
    }

    /// The primary settled these completions: stop sending them. Only a home member of the task
    /// may say so (anyone else could make this peer drop a result nobody recorded).
    pub(super) fn on_recorded(&mut self, from: PeerKey, tasks: &[(TaskId, u64)]) {
        for (id, epoch) in tasks {
            if self.home_of(id).is_some_and(|home| !home.contains(&from)) {
                let error = WireError::Unauthorized("a settlement from outside the home set");
                self.reject("recorded", &error);
                continue;
            }
            if self
                .holding
                .outbox
                .get(id)
                .is_some_and(|p| p.entry.epoch == *epoch)
            {
                self.holding.outbox.remove(id);
                self.write::<OutboxEntry>(Table::Outbox, *id, None);
            }
        }
    }

    /// The primary asks whether this peer still holds tasks: answer with the ones it does not
    /// (neither queued nor running under that epoch or a later one, nor handed on, nor finished
    /// with a result waiting to be acknowledged).
    pub(super) fn on_confirm(&mut self, from: PeerKey, tasks: &[(TaskId, u64)]) {
        let foreign = tasks
            .iter()
            .filter(|(id, _)| self.home_of(id).is_some_and(|home| !home.contains(&from)))
            .count();
        for _ in 0..foreign {
            let error = WireError::Unauthorized("a lease check from outside the home set");
            self.reject("confirm", &error);
        }
        if foreign > 0 {
            return;
        }
        let missing: Vec<(TaskId, u64)> = tasks
            .iter()
            .filter(|(id, epoch)| {
                let held = self.holding.held.get(id).is_some_and(|h| h.epoch >= *epoch);
                let done = self
                    .holding
                    .outbox
                    .get(id)
                    .is_some_and(|p| p.entry.epoch >= *epoch);
                !held && !done && !self.stealing.has_given(id)
            })
            .copied()
            .collect();
        if !missing.is_empty() {
            self.send(from, Message::Missing { tasks: missing });
        }
    }

    /// The primary voided the lease (the task was cancelled): stop it.
    pub(super) fn on_abort(&mut self, from: PeerKey, id: TaskId, epoch: u64) {
        let Some(held) = self.holding.held.get(&id) else {
            return;
        };
        if !held.task.home.contains(&from) {
            let error = WireError::Unauthorized("an abort from outside the home set");
            return self.reject("abort", &error);
        }
        if held.epoch != epoch {
            return;
        }
        self.abort_held(id);
    }

    pub(super) fn abort_held(&mut self, id: TaskId) {
        if let Some(held) = self.release(id)
            && held.running
        {
            self.actions.push_back(Action::Abort {
                task: id,
                epoch: held.epoch,
            });
        }
    }

    /// Stops held tasks none of whose home members was heard from for two thirds of the lease
    /// TTL: the home set is about to re-claim them, and their results could not be reported.
    pub(super) fn scan_held(&mut self, now: Millis) {
        if !self.settled(now) {
            return;
        }
        let window = Millis::from(self.config.lease_ttl_ms) * 2 / 3;
        let cut_off: Vec<TaskId> = self
            .holding
            .held
            .iter()
            .filter(|(_, h)| {
                !h.task
                    .home
                    .iter()
                    .any(|m| self.heard_within(m, now, window))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in cut_off {
            self.counters.tasks_abandoned += 1;
            self.abort_held(id);
        }
    }

    /// Stops every held task (this peer was cut off from everyone for too long).
    pub(super) fn abandon_all(&mut self) {
        let held: Vec<TaskId> = self.holding.held.keys().copied().collect();
        self.counters.tasks_abandoned += held.len() as u64;
        for id in held {
            self.abort_held(id);
        }
    }

    /// Sends again the results and records that wait for an acknowledgement. A kept result of a
    /// task this peer has since become primary of is recorded here.
    pub(super) fn resend_due(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let after = self.config.resend_after_ms;
        let due: Vec<TaskId> = self
            .holding
            .outbox
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_sent) >= after)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(pending) = self.holding.outbox.get_mut(&id) else {
                continue;
            };
            pending.last_sent = now;
            let entry = pending.entry.clone();
            if self.is_primary(&entry.home, now) && self.home.keeps(&id) {
                self.holding.outbox.remove(&id);
                self.write::<OutboxEntry>(Table::Outbox, id, None);
                self.on_completed(now, rng, self.me, id, entry.epoch, entry.outcome);
            } else {
                self.send_completion(&entry);
            }
        }
        self.resend_replication(now);
        self.resend_transfers(now);
    }
}
