//! The holder's side: tasks this peer holds leases on, its slots, the results it keeps until their
//! primary acknowledges them, and the rule that a peer cut off from every home member of a task
//! stops it (the home set is about to re-claim it).

use std::collections::BTreeSet;

use rand::RngCore;

use super::{Action, Held, Pending, Scheduler, Table};
use crate::Millis;
use crate::identity::PeerKey;
use crate::lease::SignedGrant;
use crate::message::Message;
use crate::record::{HeldEntry, OutboxEntry};
use crate::task::{Envelope, Outcome, Task, TaskId};
use crate::wire::WireError;

/// How deep into the ready queue a start looks for a task that fits the free resources.
const FIT_WINDOW: usize = 64;

impl Scheduler {
    /// Queues a task under the lease at `epoch` (or moves a queued one to a newer epoch).
    ///
    /// A task placed again by its primary (major epoch above 1: its holder was lost, or it is
    /// retried) goes to the front of the queue: it is older than anything queued behind it, and
    /// its recovery should not wait for the queue to drain.
    pub(super) fn hold(&mut self, task: Task, epoch: u64) {
        match self.held.get_mut(&task.id) {
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
                    self.ready.push_front(task.id, priority, self.last_now);
                } else {
                    self.ready.push(task.id, priority, self.last_now);
                }
                let entry = HeldEntry {
                    envelope: task.envelope(),
                    epoch,
                };
                self.write(Table::Held, task.id, Some(&entry));
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

    /// Forgets a held task (it ended, moved on, or was abandoned).
    pub(super) fn release(&mut self, id: TaskId) -> Option<Held> {
        let held = self.held.remove(&id)?;
        if held.running {
            self.running = self.running.saturating_sub(1);
            self.in_use = self.in_use.minus(&held.task.spec.needs.resources);
        } else {
            self.ready.remove(&id);
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
        while self.running < self.config.slots {
            let free = self.config.capabilities.offer.capacity.minus(&self.in_use);
            let held = &self.held;
            let fits = |id: TaskId| {
                held.get(&id)
                    .is_none_or(|h| h.task.spec.needs.resources.fits_in(&free))
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
        match self.held.get(&id) {
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
        if self.is_primary(&home, now) && self.records.contains_key(&id) {
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
        self.outbox.insert(id, pending);
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
            if self.outbox.get(id).is_some_and(|p| p.entry.epoch == *epoch) {
                self.outbox.remove(id);
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
                let held = self.held.get(id).is_some_and(|h| h.epoch >= *epoch);
                let done = self.outbox.get(id).is_some_and(|p| p.entry.epoch >= *epoch);
                !held && !done && !self.given.contains_key(id)
            })
            .copied()
            .collect();
        if !missing.is_empty() {
            self.send(from, Message::Missing { tasks: missing });
        }
    }

    /// The primary voided the lease (the task was cancelled): stop it.
    pub(super) fn on_abort(&mut self, from: PeerKey, id: TaskId, epoch: u64) {
        let Some(held) = self.held.get(&id) else {
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
        let held: Vec<TaskId> = self.held.keys().copied().collect();
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
            .outbox
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_sent) >= after)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(pending) = self.outbox.get_mut(&id) else {
                continue;
            };
            pending.last_sent = now;
            let entry = pending.entry.clone();
            if self.is_primary(&entry.home, now) && self.records.contains_key(&id) {
                self.outbox.remove(&id);
                self.write::<OutboxEntry>(Table::Outbox, id, None);
                self.on_completed(now, rng, self.me, id, entry.epoch, entry.outcome);
            } else {
                self.send_completion(&entry);
            }
        }
        self.resend_replication(now);
        self.resend_transfers(now);
    }

    /// Sends again the hand-over notices that failed `resend_after_ms` ago, to members still
    /// alive; a member taken for dead no longer needs its notice.
    fn resend_transfers(&mut self, now: Millis) {
        let after = self.config.resend_after_ms;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsent_transfers)
            .into_iter()
            .partition(|(_, _, failed_at)| now.saturating_sub(*failed_at) >= after);
        self.unsent_transfers = waiting;
        for (to, grant, _) in due {
            if self.alive(&to) {
                self.send(to, Message::Transferred { grant });
            }
        }
    }
}
