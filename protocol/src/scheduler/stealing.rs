//! Stealing, from both ends: an idle peer asks a busy one for work it can start at once; a busy
//! peer gives up to half of its queue under new leases at the next epoch, and tells the tasks'
//! home sets once the thief has the grant (if the grant cannot be delivered, it keeps the tasks
//! under their old leases, which their home sets never saw change).

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;

use super::holding::{Held, Holding};
use super::peers::Peers;
use super::{Ctx, Scheduler, Table};
use crate::Millis;
use crate::identity::PeerKey;
use crate::lease::{Lease, SignedGrant};
use crate::load::Capabilities;
use crate::message::Message;
use crate::record::HeldEntry;
use crate::steal;
use crate::task::{Envelope, TaskId};

/// The thief's and the victim's own state: the victim asked last and when, the victims asked that
/// have not answered (only they may grant), the tasks given away whose grant is on its way, and
/// the hand-over notices to send again. Its fields change only in this module.
#[derive(Clone, Debug, Default)]
pub(super) struct Stealing {
    pending: Option<(PeerKey, Millis)>,
    asked: BTreeMap<PeerKey, Millis>,
    given: BTreeMap<TaskId, Held>,
    /// Hand-over notices that could not be delivered: `(member, grant, failed at)`, sent again
    /// on the resend timer while their member lives.
    unsent_transfers: Vec<(PeerKey, SignedGrant, Millis)>,
}

impl Stealing {
    /// Whether a task was given to a thief whose grant is on its way.
    pub(super) fn has_given(&self, id: &TaskId) -> bool {
        self.given.contains_key(id)
    }

    /// The home set of a task given away whose grant is on its way.
    pub(super) fn home_of(&self, id: &TaskId) -> Option<&[PeerKey]> {
        self.given.get(id).map(|h| h.task.home.as_slice())
    }

    /// The steal request out has had its time.
    pub(super) fn expire(&mut self, now: Millis, timeout: Millis) {
        if self
            .pending
            .is_some_and(|(_, asked_at)| now.saturating_sub(asked_at) >= timeout)
        {
            self.pending = None;
        }
        let keep = 10 * timeout;
        self.asked
            .retain(|_, asked_at| now.saturating_sub(*asked_at) < keep);
    }

    /// A steal request to `victim` could not be delivered.
    pub(super) fn undelivered(&mut self, victim: &PeerKey) {
        if self.pending.is_some_and(|(v, _)| v == *victim) {
            self.pending = None;
        }
        self.asked.remove(victim);
    }

    /// Keeps a hand-over notice to `member` that could not be delivered, to send again.
    pub(super) fn notice_undelivered(&mut self, member: PeerKey, grant: SignedGrant, now: Millis) {
        self.unsent_transfers.push((member, grant, now));
    }
}

impl Stealing {
    /// The thief: with a free slot, nothing queued and no request out, asks a peer with work
    /// queued (in its view) for some.
    pub(super) fn maybe_steal(
        &mut self,
        ctx: &mut Ctx<'_>,
        holding: &Holding,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
    ) {
        let free = ctx.config.slots.saturating_sub(holding.running());
        if free == 0 || holding.queued() > 0 || self.pending.is_some() || peers.draining() {
            return;
        }
        // Not a peer a message to which failed lately: the request would only time out.
        let queues: Vec<(PeerKey, u32)> = peers
            .iter()
            .filter(|(peer, _)| !peers.is_unreachable(peer))
            .map(|(peer, view)| (*peer, view.estimated_queued))
            .collect();
        let Some(victim) = steal::choose_victim(rng, &queues) else {
            return;
        };
        self.pending = Some((victim, now));
        self.asked.insert(victim, now);
        ctx.counters.steal_requests += 1;
        let request = Message::StealRequest {
            free_slots: free,
            capabilities: ctx.config.capabilities.clone(),
        };
        ctx.send(victim, request);
    }

    /// Whether `from` is a victim this peer asked for work and has not heard back from (only such
    /// a peer may hand it tasks, or say it has none); takes the answer.
    pub(super) fn answered(&mut self, from: PeerKey) -> bool {
        if self.pending.is_some_and(|(victim, _)| victim == from) {
            self.pending = None;
        }
        self.asked.remove(&from).is_some()
    }

    /// The victim: gives `thief` up to half of its queue that `capabilities` can run, under
    /// leases at the next minor epoch that this peer signs, or says it has nothing. The tasks
    /// leave its store before the grant leaves it, and are kept aside in memory until the grant
    /// is known to have arrived (or not: see [`Stealing::grant_undelivered`]).
    pub(super) fn give(
        &mut self,
        ctx: &mut Ctx<'_>,
        holding: &mut Holding,
        thief: PeerKey,
        free_slots: u32,
        capabilities: &Capabilities,
    ) {
        let (queue, len) = holding.queue();
        let chosen = steal::choose_tasks(queue, len, free_slots, capabilities);
        if chosen.is_empty() {
            return ctx.send(thief, Message::NothingToSteal);
        }
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(chosen.len());
        let mut leases = Vec::with_capacity(chosen.len());
        for held in holding.give_up(&chosen) {
            let id = held.task.id;
            // Off the disk before the grant leaves (the grant waits for this write): a victim that
            // restarts must not find the task held at its old epoch and grant the next one again.
            ctx.write::<HeldEntry>(Table::Held, id, None);
            leases.push(Lease {
                task: id,
                epoch: crate::lease::next_minor(held.epoch),
                holder: thief,
                granted_by: ctx.me,
                ttl_ms: ctx.config.lease_ttl_ms,
            });
            envelopes.push(held.task.envelope());
            self.given.insert(id, held);
        }
        ctx.counters.tasks_given += envelopes.len() as u64;
        let grant = ctx.sign_grant(leases);
        ctx.send(
            thief,
            Message::StealGrant {
                tasks: envelopes,
                grant,
            },
        );
    }

    /// The thief has the grant: the tasks are its now. Returns the home members to tell.
    pub(super) fn grant_delivered(&mut self, tasks: &[Envelope]) -> BTreeSet<PeerKey> {
        let mut members: BTreeSet<PeerKey> = BTreeSet::new();
        for envelope in tasks {
            if self.given.remove(&envelope.id).is_some() {
                members.extend(envelope.home.iter().copied());
            }
        }
        members
    }

    /// The grant may not have reached the thief: its send failed, but a copy may still arrive,
    /// and then the thief holds the tasks under the epochs granted. Keeping them under their old
    /// leases would let a later steal grant those epochs again, to another thief: two holders of
    /// one epoch. So this peer gives them back to their primaries instead (`Missing`), which
    /// re-claim them under a new major epoch (a primary that is this peer finds them neither held
    /// nor given at its next scan). At worst a task runs twice; it has one result.
    pub(super) fn grant_undelivered(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        tasks: &[Envelope],
    ) {
        let mut back: BTreeMap<PeerKey, Vec<(TaskId, u64)>> = BTreeMap::new();
        for envelope in tasks {
            let Some(held) = self.given.remove(&envelope.id) else {
                continue;
            };
            if let Some(primary) = peers.primary_of(&envelope.home)
                && primary != ctx.me
            {
                back.entry(primary)
                    .or_default()
                    .push((envelope.id, held.epoch));
            }
        }
        for (primary, tasks) in back {
            ctx.send(primary, Message::Missing { tasks });
        }
    }

    /// Sends again the hand-over notices that failed `resend_after_ms` ago, to members still
    /// alive; a member taken for dead no longer needs its notice.
    pub(super) fn resend_notices(&mut self, ctx: &mut Ctx<'_>, peers: &Peers, now: Millis) {
        let after = ctx.config.resend_after_ms;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsent_transfers)
            .into_iter()
            .partition(|(_, _, failed_at)| now.saturating_sub(*failed_at) >= after);
        self.unsent_transfers = waiting;
        for (to, grant, _) in due {
            if peers.alive(&to) {
                ctx.send(to, Message::Transferred { grant });
            }
        }
    }
}

impl Scheduler {
    /// The thief's and victim's handler: its room, the holder's (whose queue it gives from and
    /// takes back into), the peers' view, and the context. It borrows nothing else.
    pub(super) fn thief(&mut self) -> (&mut Stealing, &mut Holding, &Peers, Ctx<'_>) {
        let (ctx, rooms) = self.split();
        (rooms.stealing, rooms.holding, rooms.peers, ctx)
    }

    pub(super) fn maybe_steal(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let (stealing, holding, peers, mut ctx) = self.thief();
        stealing.maybe_steal(&mut ctx, holding, peers, now, rng);
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
}
