//! Replication, as the primary runs it: every change it makes to a record goes to the other live
//! members of the task's home set, in one `Store` per member per flush, and is sent again until
//! each acknowledges the version; the submitting client is told its tasks are accepted, and a
//! holder that its result is recorded, only once every live member, and a majority of the set,
//! stored the version they need.
//! Also the members' side of it: acknowledging what was stored, sending a member that was away
//! the records it shares (a page at a time, the next once it acknowledged the last, so what waits
//! for one member is bounded however many records they share), and sealing the changes of one
//! input in one batch.
//!
//! Owns the replication state of the room ([`Replication`], and the messages waiting for the
//! flush); it changes no record, and reads the peers' view only to know who is alive.

use std::collections::{BTreeMap, VecDeque};

use super::super::peers::Peers;
use super::super::{Action, Ctx};
use super::{Entry, Home};
use crate::Millis;
use crate::home::quorum;
use crate::identity::PeerKey;
use crate::message::Message;
use crate::seal::SealedRecord;
use crate::task::TaskId;
use crate::wire::{self, WireError};

/// A member that (re)appeared, being sent the records it shares with this peer.
///
/// It is level (and counts towards this peer's majorities again) once it has answered every
/// record sent, and this peer keeps each at the version the member answered with or a later one:
/// a member that has a newer version answers with it, and sends it, and this peer must have
/// taken it before it acts on that record (on the other side of a healed cut, the record may have
/// moved on: re-claimed, run, ended). Only the answers to the records of the page count, not the
/// member's other acknowledgements.
#[derive(Clone, Debug, Default)]
pub(super) struct CatchUp {
    /// The records not sent yet.
    left: VecDeque<TaskId>,
    /// The records of the last page not settled yet: for each, the version this peer must keep
    /// (its own when sent, or the member's newer one), and whether the member answered.
    unsettled: BTreeMap<TaskId, (u64, bool)>,
    /// When the last page went (or went again).
    sent_at: Millis,
    /// How many times the last page went again unsettled.
    resent: u32,
}

/// How many times a catch-up page goes again before the catch-up settles it as it stands: a
/// member whose final record this peer keeps a different end of, for one, answers with it every
/// time, and this peer keeps its own until it learns a majority holds the other. Without a bound,
/// that one record would keep the member from counting towards any majority here.
const CATCH_UP_RESENDS: u32 = 6;

/// The most records of one catch-up sent before the member acknowledges them.
fn catch_up_page(ctx: &Ctx<'_>) -> usize {
    4 * ctx.config.place_batch_max.max(1)
}

/// Replication in progress of one record, as its primary tracks it.
#[derive(Clone, Debug, Default)]
pub(super) struct Replication {
    /// The highest version each other home member has acknowledged.
    acked: BTreeMap<PeerKey, u64>,
    /// When the record was last sent to the members that lag.
    last_sent: Millis,
    /// The version every live member must have before the submitting client is told the task
    /// is accepted, if the client waits.
    client_waits: Option<u64>,
    /// Holders waiting to hear that their completion is settled: `(holder, epoch, version)`,
    /// told once every live member has `version`.
    holders: Vec<(PeerKey, u64, u64)>,
    /// The version at which the task ended here, until a majority of its home set stored it:
    /// only then are the clients watching it here told, and its dependents here released (an
    /// end that only this side of a partition stored may yet give way to the other side's).
    ended: Option<u64>,
}

impl Home {
    /// The client that submitted a new task waits until every live member has its first
    /// version.
    pub(in crate::scheduler) fn await_client(&mut self, id: TaskId) {
        self.replication.entry(id).or_default().client_waits = Some(1);
    }

    /// The client submitted a task this peer already keeps again: it waits as the first client
    /// does, or is told at once if every live member has it.
    pub(in crate::scheduler) fn await_client_again(&mut self, id: TaskId) {
        match self.replication.get_mut(&id) {
            Some(rep) => rep.client_waits = Some(rep.client_waits.unwrap_or(1)),
            None => self.out_accepted.push((id, 0)),
        }
    }

    /// The task ended here at `version`: its watchers and dependents here hear of it once a
    /// majority of its home set (`quorum` members, this peer included) stored that version; at
    /// once where one member is a majority.
    pub(in crate::scheduler) fn await_end(&mut self, id: TaskId, version: u64, quorum: usize) {
        if quorum <= 1 {
            self.ended_here(id);
        } else {
            self.replication.entry(id).or_default().ended = Some(version);
        }
    }

    /// Tells the clients watching a task here, and its dependents here, that it ended.
    fn ended_here(&mut self, id: TaskId) {
        if self.waiting_on.contains_key(&id) {
            self.ended_now.push(id);
        }
        self.handoffs.push(super::Handoff::Ended(id));
    }

    /// A holder waits to hear its result for `epoch` is recorded until every live member has
    /// `version` of the record.
    pub(in crate::scheduler) fn await_holder(
        &mut self,
        id: TaskId,
        holder: PeerKey,
        epoch: u64,
        version: u64,
    ) {
        let rep = self.replication.entry(id).or_default();
        rep.holders.push((holder, epoch, version));
    }

    /// Tells a holder its result for `epoch` is recorded once the record as it stands is
    /// replicated (at once if it is).
    pub(in crate::scheduler) fn settle_holder(
        &mut self,
        me: PeerKey,
        peers: &Peers,
        id: TaskId,
        holder: PeerKey,
        epoch: u64,
    ) {
        let version = self.records.get(&id).map_or(0, |e| e.record.version);
        match self.replication.get_mut(&id) {
            Some(rep) => rep.holders.push((holder, epoch, version)),
            None => self
                .out_recorded
                .entry(holder)
                .or_default()
                .push((id, epoch)),
        }
        self.settle(me, peers, id);
    }

    /// Sends the new version of a record this peer changed to the other live members.
    pub(in crate::scheduler) fn replicate(
        &mut self,
        me: PeerKey,
        peers: &Peers,
        id: TaskId,
        now: Millis,
    ) {
        let Some(entry) = self.records.get(&id) else {
            return;
        };
        let backups: Vec<PeerKey> = entry
            .record
            .home()
            .iter()
            .filter(|m| **m != me && peers.alive(m))
            .copied()
            .collect();
        self.replication.entry(id).or_default().last_sent = now;
        for member in backups {
            self.out_store.entry(member).or_default().insert(id);
        }
        self.settle(me, peers, id);
    }

    /// Tells the client and holders what they wait for once every live member has the version
    /// they need; forgets the replication once every live member has the current version.
    fn settle(&mut self, me: PeerKey, peers: &Peers, id: TaskId) {
        let (Some(entry), Some(rep)) = (self.records.get(&id), self.replication.get_mut(&id))
        else {
            return;
        };
        let version = entry.record.version;
        let home = entry.record.home();
        let on_live_members = home
            .iter()
            .filter(|m| **m != me && peers.alive(m))
            .map(|m| rep.acked.get(m).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        // And on a majority of the set, this peer included (a member taken for dead across a
        // partition must not make a version settled that only one side stored).
        let mut others: Vec<u64> = home
            .iter()
            .filter(|m| **m != me)
            .map(|m| rep.acked.get(m).copied().unwrap_or(0))
            .collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        let on_quorum = match quorum(home.len()).saturating_sub(1) {
            0 => u64::MAX,
            k => others.get(k - 1).copied().unwrap_or(0),
        };
        let stored_everywhere = on_live_members.min(on_quorum);
        let ended = rep.ended.filter(|v| on_quorum >= *v);
        if ended.is_some() {
            rep.ended = None;
        }
        if let Some(waited) = rep.client_waits.filter(|v| stored_everywhere >= *v) {
            rep.client_waits = None;
            self.out_accepted.push((id, waited));
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut rep.holders)
            .into_iter()
            .partition(|(_, _, v)| stored_everywhere >= *v);
        rep.holders = waiting;
        let done = rep.holders.is_empty()
            && rep.client_waits.is_none()
            && rep.ended.is_none()
            && stored_everywhere >= version;
        for (holder, epoch, _) in ready {
            self.out_recorded
                .entry(holder)
                .or_default()
                .push((id, epoch));
        }
        if done {
            self.replication.remove(&id);
        }
        if ended.is_some() {
            self.ended_here(id);
        }
    }

    /// Sends records again to live members that have not acknowledged them, and settles the ones
    /// whose lagging members have died.
    pub(in crate::scheduler) fn resend(&mut self, ctx: &Ctx<'_>, peers: &Peers, now: Millis) {
        let after = ctx.config.resend_after_ms;
        let due: Vec<TaskId> = self
            .replication
            .iter()
            .filter(|(_, rep)| now.saturating_sub(rep.last_sent) >= after)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (Some(entry), Some(rep)) = (self.records.get(&id), self.replication.get_mut(&id))
            else {
                self.replication.remove(&id);
                continue;
            };
            let version = entry.record.version;
            let lagging = entry.record.home().iter().filter(|m| {
                **m != ctx.me && peers.alive(m) && rep.acked.get(*m).copied().unwrap_or(0) < version
            });
            for member in lagging {
                self.out_store.entry(*member).or_default().insert(id);
            }
            rep.last_sent = now;
            self.settle(ctx.me, peers, id);
        }
    }

    /// A home member stored records at these versions.
    ///
    /// Who may send it: a member of each task's home set (a record this peer does not keep is
    /// ignored). Anything else is counted and dropped.
    pub(in crate::scheduler) fn on_stored(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        from: PeerKey,
        acks: &[(TaskId, u64)],
    ) {
        self.catch_up_acknowledged(from, acks);
        for (id, version) in acks {
            if self
                .records
                .get(id)
                .is_some_and(|e| !e.record.home().contains(&from))
            {
                let error = WireError::Unauthorized("an acknowledgement from outside the home set");
                ctx.reject("stored", &error);
                continue;
            }
            if let Some(rep) = self.replication.get_mut(id) {
                let acked = rep.acked.entry(from).or_insert(0);
                *acked = (*acked).max(*version);
                self.settle(ctx.me, peers, *id);
            }
        }
    }

    /// Acknowledges a record stored (at the version this peer now keeps) to the member that
    /// sent it, or, with ours newer, sends ours back.
    pub(in crate::scheduler) fn acknowledge(
        &mut self,
        from: PeerKey,
        id: TaskId,
        ours_newer: bool,
    ) {
        if ours_newer {
            self.out_store.entry(from).or_default().insert(id);
        }
        let version = self.records.get(&id).map_or(0, |e| e.record.version);
        self.out_stored.entry(from).or_default().push((id, version));
    }

    /// Sends `to` this peer's version of the record of `id` (it acted on an older one).
    pub(in crate::scheduler) fn send_ours(&mut self, to: PeerKey, id: TaskId) {
        if self.records.contains_key(&id) {
            self.out_store.entry(to).or_default().insert(id);
        }
    }

    /// A peer (re)appeared: send it the records of the home sets it shares with this peer, so a
    /// member that was away catches up before it acts as anyone's primary. They go a page at a
    /// time: the next when the member acknowledged the last (or it went a resend interval ago).
    pub(in crate::scheduler) fn catch_up(&mut self, ctx: &Ctx<'_>, peer: PeerKey, now: Millis) {
        let left: VecDeque<TaskId> = self
            .records
            .iter()
            .filter(|(_, e)| e.record.home().contains(&peer))
            .map(|(id, _)| *id)
            .collect();
        if left.is_empty() {
            self.catching_up.remove(&peer);
            return;
        }
        let catch_up = CatchUp {
            left,
            ..CatchUp::default()
        };
        self.catching_up.insert(peer, catch_up);
        self.send_catch_up_page(ctx, peer, now);
    }

    /// Whether `peer` is being sent the records it shares with this peer.
    pub(in crate::scheduler) fn is_catching_up(&self, peer: &PeerKey) -> bool {
        self.catching_up.contains_key(peer)
    }

    /// Members were taken for dead: for each record this peer now leads whose primary was one of
    /// them, send this peer's version to the other live members (a page at a time, as a
    /// catch-up). A primary can die between sending a new version to one member and to another,
    /// and only it tracked who had which: the next one brings them level (a member that has a
    /// newer version answers with it). A peer up for less than a lease TTL leads nothing yet: it
    /// does this once it does.
    pub(in crate::scheduler) fn level_after_deaths(
        &mut self,
        ctx: &Ctx<'_>,
        peers: &Peers,
        now: Millis,
        gone: &[PeerKey],
    ) {
        self.unlevelled.extend(gone);
        self.level_due(ctx, peers, now);
    }

    /// Brings level the records of the members taken for dead, once this peer may lead.
    fn level_due(&mut self, ctx: &Ctx<'_>, peers: &Peers, now: Millis) {
        if self.unlevelled.is_empty() || !peers.settled(now, Millis::from(ctx.config.lease_ttl_ms))
        {
            return;
        }
        // One back in the view is caught up as any returning member is; one still heard from
        // (a message, not yet a silent TTL) waits until it is not.
        self.unlevelled.retain(|peer| peers.view(peer).is_none());
        let gone: Vec<PeerKey> = self
            .unlevelled
            .iter()
            .filter(|peer| !peers.alive(peer))
            .copied()
            .collect();
        if gone.is_empty() {
            return;
        }
        self.unlevelled.retain(|peer| !gone.contains(peer));
        let mut lagging: BTreeMap<PeerKey, Vec<TaskId>> = BTreeMap::new();
        for (id, entry) in &self.records {
            let home = entry.record.home();
            let led_by_gone = home
                .iter()
                .take_while(|m| **m != ctx.me)
                .any(|m| gone.contains(m));
            if !led_by_gone || !ctx.is_primary(peers, home, now) {
                continue;
            }
            for member in home.iter().filter(|m| **m != ctx.me && peers.alive(m)) {
                lagging.entry(*member).or_default().push(*id);
            }
        }
        for (member, ids) in lagging {
            let catch_up = self.catching_up.entry(member).or_default();
            catch_up.left.extend(ids);
            if catch_up.unsettled.is_empty() {
                self.send_catch_up_page(ctx, member, now);
            }
        }
    }

    /// Sends the next page of `peer`'s catch-up, if one is left; ends the catch-up otherwise.
    fn send_catch_up_page(&mut self, ctx: &Ctx<'_>, peer: PeerKey, now: Millis) {
        let page = catch_up_page(ctx);
        let Some(catch_up) = self.catching_up.get_mut(&peer) else {
            return;
        };
        let records = &self.records;
        let ids: Vec<TaskId> = std::iter::from_fn(|| catch_up.left.pop_front())
            .filter(|id| records.contains_key(id))
            .take(page)
            .collect();
        if ids.is_empty() {
            self.catching_up.remove(&peer);
            return;
        }
        catch_up.unsettled = ids
            .iter()
            .filter_map(|id| records.get(id).map(|e| (*id, (e.record.version, false))))
            .collect();
        catch_up.sent_at = now;
        catch_up.resent = 0;
        self.out_store.entry(peer).or_default().extend(ids);
    }

    /// Sends the next catch-up pages that are due: the member settled the last one, or it went
    /// a resend interval ago and goes again (lost, or the member is slow, or this peer has not
    /// taken the newer versions the member answered with yet: sent again, the member sends
    /// them again). A page sent [`CATCH_UP_RESENDS`] times is settled as it stands.
    pub(in crate::scheduler) fn catch_up_due(&mut self, ctx: &Ctx<'_>, peers: &Peers, now: Millis) {
        self.level_due(ctx, peers, now);
        let after = ctx.config.resend_after_ms;
        self.catching_up.retain(|peer, _| peers.alive(peer));
        let peers: Vec<PeerKey> = self.catching_up.keys().copied().collect();
        for peer in peers {
            self.settle_catch_up(&peer);
            let Some(catch_up) = self.catching_up.get_mut(&peer) else {
                continue;
            };
            if catch_up.unsettled.is_empty() {
                self.send_catch_up_page(ctx, peer, now);
            } else if now.saturating_sub(catch_up.sent_at) >= after {
                if catch_up.resent >= CATCH_UP_RESENDS {
                    catch_up.unsettled.clear();
                    self.send_catch_up_page(ctx, peer, now);
                } else {
                    catch_up.resent += 1;
                    catch_up.sent_at = now;
                    let again: Vec<TaskId> = catch_up.unsettled.keys().copied().collect();
                    self.out_store.entry(peer).or_default().extend(again);
                }
            }
        }
    }

    /// `from` answered these records, at these versions: counted against its catch-up page.
    fn catch_up_acknowledged(&mut self, from: PeerKey, acks: &[(TaskId, u64)]) {
        let Some(catch_up) = self.catching_up.get_mut(&from) else {
            return;
        };
        for (id, version) in acks {
            if let Some((needed, answered)) = catch_up.unsettled.get_mut(id) {
                *needed = (*needed).max(*version);
                *answered = true;
            }
        }
        self.settle_catch_up(&from);
    }

    /// Drops from `peer`'s catch-up page the records it answered that this peer keeps at the
    /// version it answered with (or a later one), and those this peer no longer keeps.
    fn settle_catch_up(&mut self, peer: &PeerKey) {
        let Some(catch_up) = self.catching_up.get_mut(peer) else {
            return;
        };
        let records = &self.records;
        catch_up.unsettled.retain(|id, (needed, answered)| {
            records
                .get(id)
                .is_some_and(|e| !*answered || e.record.version < *needed)
        });
    }

    /// Seals the records changed since the last seal, in one batch, and fills in their writes
    /// among the actions.
    pub(in crate::scheduler) fn seal_changed(&mut self, ctx: &mut Ctx<'_>) {
        if self.unsealed.is_empty() {
            return;
        }
        let changed = std::mem::take(&mut self.unsealed);
        let mut ids: Vec<TaskId> = changed.iter().map(|(_, id)| *id).collect();
        ids.sort();
        ids.dedup();
        ids.retain(|id| self.records.contains_key(id));
        let encoded: Vec<Vec<u8>> = ids
            .iter()
            .filter_map(|id| self.records.get(id).map(|e| wire::encode(&e.record)))
            .collect();
        let digests: Vec<_> = encoded
            .iter()
            .map(|b| crate::seal::digest_of_bytes(b))
            .collect();
        let seals = crate::seal::seal(ctx.key, &digests);
        let mut rows: BTreeMap<TaskId, Vec<u8>> = BTreeMap::new();
        for ((id, mut bytes), seal) in ids.into_iter().zip(encoded).zip(seals) {
            // A sealed record encodes as its record followed by its seal.
            bytes.extend_from_slice(&wire::encode(&seal));
            if let Some(entry) = self.records.get_mut(&id) {
                entry.seal = Some(seal);
            }
            rows.insert(id, bytes);
        }
        for (at, id) in changed {
            if let (Some(Action::Write { value, .. }), Some(row)) =
                (ctx.actions.get_mut(at), rows.get(&id))
            {
                *value = Some(row.clone());
            }
        }
    }

    /// Sends the record-keeping messages batched since the last flush: the records each member
    /// must store (sealed), the acknowledgements, the settlements, and the accepted submissions
    /// (ahead of the writes waiting to be taken, when they need none of them).
    pub(in crate::scheduler) fn flush(&mut self, ctx: &mut Ctx<'_>) {
        for (to, ids) in std::mem::take(&mut self.out_store) {
            let records: Vec<SealedRecord> = ids
                .iter()
                .filter_map(|id| self.records.get(id).and_then(Entry::sealed))
                .collect();
            for chunk in records.chunks(ctx.config.place_batch_max.max(1)) {
                let records = chunk.to_vec();
                ctx.send(to, Message::Store { records });
            }
        }
        for (to, acks) in std::mem::take(&mut self.out_stored) {
            ctx.send(to, Message::Stored { acks });
        }
        for (to, tasks) in std::mem::take(&mut self.out_recorded) {
            ctx.send(to, Message::Recorded { tasks });
        }
        let written = std::mem::take(&mut self.written);
        let mut now_written = Vec::new();
        let mut before = Vec::new();
        for (id, waited) in std::mem::take(&mut self.out_accepted) {
            if written.get(&id).is_some_and(|first| *first <= waited) {
                now_written.push(id);
            } else {
                before.push(id);
            }
        }
        // A submission whose client waits for a version written before these actions (only the
        // other members' acknowledgements came in since) needs none of their writes: it goes
        // ahead of them, so a later version written meanwhile (the holder's start, say) does not
        // hold the answer back.
        if !before.is_empty() {
            ctx.actions.push_front(Action::Accepted { tasks: before });
        }
        if !now_written.is_empty() {
            ctx.push(Action::Accepted { tasks: now_written });
        }
    }
}
