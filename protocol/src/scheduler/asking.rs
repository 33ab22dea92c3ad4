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

use crate::Millis;
use crate::identity::PeerKey;
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
