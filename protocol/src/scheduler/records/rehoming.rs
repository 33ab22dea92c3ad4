//! Re-homing: a task's primary replaces the members of its home set that have been gone longer
//! than [`Config::repair_after_ms`](crate::Config::repair_after_ms), so that every task has as
//! many copies of its record as it was given.
//!
//! A member that stops being heard from is first taken for dead (after a lease TTL), which moves
//! its leases and its primary duties to others but leaves it in the home set: most departures are
//! restarts, and a member that comes back within the grace period catches up and keeps its place.
//! Once it has been gone the whole grace period, the primary (which needs a majority of the set,
//! as for every change) drops it from the set, appends the next peer by rendezvous rank (alive,
//! reached, not draining), raises the record's version and replicates it: the newcomer takes the
//! record from the primary's `Store` like any other. The survivors keep their order, so the
//! primary does not change with the repair. The spec keeps the home set it was signed with; the
//! record (sealed by the primary) and the envelopes it sends out carry the repaired one, and its
//! history names each member appended. The members' grant ranks count every member the set ever
//! had ([`TaskRecord::grant_rank`](crate::record::TaskRecord::grant_rank)), so the member that
//! moves up to a dropped member's place cannot grant an epoch the dropped one may have granted
//! unheard (it was cut off just after).
//!
//! Unfinished records are repaired in the primary's scan. Ended ones leave memory for the archive,
//! so the primary walks the archive once for every member that has been gone the grace period,
//! a page per tick. A member that returns after it was replaced is sent the repaired record (it
//! sends its own copies when it meets the others, and a member with a newer version answers with
//! it); it then hands the task over: it drops its copy ([`Home::hand_over`]).
//!
//! Owns the choice of replacements and the walk of the archive; it changes records only through
//! the home role's [`Home::changed`], and never decides who is gone (that is the peers' view).

use std::collections::BTreeSet;

use super::super::peers::Peers;
use super::super::{Action, Ctx, Table};
use super::{Home, Others};
use crate::Millis;
use crate::home;
use crate::identity::PeerKey;
use crate::seal::SealedRecord;
use crate::task::TaskId;
use crate::wire::WireError;

/// Whether `theirs`, sealed by `sealer`, is a repair of the home set `ours` that this peer (`me`)
/// may take: the sealer is a member of ours; the members ours names that theirs keeps come first,
/// in the same order (a repair only drops and appends); if it drops this peer, the sealer leads
/// the new set as this peer sees it (so no other member can make it drop its copy); if not,
/// every member it drops is gone in this peer's view (a live member is never replaced).
pub(in crate::scheduler) fn check_repair(
    me: PeerKey,
    peers: &Peers,
    ours: &[PeerKey],
    theirs: &[PeerKey],
    sealer: &PeerKey,
) -> Result<(), WireError> {
    let refuse = |why| Err(WireError::Unauthorized(why));
    if !ours.contains(sealer) {
        return refuse("a home set changed by a peer outside it");
    }
    let kept: Vec<PeerKey> = ours
        .iter()
        .filter(|m| theirs.contains(m))
        .copied()
        .collect();
    if !theirs.starts_with(&kept) {
        return refuse("a home set reordered");
    }
    let mut dropped = ours.iter().filter(|m| !theirs.contains(m));
    if dropped.clone().any(|m| *m == me) {
        // Whether the others it drops were gone is for those that stay to judge: while this peer
        // was away the set may have been repaired more than once, each time by a member that
        // had not heard from the member it dropped (which this peer may hear from now).
        if peers.primary_of(theirs) != Some(*sealer) {
            return refuse("a home set without us, from a peer that does not lead it");
        }
        return Ok(());
    }
    if dropped.any(|m| peers.alive(m)) {
        return refuse("a home set that drops a live member");
    }
    Ok(())
}

/// The primary's walk of the archive for departed members (see the module doc).
#[derive(Clone, Debug, Default)]
pub(super) struct Rehoming {
    /// The departed members whose ended records have been walked (forgotten once they are back).
    walked: BTreeSet<PeerKey>,
    /// The walk in progress: the departed members it is for, and the last id it visited.
    walk: Option<Walk>,
}

#[derive(Clone, Debug)]
struct Walk {
    departed: Vec<PeerKey>,
    after: Option<TaskId>,
}

/// The most archived records the walk visits per scan: as many as the scan visits (a walk is
/// rare, once per departed member, and pays for itself in a scan or two).
fn walk_page(ctx: &Ctx<'_>) -> usize {
    ctx.config.scan_per_tick.max(1)
}

impl Home {
    /// As primary (checked by the caller): replaces the members of `id`'s home set that have been
    /// gone the grace period, as far as there are peers to take their places. Returns whether
    /// the set changed (the record then has a new version, sent to the new set).
    pub(in crate::scheduler) fn rehome(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        id: TaskId,
    ) -> bool {
        if !self.repair_home(ctx, peers, now, id) {
            return false;
        }
        self.changed(ctx, peers, now, id);
        true
    }

    /// Replaces, in the record in memory, the members of `id`'s home set gone the grace period
    /// (see [`Home::rehome`]); the caller raises the version. Every change the primary makes goes
    /// through here too, so a record that ends after the walk of the archive passed it is
    /// repaired as it ends.
    pub(in crate::scheduler) fn repair_home(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        id: TaskId,
    ) -> bool {
        let grace = ctx.config.repair_after_ms;
        let Some(entry) = self.records.get_mut(&id) else {
            return false;
        };
        let home = entry.record.home();
        let departed: Vec<PeerKey> = home
            .iter()
            .filter(|m| peers.gone_for(m, now).is_some_and(|gone| gone >= grace))
            .copied()
            .collect();
        if departed.is_empty() {
            return false;
        }
        let key = home::key(&entry.spec.submitter, entry.spec.nonce);
        let mut repaired = home.to_vec();
        let mut appended = Vec::new();
        for gone in &departed {
            let Some(next) = home::replacement(&key, &repaired, peers.replacements()) else {
                break;
            };
            repaired.retain(|m| m != gone);
            repaired.push(next);
            appended.push(next);
        }
        if appended.is_empty() {
            return false;
        }
        let wall = ctx.wall(now);
        let record = &mut entry.record;
        record.envelope.home = repaired;
        for member in appended {
            record.transition(record.state, Some(member), wall, crate::record::REPAIRED);
        }
        ctx.counters.rehomed += 1;
        true
    }

    /// Walks a page of the archive's ended records, if a member has been gone the grace period
    /// since the last walk: each whose set names one and that this peer leads is taken back into
    /// memory and re-homed.
    pub(in crate::scheduler) fn walk_ended(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
    ) {
        let departed = others
            .peers
            .gone_longer_than(now, ctx.config.repair_after_ms);
        let walking = &mut self.rehoming;
        walking.walked.retain(|p| departed.contains(p));
        if walking.walk.is_none() {
            if departed.iter().all(|p| walking.walked.contains(p)) {
                return;
            }
            walking.walk = Some(Walk {
                departed,
                after: None,
            });
        }
        let Some(walk) = walking.walk.as_mut() else {
            return;
        };
        let page = walk_page(ctx);
        let ids = ctx.archive.ended_ids_after(walk.after.as_ref(), page);
        walk.after = ids.last().copied().or(walk.after);
        let finished = ids.len() < page;
        let departed = walk.departed.clone();
        if finished {
            walking.walked.extend(departed.iter().copied());
            walking.walk = None;
        }
        for id in ids {
            if !self.names_any(ctx, &id, &departed) {
                continue;
            }
            self.recall(ctx, now, &id);
            let leads = self
                .records
                .get(&id)
                .is_some_and(|e| ctx.is_primary(others.peers, e.record.home(), now));
            if leads {
                self.rehome(ctx, others.peers, now, id);
            }
        }
    }

    /// Whether the home set of `id` (in memory, or as archived) names one of `departed`: read
    /// without checking the seal, which [`Home::recall`] does before anything changes.
    fn names_any(&self, ctx: &Ctx<'_>, id: &TaskId, departed: &[PeerKey]) -> bool {
        let names = |home: &[PeerKey]| home.iter().any(|m| departed.contains(m));
        match self.records.get(id) {
            Some(entry) => names(entry.record.home()),
            None => ctx
                .archive
                .ended(id)
                .and_then(|row| SealedRecord::from_bytes(&row).ok())
                .is_some_and(|sealed| names(sealed.record.home())),
        }
    }

    /// This peer was replaced in `id`'s home set while it was away (a member of the set it keeps
    /// sent the repaired record): it drops its copy, from memory and from disk.
    pub(in crate::scheduler) fn hand_over(&mut self, ctx: &mut Ctx<'_>, id: TaskId) {
        self.set_active(ctx.me, id, false);
        if self.records.remove(&id).is_none() {
            return;
        }
        self.replication.remove(&id);
        self.retry_at.remove(&id);
        self.confirmed_at.remove(&id);
        self.waiting_on.remove(&id);
        self.other_endings.remove(&id);
        for table in [Table::Records, Table::Ended] {
            ctx.push(Action::Write {
                table,
                key: id,
                value: None,
            });
        }
        ctx.push(Action::Changed { task: id });
        ctx.counters.handed_over += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn peer(n: u8) -> PeerKey {
        Keypair::from_secret([n; 32]).public()
    }

    #[test]
    fn a_repair_that_drops_a_live_member_is_refused_unless_it_drops_this_peer_and_its_leader_sent_it()
     {
        let (me, b, c, x, y) = (peer(1), peer(2), peer(3), peer(4), peer(5));
        let mut peers = Peers::new(me);
        for m in [b, c, x, y] {
            peers.heard_from(m, 10);
        }
        let ours = [me, b, c];
        // `b` dropped `c`, which this peer hears from: refused while this peer stays.
        assert!(check_repair(me, &peers, &ours, &[me, b, x], &b).is_err());
        // Repaired twice while this peer was away, the set dropped it and `c` (each repair by a
        // member that had not heard from the other): taken from `b`, which leads the new set.
        assert!(check_repair(me, &peers, &ours, &[b, x, y], &b).is_ok());
        // From any other member, or reordered, it is not.
        assert!(check_repair(me, &peers, &ours, &[b, x, y], &c).is_err());
        assert!(check_repair(me, &peers, &ours, &[c, b, x], &b).is_err());
        // From a peer outside the set this peer keeps, never.
        assert!(check_repair(me, &peers, &ours, &[x, y, b], &x).is_err());
    }
}
