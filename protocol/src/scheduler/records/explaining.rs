//! Why a task whose record this peer keeps is not running, as this peer knows it (see
//! [`crate::listing::Why`]): its retry back-off and its dependencies as the primary tracks them
//! (only the primary says those), its holder's queue from the holder's reports (or, when the
//! holder is this peer, its place in the queue). Reads the home member's state; never changes
//! it.

use std::collections::HashMap;

use super::super::peers::Peers;
use super::Home;
use crate::Millis;
use crate::identity::PeerKey;
use crate::listing::Why;
use crate::record::{TaskRecord, TaskState};
use crate::task::TaskId;

/// What the explanation reads of the holder's room: this peer's queue, in start order.
pub(in crate::scheduler) struct OwnQueue {
    /// This peer.
    pub(in crate::scheduler) me: PeerKey,
    /// The place of each queued task.
    pub(in crate::scheduler) places: HashMap<TaskId, u32>,
}

impl Home {
    /// Why `record` (one this peer keeps, or read from its archive) is not running; `None` if it
    /// runs or ended.
    pub(in crate::scheduler) fn why(
        &self,
        record: &TaskRecord,
        now: Millis,
        peers: &Peers,
        queue: &OwnQueue,
    ) -> Option<Why> {
        match record.state {
            TaskState::Unschedulable => {
                let note = record.history.last().map(|t| t.note.clone());
                return Some(Why::Unschedulable(note.unwrap_or_default()));
            }
            TaskState::Waiting => {}
            _ => return None,
        }
        // A retry's back-off and what a dependency waits for are the primary's knowledge; the
        // other members leave those to it (a list takes the primary's word over theirs).
        let primary = peers.primary_of(record.home()) == Some(queue.me);
        let id = record.id();
        if primary
            && let Some(at) = self.retry_at.get(&id)
            && *at > now
        {
            return Some(Why::Retry { in_ms: at - now });
        }
        if primary && let Some(why) = self.pending_dependencies(record) {
            return Some(why);
        }
        let Some(holder) = record.holder else {
            return primary.then_some(Why::Placing);
        };
        if holder == queue.me {
            return Some(Why::Queued {
                holder,
                ahead: queue.places.get(&id).copied(),
                queued: queue.places.len() as u32,
            });
        }
        let queued = peers.view(&holder).map_or(0, |v| v.report.queued);
        Some(Why::Queued {
            holder,
            ahead: None,
            queued,
        })
    }

    /// The dependencies `record` still waits for, first by name: those this peer keeps that have
    /// not ended, and those it does not keep whose end it has not learnt.
    fn pending_dependencies(&self, record: &TaskRecord) -> Option<Why> {
        let spec = record.envelope.spec.decode_verified_earlier().ok()?;
        if spec.after.is_empty() || record.envelope.inputs.len() == spec.after.len() {
            return None;
        }
        let mut pending = spec
            .after
            .iter()
            .filter_map(|dep| match self.records.get(dep) {
                Some(entry) if entry.record.state.is_final() => None,
                Some(entry) => Some(entry.spec.name.clone().unwrap_or_else(|| dep.short())),
                None => match self.lookups.get(dep) {
                    Some(lookup) if lookup.has_ended() => None,
                    Some(lookup) => Some(lookup.name().map_or_else(|| dep.short(), str::to_string)),
                    None => Some(dep.short()),
                },
            });
        let name = pending.next()?;
        Some(Why::Dependency {
            name,
            others: pending.count() as u32,
        })
    }
}
