//! Swarm-wide task lists: what a client asks for ([`ListFilter`]), the order lists come in, why a
//! listed task is not running ([`Why`]), and how the pages of many home members become one
//! ([`merge`]).
//!
//! A task's record is kept only by its home set, so a list of the swarm's tasks is gathered by
//! asking every live peer for the records it keeps that match, and merging the answers: a task
//! kept by three members comes back three times, and the copy with the highest version wins.
//! Lists are newest first (by submission time, then id), and paged by a cursor, the last entry's
//! place in that order: every peer answers at most a page of its own records after the cursor,
//! so the merge of the answers holds the swarm's next page (see [`merge`] for the case of an
//! answer cut short).
//!
//! Owns the filter, the order and the merge. Never sends or decides anything: the scheduler asks
//! and answers (`scheduler/listing.rs`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::identity::PeerKey;
use crate::record::{TaskRecord, TaskState};
use crate::seal::SealedRecord;
use crate::task::TaskId;

/// The most entries a page may hold.
pub const MAX_PAGE: u32 = 1_000;

/// The most bytes of records one peer puts in an answer (a message may hold 8 MiB); an answer cut
/// short by it says so ([`ListAnswer::more`]).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Where a page starts: after this place in the list's order (newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ListCursor {
    /// The submission time of the last entry of the page before (wall-clock ms).
    pub submitted_ms: u64,
    /// Its id.
    pub id: TaskId,
}

impl ListCursor {
    /// The place of `record` in the order.
    pub fn of(record: &TaskRecord) -> Self {
        Self {
            submitted_ms: record.submitted_wall_ms,
            id: record.id(),
        }
    }

    /// The order of lists: newest first, then by id, descending.
    pub fn order(a: &Self, b: &Self) -> Ordering {
        (b.submitted_ms, b.id).cmp(&(a.submitted_ms, a.id))
    }

    /// `submitted_ms` and `id` as text, for a client to hand back (`1764900000000-<64 hex>`).
    pub fn to_text(&self) -> String {
        format!("{}-{}", self.submitted_ms, self.id)
    }

    /// Reads [`ListCursor::to_text`]'s form back.
    pub fn from_text(text: &str) -> Option<Self> {
        let (ms, id) = text.split_once('-')?;
        Some(Self {
            submitted_ms: ms.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// Which tasks a list holds. Every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct ListFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks that need this label (`key=value`, as the spec names it).
    pub label: Option<String>,
    /// Only tasks asked for by this client (the name of its API token).
    pub client: Option<String>,
    /// Only tasks submitted at or after this wall-clock time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only tasks submitted before this wall-clock time.
    pub until_ms: Option<u64>,
    /// Only tasks after this place in the order (the next page).
    pub after: Option<ListCursor>,
}

impl ListFilter {
    /// Whether `record` belongs in the list. Reads the spec without checking its signature again:
    /// a record a peer keeps was checked when it came in.
    pub fn matches(&self, record: &TaskRecord) -> bool {
        if self.state.is_some_and(|s| s != record.state) {
            return false;
        }
        let at = record.submitted_wall_ms;
        if self.since_ms.is_some_and(|since| at < since)
            || self.until_ms.is_some_and(|until| at >= until)
        {
            return false;
        }
        if let Some(after) = &self.after
            && ListCursor::order(after, &ListCursor::of(record)) != Ordering::Less
        {
            return false;
        }
        if self.label.is_none() && self.client.is_none() {
            return true;
        }
        let Ok(spec) = record.envelope.spec.decode_verified_earlier() else {
            return false;
        };
        if let Some(client) = &self.client
            && spec.client.as_deref() != Some(client.as_str())
        {
            return false;
        }
        if let Some(label) = &self.label
            && !spec.needs.labels.iter().any(|l| l.to_string() == *label)
        {
            return false;
        }
        true
    }
}

/// Why a task that is not running is where it is, as the peer that answered for it knows.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Why {
    /// It waits for a dependency to end (`others` more besides).
    Dependency {
        /// The dependency's name, or its short id.
        name: String,
        /// How many other dependencies it waits for too.
        others: u32,
    },
    /// Its last attempt failed; the next starts after a back-off.
    Retry {
        /// How long until it may be placed again, in ms.
        in_ms: u64,
    },
    /// It is queued at its holder.
    Queued {
        /// The holder.
        holder: PeerKey,
        /// Tasks ahead of it there, if the answering peer is the holder; else `None`.
        ahead: Option<u32>,
        /// The holder's queue length, as last reported or known.
        queued: u32,
    },
    /// It waits to be placed: no peer that can run it has a free slot, or placing is under way.
    Placing,
    /// No live peer can run it: what is missing.
    Unschedulable(String),
}

impl Why {
    /// In words, naming peers with `name`: `waiting for dependency b`, `queued behind 12 on peer
    /// 12D3…`, `retry in 800 ms`, `no live peer has label gpu=1`.
    pub fn describe(&self, name: impl Fn(&PeerKey) -> String) -> String {
        match self {
            Why::Dependency {
                name: dep,
                others: 0,
            } => format!("waiting for dependency {dep}"),
            Why::Dependency { name: dep, others } => {
                format!("waiting for dependency {dep} and {others} more")
            }
            Why::Retry { in_ms } => format!("retry in {in_ms} ms"),
            Why::Queued {
                holder,
                ahead: Some(0),
                ..
            } => format!("next to start on peer {}", name(holder)),
            Why::Queued {
                holder,
                ahead: Some(ahead),
                ..
            } => format!("queued behind {ahead} on peer {}", name(holder)),
            Why::Queued {
                holder,
                ahead: None,
                queued,
            } => format!("queued on peer {} ({queued} queued there)", name(holder)),
            Why::Placing => "waiting for a free slot on a peer that can run it".to_string(),
            Why::Unschedulable(what) => what.clone(),
        }
    }
}

/// One listed task: its record, sealed by the member that answered, and why it is not running.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ListEntry {
    /// The record.
    pub sealed: SealedRecord,
    /// Why it is not running (`None` if it runs or ended).
    pub why: Option<Why>,
}

impl ListEntry {
    /// Its place in the order.
    pub fn cursor(&self) -> ListCursor {
        ListCursor::of(&self.sealed.record)
    }
}

/// One peer's answer: its matching entries in order, at most a page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct ListAnswer {
    /// The entries.
    pub entries: Vec<ListEntry>,
    /// Whether it keeps more matching records after the last entry.
    pub more: bool,
    /// How many of the records it keeps match the filter (the cursor aside), by state, counting
    /// only those it leads (it is the first live member of their home set): summed over the
    /// peers, each task is counted once while their views of who is alive agree.
    pub counts: Counts,
}

/// Tasks by state, in [`TaskState::ALL`]'s order.
pub type Counts = [u64; 6];

/// The place of `state` in [`Counts`].
pub fn count_index(state: TaskState) -> usize {
    TaskState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

/// The local page: of `records` (this peer's, in any order), those `filter` matches, in order, at
/// most `limit` and [`MAX_ANSWER_BYTES`] of records. `why` says why each is not running.
pub fn page(
    records: impl Iterator<Item = SealedRecord>,
    filter: &ListFilter,
    limit: u32,
    mut why: impl FnMut(&TaskRecord) -> Option<Why>,
) -> ListAnswer {
    let mut matching: Vec<SealedRecord> = records.filter(|s| filter.matches(&s.record)).collect();
    matching
        .sort_by(|a, b| ListCursor::order(&ListCursor::of(&a.record), &ListCursor::of(&b.record)));
    matching.dedup_by_key(|s| s.record.id());
    let limit = limit.min(MAX_PAGE) as usize;
    let mut answer = ListAnswer::default();
    let mut bytes = 0usize;
    let total = matching.len();
    for sealed in matching.into_iter().take(limit) {
        bytes += sealed.to_bytes().len();
        if bytes > MAX_ANSWER_BYTES && !answer.entries.is_empty() {
            break;
        }
        let why = why(&sealed.record);
        answer.entries.push(ListEntry { sealed, why });
    }
    answer.more = answer.entries.len() < total;
    answer
}

/// The counts of every answer, summed.
pub fn sum_counts(answers: &[ListAnswer]) -> Counts {
    let mut total = Counts::default();
    for answer in answers {
        for (t, n) in total.iter_mut().zip(answer.counts) {
            *t = t.saturating_add(n);
        }
    }
    total
}

/// A merged page of the swarm's list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The entries, in order, one per task.
    pub entries: Vec<ListEntry>,
    /// Where the next page starts, if there may be one.
    pub next: Option<ListCursor>,
    /// How many peers were asked (this one included).
    pub asked: u32,
    /// How many answered in time (this one included).
    pub answered: u32,
    /// The swarm's tasks that match the filter (the cursor aside), by state, over the answers
    /// (see [`ListAnswer::counts`]).
    pub counts: Counts,
}

/// Merges the answers of the peers asked into one page of at most `limit` entries: one entry per
/// task (the copy with the highest version, a final one over any other; its `why` if it has
/// one, else another copy's). An answer that was cut short (`more`) knows nothing of its records
/// past its last entry, so the page ends there at the latest: the next page asks again from it.
pub fn merge(answers: Vec<ListAnswer>, limit: u32) -> (Vec<ListEntry>, Option<ListCursor>) {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let mut cut: Option<ListCursor> = None;
    let mut best: BTreeMap<TaskId, ListEntry> = BTreeMap::new();
    for answer in answers {
        if answer.more
            && let Some(last) = answer.entries.last().map(ListEntry::cursor)
            && cut.is_none_or(|c| ListCursor::order(&last, &c) == Ordering::Less)
        {
            cut = Some(last);
        }
        for entry in answer.entries {
            let id = entry.sealed.record.id();
            match best.get_mut(&id) {
                None => {
                    best.insert(id, entry);
                }
                Some(held) => {
                    let rank =
                        |e: &ListEntry| (e.sealed.record.state.is_final(), e.sealed.record.version);
                    let why = held.why.take().or(entry.why.clone());
                    if rank(&entry) > rank(held) {
                        *held = entry;
                    }
                    if held.why.is_none() && !held.sealed.record.state.is_final() {
                        held.why = why;
                    }
                }
            }
        }
    }
    let mut entries: Vec<ListEntry> = best
        .into_values()
        .filter(|e| cut.is_none_or(|c| ListCursor::order(&e.cursor(), &c) != Ordering::Greater))
        .collect();
    entries.sort_by(|a, b| ListCursor::order(&a.cursor(), &b.cursor()));
    let full = entries.len() > limit;
    entries.truncate(limit);
    let next = if full || cut.is_some() {
        entries.last().map(ListEntry::cursor)
    } else {
        None
    };
    (entries, next)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::identity::Keypair;
    use crate::signed::Signed;
    use crate::task::{Task, TaskKind, TaskSpec};

    /// A sealed, waiting record of task `nonce`, submitted at `at` ms.
    fn sealed(nonce: u64, at: u64) -> SealedRecord {
        let key = Keypair::from_secret([1; 32]);
        let kind = TaskKind::Handler {
            name: "echo".into(),
            input: Vec::new(),
        };
        let spec = TaskSpec {
            home: vec![key.public()],
            ..TaskSpec::new(key.public(), nonce, kind)
        };
        let envelope = Task::from_signed(Signed::sign(&spec, &key))
            .map(|t| t.envelope())
            .unwrap_or_else(|_| unreachable!("a spec signed here verifies"));
        let record = TaskRecord {
            envelope,
            state: TaskState::Waiting,
            epoch: 0,
            holder: None,
            version: 1,
            attempts: Vec::new(),
            history: Vec::new(),
            outcome: None,
            executed_by: None,
            submitted_wall_ms: at,
            finished_wall_ms: None,
        };
        let seal = crate::seal::seal(&key, &[crate::seal::digest(&record)]).remove(0);
        SealedRecord { record, seal }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Records spread over three peers (each kept by one to three of them, some submitted in
        /// the same millisecond), listed page after page with answers cut short at random: every
        /// record comes exactly once, newest first.
        #[test]
        fn pages_of_merged_answers_hold_every_record_once_in_order(
            placement in proptest::collection::vec((0u64..40, 1u8..8), 0..60),
            limit in 1u32..12,
            cuts in proptest::collection::vec(0u32..12, 3),
        ) {
            let records: Vec<(SealedRecord, u8)> = placement
                .iter()
                .enumerate()
                .map(|(n, (at, keepers))| (sealed(n as u64, *at), *keepers))
                .collect();
            let kept = |peer: u8| -> Vec<SealedRecord> {
                records
                    .iter()
                    .filter(|(_, keepers)| keepers & (1 << peer) != 0)
                    .map(|(r, _)| r.clone())
                    .collect()
            };
            let mut filter = ListFilter::default();
            let mut listed: Vec<ListCursor> = Vec::new();
            for _ in 0..200 {
                let answers: Vec<ListAnswer> = (0..3u8)
                    .map(|peer| {
                        // A peer that answers with fewer than asked (as if its answer filled up)
                        // says it has more.
                        let short = limit.min(cuts[peer as usize].max(1));
                        page(kept(peer).into_iter(), &filter, short, |_| None)
                    })
                    .collect();
                let (entries, next) = merge(answers, limit);
                prop_assert!(entries.len() <= limit as usize);
                listed.extend(entries.iter().map(ListEntry::cursor));
                match next {
                    Some(next) => filter.after = Some(next),
                    None => break,
                }
            }
            let mut expected: Vec<ListCursor> =
                records.iter().map(|(r, _)| ListCursor::of(&r.record)).collect();
            expected.sort_by(ListCursor::order);
            prop_assert_eq!(listed, expected);
        }
    }

    #[test]
    fn reasons_read_as_people_say_them() {
        let peer = Keypair::from_secret([2; 32]).public();
        let name = |_: &PeerKey| "p2".to_string();
        let queued = |ahead| Why::Queued {
            holder: peer,
            ahead,
            queued: 12,
        };
        assert_eq!(queued(Some(0)).describe(name), "next to start on peer p2");
        assert_eq!(queued(Some(3)).describe(name), "queued behind 3 on peer p2");
        assert_eq!(
            queued(None).describe(name),
            "queued on peer p2 (12 queued there)"
        );
        let dependency = Why::Dependency {
            name: "build".into(),
            others: 2,
        };
        assert_eq!(
            dependency.describe(name),
            "waiting for dependency build and 2 more"
        );
        assert_eq!(Why::Retry { in_ms: 800 }.describe(name), "retry in 800 ms");
    }

    #[test]
    fn cursors_read_back_and_filters_hold() {
        let record = sealed(7, 1_000).record;
        let cursor = ListCursor::of(&record);
        assert_eq!(ListCursor::from_text(&cursor.to_text()), Some(cursor));
        assert_eq!(ListCursor::from_text("12-zz"), None);
        let after = |ms| ListFilter {
            after: Some(ListCursor {
                submitted_ms: ms,
                id: record.id(),
            }),
            ..ListFilter::default()
        };
        assert!(
            after(1_001).matches(&record),
            "older than the cursor: on the next page"
        );
        assert!(
            !after(1_000).matches(&record),
            "the cursor's own entry is not listed again"
        );
        let since = |ms| ListFilter {
            since_ms: Some(ms),
            ..ListFilter::default()
        };
        assert!(since(1_000).matches(&record) && !since(1_001).matches(&record));
        let state = ListFilter {
            state: Some(TaskState::Completed),
            ..ListFilter::default()
        };
        assert!(!state.matches(&record));
        let client = ListFilter {
            client: Some("ops".into()),
            ..ListFilter::default()
        };
        assert!(
            !client.matches(&record),
            "a task without a client is nobody's"
        );
    }
}
