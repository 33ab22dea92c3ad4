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
//! wait), and again if unanswered after a retry interval. Their cost does not grow with the number
//! of tasks: at most two rounds per member per `start_check_ms`.
//!
//! On a network slower than that (a round trip longer than half of `start_check_ms`), no answer
//! could ever be fresh enough: a member's answers then count for twice its last round trip, so
//! starts stop within that time of a cut instead, and retries wait as long. An answer to an
//! earlier round than the last sent still counts, by when its own round went.
//!
//! Owns the rounds and the answers; never decides which task starts (that is the holder's queue)
//! and never sends a message itself: [`StartChecks::ask`] returns who to ask.
//!
//! [`Config::start_check_ms`]: crate::scheduler::Config::start_check_ms
//! [`Message::Ping`]: crate::message::Message::Ping
//! [`Message::Pong`]: crate::message::Message::Pong

use std::collections::{BTreeMap, VecDeque};

use crate::Millis;
use crate::home::quorum;
use crate::identity::PeerKey;

/// The most unanswered rounds remembered per peer (an answer to an older one counts for nothing).
const UNANSWERED_KEPT: usize = 8;

/// The holder's start checks: the rounds sent to each member and not answered yet, and what the
/// latest answers say.
#[derive(Clone, Debug)]
pub(super) struct StartChecks {
    /// The number of the next round.
    next: u64,
    /// Each peer's rounds.
    members: BTreeMap<PeerKey, Member>,
}

/// One peer's rounds.
#[derive(Clone, Debug, Default)]
struct Member {
    /// The last round sent to it.
    last_round: u64,
    /// Rounds sent and not answered yet, with when each went (oldest first).
    unanswered: VecDeque<(u64, Millis)>,
    /// When the latest round it answered went.
    fresh_at: Option<Millis>,
    /// Its last answer's round trip.
    round_trip: Millis,
}

impl Member {
    /// How long an answer of this peer counts: `base`, or twice its round trip if longer.
    fn counts_for(&self, base: Millis) -> Millis {
        base.max(2 * self.round_trip)
    }

    /// Whether its latest answer counts at `now`.
    fn fresh(&self, now: Millis, base: Millis) -> bool {
        self.fresh_at
            .is_some_and(|at| at + self.counts_for(base) >= now)
    }
}

impl StartChecks {
    pub(super) fn new() -> Self {
        Self {
            next: 1,
            members: BTreeMap::new(),
        }
    }

    /// Whether a majority of `home` (`me` counted if a member) answered a round recent enough at
    /// `now`: sent less than `base` ms ago (or twice the member's round trip, if longer).
    pub(super) fn passed(&self, me: PeerKey, home: &[PeerKey], now: Millis, base: Millis) -> bool {
        let answered = home
            .iter()
            .filter(|m| **m == me || self.members.get(m).is_some_and(|s| s.fresh(now, base)))
            .count();
        answered >= quorum(home.len())
    }

    /// The members of `wanted` to send a round now, with its number (one number for all of
    /// them): those whose latest answer has less than half of its time left to count (see
    /// [`StartChecks::passed`]), and whose last round went `retry_after` ms ago or more (or
    /// twice their round trip, if longer) or was answered.
    pub(super) fn ask(
        &mut self,
        wanted: impl IntoIterator<Item = PeerKey>,
        now: Millis,
        base: Millis,
        retry_after: Millis,
    ) -> Vec<(PeerKey, u64)> {
        let round = self.next;
        let mut to = Vec::new();
        for peer in wanted {
            let member = self.members.entry(peer).or_default();
            if member.fresh(now + member.counts_for(base) / 2, base) {
                continue;
            }
            let waiting = member.unanswered.back().is_some_and(|(_, at)| {
                now.saturating_sub(*at) < retry_after.max(2 * member.round_trip)
            });
            if waiting {
                continue;
            }
            if member.unanswered.len() >= UNANSWERED_KEPT {
                member.unanswered.pop_front();
            }
            member.unanswered.push_back((round, now));
            member.last_round = round;
            to.push((peer, round));
        }
        if !to.is_empty() {
            self.next += 1;
        }
        to
    }

    /// `from` answered `round` at `now`: it counts by when that round went. An answer to a round
    /// never sent it is refused (false); one to a round answered already, or forgotten, counts
    /// for nothing.
    pub(super) fn on_answer(&mut self, from: PeerKey, round: u64, now: Millis) -> bool {
        let Some(member) = self.members.get_mut(&from) else {
            return false;
        };
        if round == 0 || round > member.last_round {
            return false;
        }
        let Some(&(_, at)) = member.unanswered.iter().find(|(r, _)| *r == round) else {
            return true;
        };
        member.unanswered.retain(|(r, _)| *r > round);
        member.fresh_at = Some(member.fresh_at.map_or(at, |f| f.max(at)));
        member.round_trip = now.saturating_sub(at);
        true
    }

    /// Forgets a peer taken for dead or gone (its next answer must be to a new round).
    pub(super) fn forget(&mut self, peer: &PeerKey) {
        self.members.remove(peer);
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
        assert!(!checks.passed(me, &home, 100, 50));
        assert_eq!(checks.ask([a, b], 100, 50, 200), vec![(a, 1), (b, 1)]);
        assert!(checks.on_answer(a, 1, 104));
        // Sent at 100: it counts until 150.
        assert!(checks.passed(me, &home, 150, 50));
        assert!(!checks.passed(me, &home, 151, 50));
        // Without this peer in the set, two answers are needed.
        assert!(!checks.passed(me, &[a, b, key(4)], 110, 50));
        assert!(checks.on_answer(b, 1, 106));
        assert!(checks.passed(me, &[a, b, key(4)], 110, 50));
    }

    #[test]
    fn a_member_is_asked_again_when_its_answer_gets_old_or_a_round_goes_unanswered() {
        let (a, b) = (key(2), key(3));
        let mut checks = StartChecks::new();
        assert_eq!(checks.ask([a, b], 0, 50, 200), vec![(a, 1), (b, 1)]);
        assert!(checks.on_answer(a, 1, 2));
        // a's answer (to a round sent at 0) has more than half its time left; b's round is out.
        assert!(checks.ask([a, b], 20, 50, 200).is_empty());
        // a's answer is getting old: a new round; b's goes again once the retry is due.
        assert_eq!(checks.ask([a, b], 30, 50, 200), vec![(a, 2)]);
        assert_eq!(checks.ask([a, b], 200, 50, 200), vec![(b, 3)]);
        // A late answer to b's first round counts, by when that round went.
        assert!(checks.on_answer(b, 1, 210));
        assert!(checks.passed(key(9), &[b], 210, 50));
    }

    #[test]
    fn on_a_slow_network_answers_count_for_twice_the_round_trip() {
        let (me, a) = (key(1), key(2));
        let mut checks = StartChecks::new();
        checks.ask([a], 0, 50, 200);
        // A round trip of 300 ms: the answer counts until 600 ms after its round went.
        assert!(checks.on_answer(a, 1, 300));
        assert!(checks.passed(me, &[a], 600, 50));
        assert!(!checks.passed(me, &[a], 601, 50));
        // The next round goes once half of that is left, and is not retried before 600 ms.
        assert!(checks.ask([a], 300, 50, 200).is_empty());
        assert_eq!(checks.ask([a], 301, 50, 200), vec![(a, 2)]);
        assert!(checks.ask([a], 900, 50, 200).is_empty());
        assert_eq!(checks.ask([a], 901, 50, 200), vec![(a, 3)]);
    }

    #[test]
    fn an_answer_to_a_round_never_sent_is_refused() {
        let (a, b) = (key(2), key(3));
        let mut checks = StartChecks::new();
        assert!(!checks.on_answer(a, 1, 0));
        checks.ask([a], 0, 50, 200);
        assert!(!checks.on_answer(b, 1, 1));
        assert!(!checks.on_answer(a, 7, 1));
        assert!(checks.on_answer(a, 1, 1));
        assert!(checks.on_answer(a, 1, 2), "a duplicate is not refused");
    }
}
