//! The home member's side: the records of the tasks whose home set this peer is in.
//!
//! As a task's *primary* (the first member of its home set this peer believes alive) it records
//! transitions and results, re-claims the task when its holder falls silent for the lease TTL,
//! retries failed attempts by the task's policy, cancels, and replicates every change to the other
//! live members; it acknowledges a submission to the client, and a result to its holder, only once
//! every live member has stored the change. As a backup it stores what the primary sends and keeps
//! transfer notices and results that it would need if it became primary. Every version it writes
//! is sealed (at the flush, one signature for all of them); every record it takes must carry a
//! home member's seal.
//!
//! Owns the room [`Home`]; its children place tasks ([`placing`]), gate them on their
//! dependencies ([`depending`]), replicate each change ([`replicating`]) and replace members gone
//! for good ([`rehoming`]), and share the room.
//! Its handlers borrow the room, the peers' view (and, as primary, what this peer holds or gave
//! away: [`Others`]) and the context; never another role's room. What it decides for another role
//! (hold a task placed here, stop one cancelled, answer the watches of one that ended, ask for a
//! dependency) it hands over ([`Handoff`]) for the scheduler to route.

use rand::RngCore;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::holding::Holding;
use super::peers::Peers;
use super::stealing::Stealing;
use super::{Action, Ctx, Table, TaskState};
use crate::Millis;
use crate::home;
use crate::identity::PeerKey;
use crate::lease::{Lease, SignedGrant};
use crate::record::{Attempt, TaskRecord, Transition};
use crate::retry::Ending;
use crate::seal::{Seal, SealedRecord};
use crate::signed::Signed;
use crate::task::{Dependency, Envelope, Outcome, Submission, Task, TaskId, TaskSpec};
use crate::wire::{self, WireError};

mod depending;
mod ended_index;
mod explaining;
pub(super) use explaining::OwnQueue;
mod placing;
mod rehoming;
mod replicating;

/// The home member's own state: the records of the tasks whose home set this peer is in, which
/// are unfinished and how much each other origin's take, the replication of each change, retries
/// due, leases to confirm, transfers and completions waiting for their records to catch up, the
/// changes waiting to be sealed and the messages waiting to be sent; and, as the primary of tasks
/// that wait for others, what it learnt of their dependencies. Its fields change only in this
/// module and its children (placing, dependencies): other roles read records through
/// [`Home::entry`].
#[derive(Clone, Debug)]
pub(super) struct Home {
    records: BTreeMap<TaskId, Entry>,
    /// The records of unfinished tasks (change them with [`Home::set_active`]).
    active: BTreeSet<TaskId>,
    /// The last record the scan visited, when the scan is part-way through [`Home::active`].
    scan_cursor: Option<TaskId>,
    /// How many of those, and how many spec bytes, each other origin's tasks take here.
    kept_by_origin: BTreeMap<PeerKey, Kept>,
    replication: BTreeMap<TaskId, replicating::Replication>,
    retry_at: BTreeMap<TaskId, Millis>,
    confirmed_at: BTreeMap<TaskId, Millis>,
    /// Completions naming an epoch not heard of yet, by task and sender.
    early_completions: BTreeMap<(TaskId, PeerKey), EarlyCompletion>,
    early_transfers: BTreeMap<TaskId, Vec<Lease>>,
    /// When the oldest early arrival still waiting for each record came (see
    /// [`Home::broken_chain`]).
    early_since: BTreeMap<TaskId, Millis>,
    /// Ended records in memory, in the order they ended (or came back from the archive), with
    /// when: each leaves memory [`super::Config::ended_in_memory_ms`] later, once its
    /// replication has settled (see [`crate::archive`]).
    ended_order: VecDeque<(Millis, TaskId)>,
    /// Records changed since the last flush, with the place of their write among the actions:
    /// they are sealed together then and their writes filled in.
    unsealed: Vec<(usize, TaskId)>,
    // Batched outgoing messages, sent at the flush.
    out_store: BTreeMap<PeerKey, BTreeSet<TaskId>>,
    out_stored: BTreeMap<PeerKey, Vec<(TaskId, u64)>>,
    out_recorded: BTreeMap<PeerKey, Vec<(TaskId, u64)>>,
    /// Submissions to acknowledge, each with the version its client waited for.
    out_accepted: Vec<(TaskId, u64)>,
    /// Members being sent the records they share with this peer, a page at a time.
    catching_up: BTreeMap<PeerKey, replicating::CatchUp>,
    /// Members taken for dead whose records this peer has yet to bring level on the others
    /// (it does once it has been up for a lease TTL).
    unlevelled: BTreeSet<PeerKey>,
    /// The first version of each record written since the last flush (those writes wait among
    /// the actions): an acknowledgement that needs an earlier version need not wait for them.
    written: BTreeMap<TaskId, u64>,
    /// Dependencies this peer does not keep, as far as it learnt of them.
    lookups: BTreeMap<TaskId, depending::Lookup>,
    /// Tasks this peer leads that wait for a dependency whose record it keeps, by dependency;
    /// and dependencies that ended during this input, whose waiting tasks are gated again at its
    /// end rather than at the next scan.
    waiting_on: BTreeMap<TaskId, BTreeSet<TaskId>>,
    ended_now: Vec<TaskId>,
    /// For a task that ended here one way while other members say it ended another way: the
    /// members known to hold each other ending (see [`Home::on_store`]). Filled only by such
    /// conflicts (a partition's minority recorded an end no majority stored), and bounded.
    other_endings: BTreeMap<TaskId, Vec<(EndingKey, BTreeSet<PeerKey>)>>,
    /// What this input handed to the other roles, for the scheduler to route at its end.
    handoffs: Vec<Handoff>,
    /// The walk of the archive for members gone for good (see [`rehoming`]).
    rehoming: rehoming::Rehoming,
    /// What lists read of the ended records (see [`ended_index`]).
    ended_index: ended_index::EndedIndex,
}

/// The most tasks kept in [`Home::other_endings`].
const MAX_OTHER_ENDINGS: usize = 4_096;

/// How a final record says its task ended: its state, the epoch of the attempt it ended with
/// (or of the record, if none ran), and who ran that attempt. Two final records with the same
/// ending agree, whatever their versions.
type EndingKey = (&'static str, u64, Option<PeerKey>);

fn ending_of(record: &TaskRecord) -> EndingKey {
    let epoch = record.attempts.last().map_or(record.epoch, |a| a.epoch);
    (record.state.as_str(), epoch, record.executed_by)
}

/// Work the home role hands to another role: it never changes their rooms itself.
#[derive(Clone, Debug)]
pub(super) enum Handoff {
    /// A task this peer placed on itself: the holder takes it under the lease at `epoch`.
    Hold { task: Box<Task>, epoch: u64 },
    /// A task this peer holds was cancelled: the holder stops it.
    Abort(TaskId),
    /// A task ended: the clients watching it here are answered.
    Ended(TaskId),
    /// A dependency this peer does not keep: the asker asks `targets` how it ended.
    Ask { task: TaskId, targets: Vec<PeerKey> },
}

/// What the primary reads of the other roles' rooms: the peers' view (and, when it places
/// tasks, their estimated loads), and what this peer holds or gave away, to tell whether a
/// lease it granted itself is lost.
pub(super) struct Others<'a> {
    pub(super) peers: &'a mut Peers,
    pub(super) holding: &'a Holding,
    pub(super) stealing: &'a Stealing,
}

impl Home {
    pub(super) fn new() -> Self {
        Self {
            records: BTreeMap::new(),
            active: BTreeSet::new(),
            scan_cursor: None,
            kept_by_origin: BTreeMap::new(),
            replication: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            confirmed_at: BTreeMap::new(),
            early_completions: BTreeMap::new(),
            early_transfers: BTreeMap::new(),
            early_since: BTreeMap::new(),
            ended_order: VecDeque::new(),
            unsealed: Vec::new(),
            out_store: BTreeMap::new(),
            out_stored: BTreeMap::new(),
            out_recorded: BTreeMap::new(),
            out_accepted: Vec::new(),
            catching_up: BTreeMap::new(),
            unlevelled: BTreeSet::new(),
            written: BTreeMap::new(),
            lookups: BTreeMap::new(),
            waiting_on: BTreeMap::new(),
            ended_now: Vec::new(),
            other_endings: BTreeMap::new(),
            handoffs: Vec::new(),
            rehoming: rehoming::Rehoming::default(),
            ended_index: ended_index::EndedIndex::default(),
        }
    }

    /// What this input handed to the other roles, in order.
    pub(super) fn take_handoffs(&mut self) -> Vec<Handoff> {
        std::mem::take(&mut self.handoffs)
    }

    /// Whether work handed to the other roles waits to be routed (never, between inputs).
    pub(super) fn has_handoffs(&self) -> bool {
        !self.handoffs.is_empty()
    }

    /// The record of a task this peer keeps.
    pub(super) fn entry(&self, id: &TaskId) -> Option<&Entry> {
        self.records.get(id)
    }

    /// The rows of at most `wanted` ended records this peer keeps only in its archive (not in
    /// memory) that `filter` matches, in the list's order (see [`ended_index`]).
    pub(super) fn archived_page(
        &mut self,
        archive: &dyn crate::Archive,
        filter: &crate::listing::ListFilter,
        wanted: usize,
    ) -> Vec<SealedRecord> {
        let records = &self.records;
        self.ended_index
            .page(archive, filter, wanted, |id| records.contains_key(id))
    }

    /// How many of the ended records this peer keeps only in its archive match `filter` (the
    /// cursor aside), by state, counting those whose home set `leads` says this peer leads.
    pub(super) fn archived_counts(
        &mut self,
        archive: &dyn crate::Archive,
        filter: &crate::listing::ListFilter,
        leads: impl Fn(&[PeerKey]) -> bool,
    ) -> crate::listing::Counts {
        let records = &self.records;
        self.ended_index
            .count(archive, filter, leads, |id| records.contains_key(id))
    }

    /// Every record this peer keeps, in id order.
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.records.values()
    }

    /// Whether this peer keeps the record of a task.
    pub(super) fn keeps(&self, id: &TaskId) -> bool {
        self.records.contains_key(id)
    }

    /// The home set of a dependency learnt from an answer, if any.
    pub(super) fn learnt_home(&self, id: &TaskId) -> Option<&Vec<PeerKey>> {
        self.lookups.get(id).and_then(|l| l.home())
    }

    /// Remembers the home set an answer named for a task this peer does not keep.
    pub(super) fn learn_home(&mut self, id: TaskId, home: &[PeerKey]) {
        self.lookups.entry(id).or_default().learn_home(home);
    }
}

/// The unfinished records of one origin's tasks this peer keeps.
#[derive(Clone, Copy, Debug, Default)]
struct Kept {
    count: usize,
    bytes: u64,
}

/// A record with its decoded spec, and the seal of its current version (`None` while a change
/// made during this input waits to be sealed at its end).
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) record: TaskRecord,
    pub(super) spec: TaskSpec,
    seal: Option<Seal>,
}

impl Entry {
    pub(super) fn sealed(&self) -> Option<SealedRecord> {
        self.seal.as_ref().map(|seal| SealedRecord {
            record: self.record.clone(),
            seal: seal.clone(),
        })
    }
}

/// The table a record's row goes to: ended records have their own (see [`crate::archive`]).
fn record_table(is_final: bool) -> Table {
    if is_final {
        Table::Ended
    } else {
        Table::Records
    }
}

/// A completion that names an epoch this peer has not yet heard of.
#[derive(Clone, Debug)]
struct EarlyCompletion {
    epoch: u64,
    outcome: Outcome,
}

/// How much of a failed attempt's standard error its history keeps.
const STDERR_TAIL: usize = 400;

impl Home {
    /// Records new tasks with this peer as origin and primary, stores them on their home sets and
    /// places them. Each spec is completed here (this peer as submitter, its home set, its
    /// dependencies' ids) and signed with this peer's key.
    pub(in crate::scheduler) fn accept(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
        submissions: Vec<Submission>,
    ) -> Vec<Result<TaskId, WireError>> {
        let live: Vec<PeerKey> = others.peers.keys();
        let mut fresh = Vec::new();
        let mut results: Vec<Result<TaskId, WireError>> = Vec::with_capacity(submissions.len());
        for Submission { mut spec, after } in submissions {
            let ids: Option<Vec<TaskId>> = after
                .iter()
                .map(|dependency| match dependency {
                    Dependency::Task(id) => Some(*id),
                    Dependency::Earlier(i) => {
                        results.get(*i).and_then(|r| r.as_ref().ok()).copied()
                    }
                })
                .collect();
            let Some(ids) = ids else {
                results.push(Err(WireError::Unauthorized(
                    "a dependency on a task that is not earlier in the submission",
                )));
                continue;
            };
            spec.submitter = ctx.me;
            spec.after = ids;
            // A task that depends on one this peer leads shares its home set, so that their
            // primary keeps both records and sees the dependency end without asking.
            spec.home = spec
                .after
                .first()
                .and_then(|dep| self.records.get(dep))
                .map(|e| e.record.home().to_vec())
                .filter(|home| home.first() == Some(&ctx.me))
                .unwrap_or_else(|| {
                    let key = home::key(&ctx.me, spec.nonce);
                    home::home_set(&key, ctx.me, live.iter().copied(), ctx.config.replicas)
                });
            let signed = Signed::sign(&spec, ctx.key);
            // Signed here: the check that follows decodes and checks the spec, not the signature
            // again (and the holder on this peer will not check it either).
            signed.remember_own(&ctx.me, ctx.verifier.keys());
            let task = match Task::from_signed_cached(signed, ctx.verifier.keys()) {
                Ok(task) => task,
                Err(error) => {
                    results.push(Err(error));
                    continue;
                }
            };
            let id = task.id;
            results.push(Ok(id));
            if self.records.contains_key(&id) {
                self.await_client_again(id);
                continue;
            }
            let home = task.home.clone();
            let wall = ctx.wall(now);
            let record = TaskRecord {
                envelope: Envelope {
                    id,
                    spec: task.signed,
                    home,
                    inputs: Vec::new(),
                },
                state: TaskState::Waiting,
                epoch: 0,
                holder: None,
                version: 0,
                attempts: Vec::new(),
                history: vec![Transition {
                    state: TaskState::Waiting,
                    peer: Some(ctx.me),
                    epoch: 0,
                    at_wall_ms: wall,
                    note: "accepted".into(),
                }],
                outcome: None,
                executed_by: None,
                submitted_wall_ms: wall,
                finished_wall_ms: None,
            };
            self.records.insert(
                id,
                Entry {
                    record,
                    spec: task.spec,
                    seal: None,
                },
            );
            self.set_active(ctx.me, id, true);
            self.await_client(id);
            fresh.push(id);
        }
        self.place(ctx, others, now, rng, fresh.clone());
        for id in fresh {
            if self.records.get(&id).is_some_and(|e| e.record.version == 0) {
                self.changed(ctx, others.peers, now, id);
            }
        }
        results
    }

    /// A record changed here (as origin or primary): raise its version, store it (sealed with the
    /// other changes of this input at its end), and send it to the other live members of its home
    /// set (repaired first, as primary, if a member is gone for good: see [`rehoming`]).
    fn changed(&mut self, ctx: &mut Ctx<'_>, peers: &Peers, now: Millis, id: TaskId) {
        let leads = self
            .records
            .get(&id)
            .is_some_and(|e| ctx.is_primary(peers, e.record.home(), now));
        if leads {
            self.repair_home(ctx, peers, now, id);
        }
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        entry.record.version += 1;
        entry.seal = None;
        let version = entry.record.version;
        let is_final = entry.record.state.is_final();
        let members = entry.record.home().len();
        if is_final {
            self.await_end(id, version, home::quorum(members));
            self.set_active(ctx.me, id, false);
            self.retry_at.remove(&id);
            self.confirmed_at.remove(&id);
        } else {
            self.set_active(ctx.me, id, true);
            self.confirmed_at.insert(id, now);
        }
        self.written.entry(id).or_insert(version);
        self.unsealed.push((ctx.actions.len(), id));
        ctx.push(Action::Write {
            table: record_table(is_final),
            key: id,
            value: Some(Vec::new()),
        });
        if is_final {
            self.record_ended(ctx, now, id);
            if let Some(entry) = self.records.get(&id) {
                self.ended_index.note(&entry.record, &entry.spec);
            }
        }
        ctx.push(Action::Changed { task: id });
        self.replicate(ctx.me, peers, id, now);
    }

    /// A record ended here: its live row goes (its ended row was just written), and it leaves
    /// memory a while later.
    fn record_ended(&mut self, ctx: &mut Ctx<'_>, now: Millis, id: TaskId) {
        ctx.push(Action::Write {
            table: Table::Records,
            key: id,
            value: None,
        });
        self.ended_order.push_back((now, id));
    }

    /// Takes an ended record back from the archive if this peer does not keep it in memory (a
    /// message, a client or a dependent names it); it leaves memory again a while later.
    /// Nothing is written. A row that does not verify is counted (`restore_errors`) and ignored.
    pub(in crate::scheduler) fn recall(&mut self, ctx: &mut Ctx<'_>, now: Millis, id: &TaskId) {
        if self.records.contains_key(id) {
            return;
        }
        let Some(bytes) = ctx.archive.ended(id) else {
            return;
        };
        let restored = SealedRecord::from_bytes(&bytes).and_then(|sealed| {
            if sealed.record.id() != *id || !sealed.record.state.is_final() {
                return Err(WireError::Unauthorized(
                    "an archived row that is not this task's end",
                ));
            }
            let spec = self.check_sealed(ctx, &sealed)?;
            let SealedRecord { record, seal } = sealed;
            let seal = Some(seal);
            self.records.insert(*id, Entry { record, spec, seal });
            self.ended_order.push_back((now, *id));
            Ok(())
        });
        match restored {
            Ok(()) => ctx.counters.recalled += 1,
            // A row changed on disk: refused, as at start, and said so (whatever named the task:
            // a client, or a member's `Store`); the other members still have it.
            Err(error) => {
                ctx.counters.restore_errors += 1;
                ctx.push(Action::RowRefused {
                    task: *id,
                    reason: error.to_string(),
                });
            }
        }
    }

    /// Lets ended records that have been in memory long enough go (they stay on disk): those
    /// whose replication has settled and that no dependent here waits on; the others are looked
    /// at again later.
    pub(in crate::scheduler) fn evict_ended(&mut self, ctx: &mut Ctx<'_>, now: Millis) {
        let linger = ctx.config.ended_in_memory_ms;
        let mut again = Vec::new();
        while let Some(&(at, id)) = self.ended_order.front() {
            if now.saturating_sub(at) < linger {
                break;
            }
            self.ended_order.pop_front();
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            if !entry.record.state.is_final() {
                continue;
            }
            if entry.seal.is_none() || self.replication.contains_key(&id) {
                again.push((now, id));
                continue;
            }
            self.records.remove(&id);
            self.waiting_on.remove(&id);
            self.early_since.remove(&id);
            ctx.counters.evicted += 1;
        }
        self.ended_order.extend(again);
    }

    /// A home member (or the origin) sends records to keep: take each that is newer than ours.
    ///
    /// An ended record wins over one still going, whatever their versions: a task that has a
    /// result is done, and a member that took over as primary without having heard of the result
    /// (the primary that recorded it crashed before passing it on to every member) must learn it,
    /// not overwrite it. Otherwise the newer version wins. A record behind ours is answered with
    /// ours, so such a member learns the result as soon as it sends its own record.
    ///
    /// Who may send it (checked before anything else, for every record): a member of the task's
    /// home set, to a member (or to a member it replaced: see [`rehoming`]); the record must carry
    /// the home set its spec signs or a repair of the one this peer keeps, and a seal that
    /// verifies, by a member of that home set. Anything else is counted and dropped.
    pub(in crate::scheduler) fn on_store(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        from: PeerKey,
        records: Vec<SealedRecord>,
    ) {
        for sealed in records {
            let spec = match self.check_store(ctx, peers, from, &sealed) {
                Ok(spec) => spec,
                Err(error) => {
                    ctx.reject("store", &error);
                    continue;
                }
            };
            let SealedRecord { mut record, seal } = sealed;
            let id = record.id();
            if !record.home().contains(&ctx.me) {
                self.replaced(ctx, from, &record);
                continue;
            }
            let new = !self.records.contains_key(&id) && !record.state.is_final();
            if new && !self.within_quota(ctx, &spec.submitter, record.envelope.spec.bytes().len()) {
                let error = WireError::Unauthorized("over what this peer keeps for one origin");
                ctx.reject("store", &error);
                continue;
            }
            let conflict = self.other_ending(ctx.me, from, &record, seal.signer);
            if conflict == Some(false) {
                self.other_endings.remove(&id);
            }
            let rank = |r: &TaskRecord| (r.state.is_final(), r.version);
            let ours = self
                .records
                .get(&id)
                .map(|e| (rank(&e.record), e.record.epoch));
            let theirs = rank(&record);
            // With two different endings, the majority's wins whatever the versions.
            match ours {
                Some(_) if conflict == Some(true) => {
                    // Ours goes back, and no acknowledgement: the sender's ending is not stored
                    // here, whatever the versions say.
                    self.out_store.entry(from).or_default().insert(id);
                    continue;
                }
                Some((mine, _)) if conflict.is_none() && mine >= theirs => {
                    self.acknowledge(from, id, mine > theirs);
                    continue;
                }
                _ => {
                    // A result adopted over a re-claim this peer made: keep the epoch it granted
                    // since (epochs only grow) and void that lease; the attempt under it will be
                    // told its completion is a duplicate. The record then changed here, and this
                    // peer seals the new version.
                    let overtaken = ours.is_some_and(|(_, epoch)| epoch > record.epoch);
                    if overtaken && let Some((_, epoch)) = ours {
                        record.epoch = epoch;
                        record.holder = None;
                        self.take_record(ctx, now, record, spec, None);
                        self.changed(ctx, peers, now, id);
                    } else {
                        self.take_record(ctx, now, record, spec, Some(seal));
                    }
                }
            }
            self.acknowledge(from, id, false);
        }
    }

    /// A member of the set this peer keeps sent a record whose set no longer names this peer (see
    /// [`Home::check_store`]): it hands the task over, unless its own copy has ended and the
    /// sender's has not (then its copy goes back, so the new set learns the end).
    fn replaced(&mut self, ctx: &mut Ctx<'_>, from: PeerKey, theirs: &TaskRecord) {
        let id = theirs.id();
        let ours_ended = self
            .records
            .get(&id)
            .is_some_and(|e| e.record.state.is_final());
        if ours_ended && !theirs.state.is_final() {
            self.out_store.entry(from).or_default().insert(id);
        } else {
            self.hand_over(ctx, id);
        }
    }

    /// When a member sends a final record whose ending differs from the final record this peer
    /// keeps (each side of a partition recorded an end; at most one of them was stored by a
    /// majority of the home set, and only that one was told to anyone): whether to keep ours
    /// (`Some(true)`) or take theirs (`Some(false)`); `None` when the two do not conflict.
    ///
    /// Each member that is known to hold an ending counts for it: the sender, and the member
    /// that sealed the version sent (it held it when it sealed it). Theirs is taken once a
    /// majority of the set is known to hold it: then ours cannot have been stored by a majority.
    /// Until then, ours is kept and sent back, so the sender learns of it in turn. A set of one or
    /// two, where one member is a majority and both sides may have recorded an end, keeps the
    /// ending of the later attempt (then the higher version), so every member settles on the
    /// same one.
    fn other_ending(
        &mut self,
        me: PeerKey,
        from: PeerKey,
        theirs: &TaskRecord,
        sealer: PeerKey,
    ) -> Option<bool> {
        let ours = &self.records.get(&theirs.id())?.record;
        if !ours.state.is_final() || !theirs.state.is_final() {
            return None;
        }
        let (mine, other) = (ending_of(ours), ending_of(theirs));
        if mine == other {
            return None;
        }
        let members = ours.home();
        let majority = home::quorum(members.len());
        if majority <= 1 {
            return Some((mine.1, ours.version) >= (other.1, theirs.version));
        }
        if self.other_endings.len() >= MAX_OTHER_ENDINGS
            && !self.other_endings.contains_key(&theirs.id())
        {
            self.other_endings.pop_first();
        }
        let endings = self.other_endings.entry(theirs.id()).or_default();
        let at = match endings.iter().position(|(e, _)| *e == other) {
            Some(at) => at,
            None => {
                endings.push((other, BTreeSet::new()));
                endings.len() - 1
            }
        };
        let holders = &mut endings[at].1;
        for member in [from, sealer] {
            if member != me && members.contains(&member) {
                holders.insert(member);
            }
        }
        Some(holders.len() < majority)
    }

    /// The sender rule of `Store` (see [`Self::on_store`]); returns the record's spec.
    fn check_store(
        &self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        from: PeerKey,
        sealed: &SealedRecord,
    ) -> Result<TaskSpec, WireError> {
        let home = sealed.record.home();
        let ours = self.records.get(&sealed.record.id()).map(|e| &e.record);
        if !home.contains(&from) {
            return Err(WireError::Unauthorized(
                "a record for a home set without the sender",
            ));
        }
        // A set without this peer: a repair that replaced it while it was away, taken only from
        // a member of the set it keeps (see `rehoming`).
        if !home.contains(&ctx.me) && !ours.is_some_and(|r| r.home().contains(&from)) {
            return Err(WireError::Unauthorized(
                "a record for a home set without us",
            ));
        }
        // A set other than ours, that would replace ours: it must be a repair of ours (see
        // `rehoming::check_repair`).
        let newer = |ours: &TaskRecord| {
            (sealed.record.state.is_final(), sealed.record.version)
                > (ours.state.is_final(), ours.version)
        };
        if let Some(ours) = ours
            && ours.home() != home
            && newer(ours)
        {
            rehoming::check_repair(ctx.me, peers, ours.home(), home, &sealed.seal.signer)?;
        }
        self.check_sealed(ctx, sealed)
    }

    /// Keeps a record received from another member, with its seal (or, with `None`, unsealed until
    /// this peer changes and seals it in the same input).
    fn take_record(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Millis,
        record: TaskRecord,
        spec: TaskSpec,
        seal: Option<Seal>,
    ) {
        let id = record.id();
        let active = !record.state.is_final();
        if let Some(seal) = &seal {
            self.written.entry(id).or_insert(record.version);
            let mut row = wire::encode(&record);
            row.extend_from_slice(&wire::encode(seal));
            ctx.push(Action::Write {
                table: record_table(!active),
                key: id,
                value: Some(row),
            });
            if !active {
                self.record_ended(ctx, now, id);
                self.ended_index.note(&record, &spec);
            }
        }
        ctx.push(Action::Changed { task: id });
        let (epoch, is_final) = (record.epoch, record.state.is_final());
        self.records.insert(id, Entry { record, spec, seal });
        self.set_active(ctx.me, id, active);
        if is_final {
            self.handoffs.push(Handoff::Ended(id));
        }
        // What waited for this record to catch up may now be moot.
        if let Some(waiting) = self.early_transfers.get_mut(&id) {
            waiting.retain(|l| !is_final && l.epoch > epoch);
        }
        self.early_completions
            .retain(|(task, _), c| *task != id || (!is_final && c.epoch >= epoch));
    }

    /// A holder started these tasks.
    pub(in crate::scheduler) fn on_started(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        from: PeerKey,
        tasks: &[(TaskId, u64)],
    ) {
        let wall = ctx.wall(now);
        for (id, epoch) in tasks {
            let primary = self
                .records
                .get(id)
                .is_some_and(|e| ctx.is_primary(peers, e.record.home(), now));
            let Some(entry) = self.records.get_mut(id) else {
                continue;
            };
            let record = &mut entry.record;
            if claims_another_holders_lease(record, from, *epoch) {
                ctx.reject("started", &NOT_THE_HOLDER);
                continue;
            }
            if !primary
                || record.epoch != *epoch
                || record.holder != Some(from)
                || record.state != TaskState::Waiting
            {
                continue;
            }
            record.transition(TaskState::Running, Some(from), wall, "started");
            self.changed(ctx, peers, now, *id);
        }
    }

    /// A holder reports an attempt's end. The primary records it if it names the current epoch
    /// and comes from the current holder, then retries or ends the task.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::scheduler) fn on_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let Some(entry) = self.records.get(&id) else {
            return;
        };
        if !ctx.is_primary(peers, entry.record.home(), now) {
            return;
        }
        let record = &entry.record;
        if record.state.is_final() {
            ctx.counters.completions_duplicate += 1;
            return self.settled_for(ctx, peers, from, id, epoch);
        }
        if epoch < record.epoch {
            ctx.counters.completions_stale += 1;
            return self.settled_for(ctx, peers, from, id, epoch);
        }
        if epoch > record.epoch {
            // The hand-over to this epoch has not reached us yet.
            if self.early_completions.len() >= ctx.config.early_max {
                ctx.counters.early_dropped += 1;
            } else {
                let early = EarlyCompletion { epoch, outcome };
                self.early_completions.insert((id, from), early);
                self.early_since.entry(id).or_insert(now);
            }
            return;
        }
        if record.holder != Some(from) {
            let error = WireError::Unauthorized("a completion from a peer that does not hold it");
            ctx.reject("completed", &error);
            return self.settled_for(ctx, peers, from, id, epoch);
        }
        self.record_attempt(ctx, peers, now, rng, from, id, epoch, outcome);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_attempt(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let wall = ctx.wall(now);
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        let ending = Ending::of(&outcome);
        let (exit_code, detail) = describe(&outcome);
        entry.record.attempts.push(Attempt {
            peer: from,
            epoch,
            ending,
            exit_code,
            detail,
            at_wall_ms: wall,
        });
        let attempts = entry.record.attempts.len() as u32;
        entry.record.executed_by = Some(from);
        entry.record.outcome = Some(outcome);
        let retry = entry.spec.retry;
        if ending == Ending::Success {
            entry.record.finished_wall_ms = Some(wall);
            entry
                .record
                .transition(TaskState::Completed, Some(from), wall, "succeeded");
        } else if retry.retries(ending, attempts) {
            ctx.counters.retries += 1;
            let wait = retry.wait(attempts, rng);
            entry.record.holder = None;
            let note = format!(
                "attempt {attempts} ended in {}; retry in {wait} ms",
                ending.as_str()
            );
            entry
                .record
                .transition(TaskState::Waiting, Some(from), wall, &note);
            self.retry_at.insert(id, now + wait);
        } else {
            entry.record.finished_wall_ms = Some(wall);
            let note = format!(
                "attempt {attempts} ended in {}; no attempt left",
                ending.as_str()
            );
            entry
                .record
                .transition(TaskState::Failed, Some(from), wall, &note);
        }
        if from != ctx.me {
            let version = entry.record.version + 1; // what `changed` is about to make it
            self.await_holder(id, from, epoch, version);
        }
        self.changed(ctx, peers, now, id);
    }

    /// Tells a holder its completion is settled (once the record as it stands is replicated).
    fn settled_for(
        &mut self,
        ctx: &Ctx<'_>,
        peers: &Peers,
        holder: PeerKey,
        id: TaskId,
        epoch: u64,
    ) {
        if holder == ctx.me {
            return;
        }
        self.settle_holder(ctx.me, peers, id, holder, epoch);
    }

    /// A victim tells the home set who holds its tasks now (`from` is the victim; this peer
    /// itself when it gave the tasks away).
    pub(in crate::scheduler) fn on_transferred(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        grant: &SignedGrant,
    ) {
        let grant = match ctx.verify_transfer_from(from, grant) {
            Ok(grant) => grant,
            Err(error) => return ctx.reject("transferred", &error),
        };
        for lease in grant.leases {
            if self.records.contains_key(&lease.task) {
                self.apply_transfer(ctx, peers, now, rng, lease);
            }
        }
    }

    /// Moves a record to a new holder if the lease is the next link of its chain; otherwise keeps
    /// the lease until the links before it arrive (or this peer becomes primary).
    fn apply_transfer(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        lease: Lease,
    ) {
        let Some(entry) = self.records.get(&lease.task) else {
            return;
        };
        let record = &entry.record;
        if record.state.is_final() || lease.epoch <= record.epoch {
            return;
        }
        let next_link = lease.epoch == crate::lease::next_minor(record.epoch)
            && record.holder == Some(lease.granted_by);
        if !next_link || !ctx.is_primary(peers, record.home(), now) {
            if self.early_transfers.len() >= ctx.config.early_max {
                ctx.counters.early_dropped += 1;
            } else {
                self.early_since.entry(lease.task).or_insert(now);
                self.early_transfers
                    .entry(lease.task)
                    .or_default()
                    .push(lease);
            }
            return;
        }
        let wall = ctx.wall(now);
        if let Some(entry) = self.records.get_mut(&lease.task) {
            entry.record.epoch = lease.epoch;
            entry.record.holder = Some(lease.holder);
            let note = "handed over by its holder";
            entry
                .record
                .transition(TaskState::Waiting, Some(lease.holder), wall, note);
        }
        self.changed(ctx, peers, now, lease.task);
        self.apply_early(ctx, peers, now, rng, lease.task);
    }

    /// Applies transfers and a completion that were waiting for the record to catch up.
    fn apply_early(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        id: TaskId,
    ) {
        if let Some(mut waiting) = self.early_transfers.remove(&id) {
            waiting.sort_by_key(|l| l.epoch);
            for lease in waiting {
                self.apply_transfer(ctx, peers, now, rng, lease);
            }
        }
        // Completions wait by sender, so a peer without the lease cannot crowd out the holder's:
        // the one from the holder at the current epoch is taken, the ones it overtook dropped.
        let Some((epoch, Some(holder))) = self
            .records
            .get(&id)
            .map(|e| (e.record.epoch, e.record.holder))
        else {
            return;
        };
        self.early_completions
            .retain(|(task, _), c| *task != id || c.epoch >= epoch);
        // Only the completion at the record's epoch is taken: the holder's completion at a later
        // epoch (the same peer, at the end of a chain of hand-overs not all heard of yet) waits.
        let at_epoch = self
            .early_completions
            .get(&(id, holder))
            .is_some_and(|early| early.epoch == epoch);
        if at_epoch && let Some(early) = self.early_completions.remove(&(id, holder)) {
            self.on_completed(ctx, peers, now, rng, holder, id, early.epoch, early.outcome);
        }
    }

    /// A holder cannot run a task: place it elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::scheduler) fn on_refused(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        id: TaskId,
        epoch: u64,
    ) {
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        if claims_another_holders_lease(&entry.record, from, epoch) {
            return ctx.reject("refused", &NOT_THE_HOLDER);
        }
        if entry.record.epoch != epoch || entry.record.holder != Some(from) {
            return;
        }
        entry.record.holder = None;
        let home = entry.record.envelope.home.clone();
        if ctx.is_primary(others.peers, &home, now) {
            self.place(ctx, others, now, rng, vec![id]);
        }
    }

    /// Cancels a task, if this peer is its primary: record it (who asked, through which peer),
    /// and void the holder's lease.
    pub(in crate::scheduler) fn on_cancel(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        id: TaskId,
        via: PeerKey,
        by: Option<&str>,
    ) {
        let wall = ctx.wall(now);
        let Some(entry) = self.records.get(&id) else {
            return;
        };
        if !ctx.is_primary(peers, entry.record.home(), now) || entry.record.state.is_final() {
            return;
        }
        let holder = entry.record.holder;
        let epoch = entry.record.epoch;
        if let Some(entry) = self.records.get_mut(&id) {
            entry.record.finished_wall_ms = Some(wall);
            let note = match by {
                Some(client) => format!("cancelled by client {client}"),
                None => "cancelled".to_string(),
            };
            entry
                .record
                .transition(TaskState::Cancelled, Some(via), wall, &note);
        }
        match holder {
            Some(holder) if holder == ctx.me => self.handoffs.push(Handoff::Abort(id)),
            Some(holder) => ctx.send(holder, Message::Abort { task: id, epoch }),
            None => {}
        }
        self.changed(ctx, peers, now, id);
    }

    /// As primary: re-claim tasks whose holders are gone, and place tasks that wait (unplaced, or
    /// due for a retry). Only once this peer has been up for a lease TTL, so that its view of
    /// who is alive is worth acting on.
    pub(in crate::scheduler) fn scan_records(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
    ) {
        if !others
            .peers
            .settled(now, Millis::from(ctx.config.lease_ttl_ms))
        {
            return;
        }
        let mut to_place = Vec::new();
        let mut held_elsewhere = Vec::new();
        // One visit per active record, so its cost is a few lookups, and at most
        // `scan_per_tick` of them per tick: a backlog is visited over several ticks. Early
        // arrivals are rare; their maps are looked up only when not empty.
        let any_early = !(self.early_transfers.is_empty() && self.early_completions.is_empty());
        for id in self.next_to_scan(ctx.config.scan_per_tick.max(1)) {
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            if !ctx.is_primary(others.peers, entry.record.home(), now) {
                continue;
            }
            self.rehome(ctx, others.peers, now, id);
            if any_early && self.has_early(&id) {
                self.apply_early(ctx, others.peers, now, rng, id);
            }
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            if entry.record.state.is_final() {
                continue;
            }
            let holder = entry.record.holder;
            if self.broken_chain(ctx, now, id)
                && let Some(holder) = holder
            {
                if self.reclaim(ctx, others.peers, now, holder, id) {
                    to_place.push(id);
                }
                continue;
            }
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            match entry.record.holder {
                Some(holder) if self.lost(ctx.me, others, &holder, &id) => {
                    if self.reclaim(ctx, others.peers, now, holder, id) {
                        to_place.push(id);
                    }
                }
                Some(holder) if holder != ctx.me => {
                    held_elsewhere.push((id, holder, entry.record.epoch));
                }
                Some(_) => {}
                None => {
                    if self.retry_at.get(&id).is_none_or(|at| *at <= now) {
                        self.retry_at.remove(&id);
                        to_place.push(id);
                    }
                }
            }
        }
        self.oldest_first(&mut to_place);
        self.place(ctx, others, now, rng, to_place);
        self.confirm_leases(ctx, now, held_elsewhere);
        self.walk_ended(ctx, others, now);
    }

    /// Whether the scan is part-way through a pass.
    pub(in crate::scheduler) fn scanning(&self) -> bool {
        self.scan_cursor.is_some()
    }

    /// The active records the scan visits this tick, in id order: the next `budget` after the
    /// last one visited, or from the first when a pass starts. The pass ends with the last record.
    fn next_to_scan(&mut self, budget: usize) -> Vec<TaskId> {
        use std::ops::Bound::{Excluded, Unbounded};
        let batch: Vec<TaskId> = match self.scan_cursor.take() {
            Some(last) => self
                .active
                .range((Excluded(last), Unbounded))
                .take(budget)
                .copied()
                .collect(),
            None => self.active.iter().take(budget).copied().collect(),
        };
        if batch.len() == budget {
            self.scan_cursor = batch.last().copied();
        }
        batch
    }

    /// Whether what arrived early for `id` (hand-overs past its record's epoch, a completion at
    /// a later epoch) has waited four lease TTLs for the links before it: then they never come
    /// (a notice was lost with a member, or went while no member led the record), and the holder
    /// at the end of the chain, asked to confirm the lease the record names, says it has a result,
    /// so nothing else would move the task. The early arrivals are dropped, and the caller
    /// re-claims the task under a new major epoch: it may run again; its result is recorded once.
    fn broken_chain(&mut self, ctx: &Ctx<'_>, now: Millis, id: TaskId) -> bool {
        if !self.has_early(&id) {
            self.early_since.remove(&id);
            return false;
        }
        let ttl = Millis::from(ctx.config.lease_ttl_ms);
        let waited = self
            .early_since
            .get(&id)
            .is_some_and(|since| now.saturating_sub(*since) >= 4 * ttl);
        if waited {
            self.early_since.remove(&id);
            self.early_transfers.remove(&id);
            self.early_completions.retain(|(task, _), _| *task != id);
        }
        waited
    }

    /// Whether a transfer or a completion for `id` arrived before its record.
    fn has_early(&self, id: &TaskId) -> bool {
        self.early_transfers.contains_key(id)
            || self
                .early_completions
                .range((*id, PeerKey::from_bytes([0; 32]))..)
                .next()
                .is_some_and(|((task, _), _)| task == id)
    }

    /// Asks holders to confirm leases that have not changed for two lease TTLs, of the tasks
    /// this peer leads that another peer holds (as the scan found them).
    fn confirm_leases(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Millis,
        held_elsewhere: Vec<(TaskId, PeerKey, u64)>,
    ) {
        let every = 2 * Millis::from(ctx.config.lease_ttl_ms);
        let mut asks: std::collections::BTreeMap<PeerKey, Vec<(TaskId, u64)>> =
            std::collections::BTreeMap::new();
        for (id, holder, epoch) in held_elsewhere {
            let since = self.confirmed_at.entry(id).or_insert(now);
            if now.saturating_sub(*since) >= every {
                *since = now;
                asks.entry(holder).or_default().push((id, epoch));
            }
        }
        for (holder, tasks) in asks {
            ctx.send(holder, Message::Confirm { tasks });
        }
    }

    /// A holder does not hold tasks this peer thinks it does: re-claim them.
    pub(in crate::scheduler) fn on_missing(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        tasks: &[(TaskId, u64)],
    ) {
        let mut to_place = Vec::new();
        for (id, epoch) in tasks {
            let Some(entry) = self.records.get(id) else {
                continue;
            };
            let record = &entry.record;
            if claims_another_holders_lease(record, from, *epoch) {
                ctx.reject("missing", &NOT_THE_HOLDER);
                continue;
            }
            if record.state.is_final()
                || record.holder != Some(from)
                || record.epoch != *epoch
                || !ctx.is_primary(others.peers, record.home(), now)
            {
                continue;
            }
            if self.reclaim(ctx, others.peers, now, from, *id) {
                to_place.push(*id);
            }
        }
        self.oldest_first(&mut to_place);
        self.place(ctx, others, now, rng, to_place);
    }

    /// Orders tasks to place again so that a holder queues them in the order they should start:
    /// those that already ran (an attempt was lost or failed) first, then by submission. A
    /// holder puts tasks placed again at the front of its queue in the order they come, so the
    /// task its lost holder was running starts at the next free slot, not behind the tasks that
    /// were queued behind it.
    fn oldest_first(&self, ids: &mut [TaskId]) {
        ids.sort_by_cached_key(|id| {
            self.records.get(id).map_or((true, u64::MAX), |e| {
                (e.record.attempts.is_empty(), e.record.submitted_wall_ms)
            })
        });
    }

    /// Whether the lease `holder` has on a task is lost: the holder is silent past the TTL, or it
    /// is this peer and it no longer has the task.
    fn lost(&self, me: PeerKey, others: &Others<'_>, holder: &PeerKey, id: &TaskId) -> bool {
        if *holder == me {
            return !others.holding.has(id) && !others.stealing.has_given(id);
        }
        !others.peers.alive(holder)
    }

    /// Records the loss of a lease; returns whether the task is to be placed again.
    ///
    /// A task its holder never reported starting did not run (as far as anyone knows): losing it
    /// is not an attempt, and it is placed again whatever its retry policy. Only a lease lost
    /// while the task was running counts against its attempts.
    fn reclaim(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        holder: PeerKey,
        id: TaskId,
    ) -> bool {
        let wall = ctx.wall(now);
        ctx.counters.leases_reclaimed += 1;
        let Some(entry) = self.records.get_mut(&id) else {
            return false;
        };
        let record = &mut entry.record;
        record.holder = None;
        if record.state != TaskState::Running {
            record.transition(
                TaskState::Waiting,
                Some(ctx.me),
                wall,
                "re-claimed from a silent holder before it started",
            );
            self.changed(ctx, peers, now, id);
            return true;
        }
        record.attempts.push(Attempt {
            peer: holder,
            epoch: record.epoch,
            ending: Ending::LostLease,
            exit_code: None,
            detail: "its holder stopped reporting".into(),
            at_wall_ms: wall,
        });
        let attempts = record.attempts.len() as u32;
        let again = entry.spec.retry.retries(Ending::LostLease, attempts);
        if again {
            ctx.counters.retries += 1;
            record.transition(
                TaskState::Waiting,
                Some(ctx.me),
                wall,
                "re-claimed from a silent holder",
            );
        } else {
            record.finished_wall_ms = Some(wall);
            record.transition(
                TaskState::Failed,
                Some(ctx.me),
                wall,
                "lease lost; no attempt left",
            );
        }
        self.changed(ctx, peers, now, id);
        again
    }
}

use crate::message::Message;

const NOT_THE_HOLDER: WireError =
    WireError::Unauthorized("about a lease the sender does not hold at that epoch");

/// Whether `from` speaks of the lease at `epoch` of a task that someone else holds at that very
/// epoch: only one peer ever holds a task at one epoch, so this is not a late message but a peer
/// without the role. (A message about an older epoch, or about a lease since re-claimed, is late,
/// not forged, and is dropped without counting.)
fn claims_another_holders_lease(record: &TaskRecord, from: PeerKey, epoch: u64) -> bool {
    record.epoch == epoch && record.holder.is_some_and(|holder| holder != from)
}

/// The exit code and a short description of an outcome, for the attempt history.
fn describe(outcome: &Outcome) -> (Option<i32>, String) {
    let tail = |bytes: &[u8]| {
        let start = bytes.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    };
    match outcome {
        Outcome::Exited { code, stderr, .. } => (*code, tail(stderr)),
        Outcome::TimedOut { stderr, .. } => (None, format!("timed out; {}", tail(stderr))),
        Outcome::Returned { .. } => (None, String::new()),
        Outcome::Error { message } | Outcome::NotStarted { message } => (None, message.clone()),
    }
}

impl Home {
    pub(in crate::scheduler) fn restore_record(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Millis,
        sealed: SealedRecord,
    ) -> Result<(), WireError> {
        let spec = self.check_sealed(ctx, &sealed)?;
        let id = sealed.record.id();
        let active = !sealed.record.state.is_final();
        if !active {
            // A row of a store written before ended records had a table of their own: it moves
            // there (and leaves memory a while later).
            ctx.push(Action::Write {
                table: Table::Ended,
                key: id,
                value: Some(sealed.to_bytes()),
            });
            self.record_ended(ctx, now, id);
            self.ended_index.note(&sealed.record, &spec);
        }
        let SealedRecord { record, seal } = sealed;
        let seal = Some(seal);
        self.records.insert(id, Entry { record, spec, seal });
        self.set_active(ctx.me, id, active);
        Ok(())
    }

    /// Marks a record (which must be in `records`) unfinished or not, keeping count of what each
    /// other origin's unfinished tasks take here.
    fn set_active(&mut self, me: PeerKey, id: TaskId, active: bool) {
        if self.active.contains(&id) == active {
            return;
        }
        if active {
            self.active.insert(id);
        } else {
            self.active.remove(&id);
        }
        let Some(entry) = self.records.get(&id) else {
            return;
        };
        let origin = entry.spec.submitter;
        if origin == me {
            return;
        }
        let bytes = entry.record.envelope.spec.bytes().len() as u64;
        let kept = self.kept_by_origin.entry(origin).or_default();
        if active {
            kept.count += 1;
            kept.bytes += bytes;
        } else {
            kept.count = kept.count.saturating_sub(1);
            kept.bytes = kept.bytes.saturating_sub(bytes);
            if kept.count == 0 {
                self.kept_by_origin.remove(&origin);
            }
        }
    }

    /// Whether taking one more unfinished task of `origin` (with a spec of `bytes`) stays within
    /// what this peer keeps for one origin.
    fn within_quota(&self, ctx: &Ctx<'_>, origin: &PeerKey, bytes: usize) -> bool {
        if *origin == ctx.me {
            return true;
        }
        let kept = self.kept_by_origin.get(origin).copied().unwrap_or_default();
        kept.count < ctx.config.records_per_origin
            && kept.bytes + bytes as u64 <= ctx.config.record_bytes_per_origin
    }

    /// Checks a sealed record: its spec (signature, id), its home set (the signed one, or a repair
    /// of it: see [`crate::task::check_repaired_home`]) and its seal, which must verify and be
    /// signed by a member of the record's home set. Returns the decoded spec.
    pub(in crate::scheduler) fn check_sealed(
        &self,
        ctx: &mut Ctx<'_>,
        sealed: &SealedRecord,
    ) -> Result<TaskSpec, WireError> {
        let known = self
            .records
            .get(&sealed.record.id())
            .filter(|e| e.record.envelope.spec == sealed.record.envelope.spec)
            .map(|e| e.spec.clone());
        let spec = match known {
            Some(spec) => spec,
            None => {
                let envelope = sealed.record.envelope.clone();
                Task::from_envelope_cached(envelope, ctx.verifier.keys())?.spec
            }
        };
        let home = sealed.record.home();
        if home != spec.home {
            crate::task::check_repaired_home(&spec.home, home)?;
        }
        if !home.contains(&sealed.seal.signer) {
            return Err(WireError::BadSeal("sealed by a peer outside the home set"));
        }
        ctx.verifier.verify(sealed)?;
        Ok(spec)
    }
}

/// The scheduler hands inputs to the home role through these, for the other roles and the
/// public API: each borrows the rooms apart and calls the role's handler.
impl super::Scheduler {
    pub(super) fn accept(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        submissions: Vec<Submission>,
    ) -> Vec<Result<TaskId, WireError>> {
        let (home, mut others, mut ctx) = self.primary();
        home.accept(&mut ctx, &mut others, now, rng, submissions)
    }

    pub(super) fn restore_record(&mut self, sealed: SealedRecord) -> Result<(), WireError> {
        let now = self.last_now;
        let (home, _, mut ctx) = self.member();
        home.restore_record(&mut ctx, now, sealed)
    }

    /// Takes the ended record of `id` back from the archive, if this peer does not keep it in
    /// memory.
    pub(super) fn recall(&mut self, now: Millis, id: &TaskId) {
        let (home, _, mut ctx) = self.member();
        home.recall(&mut ctx, now, id);
    }

    /// Lets ended records that have been in memory long enough go.
    pub(super) fn evict_ended(&mut self, now: Millis) {
        let (home, _, mut ctx) = self.member();
        home.evict_ended(&mut ctx, now);
    }

    pub(super) fn check_sealed(&mut self, sealed: &SealedRecord) -> Result<TaskSpec, WireError> {
        let (home, _, mut ctx) = self.member();
        home.check_sealed(&mut ctx, sealed)
    }

    pub(super) fn on_started(&mut self, now: Millis, from: PeerKey, tasks: &[(TaskId, u64)]) {
        let (home, peers, mut ctx) = self.member();
        home.on_started(&mut ctx, peers, now, from, tasks);
    }

    pub(super) fn on_completed(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let (home, peers, mut ctx) = self.member();
        home.on_completed(&mut ctx, peers, now, rng, from, id, epoch, outcome);
    }

    pub(super) fn on_transferred(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        grant: &SignedGrant,
    ) {
        let (home, peers, mut ctx) = self.member();
        home.on_transferred(&mut ctx, peers, now, rng, from, grant);
    }

    pub(super) fn on_cancel(&mut self, now: Millis, id: TaskId, via: PeerKey, by: Option<&str>) {
        let (home, peers, mut ctx) = self.member();
        home.on_cancel(&mut ctx, peers, now, id, via, by);
    }

    /// Seals the records changed during this input, in one batch, and fills in their writes.
    pub(super) fn seal_changed(&mut self) {
        let (home, _, mut ctx) = self.member();
        home.seal_changed(&mut ctx);
    }
}
