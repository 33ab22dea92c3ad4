//! Work stealing: an idle peer asks a busy one for tasks it can start at once.
//!
//! The thief samples two peers that reported queued work and asks the one with the longer queue
//! (power of two choices, so thieves do not all herd onto the single busiest peer). It asks only
//! when it has free slots and nothing queued (late binding), so stale load figures cost little: a
//! wrong guess costs one round trip. The victim gives up to half its ready queue, never more than
//! the thief can start, and only tasks the thief can run (kind, labels, capacity). It gives from
//! the front of its queue, the tasks it would start next, since the thief starts them at once:
//! high-priority work moves first, and, among tasks of one priority whose submitters gave a cost
//! hint, the longest first (moving a long task evens the load most). Owns these two choices; the
//! scheduler does the hand-over.

use rand::{Rng, RngCore};

use crate::identity::PeerKey;
use crate::load::Capabilities;
use crate::task::{TaskId, TaskSpec};

/// Chooses whom to ask from `(peer, queued)` pairs: of two sampled peers with queued work, the one
/// with more. `None` if no peer has queued work.
pub fn choose_victim(rng: &mut dyn RngCore, peers: &[(PeerKey, u32)]) -> Option<PeerKey> {
    let busy: Vec<&(PeerKey, u32)> = peers.iter().filter(|(_, q)| *q > 0).collect();
    match busy.len() {
        0 => None,
        1 => Some(busy[0].0),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if busy[b].1 > busy[a].1 {
                busy[b].0
            } else {
                busy[a].0
            })
        }
    }
}

/// How many more tasks than it gives the victim looks at, to find the long ones.
const LOOK_AHEAD: usize = 4;

/// Chooses which queued tasks to give a thief: up to half the queue (rounded up) and at most
/// `free_slots`, that the thief can run, from the front. Of the first few the thief can run
/// (`LOOK_AHEAD` times as many as it gets), higher priority goes first, then a longer cost hint,
/// then queue order. `queue` is in start order, `len` its length; only as much of its front is
/// read as the choice needs.
pub fn choose_tasks<'a>(
    queue: impl Iterator<Item = (TaskId, &'a TaskSpec)>,
    len: usize,
    free_slots: u32,
    thief: &Capabilities,
) -> Vec<TaskId> {
    let half = len.div_ceil(2);
    let limit = half.min(usize::try_from(free_slots).unwrap_or(usize::MAX));
    let mut seen: Vec<(usize, TaskId, i32, u64)> = queue
        .filter(|(_, spec)| thief.can_run(spec))
        .take(limit.saturating_mul(LOOK_AHEAD))
        .enumerate()
        .map(|(i, (id, spec))| (i, id, spec.priority, spec.cost_ms.unwrap_or(0)))
        .collect();
    seen.sort_by_key(|&(i, _, priority, cost)| {
        (std::cmp::Reverse(priority), std::cmp::Reverse(cost), i)
    });
    seen.into_iter()
        .take(limit)
        .map(|(_, id, _, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskKind;
    use rand::SeedableRng;

    fn peer(n: u8) -> PeerKey {
        PeerKey::from_bytes([n; 32])
    }

    fn handler(name: &str) -> TaskSpec {
        TaskSpec::new(
            peer(0),
            0,
            TaskKind::Handler {
                name: name.into(),
                input: vec![],
            },
        )
    }

    #[test]
    fn idle_peers_are_never_victims() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(choose_victim(&mut rng, &[(peer(1), 0), (peer(2), 0)]), None);
        assert_eq!(
            choose_victim(&mut rng, &[(peer(1), 0), (peer(2), 5)]),
            Some(peer(2))
        );
    }

    #[test]
    fn of_two_sampled_the_longer_queue_is_asked() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            assert_eq!(
                choose_victim(&mut rng, &[(peer(1), 2), (peer(2), 9)]),
                Some(peer(2))
            );
        }
    }

    #[test]
    fn gives_at_most_half_and_at_most_free_slots_from_the_front() {
        let specs: Vec<(TaskId, TaskSpec)> = (0..7u8)
            .map(|n| (TaskId::from_bytes([n; 32]), handler("noop")))
            .collect();
        let caps = Capabilities {
            exec: false,
            handlers: vec!["noop".into()],
            offer: Default::default(),
        };
        let ids = |v: &[u8]| {
            v.iter()
                .map(|n| TaskId::from_bytes([*n; 32]))
                .collect::<Vec<_>>()
        };
        let queue = || specs.iter().map(|(id, s)| (*id, s));
        assert_eq!(choose_tasks(queue(), 7, 100, &caps), ids(&[0, 1, 2, 3]));
        assert_eq!(choose_tasks(queue(), 7, 2, &caps), ids(&[0, 1]));
        let none = Capabilities::default();
        assert!(choose_tasks(queue(), 7, 100, &none).is_empty());
    }

    #[test]
    fn higher_priority_then_longer_cost_hints_move_first() {
        let caps = Capabilities {
            exec: false,
            handlers: vec!["noop".into()],
            offer: Default::default(),
        };
        let spec = |priority: i32, cost_ms: Option<u64>| TaskSpec {
            priority,
            cost_ms,
            ..handler("noop")
        };
        // In start order: short, long, unhinted, longest, and one the thief cannot run.
        let specs = [
            (0u8, spec(0, Some(10))),
            (1, spec(0, Some(5_000))),
            (2, spec(0, None)),
            (3, spec(0, Some(60_000))),
            (4, handler("gpu-only")),
        ];
        let queue = || specs.iter().map(|(n, s)| (TaskId::from_bytes([*n; 32]), s));
        let chosen = choose_tasks(queue(), 10, 2, &caps);
        assert_eq!(
            chosen,
            vec![TaskId::from_bytes([3; 32]), TaskId::from_bytes([1; 32])]
        );
        let urgent = [(0u8, spec(0, Some(60_000))), (1, spec(5, Some(1)))];
        let queue = || {
            urgent
                .iter()
                .map(|(n, s)| (TaskId::from_bytes([*n; 32]), s))
        };
        assert_eq!(
            choose_tasks(queue(), 4, 1, &caps),
            vec![TaskId::from_bytes([1; 32])]
        );
    }
}
