//! The home member's side: the records of the tasks whose home set this peer is in.
//!
//! As a task's *primary* (the first member of its home set this peer believes alive) it records
//! transitions and results, re-claims the task when its holder falls silent for the lease TTL,
//! retries failed attempts by the task's policy, cancels, and replicates every change to the other
//! live members; it acknowledges a submission to the client, and a result to its holder, only once
//! every live member has stored the change. As a backup it stores what the primary sends and keeps
//! transfer notices and results that it would need if it became primary.

use rand::RngCore;

use super::{Action, EarlyCompletion, Entry, Scheduler, Table, TaskState};
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

/// How much of a failed attempt's standard error its history keeps.
const STDERR_TAIL: usize = 400;

impl Scheduler {
    /// Records new tasks with this peer as origin and primary, stores them on their home sets and
    /// places them. Each spec is completed here (this peer as submitter, its home set, its
    /// dependencies' ids) and signed with this peer's key.
    pub(super) fn accept(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        submissions: Vec<Submission>,
    ) -> Vec<Result<TaskId, WireError>> {
        let live: Vec<PeerKey> = self.peers.keys();
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
            spec.submitter = self.me;
            spec.after = ids;
            // A task that depends on one this peer leads shares its home set, so that their
            // primary keeps both records and sees the dependency end without asking.
            spec.home = spec
                .after
                .first()
                .and_then(|dep| self.records.get(dep))
                .map(|e| e.record.home().to_vec())
                .filter(|home| home.first() == Some(&self.me))
                .unwrap_or_else(|| {
                    let key = home::key(&self.me, spec.nonce);
                    home::home_set(&key, self.me, live.iter().copied(), self.config.replicas)
                });
            let signed = Signed::sign(&spec, &self.key);
            let task = match Task::from_signed(signed) {
                Ok(task) => task,
                Err(error) => {
                    results.push(Err(error));
                    continue;
                }
            };
            let id = task.id;
            results.push(Ok(id));
            if self.records.contains_key(&id) {
                match self.replication.get_mut(&id) {
                    Some(rep) => rep.client_waits = Some(rep.client_waits.unwrap_or(1)),
                    None => self.out_accepted.push(id),
                }
                continue;
            }
            let home = task.home.clone();
            let wall = self.wall(now);
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
                    peer: Some(self.me),
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
            self.set_active(id, true);
            self.replication.entry(id).or_default().client_waits = Some(1);
            fresh.push(id);
        }
        self.place(now, rng, fresh.clone());
        for id in fresh {
            if self.records.get(&id).is_some_and(|e| e.record.version == 0) {
                self.changed(now, id);
            }
        }
        results
    }

    /// A record changed here (as origin or primary): raise its version, store it (sealed with the
    /// other changes of this input at its end), and send it to the other live members of its home
    /// set.
    pub(super) fn changed(&mut self, now: Millis, id: TaskId) {
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        entry.record.version += 1;
        entry.seal = None;
        let is_final = entry.record.state.is_final();
        let home = entry.record.home().to_vec();
        if is_final {
            if self.waiting_on.contains_key(&id) {
                self.ended_now.push(id);
            }
            self.end_local_watches(id);
            self.set_active(id, false);
            self.retry_at.remove(&id);
            self.confirmed_at.remove(&id);
        } else {
            self.set_active(id, true);
            self.confirmed_at.insert(id, now);
        }
        self.unsealed.push((self.actions.len(), id));
        self.actions.push_back(Action::Write {
            table: Table::Records,
            key: id,
            value: Some(Vec::new()),
        });
        self.actions.push_back(Action::Changed { task: id });
        let backups: Vec<PeerKey> = home
            .iter()
            .filter(|m| **m != self.me && self.alive(m))
            .copied()
            .collect();
        self.replication.entry(id).or_default().last_sent = now;
        for member in backups {
            self.out_store.entry(member).or_default().insert(id);
        }
        self.settle(id);
    }

    /// Tells the client and holders what they wait for once every live member has the version
    /// they need; forgets the replication once every live member has the current version.
    fn settle(&mut self, id: TaskId) {
        let (Some(entry), Some(rep)) = (self.records.get(&id), self.replication.get(&id)) else {
            return;
        };
        let version = entry.record.version;
        let stored_everywhere = entry
            .record
            .home()
            .iter()
            .filter(|m| **m != self.me && self.alive(m))
            .map(|m| rep.acked.get(m).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        let Some(rep) = self.replication.get_mut(&id) else {
            return;
        };
        if rep.client_waits.is_some_and(|v| stored_everywhere >= v) {
            rep.client_waits = None;
            self.out_accepted.push(id);
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut rep.holders)
            .into_iter()
            .partition(|(_, _, v)| stored_everywhere >= *v);
        rep.holders = waiting;
        let done =
            rep.holders.is_empty() && rep.client_waits.is_none() && stored_everywhere >= version;
        for (holder, epoch, _) in ready {
            self.out_recorded
                .entry(holder)
                .or_default()
                .push((id, epoch));
        }
        if done {
            self.replication.remove(&id);
        }
    }

    /// Sends records again to live members that have not acknowledged them, and settles the ones
    /// whose lagging members have died.
    pub(super) fn resend_replication(&mut self, now: Millis) {
        let after = self.config.resend_after_ms;
        let due: Vec<TaskId> = self
            .replication
            .iter()
            .filter(|(_, rep)| now.saturating_sub(rep.last_sent) >= after)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (Some(entry), Some(rep)) = (self.records.get(&id), self.replication.get(&id))
            else {
                self.replication.remove(&id);
                continue;
            };
            let version = entry.record.version;
            let lagging: Vec<PeerKey> = entry
                .record
                .home()
                .iter()
                .filter(|m| {
                    **m != self.me
                        && self.alive(m)
                        && rep.acked.get(*m).copied().unwrap_or(0) < version
                })
                .copied()
                .collect();
            for member in lagging {
                self.out_store.entry(member).or_default().insert(id);
            }
            if let Some(rep) = self.replication.get_mut(&id) {
                rep.last_sent = now;
            }
            self.settle(id);
        }
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
    /// home set, to a member; the record must carry the home set its spec signs, and a seal that
    /// verifies, by a member of that home set. Anything else is counted and dropped.
    pub(super) fn on_store(&mut self, now: Millis, from: PeerKey, records: Vec<SealedRecord>) {
        for sealed in records {
            let spec = match self.check_store(from, &sealed) {
                Ok(spec) => spec,
                Err(error) => {
                    self.reject("store", &error);
                    continue;
                }
            };
            let SealedRecord { mut record, seal } = sealed;
            let id = record.id();
            let new = !self.records.contains_key(&id) && !record.state.is_final();
            if new && !self.within_quota(&spec.submitter, record.envelope.spec.bytes().len()) {
                let error = WireError::Unauthorized("over what this peer keeps for one origin");
                self.reject("store", &error);
                continue;
            }
            let rank = |r: &TaskRecord| (r.state.is_final(), r.version);
            let ours = self
                .records
                .get(&id)
                .map(|e| (rank(&e.record), e.record.epoch));
            let theirs = rank(&record);
            match ours {
                Some((mine, _)) if mine >= theirs => {
                    if mine > theirs {
                        self.out_store.entry(from).or_default().insert(id);
                    }
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
                        self.take_record(record, spec, None);
                        self.changed(now, id);
                    } else {
                        self.take_record(record, spec, Some(seal));
                    }
                }
            }
            let version = self.records.get(&id).map_or(0, |e| e.record.version);
            self.out_stored.entry(from).or_default().push((id, version));
        }
    }

    /// The sender rule of `Store` (see [`Self::on_store`]); returns the record's spec.
    fn check_store(&mut self, from: PeerKey, sealed: &SealedRecord) -> Result<TaskSpec, WireError> {
        let home = sealed.record.home();
        if !home.contains(&self.me) || !home.contains(&from) {
            return Err(WireError::Unauthorized(
                "a record for a home set without us or the sender",
            ));
        }
        self.check_sealed(sealed)
    }

    /// Keeps a record received from another member, with its seal (or, with `None`, unsealed until
    /// this peer changes and seals it in the same input).
    fn take_record(&mut self, record: TaskRecord, spec: TaskSpec, seal: Option<Seal>) {
        let id = record.id();
        let active = !record.state.is_final();
        if let Some(seal) = &seal {
            let mut row = wire::encode(&record);
            row.extend_from_slice(&wire::encode(seal));
            self.actions.push_back(Action::Write {
                table: Table::Records,
                key: id,
                value: Some(row),
            });
        }
        self.actions.push_back(Action::Changed { task: id });
        let (epoch, is_final) = (record.epoch, record.state.is_final());
        self.records.insert(id, Entry { record, spec, seal });
        self.set_active(id, active);
        if is_final {
            self.end_local_watches(id);
        }
        // What waited for this record to catch up may now be moot.
        if let Some(waiting) = self.early_transfers.get_mut(&id) {
            waiting.retain(|l| !is_final && l.epoch > epoch);
        }
        self.early_completions
            .retain(|(task, _), c| *task != id || (!is_final && c.epoch >= epoch));
    }

    /// A home member stored records at these versions.
    pub(super) fn on_stored(&mut self, from: PeerKey, acks: &[(TaskId, u64)]) {
        for (id, version) in acks {
            if self
                .records
                .get(id)
                .is_some_and(|e| !e.record.home().contains(&from))
            {
                let error = WireError::Unauthorized("an acknowledgement from outside the home set");
                self.reject("stored", &error);
                continue;
            }
            if let Some(rep) = self.replication.get_mut(id) {
                let acked = rep.acked.entry(from).or_insert(0);
                *acked = (*acked).max(*version);
                self.settle(*id);
            }
        }
    }

    /// A holder started these tasks.
    pub(super) fn on_started(&mut self, now: Millis, from: PeerKey, tasks: &[(TaskId, u64)]) {
        let wall = self.wall(now);
        for (id, epoch) in tasks {
            let primary = self
                .records
                .get(id)
                .is_some_and(|e| self.is_primary(e.record.home(), now));
            let Some(entry) = self.records.get_mut(id) else {
                continue;
            };
            let record = &mut entry.record;
            if claims_another_holders_lease(record, from, *epoch) {
                self.reject("started", &NOT_THE_HOLDER);
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
            self.changed(now, *id);
        }
    }

    /// A holder reports an attempt's end. The primary records it if it names the current epoch
    /// and comes from the current holder, then retries or ends the task.
    pub(super) fn on_completed(
        &mut self,
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
        if !self.is_primary(entry.record.home(), now) {
            return;
        }
        let record = &entry.record;
        if record.state.is_final() {
            self.counters.completions_duplicate += 1;
            return self.settled_for(from, id, epoch);
        }
        if epoch < record.epoch {
            self.counters.completions_stale += 1;
            return self.settled_for(from, id, epoch);
        }
        if epoch > record.epoch {
            // The hand-over to this epoch has not reached us yet.
            if self.early_completions.len() >= self.config.early_max {
                self.counters.early_dropped += 1;
            } else {
                let early = EarlyCompletion { epoch, outcome };
                self.early_completions.insert((id, from), early);
            }
            return;
        }
        if record.holder != Some(from) {
            let error = WireError::Unauthorized("a completion from a peer that does not hold it");
            self.reject("completed", &error);
            return self.settled_for(from, id, epoch);
        }
        self.record_attempt(now, rng, from, id, epoch, outcome);
    }

    fn record_attempt(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        id: TaskId,
        epoch: u64,
        outcome: Outcome,
    ) {
        let wall = self.wall(now);
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
        if from != self.me {
            let version = entry.record.version + 1; // what `changed` is about to make it
            self.replication
                .entry(id)
                .or_default()
                .holders
                .push((from, epoch, version));
        }
        self.changed(now, id);
    }

    /// Tells a holder its completion is settled (once the record as it stands is replicated).
    fn settled_for(&mut self, holder: PeerKey, id: TaskId, epoch: u64) {
        if holder == self.me {
            return;
        }
        let version = self.records.get(&id).map_or(0, |e| e.record.version);
        match self.replication.get_mut(&id) {
            Some(rep) => rep.holders.push((holder, epoch, version)),
            None => self
                .out_recorded
                .entry(holder)
                .or_default()
                .push((id, epoch)),
        }
        self.settle(id);
    }

    /// A victim tells the home set who holds its tasks now (`from` is the victim; this peer
    /// itself when it gave the tasks away).
    pub(super) fn on_transferred(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        from: PeerKey,
        grant: &SignedGrant,
    ) {
        let grant = match self.verify_transfer_from(from, grant) {
            Ok(grant) => grant,
            Err(error) => return self.reject("transferred", &error),
        };
        for lease in grant.leases {
            if self.records.contains_key(&lease.task) {
                self.apply_transfer(now, rng, lease);
            }
        }
    }

    /// Moves a record to a new holder if the lease is the next link of its chain; otherwise keeps
    /// the lease until the links before it arrive (or this peer becomes primary).
    fn apply_transfer(&mut self, now: Millis, rng: &mut dyn RngCore, lease: Lease) {
        let Some(entry) = self.records.get(&lease.task) else {
            return;
        };
        let record = &entry.record;
        if record.state.is_final() || lease.epoch <= record.epoch {
            return;
        }
        let next_link = lease.epoch == crate::lease::next_minor(record.epoch)
            && record.holder == Some(lease.granted_by);
        if !next_link || !self.is_primary(record.home(), now) {
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
        let wall = self.wall(now);
        if let Some(entry) = self.records.get_mut(&lease.task) {
            entry.record.epoch = lease.epoch;
            entry.record.holder = Some(lease.holder);
            let note = "handed over by its holder";
            entry
                .record
                .transition(TaskState::Waiting, Some(lease.holder), wall, note);
        }
        self.changed(now, lease.task);
        self.apply_early(now, rng, lease.task);
    }

    /// Applies transfers and a completion that were waiting for the record to catch up.
    fn apply_early(&mut self, now: Millis, rng: &mut dyn RngCore, id: TaskId) {
        if let Some(mut waiting) = self.early_transfers.remove(&id) {
            waiting.sort_by_key(|l| l.epoch);
            for lease in waiting {
                self.apply_transfer(now, rng, lease);
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
        if let Some(early) = self.early_completions.remove(&(id, holder))
            && early.epoch == epoch
        {
            self.on_completed(now, rng, holder, id, early.epoch, early.outcome);
        }
    }

    /// A holder cannot run a task: place it elsewhere.
    pub(super) fn on_refused(
        &mut self,
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
            return self.reject("refused", &NOT_THE_HOLDER);
        }
        if entry.record.epoch != epoch || entry.record.holder != Some(from) {
            return;
        }
        entry.record.holder = None;
        let home = entry.record.envelope.home.clone();
        if self.is_primary(&home, now) {
            self.place(now, rng, vec![id]);
        }
    }

    /// Cancels a task, if this peer is its primary: record it (who asked, through which peer),
    /// and void the holder's lease.
    pub(super) fn on_cancel(&mut self, now: Millis, id: TaskId, via: PeerKey, by: Option<&str>) {
        let wall = self.wall(now);
        let Some(entry) = self.records.get(&id) else {
            return;
        };
        if !self.is_primary(entry.record.home(), now) || entry.record.state.is_final() {
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
            Some(holder) if holder == self.me => self.abort_held(id),
            Some(holder) => self.send(holder, Message::Abort { task: id, epoch }),
            None => {}
        }
        self.changed(now, id);
    }

    /// As primary: re-claim tasks whose holders are gone, and place tasks that wait (unplaced, or
    /// due for a retry). Only once this peer has been up for a lease TTL, so that its view of
    /// who is alive is worth acting on.
    pub(super) fn scan_records(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if !self.settled(now) {
            return;
        }
        let mut to_place = Vec::new();
        let active: Vec<TaskId> = self.active.iter().copied().collect();
        for id in active {
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            if !self.is_primary(entry.record.home(), now) {
                continue;
            }
            let early_completion = self
                .early_completions
                .range((id, PeerKey::from_bytes([0; 32]))..)
                .next()
                .is_some_and(|((task, _), _)| *task == id);
            if self.early_transfers.contains_key(&id) || early_completion {
                self.apply_early(now, rng, id);
            }
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            if entry.record.state.is_final() {
                continue;
            }
            match entry.record.holder {
                Some(holder) if self.lost(&holder, &id) => {
                    if self.reclaim(now, holder, id) {
                        to_place.push(id);
                    }
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
        self.place(now, rng, to_place);
        self.confirm_leases(now);
    }

    /// Asks holders to confirm leases that have not changed for two lease TTLs.
    fn confirm_leases(&mut self, now: Millis) {
        let every = 2 * Millis::from(self.config.lease_ttl_ms);
        let mut asks: std::collections::BTreeMap<PeerKey, Vec<(TaskId, u64)>> =
            std::collections::BTreeMap::new();
        for id in &self.active {
            let Some(entry) = self.records.get(id) else {
                continue;
            };
            let Some(holder) = entry.record.holder else {
                continue;
            };
            if holder == self.me || !self.is_primary(entry.record.home(), now) {
                continue;
            }
            let since = self.confirmed_at.entry(*id).or_insert(now);
            if now.saturating_sub(*since) >= every {
                *since = now;
                asks.entry(holder)
                    .or_default()
                    .push((*id, entry.record.epoch));
            }
        }
        for (holder, tasks) in asks {
            self.send(holder, Message::Confirm { tasks });
        }
    }

    /// A holder does not hold tasks this peer thinks it does: re-claim them.
    pub(super) fn on_missing(
        &mut self,
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
                self.reject("missing", &NOT_THE_HOLDER);
                continue;
            }
            if record.state.is_final()
                || record.holder != Some(from)
                || record.epoch != *epoch
                || !self.is_primary(record.home(), now)
            {
                continue;
            }
            if self.reclaim(now, from, *id) {
                to_place.push(*id);
            }
        }
        self.place(now, rng, to_place);
    }

    /// Whether the lease `holder` has on a task is lost: the holder is silent past the TTL, or it
    /// is this peer and it no longer has the task.
    fn lost(&self, holder: &PeerKey, id: &TaskId) -> bool {
        if *holder == self.me {
            return !self.holding.has(id) && !self.stealing.has_given(id);
        }
        !self.alive(holder)
    }

    /// Records the loss of a lease; returns whether the task is to be placed again.
    ///
    /// A task its holder never reported starting did not run (as far as anyone knows): losing it
    /// is not an attempt, and it is placed again whatever its retry policy. Only a lease lost
    /// while the task was running counts against its attempts.
    fn reclaim(&mut self, now: Millis, holder: PeerKey, id: TaskId) -> bool {
        let wall = self.wall(now);
        self.counters.leases_reclaimed += 1;
        let Some(entry) = self.records.get_mut(&id) else {
            return false;
        };
        let record = &mut entry.record;
        record.holder = None;
        if record.state != TaskState::Running {
            record.transition(
                TaskState::Waiting,
                Some(self.me),
                wall,
                "re-claimed from a silent holder before it started",
            );
            self.changed(now, id);
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
            record.transition(
                TaskState::Waiting,
                Some(self.me),
                wall,
                "re-claimed from a silent holder",
            );
        } else {
            record.finished_wall_ms = Some(wall);
            record.transition(
                TaskState::Failed,
                Some(self.me),
                wall,
                "lease lost; no attempt left",
            );
        }
        self.changed(now, id);
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
        Outcome::Error { message } => (None, message.clone()),
    }
}
