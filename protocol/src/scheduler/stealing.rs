//! Stealing, from both ends: an idle peer asks a busy one for work it can start at once; a busy
//! peer gives up to half of its queue under new leases at the next epoch, and tells the tasks'
//! home sets once the thief has the grant (if the grant cannot be delivered, it keeps the tasks
//! under their old leases, which their home sets never saw change).

use std::collections::BTreeSet;

use rand::RngCore;

use super::{Held, Scheduler, Table};
use crate::Millis;
use crate::identity::PeerKey;
use crate::lease::{Lease, SignedGrant};
use crate::load::Capabilities;
use crate::message::Message;
use crate::record::HeldEntry;
use crate::steal;
use crate::task::Envelope;

impl Scheduler {
    pub(super) fn maybe_steal(&mut self, now: Millis, rng: &mut dyn RngCore) {
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
        self.steal_asked.insert(victim, now);
        self.counters.steal_requests += 1;
        let request = Message::StealRequest {
            free_slots: free,
            capabilities: self.config.capabilities.clone(),
        };
        self.send(victim, request);
    }

    /// Whether `from` is a victim this peer asked for work and has not heard back from (only such
    /// a peer may hand it tasks, or say it has none); takes the answer.
    pub(super) fn steal_answered(&mut self, from: PeerKey) -> bool {
        self.clear_steal(from);
        self.steal_asked.remove(&from).is_some()
    }

    /// Forgets steal requests that were never answered, long after their timeout.
    pub(super) fn expire_steal_asks(&mut self, now: Millis) {
        let keep = 10 * self.config.steal_timeout_ms;
        self.steal_asked
            .retain(|_, asked_at| now.saturating_sub(*asked_at) < keep);
    }

    pub(super) fn clear_steal(&mut self, from: PeerKey) {
        if self.steal_pending.is_some_and(|(victim, _)| victim == from) {
            self.steal_pending = None;
        }
    }

    pub(super) fn on_nothing_to_steal(&mut self, from: PeerKey) {
        self.clear_steal(from);
        if let Some(view) = self.members.get_mut(&from) {
            view.estimated_queued = 0;
        }
    }

    pub(super) fn on_steal_request(
        &mut self,
        thief: PeerKey,
        free_slots: u32,
        capabilities: &Capabilities,
    ) {
        let queue = self
            .ready
            .iter()
            .filter_map(|id| self.held.get(&id).map(|h| (id, &h.task.spec)));
        let chosen = steal::choose_tasks(queue, self.ready.len(), free_slots, capabilities);
        if chosen.is_empty() {
            return self.send(thief, Message::NothingToSteal);
        }
        for id in &chosen {
            self.ready.remove(id);
        }
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(chosen.len());
        let mut leases = Vec::with_capacity(chosen.len());
        for id in chosen {
            let Some(held) = self.held.remove(&id) else {
                continue;
            };
            leases.push(Lease {
                task: id,
                epoch: crate::lease::next_minor(held.epoch),
                holder: thief,
                granted_by: self.me,
                ttl_ms: self.config.lease_ttl_ms,
            });
            envelopes.push(held.task.envelope());
            self.given.insert(id, held);
        }
        self.counters.tasks_given += envelopes.len() as u64;
        let grant = self.sign_grant(leases);
        self.send(
            thief,
            Message::StealGrant {
                tasks: envelopes,
                grant,
            },
        );
    }

    /// The thief has the grant: the tasks are its now; tell their home sets.
    pub(super) fn on_grant_delivered(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        tasks: &[Envelope],
        grant: &SignedGrant,
    ) {
        let mut members: BTreeSet<PeerKey> = BTreeSet::new();
        for envelope in tasks {
            if self.given.remove(&envelope.id).is_some() {
                self.write::<HeldEntry>(Table::Held, envelope.id, None);
                members.extend(envelope.home.iter().copied());
            }
        }
        self.relay_transfer(now, rng, members, grant);
    }

    /// Tells the home members `homes` that the tasks of `grant` moved (this peer applies it at
    /// once if it is one). The victim does so once it knows the grant arrived, and the thief as
    /// it takes the grant: either notice is enough, so a victim that dies just after giving tasks
    /// away does not get them re-claimed and run twice.
    pub(super) fn relay_transfer(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        homes: BTreeSet<PeerKey>,
        grant: &SignedGrant,
    ) {
        for member in homes {
            if member == self.me {
                self.on_transferred(now, rng, self.me, grant);
            } else {
                self.send(
                    member,
                    Message::Transferred {
                        grant: grant.clone(),
                    },
                );
            }
        }
    }

    /// The grant never reached the thief: keep the tasks under their old leases.
    pub(super) fn on_grant_undelivered(&mut self, tasks: &[Envelope]) {
        for envelope in tasks {
            if let Some(Held { task, epoch, .. }) = self.given.remove(&envelope.id) {
                self.ready
                    .push_front(task.id, task.spec.priority, self.last_now);
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
}
