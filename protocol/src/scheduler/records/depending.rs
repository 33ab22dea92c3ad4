//! Dependencies, as the primary of a dependent task sees them: the task is placed only once every
//! task in its spec's `after` has ended, with their results as its inputs; it fails, saying which
//! dependency failed or was cancelled, unless it runs anyway.
//!
//! A dependency's end is read from its record when this peer keeps it (a job's tasks share one
//! home set, so their primary keeps them all); otherwise it is asked for, of the dependency's home
//! set once an answer named it and of every live peer before that, at most once a second. Once the
//! inputs are in the record they travel with it: a task re-placed after a crash does not wait
//! again. Owns the gate and the lookups, never the placing.

use rand::RngCore;

use super::super::peers::Peers;
use super::super::{Ctx, TaskState};
use super::{Handoff, Home, Others};
use crate::Millis;
use crate::identity::PeerKey;
use crate::record::TaskRecord;
use crate::task::{Input, Outcome, TaskId, TaskSpec};

/// How long a dependency lookup waits before it is asked again.
const ASK_EVERY_MS: Millis = 1_000;

/// What this peer learnt of a dependency it does not keep.
#[derive(Clone, Debug, Default)]
pub(super) struct Lookup {
    /// When it was first asked for, and last.
    first_asked_at: Option<Millis>,
    asked_at: Option<Millis>,
    home: Option<Vec<PeerKey>>,
    /// Its name, once an answer told it (for people: "waiting for dependency build").
    name: Option<String>,
    ended: Option<Ended>,
}

/// A dependency that has ended.
#[derive(Clone, Debug)]
struct Ended {
    input: Input,
    /// `failed` or `was cancelled`, for one that did not complete.
    how: &'static str,
}

/// Where a dependent task stands.
enum Gate {
    Open(Vec<Input>),
    Shut,
    Failed(String),
}

impl Lookup {
    /// The task's home set, once an answer named it.
    pub(in crate::scheduler) fn home(&self) -> Option<&Vec<PeerKey>> {
        self.home.as_ref()
    }

    /// The task's name, once an answer told it.
    pub(in crate::scheduler) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether this peer learnt that the task ended.
    pub(in crate::scheduler) fn has_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Remembers the task's home set.
    pub(in crate::scheduler) fn learn_home(&mut self, home: &[PeerKey]) {
        self.home = Some(home.to_vec());
    }
}

impl Ended {
    /// A dependency no live peer knows: its dependents cannot run.
    fn unknown(id: TaskId) -> Self {
        let name = id.short();
        Ended {
            input: Input {
                task: id,
                name,
                completed: false,
                output: b"known to no live peer".to_vec(),
            },
            how: "is known to no live peer",
        }
    }

    fn of(record: &TaskRecord, spec: &TaskSpec) -> Option<Self> {
        let how = match record.state {
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "was cancelled",
            _ => return None,
        };
        let output = match &record.outcome {
            Some(Outcome::Exited { stdout, .. } | Outcome::TimedOut { stdout, .. }) => {
                stdout.clone()
            }
            Some(Outcome::Returned { output }) => output.clone(),
            Some(Outcome::Error { message } | Outcome::NotStarted { message }) => {
                message.clone().into_bytes()
            }
            None => Vec::new(),
        };
        let id = record.id();
        Some(Ended {
            input: Input {
                task: id,
                name: spec.name.clone().unwrap_or_else(|| id.short()),
                completed: record.state == TaskState::Completed,
                output,
            },
            how,
        })
    }
}

impl Home {
    /// Of `ids`, the tasks that may be placed now: those without dependencies, and those whose
    /// dependencies have all ended (their inputs are set in the record). Tasks whose dependency
    /// failed are failed here; the others wait for a later scan.
    pub(in crate::scheduler) fn gate_dependencies(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        ids: Vec<TaskId>,
    ) -> Vec<TaskId> {
        let mut open = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(entry) = self.records.get(&id) else {
                continue;
            };
            let spec = &entry.spec;
            if spec.after.is_empty() || entry.record.envelope.inputs.len() == spec.after.len() {
                open.push(id);
                continue;
            }
            let spec = spec.clone();
            match self.gate(ctx, peers, now, &spec) {
                Gate::Open(inputs) => {
                    if let Some(entry) = self.records.get_mut(&id) {
                        entry.record.envelope.inputs = inputs;
                    }
                    open.push(id);
                }
                Gate::Shut => {
                    for dep in &spec.after {
                        if self
                            .records
                            .get(dep)
                            .is_some_and(|e| !e.record.state.is_final())
                        {
                            self.waiting_on.entry(*dep).or_default().insert(id);
                        }
                    }
                }
                Gate::Failed(reason) => self.fail_for_dependency(ctx, peers, now, id, &reason),
            }
        }
        open
    }

    fn gate(&mut self, ctx: &mut Ctx<'_>, peers: &Peers, now: Millis, spec: &TaskSpec) -> Gate {
        let mut inputs = Vec::with_capacity(spec.after.len());
        let mut waiting = false;
        for dep in &spec.after {
            match self.ended(ctx, peers, now, dep) {
                None => waiting = true,
                Some(ended) if !ended.input.completed && !spec.run_anyway => {
                    return Gate::Failed(format!("dependency {} {}", ended.input.name, ended.how));
                }
                Some(ended) => inputs.push(ended.input),
            }
        }
        if waiting {
            Gate::Shut
        } else {
            Gate::Open(inputs)
        }
    }

    /// How `dep` ended, if this peer knows it did; asks for it otherwise. A dependency no live
    /// peer has answered for within [`super::Config::dependency_timeout_ms`] of the first
    /// question is taken as lost: the dependent fails, saying so, instead of waiting forever.
    fn ended(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        dep: &TaskId,
    ) -> Option<Ended> {
        self.recall(ctx, now, dep);
        if let Some(entry) = self.records.get(dep) {
            return Ended::of(&entry.record, &entry.spec);
        }
        let timeout = ctx.config.dependency_timeout_ms;
        let lookup = self.lookups.entry(*dep).or_default();
        if let Some(ended) = &lookup.ended {
            return Some(ended.clone());
        }
        let first = *lookup.first_asked_at.get_or_insert(now);
        if lookup.home.is_none() && now.saturating_sub(first) >= timeout {
            let ended = Ended::unknown(*dep);
            lookup.ended = Some(ended.clone());
            return Some(ended);
        }
        if lookup
            .asked_at
            .is_some_and(|at| now.saturating_sub(at) < ASK_EVERY_MS)
        {
            return None;
        }
        lookup.asked_at = Some(now);
        let targets: Vec<PeerKey> = match &lookup.home {
            Some(home) => home.iter().filter(|p| **p != ctx.me).copied().collect(),
            None => peers.keys(),
        };
        let task = *dep;
        self.handoffs.push(Handoff::Ask { task, targets });
        None
    }

    /// Gates again, at once, the tasks that waited for a dependency that ended during this input
    /// (instead of at the next scan, a heartbeat later).
    pub(in crate::scheduler) fn release_dependents(
        &mut self,
        ctx: &mut Ctx<'_>,
        others: &mut Others<'_>,
        now: Millis,
        rng: &mut dyn RngCore,
    ) {
        if self.ended_now.is_empty() {
            return;
        }
        let mut waiting: Vec<TaskId> = Vec::new();
        for dep in std::mem::take(&mut self.ended_now) {
            waiting.extend(self.waiting_on.remove(&dep).unwrap_or_default());
        }
        waiting.sort();
        waiting.dedup();
        waiting.retain(|id| {
            self.records.get(id).is_some_and(|e| {
                e.record.holder.is_none()
                    && !e.record.state.is_final()
                    && ctx.is_primary(others.peers, e.record.home(), now)
            })
        });
        self.place(ctx, others, now, rng, waiting);
    }

    /// An answer to a dependency lookup (its record checked by the caller): remember where the
    /// dependency lives and how it ended.
    pub(in crate::scheduler) fn on_dependency_answer(
        &mut self,
        record: &TaskRecord,
        spec: &TaskSpec,
    ) {
        let lookup = self.lookups.entry(record.id()).or_default();
        lookup.home = Some(record.home().to_vec());
        lookup.name.clone_from(&spec.name);
        if lookup.ended.is_none() {
            lookup.ended = Ended::of(record, spec);
        }
    }

    /// Ends a task whose dependency failed or was cancelled: failed, with the reason as its error.
    fn fail_for_dependency(
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
        if entry.record.state.is_final() {
            return;
        }
        entry.record.finished_wall_ms = Some(wall);
        entry.record.outcome = Some(Outcome::Error {
            message: reason.to_string(),
        });
        entry
            .record
            .transition(TaskState::Failed, None, wall, reason);
        self.changed(ctx, peers, now, id);
    }
}
