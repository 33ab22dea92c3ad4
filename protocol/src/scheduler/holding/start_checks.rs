//! Start checks: the round trips that let a holder start a queued task.
//!
//! A holder cut off from a majority of a task's home set must not start it: the majority side
//! re-claims it after a lease TTL and runs it again. Having heard the home set lately is not
//! enough: on the minority side of a fresh cut, a holder goes on hearing "lately" for a while,
//! and each slot that frees meanwhile starts one more task the other side will run again. So a
//! holder starts a task only if a majority of its home set (this peer counted if it is a member)
//! answered a check sent less than [`Config::start_check_ms`] ago: a [`Message::Ping`] answered
//! by a [`Message::Pong`] of the same round. An answer that arrived before a cut was to a check
//! sent before it, so on the cut-off side starts stop within that time of the cut: each slot runs
//! twice at most the task the cut caught running, and one it started within that time after.
//!
//! Checks go only while tasks wait, one round at a time to each member the next queued tasks
//! need, when its last answer is half that time old (so under load the next start need not
//! wait), and again after `retry_after` ms if unanswered. Their cost does not grow with the
//! number of tasks: at most two rounds per member per `start_check_ms`.
//!
//! Owns the rounds and the answers; never decides which task starts (that is the holder's queue)
//! and never sends a message itself: [`StartChecks::ask`] returns who to ask.
//!
//! [`Config::start_check_ms`]: crate::scheduler::Config::start_check_ms
//! [`Message::Ping`]: crate::message::Message::Ping
//! [`Message::Pong`]: crate::message::Message::Pong

use std::collections::BTreeMap;

use crate::Millis;
use crate::home::quorum;
use crate::identity::PeerKey;

/// The holder's start checks: the last round sent to each member, and when each member last
/// answered one (by when that round was sent).
#[derive(Clone, Debug)]
pub(super) struct StartChecks {
    /// The number of the next round.
    next: u64,
    /// The last round sent to each peer, when it went, and whether it was answered.
    asked: BTreeMap<PeerKey, Asked>,
    /// For each peer, when the latest round it answered was sent.
    fresh_at: BTreeMap<PeerKey, Millis>,
}

/// The last round sent to one peer.
#[derive(Clone, Copy, Debug)]
struct Asked {
    round: u64,
    at: Millis,
    answered: bool,
}

impl StartChecks {
    pub(super) fn new() -> Self {
        Self {
            next: 1,
            asked: BTreeMap::new(),
            fresh_at: BTreeMap::new(),
        }
    }

    /// Whether a majority of `home` (`me` counted if a member) answered a round sent at
    /// `since` or later.
    pub(super) fn passed(&self, me: PeerKey, home: &[PeerKey], since: Millis) -> bool {
        let answered = home
            .iter()
            .filter(|m| **m == me || self.fresh_at.get(m).is_some_and(|at| *at >= since))
            .count();
        answered >= quorum(home.len())
    }

    /// The members of `wanted` to send a round now, with its number (one number for all of them):
    /// those whose last answer is to a round sent before `stale_before`, and that have no round
    /// unanswered (or one sent `retry_after` ms ago or more).
    pub(super) fn ask(
        &mut self,
        wanted: impl IntoIterator<Item = PeerKey>,
        now: Millis,
        stale_before: Millis,
        retry_after: Millis,
    ) -> Vec<(PeerKey, u64)> {
        let round = self.next;
        let mut to = Vec::new();
        for peer in wanted {
            if self
                .fresh_at
                .get(&peer)
                .is_some_and(|at| *at >= stale_before)
            {
                continue;
            }
            let waiting = self
                .asked
                .get(&peer)
                .is_some_and(|a| !a.answered && now.saturating_sub(a.at) < retry_after);
            if waiting {
                continue;
            }
            let asked = Asked {
                round,
                at: now,
                answered: false,
            };
            self.asked.insert(peer, asked);
            to.push((peer, round));
        }
        if !to.is_empty() {
            self.next += 1;
        }
        to
    }

    /// `from` answered `round`. Only the last round sent to it counts (an earlier one, overtaken
    /// by a retry, is ignored); an answer to a round never sent it is refused (false).
    pub(super) fn on_answer(&mut self, from: PeerKey, round: u64) -> bool {
        let Some(asked) = self.asked.get_mut(&from) else {
            return false;
        };
        if round > asked.round {
            return false;
        }
        if round == asked.round && !asked.answered {
            asked.answered = true;
            let fresh = self.fresh_at.entry(from).or_default();
            *fresh = (*fresh).max(asked.at);
        }
        true
    }

    /// Forgets a peer taken for dead or gone (its next answer must be to a new round).
    pub(super) fn forget(&mut self, peer: &PeerKey) {
        self.fresh_at.remove(peer);
        self.asked.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PeerKey {
        PeerKey::from_bytes([n; 32])
    }

    #[test]
    fn a_start_needs_a_majority_answer_to_a_recent_round() {
        let (me, a, b) = (key(1), key(2), key(3));
        let home = [me, a, b];
        let mut checks = StartChecks::new();
        assert!(!checks.passed(me, &home, 0));
        assert_eq!(checks.ask([a, b], 100, 75, 200), vec![(a, 1), (b, 1)]);
        assert!(checks.on_answer(a, 1));
        // Sent at 100: good for a start that needs a round sent at 100 or later, not after.
        assert!(checks.passed(me, &home, 100));
        assert!(!checks.passed(me, &home, 101));
        // Without this peer in the set, two answers are needed.
        assert!(!checks.passed(me, &[a, b, key(4)], 100));
        assert!(checks.on_answer(b, 1));
        assert!(checks.passed(me, &[a, b, key(4)], 100));
    }

    #[test]
    fn a_member_is_asked_again_when_its_answer_gets_old_or_a_round_goes_unanswered() {
        let (a, b) = (key(2), key(3));
        let mut checks = StartChecks::new();
        assert_eq!(checks.ask([a, b], 0, 0, 200), vec![(a, 1), (b, 1)]);
        assert!(checks.on_answer(a, 1));
        // a's answer (to a round sent at 0) is fresh enough; b's round is still out.
        assert!(checks.ask([a, b], 20, 0, 200).is_empty());
        // a's answer is getting old: a new round; b's goes again once the retry is due.
        assert_eq!(checks.ask([a, b], 30, 10, 200), vec![(a, 2)]);
        assert_eq!(checks.ask([a, b], 200, 10, 200), vec![(b, 3)]);
        // A late answer to b's first round is ignored, not refused.
        assert!(checks.on_answer(b, 1));
        assert!(!checks.passed(key(9), &[b], 0));
    }

    #[test]
    fn an_answer_to_a_round_never_sent_is_refused() {
        let (a, b) = (key(2), key(3));
        let mut checks = StartChecks::new();
        assert!(!checks.on_answer(a, 1));
        checks.ask([a], 0, 0, 200);
        assert!(!checks.on_answer(b, 1));
        assert!(!checks.on_answer(a, 7));
        assert!(checks.on_answer(a, 1));
    }
}
