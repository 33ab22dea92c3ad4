//! Placement as the primary does it: choose a peer for each task (by the task's placement policy
//! if it names one, else the peer's, power of two choices by default, over the loads it knows,
//! among peers that can run the task: its kind, its labels, its amounts within their capacity),
//! raise the epoch, and hand the tasks over under one signed grant per peer. A task no live peer
//! can run is marked unschedulable, with the reason, until one can.

use std::collections::BTreeMap;

use rand::RngCore;

use super::super::peers::Peers;
use super::super::{Ctx, TaskState};
use super::{Handoff, Home, Others};
use crate::Millis;
use crate::identity::PeerKey;
use crate::lease::Lease;
use crate::load::Capabilities;
use crate::message::Message;
use crate::placement::Candidate;
use crate::task::{Envelope, Task, TaskId, TaskKind, TaskSpec};

impl Home {
    /// Places tasks whose records this peer keeps as primary. A task no live peer can run stays
    /// unplaced (holder `None`) and is tried again on later ticks.
    pub(in crate::scheduler) fn place(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
        ids: Vec<TaskId>,
    ) {
        let ids = self.gate_dependencies(ctx, others.peers, now, ids);
        if ids.is_empty() {
            return;
        }
        let mut candidates = candidates(ctx, others);
        let mut batches: BTreeMap<PeerKey, Vec<TaskId>> = BTreeMap::new();
        let mut unfit: Vec<(TaskId, String)> = Vec::new();
        for id in ids {
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            let fitting: Vec<usize> = (0..candidates.len())
                .filter(|&i| {
                    ctx.capabilities_of(others.peers, &candidates[i].peer)
                        .is_some_and(|c| c.can_run(&entry.spec))
                })
                .collect();
            if fitting.is_empty() {
                unfit.push((
                    id,
                    why_unschedulable(ctx, others.peers, &candidates, &entry.spec),
                ));
                continue;
            }
            let subset: Vec<Candidate> = fitting.iter().map(|&i| candidates[i]).collect();
            let policy = entry.spec.placement.unwrap_or(ctx.placer.policy());
            let Some(choice) = ctx.placer.choose_by(policy, rng, &subset) else {
                continue;
            };
            let chosen = &mut candidates[fitting[choice]];
            chosen.load += 1;
            batches.entry(chosen.peer).or_default().push(id);
        }
        for (peer, ids) in batches {
            others.peers.note_placed(&peer, ids.len() as u32);
            self.place_on(ctx, others.peers, now, peer, ids);
        }
        for (id, reason) in unfit {
            self.mark_unschedulable(ctx, others.peers, now, id, &reason);
        }
    }

    /// Records that no live peer can run the task, and why, once per reason: it stays unplaced and
    /// is placed at a later scan when a peer that can run it is known.
    fn mark_unschedulable(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        id: TaskId,
        reason: &str,
    ) {
        let wall = ctx.wall(now);
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        let record = &mut entry.record;
        let same = record.state == TaskState::Unschedulable
            && record.history.last().is_some_and(|t| t.note == reason);
        if same || record.state.is_final() {
            return;
        }
        record.transition(TaskState::Unschedulable, None, wall, reason);
        self.changed(ctx, peers, now, id);
    }

    /// Gives the tasks to `peer` under new leases at the next epoch, and replicates the change.
    fn place_on(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        peer: PeerKey,
        ids: Vec<TaskId>,
    ) {
        let wall = ctx.wall(now);
        let mut leases = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(entry) = self.records.get_mut(id) else {
                continue;
            };
            let record = &mut entry.record;
            let rank = record.grant_rank(&entry.spec.home, &ctx.me);
            record.epoch = crate::lease::next_major(record.epoch, rank);
            record.holder = Some(peer);
            let note = if record.state == TaskState::Unschedulable {
                "placed on a peer that can run it"
            } else {
                "placed"
            };
            record.transition(TaskState::Waiting, Some(peer), wall, note);
            leases.push(Lease {
                task: *id,
                epoch: record.epoch,
                holder: peer,
                granted_by: ctx.me,
                ttl_ms: ctx.config.lease_ttl_ms,
            });
            self.changed(ctx, peers, now, *id);
        }
        ctx.counters.placements += leases.len() as u64;
        if peer == ctx.me {
            for lease in leases {
                if let Some(task) = self.task_of(&lease.task) {
                    let epoch = lease.epoch;
                    self.handoffs.push(Handoff::Hold {
                        task: Box::new(task),
                        epoch,
                    });
                }
            }
            return;
        }
        for chunk in leases.chunks(ctx.config.place_batch_max.max(1)) {
            let tasks: Vec<Envelope> = chunk
                .iter()
                .filter_map(|l| self.records.get(&l.task).map(|e| e.record.envelope.clone()))
                .collect();
            let grant = ctx.sign_grant(chunk.to_vec());
            ctx.send(peer, Message::Place { tasks, grant });
        }
    }

    /// The verified task of a record this peer keeps.
    pub(in crate::scheduler) fn task_of(&self, id: &TaskId) -> Option<Task> {
        self.records.get(id).map(|e| Task {
            id: *id,
            spec: e.spec.clone(),
            signed: e.record.envelope.spec.clone(),
            home: e.record.envelope.home.clone(),
            inputs: e.record.envelope.inputs.clone(),
        })
    }

    /// A placement could not be delivered: take the tasks back (if nothing moved them since)
    /// and place them again.
    pub(in crate::scheduler) fn on_placement_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
        to: PeerKey,
        leases: &[Lease],
    ) {
        // Only a placement that still stands, by a peer that still leads the task: since it
        // was sent, the task may have been placed again (here, or by another primary whose
        // record this peer took).
        let ids: Vec<TaskId> = leases
            .iter()
            .filter(|lease| {
                self.records.get(&lease.task).is_some_and(|e| {
                    e.record.holder == Some(to)
                        && e.record.epoch == lease.epoch
                        && !e.record.state.is_final()
                        && ctx.is_primary(others.peers, e.record.home(), now)
                })
            })
            .map(|lease| lease.task)
            .collect();
        for id in &ids {
            if let Some(entry) = self.records.get_mut(id) {
                entry.record.holder = None;
            }
        }
        self.place(ctx, others, now, rng, ids);
    }
}

/// Everyone who could take work, with this peer first.
fn candidates(ctx: &Ctx<'_>, others: &Others<'_>) -> Vec<Candidate> {
    let mine = Candidate {
        peer: ctx.me,
        load: others.holding.queued() as u32 + others.holding.running(),
        slots: ctx.config.slots,
    };
    // A draining peer (this one, or another by its report) takes no new work; nor does one a
    // message to which failed lately.
    std::iter::once(mine)
        .filter(|_| !others.peers.draining())
        .chain(
            others
                .peers
                .iter()
                .filter(|(peer, view)| !view.report.draining && !others.peers.is_unreachable(peer))
                .map(|(peer, view)| Candidate {
                    peer: *peer,
                    load: view.estimated_load,
                    slots: view.report.slots,
                }),
        )
        .collect()
}

/// Why no live peer (of `candidates`) can run `spec`: its kind, then its labels and amounts.
fn why_unschedulable(
    ctx: &Ctx<'_>,
    peers: &Peers,
    candidates: &[Candidate],
    spec: &TaskSpec,
) -> String {
    let of_kind: Vec<&Capabilities> = candidates
        .iter()
        .filter_map(|c| ctx.capabilities_of(peers, &c.peer))
        .filter(|caps| caps.can_run_kind(&spec.kind))
        .collect();
    if of_kind.is_empty() {
        return match &spec.kind {
            TaskKind::Process(_) => {
                "needs a peer that runs processes (--allow-exec); no live peer does".into()
            }
            TaskKind::Handler { name, .. } => format!("needs handler {name}; no live peer has it"),
        };
    }
    crate::resources::why_unfit(&spec.needs, of_kind.iter().map(|c| &c.offer))
        .unwrap_or_else(|| "no live peer can run it".into())
}
