//! Placement: which peer a newly submitted task goes to.
//!
//! Power of two choices: sample two candidates uniformly and take the less loaded, where load is
//! queued plus running tasks per slot. With slightly stale load figures this spreads a burst far
//! better than "least loaded" (which herds onto one peer) and almost as well as perfect knowledge;
//! stealing corrects the rest. Owns only the choice; the caller builds the candidate list (who is
//! alive and can run the task) and updates estimates afterwards.

use std::cmp::Ordering;

use rand::{Rng, RngCore};

use crate::identity::PeerKey;

/// A peer that could take a task, with its current load estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerKey,
    /// Its queued plus running tasks.
    pub load: u32,
    /// Its slots (at least 1 is assumed).
    pub slots: u32,
}

impl Candidate {
    /// Compares load per slot without floating point: a/sa vs b/sb as a·sb vs b·sa.
    fn cmp_load(&self, other: &Candidate) -> Ordering {
        let a = u64::from(self.load) * u64::from(other.slots.max(1));
        let b = u64::from(other.load) * u64::from(self.slots.max(1));
        a.cmp(&b)
    }
}

/// Chooses by power of two choices; returns the index into `candidates`, or `None` if empty.
pub fn power_of_two(rng: &mut dyn RngCore, candidates: &[Candidate]) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            match candidates[a].cmp_load(&candidates[b]) {
                Ordering::Greater => Some(b),
                _ => Some(a),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn peer(n: u8) -> PeerKey {
        PeerKey::from_bytes([n; 32])
    }

    #[test]
    fn empty_and_single() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(power_of_two(&mut rng, &[]), None);
        let one = [Candidate {
            peer: peer(1),
            load: 9,
            slots: 1,
        }];
        assert_eq!(power_of_two(&mut rng, &one), Some(0));
    }

    #[test]
    fn of_two_the_less_loaded_per_slot_wins() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let two = [
            Candidate {
                peer: peer(1),
                load: 3,
                slots: 1,
            },
            Candidate {
                peer: peer(2),
                load: 4,
                slots: 2,
            },
        ];
        for _ in 0..20 {
            assert_eq!(power_of_two(&mut rng, &two), Some(1));
        }
    }

    #[test]
    fn a_burst_with_updated_estimates_spreads_evenly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut peers: Vec<Candidate> = (0..3)
            .map(|n| Candidate {
                peer: peer(n),
                load: 0,
                slots: 2,
            })
            .collect();
        for _ in 0..60 {
            let i = power_of_two(&mut rng, &peers).unwrap();
            peers[i].load += 1;
        }
        let max = peers.iter().map(|c| c.load).max().unwrap();
        let min = peers.iter().map(|c| c.load).min().unwrap();
        assert!(max - min <= 3, "{peers:?}");
    }
}
