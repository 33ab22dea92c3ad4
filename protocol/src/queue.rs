//! The ready queue: the tasks a holder will start, highest priority first, with ageing so that a
//! steady stream of high-priority work never starves low-priority work.
//!
//! A task of priority `p` queued at `t` ranks by `p · ageing_ms − t`: waiting `ageing_ms` is worth
//! one level of priority. The rank does not change as time passes, so the queue is a sorted set,
//! and the bound on a wait follows from it: a task queued at `t0` with priority `p` can only be
//! passed by tasks queued before `t0 + (P − p) · ageing_ms`, `P` being the highest priority
//! submitted, so it waits at most for those to start. Ties go first-in, first-out. A task pushed
//! to the front (placed again: recovered or retried) ranks as if queued at time 0: it goes ahead of
//! its priority's tasks, first-in, first-out among such tasks.
//!
//! Owns the order and nothing else: what fits the peer's free resources, and when to start, is
//! the scheduler's.

use std::collections::{BTreeMap, BTreeSet};

use crate::Millis;
use crate::task::TaskId;

/// One queued task's place: rank (higher first), then arrival (earlier first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    neg_rank: i64,
    seq: u64,
}

/// Queued tasks in start order.
#[derive(Clone, Debug)]
pub struct ReadyQueue {
    ageing_ms: u64,
    order: BTreeSet<(Place, TaskId)>,
    places: BTreeMap<TaskId, Place>,
    next_seq: u64,
    /// Sequence numbers for tasks pushed to the front, counting up from below every other.
    front_seq: u64,
}

impl ReadyQueue {
    /// An empty queue in which waiting `ageing_ms` is worth one level of priority.
    pub fn new(ageing_ms: u64) -> Self {
        Self {
            ageing_ms: ageing_ms.max(1),
            order: BTreeSet::new(),
            places: BTreeMap::new(),
            next_seq: u64::MAX / 2,
            front_seq: 0,
        }
    }

    /// How many tasks are queued.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Whether `id` is queued.
    pub fn contains(&self, id: &TaskId) -> bool {
        self.places.contains_key(id)
    }

    fn rank(&self, priority: i32, queued_at: Millis) -> i64 {
        let at = i64::try_from(queued_at).unwrap_or(i64::MAX);
        i64::from(priority)
            .saturating_mul(i64::try_from(self.ageing_ms).unwrap_or(i64::MAX))
            .saturating_sub(at)
    }

    /// Queues `id` (priority `priority`, queued at `now`) behind the tasks of its rank.
    pub fn push(&mut self, id: TaskId, priority: i32, now: Millis) {
        self.next_seq += 1;
        let place = Place {
            neg_rank: self.rank(priority, now).saturating_neg(),
            seq: self.next_seq,
        };
        self.insert(id, place);
    }

    /// Queues `id` as if it had waited since the start of time: ahead of every task of its
    /// priority queued the usual way, behind the ones pushed to the front before it. For a task
    /// placed again (recovered from a lost holder, or retried): it is older than anything queued
    /// here, and it should start at the next free slot, not when the queue has drained. (It can
    /// still be passed by higher priorities, as the ageing rule allows.)
    pub fn push_front(&mut self, id: TaskId, priority: i32) {
        self.front_seq += 1;
        let place = Place {
            neg_rank: self.rank(priority, 0).saturating_neg(),
            seq: self.front_seq,
        };
        self.insert(id, place);
    }

    fn insert(&mut self, id: TaskId, place: Place) {
        if let Some(old) = self.places.insert(id, place) {
            self.order.remove(&(old, id));
        }
        self.order.insert((place, id));
    }

    /// Takes `id` out of the queue; whether it was queued.
    pub fn remove(&mut self, id: &TaskId) -> bool {
        match self.places.remove(id) {
            Some(place) => self.order.remove(&(place, *id)),
            None => false,
        }
    }

    /// The queued tasks in start order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = TaskId> + '_ {
        self.order.iter().map(|(_, id)| *id)
    }

    /// Takes the first task, in start order, for which `fits` holds, looking at most `window`
    /// tasks deep (so a queue of tasks that do not fit costs a bounded scan).
    pub fn pop_first_fitting(
        &mut self,
        window: usize,
        mut fits: impl FnMut(TaskId) -> bool,
    ) -> Option<TaskId> {
        let id = self.iter().take(window).find(|id| fits(*id))?;
        self.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> TaskId {
        let mut bytes = [0; 32];
        bytes[..2].copy_from_slice(&n.to_be_bytes());
        TaskId::from_bytes(bytes)
    }

    #[test]
    fn higher_priority_first_then_first_in_first_out() {
        let mut q = ReadyQueue::new(10_000);
        q.push(id(1), 0, 100);
        q.push(id(2), 0, 100);
        q.push(id(3), 9, 101);
        q.push(id(4), 1, 102);
        q.push_front(id(5), 0);
        assert_eq!(
            q.iter().collect::<Vec<_>>(),
            vec![id(3), id(4), id(5), id(1), id(2)]
        );
        assert!(q.remove(&id(4)));
        assert!(!q.remove(&id(4)));
        assert_eq!(q.pop_first_fitting(8, |_| true), Some(id(3)));
        assert_eq!(q.pop_first_fitting(8, |t| t == id(2)), Some(id(2)));
        assert_eq!(
            q.pop_first_fitting(1, |t| t == id(1)),
            None,
            "beyond the window"
        );
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn tasks_pushed_to_the_front_go_first_in_their_order_however_long_the_queue() {
        let mut q = ReadyQueue::new(1_000);
        for n in 0..100 {
            q.push(id(n), 0, u64::from(n));
        }
        // Recovered later, in this order: they start next, in this order.
        q.push_front(id(200), 0);
        q.push_front(id(201), 0);
        q.push_front(id(202), 0);
        let order: Vec<TaskId> = q.iter().take(4).collect();
        assert_eq!(order, vec![id(200), id(201), id(202), id(0)]);
    }

    #[test]
    fn waiting_one_ageing_period_is_worth_one_level() {
        let mut q = ReadyQueue::new(1_000);
        q.push(id(1), 0, 0);
        // A priority-1 task queued less than a period later goes first; one queued later does not.
        q.push(id(2), 1, 999);
        q.push(id(3), 1, 1_001);
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![id(2), id(1), id(3)]);
    }
}
