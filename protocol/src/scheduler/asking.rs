//! Questions this peer asks others about tasks whose records it does not keep: for a client (a
//! view of any task; a wait for its end, asked again until it ends; a cancel, sent on to the home
//! set the answer names) and for itself (the end of a dependency a task it leads waits for). One
//! table for all of them, so the simulator checks each.
//!
//! Owns the rule for answers: a question has an unguessable number (drawn from the RNG), and only
//! a peer that was asked may answer it, once. An answer from anyone else, or a second one, is
//! refused; whether the record in it holds is the caller's check. Never sends anything itself:
//! [`Queries::ask`] says whom to ask.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;

use super::peers::Peers;
use super::{Action, Ctx, Scheduler};
use crate::Millis;
use crate::identity::PeerKey;
use crate::message::Message;
use crate::seal::SealedRecord;
use crate::task::TaskId;
use crate::wire::WireError;

/// Who a question is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A client of this peer: the answer goes out as [`super::Action::Answer`].
    Client,
    /// This peer, as the primary of a task that waits for this one.
    Dependency,
    /// A client waiting for the task's end (see [`super::Scheduler::watch`]): the answer goes out
    /// under `ticket` once a record says it ended, or says nobody knows it.
    Watch {
        /// The number the client waits on.
        ticket: u64,
    },
    /// A client's cancel of a task this peer does not keep: sent on to the home set the first
    /// record names, on behalf of `by`.
    Cancel {
        /// The client that asked.
        by: Option<String>,
    },
}

/// A question out.
#[derive(Clone, Debug)]
struct Question {
    task: TaskId,
    purpose: Purpose,
    /// The peers asked that have not answered yet.
    waiting: BTreeSet<PeerKey>,
    asked_at: Millis,
}

/// What an accepted answer was to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Answered {
    /// The task asked about.
    pub(super) task: TaskId,
    /// Who asked.
    pub(super) purpose: Purpose,
    /// Whether every peer asked has now answered.
    pub(super) last: bool,
}

/// The questions out, by number.
#[derive(Clone, Debug, Default)]
pub(super) struct Queries {
    out: BTreeMap<u64, Question>,
}

impl Queries {
    /// Opens a question about `task` to `peers`; returns its number. The number is random, so a
    /// peer that was not asked cannot answer in advance.
    pub(super) fn ask(
        &mut self,
        rng: &mut dyn RngCore,
        now: Millis,
        task: TaskId,
        purpose: Purpose,
        peers: impl IntoIterator<Item = PeerKey>,
    ) -> u64 {
        let mut query = rng.next_u64();
        while self.out.contains_key(&query) {
            query = rng.next_u64();
        }
        let question = Question {
            task,
            purpose,
            waiting: peers.into_iter().collect(),
            asked_at: now,
        };
        self.out.insert(query, question);
        query
    }

    /// Takes `from`'s answer to `query`: refused unless `from` was asked and has not answered.
    pub(super) fn answered(&mut self, query: u64, from: PeerKey) -> Result<Answered, WireError> {
        let question = self.out.get_mut(&query).ok_or(WireError::Unauthorized(
            "an answer to a question nobody asked",
        ))?;
        if !question.waiting.remove(&from) {
            return Err(WireError::Unauthorized(
                "an answer from a peer that was not asked, or answered already",
            ));
        }
        Ok(Answered {
            task: question.task,
            purpose: question.purpose.clone(),
            last: question.waiting.is_empty(),
        })
    }

    /// Closes a question.
    pub(super) fn forget(&mut self, query: u64) {
        self.out.remove(&query);
    }

    /// A number no question uses, for a client to wait on.
    pub(super) fn ticket(&mut self, rng: &mut dyn RngCore) -> u64 {
        let mut ticket = rng.next_u64();
        while self.out.contains_key(&ticket) {
            ticket = rng.next_u64();
        }
        ticket
    }

    /// Closes the questions asked `timeout` ago or longer; returns them with who asked.
    pub(super) fn expire(&mut self, now: Millis, timeout: Millis) -> Vec<(u64, Purpose)> {
        let expired: Vec<(u64, Purpose)> = self
            .out
            .iter()
            .filter(|(_, q)| now.saturating_sub(q.asked_at) >= timeout)
            .map(|(id, q)| (*id, q.purpose.clone()))
            .collect();
        for (query, _) in &expired {
            self.out.remove(query);
        }
        expired
    }
}

/// A client's wait for a task this peer does not keep.
#[derive(Clone, Debug)]
pub(super) struct Watch {
    /// The task.
    pub(super) task: TaskId,
    /// Its home set, once an answer named it (asked again only there).
    pub(super) home: Option<Vec<PeerKey>>,
    /// When to ask again, if no question is out.
    pub(super) next_at: Millis,
    /// The question out for it, if any.
    pub(super) question: Option<u64>,
}

/// The asker's own state: the questions out, the clients' waits (for tasks this peer does not
/// keep, by ticket; for tasks it keeps, by task) and the waits answered at the next flush. Its
/// fields change only in this module.
#[derive(Clone, Debug, Default)]
pub(super) struct Asking {
    queries: Queries,
    watches: BTreeMap<u64, Watch>,
    local_watches: BTreeMap<TaskId, Vec<u64>>,
    /// The task of each local wait, so a wait that is given up costs a lookup, not a walk of
    /// every wait (clients wait for tens of thousands of tasks at once).
    local_tasks: BTreeMap<u64, TaskId>,
    watch_ends: Vec<(u64, TaskId)>,
}

impl Asking {
    /// Opens a question about a dependency (for this peer as its dependent's primary) to
    /// `peers`; returns its number.
    pub(super) fn ask_for_dependency(
        &mut self,
        rng: &mut dyn RngCore,
        now: Millis,
        dependency: TaskId,
        peers: impl IntoIterator<Item = PeerKey>,
    ) -> u64 {
        self.queries
            .ask(rng, now, dependency, Purpose::Dependency, peers)
    }

    /// The waits answered since the last flush, with their tasks.
    pub(super) fn take_ended(&mut self) -> Vec<(u64, TaskId)> {
        std::mem::take(&mut self.watch_ends)
    }

    /// A number no question uses, for a client to wait on.
    pub(super) fn ticket(&mut self, rng: &mut dyn RngCore) -> u64 {
        self.queries.ticket(rng)
    }

    /// Takes `from`'s answer to `query`: refused unless `from` was asked and has not answered.
    pub(super) fn answered(&mut self, query: u64, from: PeerKey) -> Result<Answered, WireError> {
        self.queries.answered(query, from)
    }

    /// Closes a question.
    pub(super) fn forget(&mut self, query: u64) {
        self.queries.forget(query);
    }

    /// Waits under `ticket` for the end of a task this peer keeps (answered when it ends here).
    pub(super) fn watch_here(&mut self, task: TaskId, ticket: u64) {
        self.local_watches.entry(task).or_default().push(ticket);
        self.local_tasks.insert(ticket, task);
    }

    /// Waits under `ticket` for the end of a task this peer does not keep, asking at once.
    pub(super) fn watch_elsewhere(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        task: TaskId,
        ticket: u64,
    ) {
        let watch = Watch {
            task,
            home: None,
            next_at: now,
            question: None,
        };
        self.watches.insert(ticket, watch);
        self.ask_watched(ctx, peers, now, rng);
    }

    /// Stops a wait the client gave up on.
    pub(super) fn unwatch(&mut self, ticket: u64) {
        if let Some(watch) = self.watches.remove(&ticket)
            && let Some(query) = watch.question
        {
            self.queries.forget(query);
        }
        let Some(task) = self.local_tasks.remove(&ticket) else {
            return;
        };
        if let Some(tickets) = self.local_watches.get_mut(&task) {
            tickets.retain(|t| *t != ticket);
            if tickets.is_empty() {
                self.local_watches.remove(&task);
            }
        }
    }

    /// Asks again about the watched tasks that are due: their home sets once an answer named
    /// them, every live peer before. A wait with nobody left to ask is answered "nobody knows".
    pub(super) fn ask_watched(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
    ) {
        let due: Vec<u64> = self
            .watches
            .iter()
            .filter(|(_, w)| w.question.is_none() && w.next_at <= now)
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in due {
            let Some(watch) = self.watches.get(&ticket) else {
                continue;
            };
            let task = watch.task;
            let asked: Vec<PeerKey> = match &watch.home {
                Some(home) => home.iter().copied().filter(|p| *p != ctx.me).collect(),
                None => peers.keys(),
            };
            if asked.is_empty() {
                self.watches.remove(&ticket);
                answer(ctx, ticket, None);
                continue;
            }
            let purpose = Purpose::Watch { ticket };
            let query = self
                .queries
                .ask(rng, now, task, purpose, asked.iter().copied());
            for peer in asked {
                ctx.send(peer, Message::Query { query, task });
            }
            if let Some(watch) = self.watches.get_mut(&ticket) {
                watch.question = Some(query);
            }
        }
    }

    /// The local watches of a task that just ended here are answered once its record is sealed
    /// (at the flush).
    pub(super) fn end_local_watches(&mut self, task: TaskId) {
        if let Some(tickets) = self.local_watches.remove(&task) {
            for ticket in &tickets {
                self.local_tasks.remove(ticket);
            }
            self.watch_ends
                .extend(tickets.into_iter().map(|ticket| (ticket, task)));
        }
    }

    /// Asks every live member about `task`, for `purpose`; returns the question's number. With no
    /// member to ask, answers `None` at once.
    pub(super) fn ask_members(
        &mut self,
        ctx: &mut Ctx<'_>,
        peers: &Peers,
        now: Millis,
        rng: &mut dyn RngCore,
        task: TaskId,
        purpose: Purpose,
    ) -> u64 {
        let asked: Vec<PeerKey> = peers.keys();
        let query = self
            .queries
            .ask(rng, now, task, purpose, asked.iter().copied());
        if asked.is_empty() {
            self.queries.forget(query);
            answer(ctx, query, None);
            return query;
        }
        for peer in &asked {
            ctx.send(*peer, Message::Query { query, task });
        }
        query
    }

    /// A client's view or cancel is answered by the first record that holds, or by the last
    /// peer asked.
    pub(super) fn on_client_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        query: u64,
        record: Option<Box<SealedRecord>>,
        last: bool,
    ) {
        if record.is_some() || last {
            self.queries.forget(query);
            answer(ctx, query, record);
        }
    }

    /// An answer about a watched task: the end, a sign of life, or (from everyone) nobody knows.
    pub(super) fn on_watch_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Millis,
        ticket: u64,
        query: u64,
        record: Option<Box<SealedRecord>>,
        last: bool,
    ) {
        let Some(watch) = self.watches.get_mut(&ticket) else {
            return self.queries.forget(query);
        };
        match record {
            Some(sealed) if sealed.record.state.is_final() => {
                self.queries.forget(query);
                self.watches.remove(&ticket);
                answer(ctx, ticket, Some(sealed));
            }
            Some(sealed) => {
                // Still going: ask its home set again later.
                self.queries.forget(query);
                watch.home = Some(sealed.record.home().to_vec());
                watch.question = None;
                watch.next_at = now + ctx.config.watch_every_ms;
            }
            None if last && watch.home.is_none() => {
                self.queries.forget(query);
                self.watches.remove(&ticket);
                answer(ctx, ticket, None);
            }
            None if last => {
                self.queries.forget(query);
                watch.question = None;
                watch.next_at = now + ctx.config.watch_every_ms;
            }
            None => {}
        }
    }

    /// Closes the questions that have had their answers' time: a client's view or cancel gets
    /// "nobody knows"; a watch asks again at its next turn.
    pub(super) fn expire(&mut self, ctx: &mut Ctx<'_>, now: Millis) {
        for (query, purpose) in self.queries.expire(now, ctx.config.query_timeout_ms) {
            match purpose {
                Purpose::Client | Purpose::Cancel { .. } => answer(ctx, query, None),
                Purpose::Watch { ticket } => {
                    if let Some(watch) = self.watches.get_mut(&ticket) {
                        watch.question = None;
                        watch.next_at = now;
                    }
                }
                Purpose::Dependency => {}
            }
        }
    }
}

/// Answers a client's question or wait `query` (the record, or `None`: nobody knows the task).
fn answer(ctx: &mut Ctx<'_>, query: u64, record: Option<Box<SealedRecord>>) {
    ctx.push(Action::Answer { query, record });
}

impl Scheduler {
    /// The asker's handler: its room, the peers' view (whom to ask), and the context.
    pub(super) fn asker(&mut self) -> (&mut Asking, &Peers, Ctx<'_>) {
        let (ctx, rooms) = self.split();
        (rooms.asking, rooms.peers, ctx)
    }

    /// Answers a client's question `query` at once from the record this peer keeps.
    fn answer_here(&mut self, query: u64, task: &TaskId) {
        self.seal_changed();
        let record = self.home.entry(task).and_then(|e| e.sealed()).map(Box::new);
        self.actions.push_back(Action::Answer { query, record });
    }

    /// Cancels a task on behalf of client `by` (the name of its API token, if any; recorded in
    /// the history), wherever it is kept: a task this peer does not keep is looked up first, and
    /// the cancel sent to the home set the answer names. Returns a number that an
    /// [`Action::Answer`] then carries, with the record if some peer keeps the task (so the cancel
    /// went out) and `None` if no live peer knows it.
    pub fn cancel(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        task: TaskId,
        by: Option<String>,
    ) -> u64 {
        self.boot(now);
        self.recall(now, &task);
        let ticket = if self.home.keeps(&task) {
            let ticket = self.asking.ticket(rng);
            self.cancel_at_home(now, task, by);
            self.answer_here(ticket, &task);
            ticket
        } else {
            let (asking, peers, mut ctx) = self.asker();
            asking.ask_members(&mut ctx, peers, now, rng, task, Purpose::Cancel { by })
        };
        self.finish_input(now, rng);
        ticket
    }

    /// Sends a cancel to every member of a task's home set (this peer applies it at once if it is
    /// one).
    pub(super) fn cancel_at_home(&mut self, now: Millis, task: TaskId, by: Option<String>) {
        let home = match self.home.entry(&task) {
            Some(entry) => entry.record.home().to_vec(),
            None => match self.home.learnt_home(&task).cloned() {
                Some(home) => home,
                None => return,
            },
        };
        for member in home {
            if member == self.me {
                self.on_cancel(now, task, self.me, by.as_deref());
            } else {
                let by = by.clone();
                self.send(member, Message::Cancel { task, by });
            }
        }
    }

    /// Waits for a task's end: returns a number that an [`Action::Answer`] carries once the task
    /// has ended (with its record), or as soon as no live peer knows it (with `None`). A task
    /// this peer keeps is answered when its record ends here; another is asked of the peers every
    /// [`super::Config::watch_every_ms`] (of its home set, once an answer named it) until it ends.
    pub fn watch(&mut self, now: Millis, rng: &mut dyn RngCore, task: TaskId) -> u64 {
        self.boot(now);
        self.recall(now, &task);
        let ticket = self.asking.ticket(rng);
        match self.home.entry(&task).map(|e| e.record.state.is_final()) {
            Some(true) => self.answer_here(ticket, &task),
            Some(false) => self.asking.watch_here(task, ticket),
            None => {
                let (asking, peers, mut ctx) = self.asker();
                asking.watch_elsewhere(&mut ctx, peers, now, rng, task, ticket);
            }
        }
        self.finish_input(now, rng);
        ticket
    }

    /// Stops a wait the client gave up on (its number from [`Scheduler::watch`]).
    pub fn unwatch(&mut self, ticket: u64) {
        self.asking.unwatch(ticket);
    }

    /// Looks a task up: answered at once (with [`Action::Answer`]) if this peer keeps its record,
    /// otherwise by asking every live peer (only they may answer, and the first record that holds
    /// is the answer). Returns the query's number.
    pub fn query(&mut self, now: Millis, rng: &mut dyn RngCore, task: TaskId) -> u64 {
        self.boot(now);
        self.recall(now, &task);
        if self.home.keeps(&task) {
            let query = self.asking.ticket(rng);
            self.answer_here(query, &task);
            return query;
        }
        let (asking, peers, mut ctx) = self.asker();
        let query = asking.ask_members(&mut ctx, peers, now, rng, task, Purpose::Client);
        self.finish_input(now, rng);
        query
    }

    /// `from`'s answer to question `query` (`None` also when it could not be asked). The asker
    /// takes it only from a peer it asked; the record in it must be about the task asked, and
    /// hold (its spec and seal); then it goes to whoever asked.
    pub(super) fn on_answer(
        &mut self,
        now: Millis,
        from: PeerKey,
        query: u64,
        record: Option<Box<SealedRecord>>,
    ) {
        let answered = match self.asking.answered(query, from) {
            Ok(answered) => answered,
            Err(error) => return self.reject("answer", &error),
        };
        let record = match record {
            Some(sealed) if sealed.record.id() != answered.task => {
                let error = WireError::Unauthorized("an answer about another task");
                self.reject("answer", &error);
                None
            }
            Some(sealed) => match self.check_sealed(&sealed) {
                Ok(spec) => Some((sealed, spec)),
                Err(error) => {
                    self.reject("answer", &error);
                    None
                }
            },
            None => None,
        };
        let last = answered.last;
        match answered.purpose {
            Purpose::Dependency => {
                if let Some((sealed, spec)) = &record {
                    self.home.on_dependency_answer(&sealed.record, spec);
                }
                if record.is_some() || last {
                    self.asking.forget(query);
                }
            }
            Purpose::Client => {
                let (asking, _, mut ctx) = self.asker();
                asking.on_client_answer(&mut ctx, query, record.map(|(s, _)| s), last);
            }
            Purpose::Cancel { by } => {
                if let Some((sealed, _)) = &record {
                    self.home.learn_home(answered.task, sealed.record.home());
                    self.cancel_at_home(now, answered.task, by);
                }
                let (asking, _, mut ctx) = self.asker();
                asking.on_client_answer(&mut ctx, query, record.map(|(s, _)| s), last);
            }
            Purpose::Watch { ticket } => {
                let (asking, _, mut ctx) = self.asker();
                let record = record.map(|(s, _)| s);
                asking.on_watch_answer(&mut ctx, now, ticket, query, record, last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn only_the_peers_asked_may_answer_and_each_once() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (a, b, c) = (
            PeerKey::from_bytes([1; 32]),
            PeerKey::from_bytes([2; 32]),
            PeerKey::from_bytes([3; 32]),
        );
        let task = TaskId::from_bytes([9; 32]);
        let mut queries = Queries::default();
        let q = queries.ask(&mut rng, 0, task, Purpose::Client, [a, b]);
        assert!(queries.answered(q, c).is_err(), "not asked");
        assert!(
            queries.answered(q.wrapping_add(1), a).is_err(),
            "no such question"
        );
        let first = queries.answered(q, a).unwrap();
        assert_eq!((first.task, first.last), (task, false));
        assert!(queries.answered(q, a).is_err(), "twice");
        assert!(queries.answered(q, b).unwrap().last);
        assert_eq!(queries.expire(2_000, 2_000), vec![(q, Purpose::Client)]);
        assert!(queries.answered(q, b).is_err(), "closed");
    }
}
