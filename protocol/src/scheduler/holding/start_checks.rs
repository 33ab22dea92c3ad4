//! Start checks: the round trips that let a holder start a queued task.
//!
//! A holder cut off from a majority of a task's home set must not start it: the majority side
//! re-claims it after a lease TTL and runs it again. Hearing the home set lately is not enough:
//! on the minority side of a fresh cut, a holder goes on hearing "lately" for a while, and each
//! slot that frees meanwhile starts one more task the other side will run again. So a slot that
//! frees is not used again until a majority of the next task's home set (this peer counted if it
//! is a member) has answered a check sent *after* the slot freed: a [`Message::Ping`] answered
//! by a [`Message::Pong`] of the same round. A cut that falls between the check and the start
//! is one the answer could not have seen, so each slot starts at most one task the other side
//! of a cut may run again: the one it started last, or runs.
//!
//! Checks are numbered in rounds. One round goes to every member the queued tasks need that has
//! not answered one recent enough, at most one unanswered round per member at a time (asked
//! again after `retry_after` ms), so under load a round covers every slot freed since the last.
//! A slot never used since this peer booted counts as freed before the first round.
//!
//! Owns the rounds and the answers; never decides which task starts (that is the holder's queue)
//! and never sends a message itself: [`StartChecks::ask`] returns who to ask.
//!
//! [`Message::Ping`]: crate::message::Message::Ping
//! [`Message::Pong`]: crate::message::Message::Pong

use std::collections::{BTreeMap, VecDeque};

use crate::Millis;
use crate::home::quorum;
use crate::identity::PeerKey;

/// The holder's start checks: the rounds it sent, who answered which, and when each free slot
/// freed.
#[derive(Clone, Debug)]
pub(super) struct StartChecks {
    /// The number of the next round.
    next: u64,
    /// For each slot freed by an attempt that ended (oldest first): the first round sent after.
    /// The other free slots were never used since this peer booted.
    freed: VecDeque<u64>,
    /// The latest round each peer answered.
    answered: BTreeMap<PeerKey, u64>,
    /// The latest round sent to each peer, and when.
    asked: BTreeMap<PeerKey, (u64, Millis)>,
}

impl StartChecks {
    pub(super) fn new() -> Self {
        Self {
            next: 1,
            freed: VecDeque::new(),
            answered: BTreeMap::new(),
            asked: BTreeMap::new(),
        }
    }

    /// The round the next start needs answered, with `free` slots free: the first round sent
    /// after the slot it takes freed (the slot freed longest ago; a never-used one first).
    pub(super) fn needed(&self, free: u32) -> u64 {
        let never_used = (free as usize).saturating_sub(self.freed.len());
        if never_used > 0 {
            return 1;
        }
        self.freed.front().copied().unwrap_or(self.next)
    }

    /// Whether a majority of `home` (`me` counted if a member) answered round `needed` or a
    /// later one.
    pub(super) fn passed(&self, me: PeerKey, home: &[PeerKey], needed: u64) -> bool {
        let answered = home
            .iter()
            .filter(|m| **m == me || self.answered.get(m).is_some_and(|r| *r >= needed))
            .count();
        answered >= quorum(home.len())
    }

    /// A task started in one of `free` free slots (see [`StartChecks::needed`]).
    pub(super) fn took_slot(&mut self, free: u32) {
        if self.freed.len() >= free as usize {
            self.freed.pop_front();
        }
    }

    /// An attempt ended, or was stopped: its slot is free from now.
    pub(super) fn freed_slot(&mut self) {
        self.freed.push_back(self.next);
    }

    /// The members of `wanted` to send round `needed` or a later one now: those that have not
    /// answered one, and have no such round unanswered (or not for `retry_after` ms). Returns
    /// them with the round to send; the round is numbered once for all of them.
    pub(super) fn ask(
        &mut self,
        wanted: impl IntoIterator<Item = PeerKey>,
        needed: u64,
        now: Millis,
        retry_after: Millis,
    ) -> Vec<(PeerKey, u64)> {
        let round = self.next;
        let mut to = Vec::new();
        for peer in wanted {
            if self.answered.get(&peer).is_some_and(|r| *r >= needed) {
                continue;
            }
            let waiting = self
                .asked
                .get(&peer)
                .is_some_and(|(r, at)| *r >= needed && now.saturating_sub(*at) < retry_after);
            if waiting {
                continue;
            }
            self.asked.insert(peer, (round, now));
            to.push((peer, round));
        }
        if !to.is_empty() {
            self.next += 1;
        }
        to
    }

    /// `from` answered `round`. Only a round this peer sent it counts (an answer to no check, or
    /// to a round it was never sent, is refused: false).
    pub(super) fn on_answer(&mut self, from: PeerKey, round: u64) -> bool {
        if self.asked.get(&from).is_none_or(|(r, _)| *r < round) {
            return false;
        }
        let latest = self.answered.entry(from).or_default();
        *latest = (*latest).max(round);
        true
    }

    /// Forgets a peer taken for dead or gone (its next answer must be to a new round).
    pub(super) fn forget(&mut self, peer: &PeerKey) {
        self.answered.remove(peer);
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
    fn a_freed_slot_needs_a_round_sent_after_it_freed() {
        let (me, a, b) = (key(1), key(2), key(3));
        let home = [me, a, b];
        let mut checks = StartChecks::new();
        // Two never-used slots: any answered round will do.
        assert_eq!(checks.needed(2), 1);
        assert!(!checks.passed(me, &home, 1));
        let asked = checks.ask([a, b], 1, 0, 200);
        assert_eq!(asked, vec![(a, 1), (b, 1)]);
        assert!(checks.on_answer(a, 1));
        assert!(checks.passed(me, &home, 1));
        checks.took_slot(2);
        checks.took_slot(1);
        // An attempt ends: its slot needs round 2, which a's answer to round 1 does not meet.
        checks.freed_slot();
        assert_eq!(checks.needed(1), 2);
        assert!(!checks.passed(me, &home, 2));
        // a answered lately, b's round 1 is still out: both are asked round 2.
        assert_eq!(checks.ask([a, b], 2, 10, 200), vec![(a, 2), (b, 2)]);
        assert!(checks.on_answer(b, 2));
        assert!(checks.passed(me, &home, 2));
    }

    #[test]
    fn an_unanswered_round_is_not_sent_again_until_the_retry() {
        let (me, a) = (key(1), key(2));
        let mut checks = StartChecks::new();
        assert_eq!(checks.ask([a], 1, 0, 200), vec![(a, 1)]);
        assert!(checks.ask([a], 1, 100, 200).is_empty());
        assert_eq!(checks.ask([a], 1, 200, 200), vec![(a, 2)]);
        assert!(!checks.passed(me, &[a], 1));
    }

    #[test]
    fn an_answer_to_a_round_never_sent_is_refused() {
        let (a, b) = (key(2), key(3));
        let mut checks = StartChecks::new();
        assert!(!checks.on_answer(a, 1));
        checks.ask([a], 1, 0, 200);
        assert!(!checks.on_answer(b, 1));
        assert!(!checks.on_answer(a, 7));
        assert!(checks.on_answer(a, 1));
    }
}
