//! Placement: which peer a newly submitted task goes to, by one of five [`Policy`]s.
//!
//! - `p2c` (power of two choices, the default): sample two candidates uniformly and take the less
//!   loaded, where load is queued plus running tasks per slot. With slightly stale load figures it
//!   spreads a burst far better than least-loaded (which herds onto whichever peer looked idlest)
//!   and almost as well as perfect knowledge; stealing corrects the rest.
//! - `least-loaded`: the candidate with the lowest load per slot (ties to the first).
//! - `weighted`: random, weighted by free capacity (slots less load; every candidate keeps a
//!   weight of at least one so a full swarm still places).
//! - `round-robin`: the candidates in turn, in key order, after the one chosen last.
//! - `random`: uniform.
//!
//! Owns only the choice; the caller builds the candidate list (who is alive and can run the task)
//! and updates estimates afterwards. It never reads a clock: randomness comes from the caller's
//! RNG and round-robin's memory is the [`Placer`]'s.

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

/// How a peer chooses where tasks go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub enum Policy {
    /// Uniformly at random.
    Random,
    /// In turn.
    RoundRobin,
    /// At random, weighted by free capacity.
    Weighted,
    /// The least loaded per slot.
    LeastLoaded,
    /// The less loaded of two sampled at random.
    #[default]
    PowerOfTwo,
}

impl Policy {
    /// Every policy, in the order the docs list them.
    pub const ALL: [Policy; 5] = [
        Policy::Random,
        Policy::RoundRobin,
        Policy::Weighted,
        Policy::LeastLoaded,
        Policy::PowerOfTwo,
    ];

    /// Its name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::RoundRobin => "round-robin",
            Policy::Weighted => "weighted",
            Policy::LeastLoaded => "least-loaded",
            Policy::PowerOfTwo => "p2c",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A placement policy name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement `{0}`; expected random, round-robin, weighted, least-loaded or p2c")]
pub struct UnknownPolicy(pub String);

impl std::str::FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| UnknownPolicy(text.to_string()))
    }
}

/// A policy and what it remembers between choices (round-robin's last peer).
#[derive(Clone, Debug, Default)]
pub struct Placer {
    policy: Policy,
    last: Option<PeerKey>,
}

impl Placer {
    /// A placer for `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy, last: None }
    }

    /// Its policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Chooses among `candidates`; returns the index, or `None` if there are none.
    pub fn choose(&mut self, rng: &mut dyn RngCore, candidates: &[Candidate]) -> Option<usize> {
        self.choose_by(self.policy, rng, candidates)
    }

    /// Chooses by `policy` (a task's own, say) instead of this placer's.
    pub fn choose_by(
        &mut self,
        policy: Policy,
        rng: &mut dyn RngCore,
        candidates: &[Candidate],
    ) -> Option<usize> {
        let chosen = match policy {
            Policy::Random => random(rng, candidates),
            Policy::RoundRobin => self.round_robin(candidates),
            Policy::Weighted => weighted(rng, candidates),
            Policy::LeastLoaded => least_loaded(candidates),
            Policy::PowerOfTwo => power_of_two(rng, candidates),
        }?;
        self.last = Some(candidates[chosen].peer);
        Some(chosen)
    }

    /// The candidate with the smallest key above the last one chosen, wrapping around: each
    /// peer in turn even as the candidate list changes between calls.
    fn round_robin(&self, candidates: &[Candidate]) -> Option<usize> {
        let first = (0..candidates.len()).min_by_key(|&i| candidates[i].peer)?;
        let Some(last) = self.last else {
            return Some(first);
        };
        (0..candidates.len())
            .filter(|&i| candidates[i].peer > last)
            .min_by_key(|&i| candidates[i].peer)
            .or(Some(first))
    }
}

/// Uniformly at random.
pub fn random(rng: &mut dyn RngCore, candidates: &[Candidate]) -> Option<usize> {
    (!candidates.is_empty()).then(|| rng.random_range(0..candidates.len()))
}

/// The least loaded per slot; ties go to the first.
pub fn least_loaded(candidates: &[Candidate]) -> Option<usize> {
    (0..candidates.len()).reduce(|best, i| {
        if candidates[i].cmp_load(&candidates[best]) == Ordering::Less {
            i
        } else {
            best
        }
    })
}

/// At random, weighted by free capacity (slots less load), each weight at least 1.
pub fn weighted(rng: &mut dyn RngCore, candidates: &[Candidate]) -> Option<usize> {
    let weight = |c: &Candidate| u64::from(c.slots.max(1).saturating_sub(c.load).max(1));
    let total: u64 = candidates.iter().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut pick = rng.random_range(0..total);
    for (i, c) in candidates.iter().enumerate() {
        let w = weight(c);
        if pick < w {
            return Some(i);
        }
        pick -= w;
    }
    None
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

    fn idle(n: u8, slots: u32) -> Candidate {
        Candidate {
            peer: peer(n),
            load: 0,
            slots,
        }
    }

    /// Places `tasks` one by one, each raising its peer's load, and returns the loads.
    fn place_many(policy: Policy, seed: u64, mut peers: Vec<Candidate>, tasks: usize) -> Vec<u32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut placer = Placer::new(policy);
        for _ in 0..tasks {
            let i = placer.choose(&mut rng, &peers).unwrap();
            peers[i].load += 1;
        }
        peers.iter().map(|c| c.load).collect()
    }

    #[test]
    fn every_policy_has_a_name_that_parses_back() {
        for policy in Policy::ALL {
            assert_eq!(policy.as_str().parse::<Policy>(), Ok(policy));
        }
        assert_eq!(Policy::default(), Policy::PowerOfTwo);
        let err = "fastest".parse::<Policy>().unwrap_err().to_string();
        assert!(
            err.contains("fastest") && err.contains("least-loaded"),
            "{err}"
        );
    }

    #[test]
    fn no_policy_chooses_from_nobody() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for policy in Policy::ALL {
            assert_eq!(Placer::new(policy).choose(&mut rng, &[]), None, "{policy}");
        }
    }

    #[test]
    fn round_robin_spreads_within_one() {
        for seed in 0..5 {
            let loads = place_many(
                Policy::RoundRobin,
                seed,
                (0..7).map(|n| idle(n, 2)).collect(),
                100,
            );
            let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(max - min <= 1, "seed {seed}: {loads:?}");
        }
    }

    #[test]
    fn round_robin_keeps_its_turn_when_candidates_change() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut placer = Placer::new(Policy::RoundRobin);
        let all: Vec<Candidate> = (1..=4).map(|n| idle(n, 1)).collect();
        assert_eq!(placer.choose(&mut rng, &all), Some(0));
        assert_eq!(placer.choose(&mut rng, &all), Some(1));
        // Peer 3 is gone: the turn passes to peer 4, then wraps to peer 1.
        let without_3 = [all[0], all[1], all[3]];
        assert_eq!(placer.choose(&mut rng, &without_3), Some(2));
        assert_eq!(placer.choose(&mut rng, &without_3), Some(0));
    }

    #[test]
    fn weighted_follows_free_capacity() {
        // Free capacity 1 : 3 : 6, kept fixed (loads are not raised here).
        let peers = [
            Candidate {
                peer: peer(1),
                load: 1,
                slots: 2,
            },
            Candidate {
                peer: peer(2),
                load: 1,
                slots: 4,
            },
            Candidate {
                peer: peer(3),
                load: 2,
                slots: 8,
            },
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut placer = Placer::new(Policy::Weighted);
        let n = 30_000;
        let mut counts = [0u32; 3];
        for _ in 0..n {
            counts[placer.choose(&mut rng, &peers).unwrap()] += 1;
        }
        for (count, share) in counts.iter().zip([0.1, 0.3, 0.6]) {
            // Five standard deviations of a binomial count.
            let expected = n as f64 * share;
            let sd = (n as f64 * share * (1.0 - share)).sqrt();
            assert!(
                (f64::from(*count) - expected).abs() < 5.0 * sd,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn least_loaded_always_takes_a_minimum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut placer = Placer::new(Policy::LeastLoaded);
        let mut peers: Vec<Candidate> = (0..5).map(|n| idle(n, 1 + u32::from(n % 2))).collect();
        for _ in 0..200 {
            let i = placer.choose(&mut rng, &peers).unwrap();
            assert!(
                peers
                    .iter()
                    .all(|c| peers[i].cmp_load(c) != Ordering::Greater),
                "{i} is not a minimum of {peers:?}"
            );
            peers[i].load += 1;
        }
    }

    #[test]
    fn p2c_has_a_lower_maximum_than_random_on_the_same_seeds() {
        let peers: Vec<Candidate> = (0..50).map(|n| idle(n, 1)).collect();
        for seed in 0..10 {
            let random = place_many(Policy::Random, seed, peers.clone(), 500);
            let p2c = place_many(Policy::PowerOfTwo, seed, peers.clone(), 500);
            let max = |l: &[u32]| *l.iter().max().unwrap();
            assert!(
                max(&p2c) < max(&random),
                "seed {seed}: p2c {} random {}",
                max(&p2c),
                max(&random)
            );
        }
    }
}
