//! The swarm-wide lists this peer gathers for its clients, and its answers to the lists others
//! gather (see [`crate::listing`] for the filter, the order and the merge).
//!
//! A list asks every live peer for a page of the records it keeps, answers with this peer's own
//! at once, and ends when every peer asked has answered or [`super::Config::query_timeout_ms`]
//! has passed, whichever is first: a page says how many peers answered, so a client sees a list
//! that may lack a silent peer's records (each record is kept by several, so few are missing).
//!
//! Who may send what:
//! - `List`: any member. Records are not secret among members (as for `Query`).
//! - `Listed`: only a peer asked that question, once; and each entry only for a task whose home
//!   set names the sender (a member answers for the records it keeps, not for others'). An entry
//!   that breaks the rule is dropped and counted. Its seal is not checked: a list is for reading,
//!   and a task's own view and proof (`Query`) check theirs. Its counts are the sender's word
//!   (a member could inflate them; they are for people to read, and nothing acts on them).
//!
//! Owns the lists out; never changes another role's state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::RngCore;

use super::records::OwnQueue;
use super::{Action, Scheduler};
use crate::Millis;
use crate::identity::PeerKey;
use crate::listing::{self, ListAnswer, ListCursor, ListFilter, Page};
use crate::message::Message;
use crate::seal::SealedRecord;
use crate::wire::WireError;

/// A list being gathered.
#[derive(Clone, Debug)]
struct Gathering {
    limit: u32,
    /// The peers asked that have not answered yet.
    waiting: BTreeSet<PeerKey>,
    answers: Vec<ListAnswer>,
    asked: u32,
    asked_at: Millis,
}

/// The lists out, by ticket.
#[derive(Clone, Debug, Default)]
pub(super) struct Listing {
    out: BTreeMap<u64, Gathering>,
}

impl Scheduler {
    /// Gathers a page of the swarm's tasks that `filter` matches, at most `limit`
    /// ([`crate::listing::MAX_PAGE`]); the page comes as [`Action::Listed`] with the returned
    /// ticket, once every live peer answered or the query timeout passed.
    pub fn list(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        filter: ListFilter,
        limit: u32,
    ) -> u64 {
        self.boot(now);
        let ticket = rng.next_u64();
        let own = self.local_page(now, &filter, limit);
        let asked: Vec<PeerKey> = self.peers.keys();
        for peer in &asked {
            let message = Message::List {
                query: ticket,
                filter: filter.clone(),
                limit,
            };
            self.send(*peer, message);
        }
        let gathering = Gathering {
            limit,
            waiting: asked.iter().copied().collect(),
            answers: vec![own],
            asked: asked.len() as u32 + 1,
            asked_at: now,
        };
        self.listing.out.insert(ticket, gathering);
        self.end_list_if_answered(ticket);
        self.finish_input(now, rng);
        ticket
    }

    /// This peer's page of the records it keeps (in memory, and the most recently ended of its
    /// archive) that `filter` matches.
    pub(super) fn local_page(
        &mut self,
        now: Millis,
        filter: &ListFilter,
        limit: u32,
    ) -> ListAnswer {
        self.seal_changed();
        // Only the first `limit` (and one more, to tell whether there are more) of the records in
        // memory can be in the page: copy those alone.
        let mut matching: Vec<_> = self
            .home
            .entries()
            .filter(|e| filter.matches(&e.record))
            .map(|e| (ListCursor::of(&e.record), e))
            .collect();
        matching.sort_by(|a, b| ListCursor::order(&a.0, &b.0));
        let in_memory: Vec<SealedRecord> = matching
            .into_iter()
            .take(limit.min(crate::listing::MAX_PAGE) as usize + 1)
            .filter_map(|(_, e)| e.sealed())
            .collect();
        let wanted = limit.min(crate::listing::MAX_PAGE) as usize + 1;
        let archived = self.home.archived_page(&*self.archive, filter, wanted);
        let own = self.own_queue(true);
        let (home, peers) = (&self.home, &self.peers);
        let mut answer = listing::page(
            in_memory.into_iter().chain(archived),
            filter,
            limit,
            |record| home.why(record, now, peers, &own),
        );
        answer.counts = self.local_counts(filter);
        answer
    }

    /// How many of the records this peer keeps and leads match `filter` (the cursor aside), by
    /// state (see [`ListAnswer::counts`]).
    fn local_counts(&mut self, filter: &ListFilter) -> listing::Counts {
        let everywhere = ListFilter {
            after: None,
            ..filter.clone()
        };
        let me = self.me;
        let peers = &self.peers;
        let leads = |home: &[PeerKey]| peers.primary_of(home) == Some(me);
        let mut counts = listing::Counts::default();
        for entry in self.home.entries() {
            if everywhere.matches(&entry.record) && leads(entry.record.home()) {
                counts[listing::count_index(entry.record.state)] += 1;
            }
        }
        let archived = self
            .home
            .archived_counts(&*self.archive, &everywhere, leads);
        for (c, a) in counts.iter_mut().zip(archived) {
            *c += a;
        }
        counts
    }

    /// Why `record` (one this peer keeps) is not running, as this peer knows it; `None` if it
    /// runs or ended.
    pub fn why_not_running(
        &self,
        now: Millis,
        record: &crate::record::TaskRecord,
    ) -> Option<crate::listing::Why> {
        let own = self.own_queue(record.holder == Some(self.me));
        self.home.why(record, now, &self.peers, &own)
    }

    /// This peer's ready queue, each task's place in it, as the reasons read it (an empty map
    /// when no reason will ask: reading the queue costs a walk of it).
    fn own_queue(&self, needed: bool) -> OwnQueue {
        let places = if needed {
            let (queue, _) = self.holding.queue();
            queue
                .enumerate()
                .map(|(place, (id, _))| (id, place as u32))
                .collect()
        } else {
            HashMap::new()
        };
        OwnQueue {
            me: self.me,
            places,
        }
    }

    /// A `List` from `from`: answer with this peer's page.
    pub(super) fn on_list(
        &mut self,
        now: Millis,
        from: PeerKey,
        query: u64,
        filter: ListFilter,
        limit: u32,
    ) {
        let answer = self.local_page(now, &filter, limit);
        self.send(from, Message::Listed { query, answer });
    }

    /// A `Listed` from `from` (see the module documentation for the rule).
    pub(super) fn on_listed(&mut self, from: PeerKey, query: u64, mut answer: ListAnswer) {
        let Some(gathering) = self.listing.out.get_mut(&query) else {
            let error = WireError::Unauthorized("a list answer to no open question");
            return self.reject("listed", &error);
        };
        if !gathering.waiting.remove(&from) {
            let error = WireError::Unauthorized("a list answer from a peer not asked, or again");
            return self.reject("listed", &error);
        }
        let before = answer.entries.len();
        answer
            .entries
            .retain(|e| e.sealed.record.home().contains(&from));
        gathering.answers.push(answer.clone());
        let dropped = before - answer.entries.len();
        for _ in 0..dropped {
            let error = WireError::Unauthorized("a listed record whose home set lacks the sender");
            self.reject("listed", &error);
        }
        self.end_list_if_answered(query);
    }

    /// Ends the lists that have had their answers' time.
    pub(super) fn expire_lists(&mut self, now: Millis) {
        let timeout = self.config.query_timeout_ms;
        let due: Vec<u64> = self
            .listing
            .out
            .iter()
            .filter(|(_, g)| now.saturating_sub(g.asked_at) >= timeout)
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in due {
            self.end_list(ticket);
        }
    }

    /// A peer taken for dead will not answer: stop waiting for it.
    pub(super) fn forget_list_answers_from(&mut self, peer: &PeerKey) {
        let tickets: Vec<u64> = self.listing.out.keys().copied().collect();
        for ticket in tickets {
            if let Some(g) = self.listing.out.get_mut(&ticket) {
                g.waiting.remove(peer);
            }
            self.end_list_if_answered(ticket);
        }
    }

    fn end_list_if_answered(&mut self, ticket: u64) {
        if self
            .listing
            .out
            .get(&ticket)
            .is_some_and(|g| g.waiting.is_empty())
        {
            self.end_list(ticket);
        }
    }

    fn end_list(&mut self, ticket: u64) {
        let Some(gathering) = self.listing.out.remove(&ticket) else {
            return;
        };
        let answered = gathering.answers.len() as u32;
        let counts = listing::sum_counts(&gathering.answers);
        let (entries, next) = listing::merge(gathering.answers, gathering.limit);
        let page = Page {
            entries,
            next,
            asked: gathering.asked,
            answered,
            counts,
        };
        self.actions.push_back(Action::Listed { ticket, page });
    }
}
