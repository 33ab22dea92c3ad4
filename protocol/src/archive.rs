//! The archive: where a peer's ended records live once they leave its memory.
//!
//! A record that has ended stays in memory for a short while (its replication settles, clients
//! waiting on it are answered, late messages about it arrive), and then only on disk, in
//! [`Table::Ended`](crate::Table::Ended): memory follows live work, not history. When a message,
//! a client or a dependent names a task this peer does not keep in memory, the scheduler asks the
//! archive for the record and takes it back for another short while, so a late message about an
//! ended task is answered as it would have been (a stale `Store` gets the ended record back; it
//! never brings the task back to life).
//!
//! The driver implements [`Archive`] over its durable tables, including the writes it was handed
//! and has not yet committed, so that a record is never absent from both memory and the archive.
//! Reads are synchronous and must be cheap (a point lookup); the scheduler itself never opens a
//! file.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::scheduler::{Action, Table};
use crate::task::TaskId;

/// The driver's read access to the ended records it stored.
pub trait Archive: Send + Sync + std::fmt::Debug {
    /// The row last written for `id` in [`Table::Ended`](crate::Table::Ended): a
    /// [`SealedRecord`](crate::SealedRecord)'s bytes. `None` if there is none. (An ended record
    /// that a store written before this table existed keeps among the live ones is moved here
    /// when it is restored.)
    fn ended(&self, id: &TaskId) -> Option<Vec<u8>>;

    /// The ids of the ended records stored, in id order, after `after` (from the first with
    /// `None`), at most `limit`: how the primary walks them to repair their home sets (see
    /// `records/rehoming.rs`). An archive that cannot list returns none, and its ended records
    /// keep the home set they had.
    fn ended_ids_after(&self, after: Option<&TaskId>, limit: usize) -> Vec<TaskId> {
        let _ = (after, limit);
        Vec::new()
    }

    /// The rows of the ended records stored most recently, newest first, at most `limit`: what a
    /// swarm-wide list reads of the archive (see [`crate::listing`]). An archive that cannot list
    /// returns none, and lists show only the records in memory.
    fn recent_ended(&self, limit: usize) -> Vec<Vec<u8>> {
        let _ = limit;
        Vec::new()
    }
}

/// No archive: a peer whose ended records stay in memory only until they are evicted (a
/// scheduler used without a driver that stores anything).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoArchive;

impl Archive for NoArchive {
    fn ended(&self, _: &TaskId) -> Option<Vec<u8>> {
        None
    }
}

/// An archive kept in memory: the ended rows a scheduler wrote, for drivers without a disk of
/// their own (the simulator, tests, fuzzing). Share it with the scheduler (`Arc`) and hand it the
/// scheduler's writes.
#[derive(Debug, Default)]
pub struct MemoryArchive {
    rows: Mutex<BTreeMap<TaskId, Vec<u8>>>,
}

impl MemoryArchive {
    /// An archive holding `rows` (a copy of another's, say).
    pub fn with_rows(rows: BTreeMap<TaskId, Vec<u8>>) -> Self {
        Self {
            rows: Mutex::new(rows),
        }
    }

    /// Keeps what `action` writes to [`Table::Ended`]; ignores any other action.
    pub fn keep(&self, action: &Action) {
        if let Action::Write {
            table: Table::Ended,
            key,
            value,
        } = action
        {
            let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
            match value {
                Some(row) => rows.insert(*key, row.clone()),
                None => rows.remove(key),
            };
        }
    }

    /// Every row it holds, by task.
    pub fn rows(&self) -> BTreeMap<TaskId, Vec<u8>> {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Archive for MemoryArchive {
    fn ended(&self, id: &TaskId) -> Option<Vec<u8>> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.get(id).cloned()
    }

    fn ended_ids_after(&self, after: Option<&TaskId>, limit: usize) -> Vec<TaskId> {
        use std::ops::Bound::{Excluded, Unbounded};
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let from = after.map_or(Unbounded, |id| Excluded(*id));
        rows.range((from, Unbounded))
            .take(limit)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every row, up to `limit`, in id order (a memory archive does not know when each ended).
    fn recent_ended(&self, limit: usize) -> Vec<Vec<u8>> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.values().take(limit).cloned().collect()
    }
}
