//! Home sets: the R peers that keep a task's record.
//!
//! A task's home set is the peer it was submitted through (its origin, rank 0), then R − 1 other
//! peers chosen by rendezvous (highest-random-weight) hashing over the live membership, keyed by
//! the submission (its submitter and nonce: the task id is not known yet, since the home set is
//! part of the spec it hashes). The set is fixed when the task is accepted and signed with its
//! spec, so every peer agrees on it without asking and no peer can rewrite it. The *primary* of a task is the first member, in rank order, that a
//! peer believes alive: it places the task, re-claims it when its holder dies, retries it, and
//! replicates its record to the other members. Owns only the choice of members and of the primary,
//! and the size of a majority of them ([`quorum`]).

use sha2::{Digest, Sha256};

use crate::identity::PeerKey;
use crate::task::TaskId;

/// The default number of peers that keep each task's record.
pub const DEFAULT_REPLICAS: usize = 3;

/// How many members of a home set of `members` peers make a majority: a primary acts, a holder
/// keeps running and a result counts only with this many. A set of three or more needs more than
/// half, so two sides of a partition never both have one. A set of one or two (a swarm of one or
/// two peers) needs one: there is no majority of two that survives the loss of either, and such
/// a swarm chooses to keep running over a partition (both sides may then act; see
/// docs/protocol.md, "Partitions").
pub fn quorum(members: usize) -> usize {
    if members >= 3 { members / 2 + 1 } else { 1 }
}

/// The rendezvous key of a submission: what [`home_set`] ranks peers by.
pub fn key(submitter: &PeerKey, nonce: u64) -> TaskId {
    let mut hasher = Sha256::new();
    hasher.update(b"taskswarm/home-key/v1");
    hasher.update(submitter.as_bytes());
    hasher.update(nonce.to_le_bytes());
    TaskId::from_bytes(hasher.finalize().into())
}

/// A peer's rendezvous score for a task: higher wins.
pub fn score(task: &TaskId, peer: &PeerKey) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"taskswarm/home/v1");
    hasher.update(task.as_bytes());
    hasher.update(peer.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The home set of `task` submitted through `origin`: the origin, then the `replicas - 1`
/// candidates with the highest scores (candidates may include the origin; it is not counted twice).
pub fn home_set(
    task: &TaskId,
    origin: PeerKey,
    candidates: impl IntoIterator<Item = PeerKey>,
    replicas: usize,
) -> Vec<PeerKey> {
    let mut others: Vec<(u64, PeerKey)> = candidates
        .into_iter()
        .filter(|p| *p != origin)
        .map(|p| (score(task, &p), p))
        .collect();
    others.sort_by(|a, b| b.cmp(a));
    others.dedup_by_key(|(_, p)| *p);
    std::iter::once(origin)
        .chain(others.into_iter().map(|(_, p)| p))
        .take(replicas.max(1))
        .collect()
}

/// The next peer, by rendezvous rank, that is not yet in `home`, to replace a member.
pub fn replacement(
    task: &TaskId,
    home: &[PeerKey],
    candidates: impl IntoIterator<Item = PeerKey>,
) -> Option<PeerKey> {
    candidates
        .into_iter()
        .filter(|p| !home.contains(p))
        .max_by_key(|p| (score(task, p), *p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerKey {
        PeerKey::from_bytes([n; 32])
    }

    #[test]
    fn a_majority_is_more_than_half_of_three_or_more_and_one_of_fewer() {
        let majorities: Vec<usize> = (1..=7).map(quorum).collect();
        assert_eq!(majorities, [1, 1, 2, 3, 3, 4, 4]);
        // Two sides of a set of three or more never both have one.
        for n in 3..=7 {
            assert!(2 * quorum(n) > n, "{n}");
        }
    }

    #[test]
    fn the_origin_leads_and_the_rest_is_stable_and_distinct() {
        let task = TaskId::from_bytes([9; 32]);
        let all: Vec<PeerKey> = (1..=6).map(peer).collect();
        let home = home_set(&task, peer(1), all.clone(), 3);
        assert_eq!(home.len(), 3);
        assert_eq!(home[0], peer(1));
        assert_ne!(home[1], home[2]);
        assert!(!home[1..].contains(&peer(1)));
        // The same inputs in another order give the same set.
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(home_set(&task, peer(1), reversed, 3), home);
    }

    #[test]
    fn fewer_peers_than_replicas_means_all_of_them() {
        let task = TaskId::from_bytes([1; 32]);
        assert_eq!(home_set(&task, peer(1), [peer(2)], 3).len(), 2);
        assert_eq!(home_set(&task, peer(1), [], 3), vec![peer(1)]);
    }

    #[test]
    fn removing_a_non_member_does_not_change_the_set() {
        let task = TaskId::from_bytes([5; 32]);
        let all: Vec<PeerKey> = (1..=8).map(peer).collect();
        let home = home_set(&task, peer(1), all.clone(), 3);
        let outsider = all.iter().find(|p| !home.contains(p)).copied().unwrap();
        let fewer: Vec<PeerKey> = all.into_iter().filter(|p| *p != outsider).collect();
        assert_eq!(home_set(&task, peer(1), fewer.clone(), 3), home);
        let next = replacement(&task, &home, fewer).unwrap();
        assert!(!home.contains(&next));
    }
}
