//! The embedded, crash-safe store of a peer: the scheduler's durable tables (records of the tasks
//! whose home set the peer is in, the tasks it holds, the results it has not yet delivered) in one
//! redb database under the data directory.
//!
//! Writes come from the scheduler's [`Action::Write`](taskswarm_protocol::Action::Write) actions;
//! the event loop gathers the writes of one input and commits them in one transaction before it
//! sends any message that follows them, so nothing is acknowledged that is not on disk. At start
//! every row is read back into the scheduler. A peer without a data directory keeps the same
//! tables in memory.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use taskswarm_protocol::{Table, TaskId};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const HELD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("held");
const OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match table {
        Table::Records => RECORDS,
        Table::Held => HELD,
        Table::Outbox => OUTBOX,
    }
}

const TABLES: [Table; 3] = [Table::Records, Table::Held, Table::Outbox];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[from] redb::Error);

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError(e.into())
}

/// One pending write.
pub type Write = (Table, TaskId, Option<Vec<u8>>);

/// A peer's durable tables.
pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db)?;
        Self::init(db)
    }

    /// A store that lives in memory only (for peers embedded without a data directory).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db)?;
        Self::init(db)
    }

    fn init(database: Database) -> Result<Self, StoreError> {
        let tx = database.begin_write().map_err(db)?;
        for table in TABLES {
            tx.open_table(definition(table)).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(Self { db: database })
    }

    /// Every row of every table.
    pub fn load(&self) -> Result<Vec<(Table, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let mut rows = Vec::new();
        for table in TABLES {
            let t = tx.open_table(definition(table)).map_err(db)?;
            for row in t.iter().map_err(db)? {
                let (_, value) = row.map_err(db)?;
                rows.push((table, value.value().to_vec()));
            }
        }
        Ok(rows)
    }

    /// Applies writes in one durable transaction.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db)?;
        for table in TABLES {
            let mut t = tx.open_table(definition(table)).map_err(db)?;
            for (_, key, value) in writes.iter().filter(|(t, _, _)| *t == table) {
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
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checks for every kind of store.
    fn conformance(store: &Store) {
        let a = TaskId::from_bytes([1; 32]);
        let b = TaskId::from_bytes([2; 32]);
        store
            .commit(&[
                (Table::Records, a, Some(b"ra".to_vec())),
                (Table::Held, a, Some(b"ha".to_vec())),
                (Table::Records, b, Some(b"rb".to_vec())),
            ])
            .unwrap();
        store
            .commit(&[
                (Table::Held, a, None),
                (Table::Records, b, Some(b"rb2".to_vec())),
            ])
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
}
