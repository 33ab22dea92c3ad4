//! The embedded, crash-safe store of a peer: the scheduler's durable tables (records of the tasks
//! whose home set the peer is in, the tasks it holds, the results it has not yet delivered, the
//! records of ended tasks) in one redb database under the data directory.
//!
//! Writes come from the scheduler's [`Action::Write`](taskswarm_protocol::Action::Write) actions.
//! The event loop hands the writes of each round of inputs to the [`Committer`], a thread of its
//! own that commits, in one transaction, every batch waiting when it is free (group commit: the
//! busier the peer, the more inputs share an fsync), and says how far it got. The event loop holds
//! back every message that follows a write until that write is committed, so nothing is
//! acknowledged that is not on disk, and it goes on handling inputs (and heartbeats) while the
//! disk works.
//!
//! At start only the live tables are read back into the scheduler: ended records stay on disk,
//! read one at a time through the [`StoreArchive`] when something names them, and are compacted
//! away once they are older than the retention period (kept in an index by the time they were
//! stored). A peer without a data directory keeps the same tables in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::wall_clock_ms;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use taskswarm_protocol::{Table, TaskId};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const HELD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("held");
const OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");
const ENDED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ended");
/// The ended records by when they were stored: the key is the wall-clock milliseconds (big
/// endian, so keys sort by time) followed by the task id.
const ENDED_AT: TableDefinition<&[u8], ()> = TableDefinition::new("ended_at");

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match table {
        Table::Records => RECORDS,
        Table::Held => HELD,
        Table::Outbox => OUTBOX,
        Table::Ended => ENDED,
    }
}

const TABLES: [Table; 4] = [Table::Records, Table::Held, Table::Outbox, Table::Ended];
/// The tables read back at start.
const LIVE_TABLES: [Table; 3] = [Table::Records, Table::Held, Table::Outbox];

/// What redb may keep of the file in memory. Its default (1 GiB) would let the cache, not the
/// live work, decide a peer's memory; ended records are read rarely.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// The most ended rows one compaction transaction deletes.
const COMPACT_BATCH: usize = 10_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(redb::Error);

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self(e)
    }
}

impl StoreError {
    /// Whether the store file is open in another process (another peer uses the data directory).
    pub fn is_in_use(&self) -> bool {
        matches!(self.0, redb::Error::DatabaseAlreadyOpen)
    }
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError(e.into())
}

/// One pending write.
pub type Write = (Table, TaskId, Option<Vec<u8>>);

/// The last write of each row, by table and key: a row changed in several rounds of one commit
/// is written once, and each table's rows are written in key order (neighbouring rows share
/// B-tree pages).
fn last_writes(writes: &[Write]) -> BTreeMap<(Table, TaskId), &Option<Vec<u8>>> {
    writes
        .iter()
        .map(|(table, key, value)| ((*table, *key), value))
        .collect()
}

/// A peer's durable tables (a handle: clones share the database).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(db)?;
        Self::init(db)
    }

    /// A store that lives in memory only (for peers embedded without a data directory).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db)?;
        Self::init(db)
    }

    fn init(database: Database) -> Result<Self, StoreError> {
        let tx = database.begin_write().map_err(db)?;
        for table in TABLES {
            tx.open_table(definition(table)).map_err(db)?;
        }
        tx.open_table(ENDED_AT).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Self {
            db: Arc::new(database),
        })
    }

    /// Every row of the live tables (not the ended records: see [`StoreArchive`]).
    pub fn load(&self) -> Result<Vec<(Table, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let mut rows = Vec::new();
        for table in LIVE_TABLES {
            let t = tx.open_table(definition(table)).map_err(db)?;
            for row in t.iter().map_err(db)? {
                let (_, value) = row.map_err(db)?;
                rows.push((table, value.value().to_vec()));
            }
        }
        Ok(rows)
    }

    /// The row of `key` in `table`, if any.
    pub fn get(&self, table: Table, key: &TaskId) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(definition(table)).map_err(db)?;
        let row = t.get(key.as_bytes().as_slice()).map_err(db)?;
        Ok(row.map(|v| v.value().to_vec()))
    }

    /// The ids of the ended records stored after `after` in id order (from the first with
    /// `None`), at most `limit`.
    pub fn ended_ids_after(
        &self,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let ended = tx.open_table(ENDED).map_err(db)?;
        let rows = match after {
            Some(id) => ended
                .range::<&[u8]>(id.as_bytes().as_slice()..)
                .map_err(db)?,
            None => ended.iter().map_err(db)?,
        };
        let mut ids = Vec::with_capacity(limit.min(1_024));
        for row in rows {
            let (key, _) = row.map_err(db)?;
            let Ok(bytes) = <[u8; 32]>::try_from(key.value()) else {
                continue;
            };
            let id = TaskId::from_bytes(bytes);
            if Some(&id) == after {
                continue;
            }
            if ids.len() >= limit {
                break;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// The ended records stored most recently, newest first, at most `limit`.
    pub fn recent_ended(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let index = tx.open_table(ENDED_AT).map_err(db)?;
        let ended = tx.open_table(ENDED).map_err(db)?;
        let mut rows = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for entry in index.iter().map_err(db)?.rev() {
            if rows.len() >= limit {
                break;
            }
            let (key, _) = entry.map_err(db)?;
            let id = &key.value()[8..];
            if seen.insert(id.to_vec())
                && let Some(row) = ended.get(id).map_err(db)?
            {
                rows.push(row.value().to_vec());
            }
        }
        Ok(rows)
    }

    /// Applies writes in one durable transaction; an ended record is indexed by `now_ms`.
    pub fn commit(&self, writes: &[Write], now_ms: u64) -> Result<u64, StoreError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let rows = last_writes(writes);
        let tx = self.db.begin_write().map_err(db)?;
        for table in TABLES {
            let mut t = tx.open_table(definition(table)).map_err(db)?;
            for ((_, key), value) in rows.iter().filter(|((t, _), _)| *t == table) {
                let key: &[u8] = key.as_bytes();
                match value {
                    Some(value) => {
                        t.insert(key, value.as_slice()).map_err(db)?;
                    }
                    None => {
                        t.remove(key).map_err(db)?;
                    }
                }
            }
        }
        {
            let mut index = tx.open_table(ENDED_AT).map_err(db)?;
            let ended = rows
                .iter()
                .filter(|((t, _), v)| *t == Table::Ended && v.is_some());
            for ((_, key), _) in ended {
                index
                    .insert(ended_at_key(now_ms, key).as_slice(), ())
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(rows.len() as u64)
    }

    /// Deletes the ended records stored before `before_ms` (at most [`COMPACT_BATCH`] per
    /// transaction, until none is left); returns how many.
    pub fn compact(&self, before_ms: u64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let tx = self.db.begin_write().map_err(db)?;
            let expired: Vec<Vec<u8>> = {
                let index = tx.open_table(ENDED_AT).map_err(db)?;
                let end = before_ms.to_be_bytes();
                let range = index.range(..end.as_slice()).map_err(db)?;
                range
                    .take(COMPACT_BATCH)
                    .map(|entry| entry.map(|(k, _)| k.value().to_vec()))
                    .collect::<Result<_, _>>()
                    .map_err(db)?
            };
            if expired.is_empty() {
                return Ok(deleted);
            }
            {
                let mut index = tx.open_table(ENDED_AT).map_err(db)?;
                let mut ended = tx.open_table(ENDED).map_err(db)?;
                for key in &expired {
                    index.remove(key.as_slice()).map_err(db)?;
                    if ended.remove(&key[8..]).map_err(db)?.is_some() {
                        deleted += 1;
                    }
                }
            }
            tx.commit().map_err(db)?;
        }
    }
}

/// The key of an ended record in the time index.
fn ended_at_key(now_ms: u64, id: &TaskId) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + 32);
    key.extend_from_slice(&now_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The scheduler's read access to the ended records (see [`taskswarm_protocol::archive`]): the
/// writes handed to the committer and not yet committed first, then the store.
#[derive(Clone, Debug)]
pub struct StoreArchive {
    store: Store,
    /// Rows of ended records handed in and not yet committed, with their batch numbers.
    pending: Arc<Mutex<Pending>>,
}

/// Rows of ended records handed to the committer, by task: the batch number and the row.
type Pending = BTreeMap<TaskId, (u64, Option<Vec<u8>>)>;

impl StoreArchive {
    /// The archive over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            pending: Arc::default(),
        }
    }

    /// Notes the ended records of batch `number`, until it is committed.
    pub fn handed_in(&self, number: u64, writes: &[Write]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, key, value) in writes.iter().filter(|(t, _, _)| *t == Table::Ended) {
            pending.insert(*key, (number, value.clone()));
        }
    }

    /// Forgets the pending rows of batches up to `committed`: the store has them now.
    pub fn committed(&self, committed: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !pending.is_empty() {
            pending.retain(|_, (number, _)| *number > committed);
        }
    }
}

impl taskswarm_protocol::Archive for StoreArchive {
    fn ended(&self, id: &TaskId) -> Option<Vec<u8>> {
        {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, row)) = pending.get(id) {
                return row.clone();
            }
        }
        self.store.get(Table::Ended, id).unwrap_or_else(|error| {
            tracing::error!(%error, task = %id.short(), "cannot read an ended record");
            None
        })
    }

    /// The stored ones only: an ended record not yet committed was written this last moment,
    /// with the home set its primary holds now.
    fn ended_ids_after(&self, after: Option<&TaskId>, limit: usize) -> Vec<TaskId> {
        self.store
            .ended_ids_after(after, limit)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot list the ended records");
                Vec::new()
            })
    }

    /// The stored ones, by the time they were committed, newest first.
    fn recent_ended(&self, limit: usize) -> Vec<Vec<u8>> {
        self.store.recent_ended(limit).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the ended records");
            Vec::new()
        })
    }
}

/// The most batches that may wait for the committer; the event loop waits (back-pressure) when
/// the disk falls this far behind. The committer takes every waiting batch at once, so a deep
/// queue buys nothing: it would only let the loop take in work (and hold its messages in memory)
/// faster than the disk keeps it.
const MAX_WAITING_BATCHES: usize = 8;
/// The most writes one transaction takes; what waits beyond goes in the next.
const MAX_GROUP_WRITES: usize = 65_536;

/// How far the committer got: batches are numbered from 1 in the order they were handed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every batch up to this number is durable.
    pub committed: u64,
    /// Why the store failed, if it did (nothing more is committed after).
    pub failed: Option<String>,
    /// Transactions committed, and the batches and writes they carried.
    pub stats: CommitStats,
}

/// What the committer did, counted since the peer started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitStats {
    /// Transactions committed (one fsync each, for a store on disk).
    pub commits: u64,
    /// Batches (rounds of inputs that wrote something) they carried.
    pub batches: u64,
    /// Row writes and deletions handed to the store.
    pub writes: u64,
    /// Rows written or deleted: a row changed in several rounds of one commit is written once.
    #[serde(default)]
    pub rows: u64,
    /// Ended records deleted after the retention period.
    #[serde(default)]
    pub compacted: u64,
}

/// How often the committer looks for ended records past the retention period.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// The store's writer: a thread that owns the store's writes and commits the batches handed to
/// it in order, all that wait in one transaction; between them, it deletes ended records older
/// than the retention period. Dropping it (or [`Committer::close`]) commits what was handed in
/// and stops the thread.
#[derive(Debug)]
pub struct Committer {
    batches: Option<std_mpsc::SyncSender<(u64, Vec<Write>)>>,
    progress: watch::Receiver<Progress>,
    submitted: u64,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread that writes to `store`, keeping ended records for `retention`.
    pub fn start(
        store: Store,
        retention: Duration,
        metrics: crate::metrics::Metrics,
    ) -> Result<Self, std::io::Error> {
        let (batches, waiting) = std_mpsc::sync_channel(MAX_WAITING_BATCHES);
        let (report, progress) = watch::channel(Progress::default());
        let thread = std::thread::Builder::new()
            .name("taskswarm-store".into())
            .spawn(move || commit_in_groups(&store, retention, &waiting, &report, &metrics))?;
        Ok(Self {
            batches: Some(batches),
            progress,
            submitted: 0,
            thread: Some(thread),
        })
    }

    /// Hands in a batch of writes; returns its number. Waits only if the disk is
    /// [`MAX_WAITING_BATCHES`] behind.
    pub fn submit(&mut self, writes: Vec<Write>) -> u64 {
        self.submitted += 1;
        if let Some(batches) = &self.batches
            && batches.send((self.submitted, writes)).is_err()
        {
            // The thread stopped after a failure: `progress` says why.
            tracing::debug!(batch = self.submitted, "the store's writer has stopped");
        }
        self.submitted
    }

    /// The number of the last batch handed in (0 before the first).
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// How far the committer got.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until the committer reports more progress (or has stopped: then never returns).
    pub async fn changed(&mut self) {
        if self.progress.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Commits what was handed in, stops the thread and waits for it (so the store file is
    /// closed when this returns, unless another handle to the store is still open).
    pub async fn close(mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The committer's thread: takes the first batch waiting, every other one waiting with it (up to
/// [`MAX_GROUP_WRITES`]), commits them in one transaction, reports, and again, until the event
/// loop hangs up or the store fails; compacts every [`COMPACT_EVERY`].
fn commit_in_groups(
    store: &Store,
    retention: Duration,
    waiting: &std_mpsc::Receiver<(u64, Vec<Write>)>,
    report: &watch::Sender<Progress>,
    metrics: &crate::metrics::Metrics,
) {
    let mut next = None;
    let mut last_compaction: Option<std::time::Instant> = None;
    loop {
        if last_compaction.is_none_or(|at| at.elapsed() >= COMPACT_EVERY) {
            last_compaction = Some(std::time::Instant::now());
            let before = wall_clock_ms().saturating_sub(retention.as_millis() as u64);
            match store.compact(before) {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, "ended records past the retention period deleted");
                    report.send_modify(|p| p.stats.compacted += deleted);
                }
                Err(e) => {
                    report.send_modify(|p| p.failed = Some(e.to_string()));
                    return;
                }
            }
        }
        let first = match next.take() {
            Some(batch) => batch,
            None => match waiting.recv_timeout(COMPACT_EVERY) {
                Ok(batch) => batch,
                Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        let (mut last, mut writes) = first;
        let mut batches = 1;
        while writes.len() < MAX_GROUP_WRITES {
            let Ok((number, more)) = waiting.try_recv() else {
                break;
            };
            if writes.len() + more.len() > MAX_GROUP_WRITES {
                next = Some((number, more));
                break;
            }
            last = number;
            batches += 1;
            writes.extend(more);
        }
        let began = std::time::Instant::now();
        let committed = store.commit(&writes, wall_clock_ms());
        if let Ok(rows) = committed {
            metrics.committed(rows, began.elapsed());
        }
        match committed {
            Ok(rows) => report.send_modify(|p| {
                p.committed = last;
                p.stats.commits += 1;
                p.stats.batches += batches;
                p.stats.writes += writes.len() as u64;
                p.stats.rows += rows;
            }),
            Err(e) => {
                report.send_modify(|p| p.failed = Some(e.to_string()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_of_a_row_in_one_commit_wins() {
        let store = Store::in_memory().unwrap();
        let (a, b) = (TaskId::from_bytes([1; 32]), TaskId::from_bytes([2; 32]));
        let writes = vec![
            (Table::Records, a, Some(vec![1])),
            (Table::Records, b, Some(vec![2])),
            (Table::Records, a, Some(vec![3])),
            (Table::Records, b, None),
        ];
        assert_eq!(store.commit(&writes, 1).unwrap(), 2, "two rows");
        assert_eq!(store.load().unwrap(), vec![(Table::Records, vec![3])]);
    }

    /// The same checks for every kind of store.
    fn conformance(store: &Store) {
        let a = TaskId::from_bytes([1; 32]);
        let b = TaskId::from_bytes([2; 32]);
        store
            .commit(
                &[
                    (Table::Records, a, Some(b"ra".to_vec())),
                    (Table::Held, a, Some(b"ha".to_vec())),
                    (Table::Records, b, Some(b"rb".to_vec())),
                ],
                1,
            )
            .unwrap();
        store
            .commit(
                &[
                    (Table::Held, a, None),
                    (Table::Records, b, Some(b"rb2".to_vec())),
                ],
                2,
            )
            .unwrap();
        let mut rows = store.load().unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (Table::Records, b"ra".to_vec()),
                (Table::Records, b"rb2".to_vec())
            ]
        );
    }

    #[test]
    fn the_file_store_keeps_what_was_committed_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        conformance(&Store::open(&path).unwrap());
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.load().unwrap().len(), 2);
    }

    #[test]
    fn the_memory_store_behaves_the_same() {
        conformance(&Store::in_memory().unwrap());
    }

    #[tokio::test]
    async fn the_committer_commits_every_batch_in_order_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = Store::open(&path).unwrap();
        let mut committer = Committer::start(
            store,
            Duration::from_secs(3600),
            crate::metrics::Metrics::default(),
        )
        .unwrap();
        let a = TaskId::from_bytes([1; 32]);
        let mut last = 0;
        for round in 0..200u32 {
            let value = round.to_le_bytes().to_vec();
            last = committer.submit(vec![(Table::Records, a, Some(value))]);
        }
        assert_eq!(last, 200);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while committer.progress().committed < last {
            tokio::time::timeout_at(deadline, committer.changed())
                .await
                .expect("the committer reports every batch within 30 s");
        }
        let stats = committer.progress().stats;
        assert_eq!((stats.batches, stats.writes), (200, 200));
        assert!(stats.commits <= 200);
        assert_eq!(
            stats.rows, stats.commits,
            "a row written in several rounds of one commit is written once"
        );
        committer.close().await;
        let rows = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(rows, vec![(Table::Records, 199u32.to_le_bytes().to_vec())]);
    }

    #[test]
    fn ended_records_are_not_read_at_start_but_one_at_a_time_and_go_after_the_retention() {
        use taskswarm_protocol::Archive;
        let store = Store::in_memory().unwrap();
        let (old, new, live) = (
            TaskId::from_bytes([1; 32]),
            TaskId::from_bytes([2; 32]),
            TaskId::from_bytes([3; 32]),
        );
        let ended = |id: TaskId| (Table::Ended, id, Some(id.as_bytes().to_vec()));
        store.commit(&[ended(old)], 1_000).unwrap();
        store
            .commit(
                &[ended(new), (Table::Records, live, Some(b"l".to_vec()))],
                5_000,
            )
            .unwrap();
        assert_eq!(store.load().unwrap(), vec![(Table::Records, b"l".to_vec())]);
        let archive = StoreArchive::new(store.clone());
        assert_eq!(archive.ended(&old), Some(old.as_bytes().to_vec()));
        assert_eq!(store.recent_ended(10).unwrap().len(), 2);
        assert_eq!(
            store.recent_ended(1).unwrap(),
            vec![new.as_bytes().to_vec()]
        );

        assert_eq!(store.compact(5_000).unwrap(), 1, "only the older one");
        assert_eq!(archive.ended(&old), None);
        assert_eq!(archive.ended(&new), Some(new.as_bytes().to_vec()));
        assert_eq!(store.compact(5_000).unwrap(), 0);
    }

    #[test]
    fn the_ended_ids_are_listed_page_by_page_each_once_in_order() {
        let store = Store::in_memory().unwrap();
        let writes: Vec<Write> = (1..=7u8)
            .map(|n| (Table::Ended, TaskId::from_bytes([n; 32]), Some(vec![n])))
            .collect();
        store.commit(&writes, 1).unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.ended_ids_after(after.as_ref(), 3).unwrap();
            seen.extend(page.iter().copied());
            after = page.last().copied();
            if page.len() < 3 {
                break;
            }
        }
        let all: Vec<TaskId> = writes.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn the_archive_sees_what_was_handed_in_before_it_is_committed() {
        use taskswarm_protocol::Archive;
        let store = Store::in_memory().unwrap();
        let archive = StoreArchive::new(store.clone());
        let id = TaskId::from_bytes([7; 32]);
        let writes = vec![(Table::Ended, id, Some(b"e".to_vec()))];
        archive.handed_in(4, &writes);
        assert_eq!(archive.ended(&id), Some(b"e".to_vec()), "pending");
        store.commit(&writes, 1).unwrap();
        archive.committed(4);
        assert_eq!(archive.ended(&id), Some(b"e".to_vec()), "committed");
        assert!(archive.pending.lock().unwrap().is_empty());
    }
}
