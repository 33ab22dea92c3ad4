//! What a list reads of the ended records this peer keeps: for each of the most recent
//! [`KEPT`], its place in the list's order and what the filters ask of it (state, client,
//! labels), so a page reads from the archive only the rows it shows instead of decoding every
//! ended record each time (a list over 10,000 ended records took 50 ms of the event loop that
//! way).
//!
//! Filled as records end here (or come here ended, or are restored ended), and, for what ended
//! before this peer started, from the archive's most recent rows the first time a list asks.
//! Owns the summaries; never writes anything.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::archive::Archive;
use crate::identity::PeerKey;
use crate::listing::{Counts, ListCursor, ListFilter, count_index};
use crate::record::{TaskRecord, TaskState};
use crate::seal::SealedRecord;
use crate::task::{TaskId, TaskSpec};

/// How many ended records the index keeps: the most recently ended.
pub(in crate::scheduler) const KEPT: usize = 10_000;

/// What the filters read of one ended record.
#[derive(Clone, Debug)]
struct Summary {
    state: TaskState,
    client: Option<String>,
    labels: Vec<String>,
    /// The home set, to tell who leads it (counts count a task at its leader only).
    home: Vec<PeerKey>,
}

impl Summary {
    fn of(record: &TaskRecord, spec: &TaskSpec) -> Self {
        Self {
            state: record.state,
            client: spec.client.clone(),
            labels: spec.needs.labels.iter().map(ToString::to_string).collect(),
            home: record.home().to_vec(),
        }
    }

    /// Whether `filter` matches it, the cursor aside, at `submitted_ms`.
    fn matches(&self, filter: &ListFilter, submitted_ms: u64) -> bool {
        filter.since_ms.is_none_or(|since| submitted_ms >= since)
            && filter.until_ms.is_none_or(|until| submitted_ms < until)
            && filter.state.is_none_or(|s| s == self.state)
            && filter
                .client
                .as_ref()
                .is_none_or(|c| self.client.as_ref() == Some(c))
            && filter
                .label
                .as_ref()
                .is_none_or(|l| self.labels.contains(l))
    }
}

/// The index (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(in crate::scheduler) struct EndedIndex {
    /// By place in the list's order: `(submitted_ms, id)`, read backwards.
    by_place: BTreeMap<(u64, TaskId), Summary>,
    /// Each record's place and its number in the order they ended.
    place_of: HashMap<TaskId, (u64, u64)>,
    /// Records in the order they ended (a record that ended again is found by its number).
    order: VecDeque<(u64, TaskId)>,
    next: u64,
    /// Whether what ended before this peer started was read from the archive.
    loaded: bool,
}

impl EndedIndex {
    /// Notes an ended record (it ended here, came here ended, or was restored).
    pub(in crate::scheduler) fn note(&mut self, record: &TaskRecord, spec: &TaskSpec) {
        self.insert(
            record.id(),
            record.submitted_wall_ms,
            Summary::of(record, spec),
            true,
        );
    }

    fn insert(&mut self, id: TaskId, submitted_ms: u64, summary: Summary, newest: bool) {
        if let Some((old_at, _)) = self.place_of.remove(&id) {
            self.by_place.remove(&(old_at, id));
        }
        self.next += 1;
        let number = self.next;
        self.by_place.insert((submitted_ms, id), summary);
        self.place_of.insert(id, (submitted_ms, number));
        if newest {
            self.order.push_back((number, id));
        } else {
            self.order.push_front((number, id));
        }
        while self.place_of.len() > KEPT {
            let Some((number, id)) = self.order.pop_front() else {
                break;
            };
            if self.place_of.get(&id).is_some_and(|(_, n)| *n == number)
                && let Some((at, _)) = self.place_of.remove(&id)
            {
                self.by_place.remove(&(at, id));
            }
        }
    }

    /// Reads what ended before this peer started, once: the archive's most recent rows (a record
    /// noted since is newer and stays as noted).
    fn load(&mut self, archive: &dyn Archive) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        for row in archive.recent_ended(KEPT) {
            let Ok(sealed) = SealedRecord::from_bytes(&row) else {
                continue;
            };
            let record = &sealed.record;
            if self.place_of.contains_key(&record.id()) || !record.state.is_final() {
                continue;
            }
            let Ok(spec) = record.envelope.spec.decode_verified_earlier() else {
                continue;
            };
            // Newest first from the archive: each older than the last.
            self.insert(
                record.id(),
                record.submitted_wall_ms,
                Summary::of(record, &spec),
                false,
            );
        }
    }

    /// How many of the ended records it indexes match `filter` (the cursor aside), by state,
    /// counting those `leads` says this peer leads and `skip` does not say are counted elsewhere
    /// (in memory).
    pub(in crate::scheduler) fn count(
        &mut self,
        archive: &dyn Archive,
        filter: &ListFilter,
        leads: impl Fn(&[PeerKey]) -> bool,
        skip: impl Fn(&TaskId) -> bool,
    ) -> Counts {
        let mut counts = Counts::default();
        if filter.state.is_some_and(|s| !s.is_final()) {
            return counts;
        }
        self.load(archive);
        for ((at, id), summary) in &self.by_place {
            if summary.matches(filter, *at) && leads(&summary.home) && !skip(id) {
                counts[count_index(summary.state)] += 1;
            }
        }
        counts
    }

    /// The rows of at most `wanted` ended records that `filter` matches, in the list's order,
    /// skipping those `skip` says are read elsewhere (in memory); the rows are read from the
    /// archive.
    pub(in crate::scheduler) fn page(
        &mut self,
        archive: &dyn Archive,
        filter: &ListFilter,
        wanted: usize,
        skip: impl Fn(&TaskId) -> bool,
    ) -> Vec<SealedRecord> {
        if filter.state.is_some_and(|s| !s.is_final()) {
            return Vec::new();
        }
        self.load(archive);
        let upper = filter.after.map(|c: ListCursor| (c.submitted_ms, c.id));
        let range = match upper {
            Some(upper) => self.by_place.range(..upper),
            None => self.by_place.range(..),
        };
        let mut rows = Vec::new();
        for ((at, id), summary) in range.rev() {
            if rows.len() >= wanted || filter.since_ms.is_some_and(|since| *at < since) {
                break;
            }
            if filter.until_ms.is_some_and(|until| *at >= until)
                || filter.state.is_some_and(|s| s != summary.state)
                || filter
                    .client
                    .as_ref()
                    .is_some_and(|c| summary.client.as_ref() != Some(c))
                || filter
                    .label
                    .as_ref()
                    .is_some_and(|l| !summary.labels.contains(l))
                || skip(id)
            {
                continue;
            }
            let Some(row) = archive.ended(id) else {
                continue;
            };
            if let Ok(sealed) = SealedRecord::from_bytes(&row)
                && sealed.record.id() == *id
                && filter.matches(&sealed.record)
            {
                rows.push(sealed);
            }
        }
        rows
    }
}
