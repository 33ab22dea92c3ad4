//! The peers, as this peer sees them: who is alive and how loaded (each one's last signed load
//! report and when it was heard), who sent anything lately (with partial views, a peer not in the
//! view that just sent a record is alive, not unknown), who was heard of but not from (fanout
//! mode), and this peer's own standing: when it booted, whether it was away (restarted or frozen)
//! and so must rebuild its view before acting on it, and the numbering of its load reports.
//!
//! Owns the liveness rules: alive, heard within a window, settled. Never decides what to do about
//! a peer taken for dead: that is the roles' business. Its fields change only in this module.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;

use crate::Millis;
use crate::home::quorum;
use crate::identity::PeerKey;
use crate::load::LoadReport;
use crate::membership::{Membership, Observed, PeerView};

/// The most peers kept as heard of but not yet heard from.
const MAX_CANDIDATES: usize = 64;
/// The most peers kept as having left (past it, one is forgotten to make room).
const MAX_LEFT: usize = 64;

/// The most peers kept as gone (past it, the one gone longest is forgotten: it then counts as
/// gone since this peer booted, which is never later).
const MAX_GONE: usize = 1_024;

/// A peer this one could not reach lately (see [`Peers::unreachable`]).
#[derive(Clone, Copy, Debug)]
struct Unreachable {
    /// When a message to it last failed.
    failed_at: Millis,
    /// When this peer last probed it.
    probed_at: Option<Millis>,
}

/// The most peers kept as unreachable (past it, one is forgotten to make room).
const MAX_UNREACHABLE: usize = 1_024;

/// The view of the other peers, and this peer's standing.
#[derive(Clone, Debug)]
pub(super) struct Peers {
    me: PeerKey,
    members: Membership,
    /// When each peer last sent this one a message, kept for a lease TTL.
    heard: BTreeMap<PeerKey, Millis>,
    /// Peers heard of (in others' reports) but not in the view: introduced to in fanout mode.
    candidates: BTreeSet<PeerKey>,
    /// Peers that said they were leaving, with the run (`boot`) that left: nothing more from
    /// that run makes them alive again; a report from a new run does.
    left: BTreeMap<PeerKey, u64>,
    /// Peers a message to which was not delivered (or not acknowledged) since the last one
    /// that was, with when the last such message failed and when this peer last probed them:
    /// they do not count towards a majority (see [`Peers::hears_quorum`]).
    unreachable: BTreeMap<PeerKey, Unreachable>,
    /// When this peer last met each other peer anew: first heard it, heard it again after
    /// taking it for dead, or reached it again after failing to.
    met_at: BTreeMap<PeerKey, Millis>,
    /// Peers this one is bringing level (sending the records they share, after meeting them
    /// or hearing them again): they do not count towards a majority until it has, so that this
    /// peer does not act on records the other side of a healed cut has moved past.
    syncing: BTreeSet<PeerKey>,
    /// When each peer taken for dead (or that left) was last alive in this peer's view: how
    /// long it has been gone decides when its home sets are repaired ([`Peers::gone_for`]).
    gone_at: BTreeMap<PeerKey, Millis>,
    /// This peer is leaving: it leads nothing and holds nothing any more.
    leaving: bool,
    /// This peer is draining: it leads nothing and takes no new work.
    draining: bool,
    booted_at: Option<Millis>,
    /// Set when this peer was away (restarted from its store, or frozen): it does not lead any
    /// home set until it has been back for a lease TTL.
    rejoined: bool,
    last_tick_at: Option<Millis>,
    report_seq: u64,
    /// This run's number in its load reports (drawn at the first one).
    boot: u64,
    last_report_at: Option<Millis>,
}

impl Peers {
    pub(super) fn new(me: PeerKey) -> Self {
        Self {
            me,
            members: Membership::default(),
            heard: BTreeMap::new(),
            candidates: BTreeSet::new(),
            left: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            syncing: BTreeSet::new(),
            met_at: BTreeMap::new(),
            gone_at: BTreeMap::new(),
            leaving: false,
            draining: false,
            booted_at: None,
            rejoined: false,
            last_tick_at: None,
            report_seq: 0,
            boot: 0,
            last_report_at: None,
        }
    }

    // ----- this peer's standing -----

    /// Notes an input at `now`. Returns true if this peer was frozen: its driver did not tick for
    /// `frozen_after` ms, so it heard nobody meanwhile and its leases may have been re-claimed.
    /// It then counts as just back, like a restarted peer.
    pub(super) fn wake(&mut self, now: Millis, frozen_after: Millis) -> bool {
        if self.booted_at.is_none() {
            self.booted_at = Some(now);
        }
        let frozen = self
            .last_tick_at
            .is_some_and(|at| now.saturating_sub(at) > frozen_after);
        if frozen {
            self.last_tick_at = Some(now);
            self.booted_at = Some(now);
            self.rejoined = true;
        }
        frozen
    }

    /// The driver ticked.
    pub(super) fn ticked(&mut self, now: Millis) {
        self.last_tick_at = Some(now);
    }

    /// This peer restarted from its store.
    pub(super) fn rejoin(&mut self) {
        self.rejoined = true;
    }

    /// This peer is leaving.
    pub(super) fn leave(&mut self) {
        self.leaving = true;
    }

    /// Whether this peer is leaving.
    pub(super) fn leaving(&self) -> bool {
        self.leaving
    }

    /// This peer is draining.
    pub(super) fn drain(&mut self) {
        self.draining = true;
    }

    /// Whether this peer is draining.
    pub(super) fn draining(&self) -> bool {
        self.draining
    }

    /// Whether `peer` is draining (this peer, or another by its last report).
    pub(super) fn is_draining(&self, peer: &PeerKey) -> bool {
        if *peer == self.me {
            return self.draining;
        }
        self.members.get(peer).is_some_and(|v| v.report.draining)
    }

    /// Whether this peer has been up for `ttl`, long enough to have heard every live peer, so
    /// that its view of who is dead can be acted on.
    pub(super) fn settled(&self, now: Millis, ttl: Millis) -> bool {
        self.booted_at
            .is_some_and(|at| now.saturating_sub(at) >= ttl)
    }

    /// Whether a load report is due.
    pub(super) fn report_due(&self, now: Millis, interval: Millis) -> bool {
        self.last_report_at
            .is_none_or(|at| now.saturating_sub(at) >= interval)
    }

    /// Numbers the next load report: this run's boot number, and its sequence number.
    pub(super) fn next_report(&mut self, now: Millis, rng: &mut dyn RngCore) -> (u64, u64) {
        self.report_seq += 1;
        self.last_report_at = Some(now);
        if self.boot == 0 {
            self.boot = rng.next_u64().max(1);
        }
        (self.boot, self.report_seq)
    }

    // ----- the others -----

    /// Whether `peer` is alive in this peer's view (this peer always is).
    pub(super) fn alive(&self, peer: &PeerKey) -> bool {
        *peer == self.me || self.members.get(peer).is_some() || self.heard.contains_key(peer)
    }

    /// How long `peer` has been gone in this peer's view: `None` while it is alive; since it was
    /// taken for dead or left; or, for a peer not heard from since this peer booted, since then
    /// (a member that died while this peer was down is gone too, and no earlier than that).
    pub(super) fn gone_for(&self, peer: &PeerKey, now: Millis) -> Option<Millis> {
        if self.alive(peer) {
            return None;
        }
        let since = self.gone_at.get(peer).copied().or(self.booted_at)?;
        Some(now.saturating_sub(since))
    }

    /// Whether this peer took `peer` for dead (or heard it leave) and has not heard it since.
    pub(super) fn taken_for_dead(&self, peer: &PeerKey) -> bool {
        self.gone_at.contains_key(peer) && !self.alive(peer)
    }

    /// The peers taken for dead (or that left) at least `grace` ms ago, in key order.
    pub(super) fn gone_longer_than(&self, now: Millis, grace: Millis) -> Vec<PeerKey> {
        self.gone_at
            .iter()
            .filter(|(peer, at)| now.saturating_sub(**at) >= grace && !self.alive(peer))
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// The peers that may take a departed member's place in a home set: alive in the view, not
    /// draining, and reached by the last message sent to them.
    pub(super) fn replacements(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.members
            .iter()
            .map(|(peer, _)| *peer)
            .filter(|peer| !self.is_draining(peer) && !self.unreachable.contains_key(peer))
    }

    /// Notes that `peers` stopped being alive at `now` (kept until they are alive again: see
    /// [`Peers::back`]).
    fn gone(&mut self, peers: &[PeerKey], now: Millis) {
        for peer in peers {
            if self.gone_at.len() >= MAX_GONE && !self.gone_at.contains_key(peer) {
                let oldest = self
                    .gone_at
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(p, _)| *p);
                if let Some(oldest) = oldest {
                    self.gone_at.remove(&oldest);
                }
            }
            self.gone_at.entry(*peer).or_insert(now);
        }
    }

    /// `peer` is alive again: it is not gone any more.
    fn back(&mut self, peer: &PeerKey) {
        if !self.gone_at.is_empty() {
            self.gone_at.remove(peer);
        }
    }

    /// Whether `peer` was heard from within `window` ms (this peer always was): by its load
    /// reports, or by any message (with partial views, a peer may send before it is in the view).
    pub(super) fn heard_within(&self, peer: &PeerKey, now: Millis, window: Millis) -> bool {
        if *peer == self.me {
            return true;
        }
        let reported = self.members.get(peer).map(|v| v.heard_at);
        let messaged = self.heard.get(peer).copied();
        reported
            .max(messaged)
            .is_some_and(|at| now.saturating_sub(at) <= window)
    }

    /// Whether this peer is in touch with a majority of a home set ([`quorum`]), itself
    /// included if it is a member: it heard each within `window` ms, what it last sent each was
    /// delivered, and it is not bringing it level.
    pub(super) fn hears_quorum(&self, home: &[PeerKey], now: Millis, window: Millis) -> bool {
        self.in_touch_with(home, now, window, 0) >= quorum(home.len())
    }

    /// How many members of `home` this peer is in touch with (see [`Peers::hears_quorum`]),
    /// counting only those it met (anew) at least `steady` ms ago.
    fn in_touch_with(
        &self,
        home: &[PeerKey],
        now: Millis,
        window: Millis,
        steady: Millis,
    ) -> usize {
        home.iter()
            .filter(|m| {
                self.heard_within(m, now, window)
                    && !self.unreachable.contains_key(m)
                    && !self.syncing.contains(m)
                    && (steady == 0
                        || **m == self.me
                        || self
                            .met_at
                            .get(m)
                            .is_some_and(|at| now.saturating_sub(*at) >= steady))
            })
            .count()
    }

    /// This peer met `peer` anew (see [`Peers::met_at`]).
    pub(super) fn met(&mut self, peer: PeerKey, now: Millis) {
        self.met_at.insert(peer, now);
    }

    /// A message to `peer` was not delivered: it is unreachable until one is.
    pub(super) fn unreachable(&mut self, peer: PeerKey, now: Millis) {
        if peer == self.me {
            return;
        }
        if self.unreachable.len() >= MAX_UNREACHABLE && !self.unreachable.contains_key(&peer) {
            self.unreachable.pop_first();
        }
        let entry = self.unreachable.entry(peer).or_insert(Unreachable {
            failed_at: now,
            probed_at: None,
        });
        entry.failed_at = now;
    }

    /// Whether a message to `peer` failed lately (see [`Peers::unreachable`]).
    pub(super) fn is_unreachable(&self, peer: &PeerKey) -> bool {
        self.unreachable.contains_key(peer)
    }

    /// A message to `peer` was delivered. Returns whether it was unreachable until now.
    pub(super) fn reached(&mut self, peer: &PeerKey) -> bool {
        self.unreachable.remove(peer).is_some()
    }

    /// This peer is bringing `peer` level: it does not count towards a majority until then.
    pub(super) fn syncing(&mut self, peer: PeerKey) {
        self.syncing.insert(peer);
    }

    /// Keeps as being brought level only the peers for which `still` holds.
    pub(super) fn retain_syncing(&mut self, still: impl Fn(&PeerKey) -> bool) {
        if !self.syncing.is_empty() {
            self.syncing.retain(|p| still(p));
        }
    }

    /// The unreachable peers still heard from (so alive, it seems) that are due a probe: one
    /// every `every` ms, marked as probed now. (One that is not alive stays unreachable until
    /// something sent to it arrives: when it is met again, it is sent a `CatchUp`.)
    pub(super) fn due_probes(&mut self, now: Millis, every: Millis) -> Vec<PeerKey> {
        let due: Vec<PeerKey> = self
            .unreachable
            .iter()
            .filter(|(peer, u)| {
                let last = u.probed_at.unwrap_or(u.failed_at);
                self.alive(peer) && now.saturating_sub(last) >= every
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &due {
            if let Some(u) = self.unreachable.get_mut(peer) {
                u.probed_at = Some(now);
            }
        }
        due
    }

    /// Whether this peer acts as the primary of a task with this home set: it is the first live
    /// member in its view; it heard a majority of the set within half a lease TTL (so on the
    /// minority side of a partition it stops acting before the majority side, which waits a
    /// whole TTL of silence, takes over); and either it leads the set (rank 0, so nobody else
    /// can be primary while it lives) or has been up for `ttl`, long enough for its view to be
    /// trusted. A peer that has just restarted has heard nobody yet and must not take every task
    /// it keeps for its own.
    pub(super) fn is_primary(&self, home: &[PeerKey], now: Millis, ttl: Millis) -> bool {
        let leads = home.first() == Some(&self.me) && !self.rejoined;
        // One that takes over counts only members it has been in touch with for a TTL: one that
        // has just met a member again after a cut would otherwise act before it hears that an
        // earlier member is back too (whom that member never stopped hearing).
        let steady = if leads { 0 } else { ttl };
        !self.leaving
            && self.primary_of(home) == Some(self.me)
            && (leads || self.settled(now, ttl))
            && self.in_touch_with(home, now, ttl / 2, steady) >= quorum(home.len())
    }

    /// The first live member of a home set that is not draining (a draining member hands what
    /// it led to the next).
    pub(super) fn primary_of(&self, home: &[PeerKey]) -> Option<PeerKey> {
        home.iter()
            .find(|m| self.alive(m) && !self.is_draining(m))
            .copied()
    }

    /// The view of `peer` (its last load report), if it is in the view.
    pub(super) fn view(&self, peer: &PeerKey) -> Option<&PeerView> {
        self.members.get(peer)
    }

    /// Every peer in the view.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&PeerKey, &PeerView)> {
        self.members.iter()
    }

    /// The peers in the view.
    pub(super) fn keys(&self) -> Vec<PeerKey> {
        self.members.iter().map(|(k, _)| *k).collect()
    }

    /// `peer` sent a message: it is alive (unless it left, and has not come back).
    pub(super) fn heard_from(&mut self, peer: PeerKey, now: Millis) {
        if self.left.contains_key(&peer) {
            return;
        }
        self.members.touch(&peer, now);
        self.heard.insert(peer, now);
        self.back(&peer);
    }

    /// Takes a verified load report; says whether its peer is new (or restarted). A report of a
    /// run that left is ignored ([`Observed::Stale`]); one of a new run is that peer back.
    pub(super) fn observe(&mut self, report: LoadReport, now: Millis) -> Observed {
        match self.left.get(&report.peer) {
            Some(boot) if *boot == report.boot => return Observed::Stale,
            Some(_) => {
                self.left.remove(&report.peer);
            }
            None => {}
        }
        self.candidates.remove(&report.peer);
        self.back(&report.peer);
        self.members.observe(report, now)
    }

    /// `peer`'s run `boot` said it is leaving: it is dead from now on, until a new run reports.
    pub(super) fn left(&mut self, peer: PeerKey, boot: u64, now: Millis) {
        self.met_at.remove(&peer);
        self.members.remove(&peer);
        self.heard.remove(&peer);
        self.candidates.remove(&peer);
        if self.left.len() >= MAX_LEFT {
            self.left.pop_first();
        }
        self.left.insert(peer, boot);
        self.gone(&[peer], now);
    }

    /// Forgets the peers not heard from for `ttl`.
    pub(super) fn expire(&mut self, now: Millis, ttl: Millis) -> Vec<PeerKey> {
        let mut known = self.members.expire(now, ttl);
        known.extend(self.heard.keys());
        self.heard.retain(|_, at| now.saturating_sub(*at) <= ttl);
        known.sort();
        known.dedup();
        known.retain(|peer| !self.alive(peer));
        for peer in &known {
            self.met_at.remove(peer);
        }
        self.gone(&known, now);
        known
    }

    /// Takes `peer` for dead at once (a message to it could not be delivered).
    pub(super) fn remove(&mut self, peer: &PeerKey) {
        self.members.remove(peer);
    }

    /// Placement gave `peer` `tasks` more: its load is estimated higher until its next report.
    pub(super) fn note_placed(&mut self, peer: &PeerKey, tasks: u32) {
        if let Some(view) = self.members.get_mut(peer) {
            view.estimated_load = view.estimated_load.saturating_add(tasks);
        }
    }

    /// `peer` had nothing to steal: its queue is estimated empty until its next report.
    pub(super) fn note_nothing_queued(&mut self, peer: &PeerKey) {
        if let Some(view) = self.members.get_mut(peer) {
            view.estimated_queued = 0;
        }
    }

    /// Remembers a peer heard of but not from (fanout mode), if there is room.
    pub(super) fn introduce(&mut self, peer: PeerKey) {
        if peer != self.me
            && self.members.get(&peer).is_none()
            && self.candidates.len() < MAX_CANDIDATES
        {
            self.candidates.insert(peer);
        }
    }

    /// The next peer heard of but not from, to send a report to.
    pub(super) fn next_candidate(&mut self) -> Option<PeerKey> {
        self.candidates.pop_first()
    }
}
