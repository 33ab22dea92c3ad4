//! What a peer measures, for `GET /metrics` (the Prometheus text format, written by
//! prometheus-client).
//!
//! Two kinds of figure. What the runtime sees happen (an attempt's run time, a task's latency
//! from its submission to its end, a store commit, the bytes of a load report) is recorded as it
//! happens into [`Metrics`], which the event loop, the task runs and the store's writer share.
//! What the scheduler counts ([`Counters`]) and how the peer stands now (its queue, its running
//! tasks, its slots, the peers it knows, its records by state) come in a [`Snapshot`] the event
//! loop takes when `/metrics` is asked for; [`Metrics::render`] writes both.
//!
//! Names follow Prometheus conventions: a `taskswarm_` prefix, units in the name
//! (`_seconds`, `_bytes`), `_total` on counters. Nothing here decides anything: no figure feeds
//! back into scheduling.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use taskswarm_protocol::{Counters, TaskState};

/// One label: its name and value.
type Labels = Vec<(&'static str, String)>;

/// The figures recorded as things happen. Cheap to clone: clones share the figures.
#[derive(Clone, Debug)]
pub struct Metrics {
    submitted: Counter,
    attempts: Family<Labels, Counter>,
    run_seconds: Histogram,
    latency_seconds: Histogram,
    commit_seconds: Histogram,
    commit_rows: Histogram,
    gossip_bytes: Family<Labels, Counter>,
    lease_renewals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            submitted: Counter::default(),
            attempts: Family::default(),
            // 100 µs to about 55 min.
            run_seconds: Histogram::new(exponential_buckets(0.0001, 3.0, 16)),
            latency_seconds: Histogram::new(exponential_buckets(0.0001, 3.0, 16)),
            // 10 µs to about 1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.00001, 3.0, 12)),
            // 1 to 4,096 rows.
            commit_rows: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            gossip_bytes: Family::default(),
            lease_renewals: Counter::default(),
        }
    }
}

/// How the peer stands when `/metrics` is asked for, as the event loop reads it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The scheduler's counters.
    pub counters: Counters,
    /// Tasks in this peer's ready queue.
    pub queued: u64,
    /// Tasks running in its slots.
    pub running: u64,
    /// Its slots.
    pub slots: u64,
    /// Other peers it has heard from recently.
    pub peers: u64,
    /// Connections open now.
    pub connections: u64,
    /// The records it keeps in memory (its live work, and ended ones for a few seconds), by state.
    pub records: BTreeMap<TaskState, u64>,
    /// What the store's writer committed.
    pub store: crate::store::CommitStats,
}

impl Metrics {
    /// Tasks accepted through this peer (stored on their home sets).
    pub(crate) fn submitted(&self, tasks: usize) {
        self.submitted.inc_by(tasks as u64);
    }

    /// An attempt this peer ran ended so, after `run`.
    pub(crate) fn attempt(&self, ending: &'static str, run: std::time::Duration) {
        self.attempts
            .get_or_create(&vec![("ending", ending.to_string())])
            .inc();
        self.run_seconds.observe(run.as_secs_f64());
    }

    /// A task submitted through this peer ended `latency` after it was submitted.
    pub(crate) fn ended(&self, latency: std::time::Duration) {
        self.latency_seconds.observe(latency.as_secs_f64());
    }

    /// The store committed `rows` rows in one transaction, which took `took`.
    pub(crate) fn committed(&self, rows: u64, took: std::time::Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_rows.observe(rows as f64);
    }

    /// A load report of `bytes` went out, renewing `leases` leases this peer holds.
    pub(crate) fn report_sent(&self, bytes: usize, leases: usize) {
        self.gossip(bytes, "out");
        self.lease_renewals.inc_by(leases as u64);
    }

    /// A load report of `bytes` came in.
    pub(crate) fn report_received(&self, bytes: usize) {
        self.gossip(bytes, "in");
    }

    fn gossip(&self, bytes: usize, direction: &'static str) {
        self.gossip_bytes
            .get_or_create(&vec![("direction", direction.to_string())])
            .inc_by(bytes as u64);
    }

    /// Every figure, in the Prometheus text format.
    pub fn render(&self, now: &Snapshot) -> String {
        let mut registry = Registry::with_prefix("taskswarm");
        self.register_events(&mut registry);
        register_snapshot(&mut registry, now);
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut text, &registry);
        text
    }

    fn register_events(&self, r: &mut Registry) {
        r.register(
            "tasks_submitted",
            "Tasks accepted through this peer (stored on their home sets)",
            self.submitted.clone(),
        );
        r.register(
            "attempts",
            "Attempts this peer ran that ended, by how they ended",
            self.attempts.clone(),
        );
        r.register_with_unit(
            "task_run",
            "How long the attempts this peer ran took",
            Unit::Seconds,
            self.run_seconds.clone(),
        );
        r.register_with_unit(
            "task_latency",
            "From a task's submission through this peer to its end, as this peer learned it",
            Unit::Seconds,
            self.latency_seconds.clone(),
        );
        r.register_with_unit(
            "store_commit",
            "How long each store transaction took to commit (fsync included)",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "store_commit_rows",
            "Rows written per store transaction",
            self.commit_rows.clone(),
        );
        r.register_with_unit(
            "gossip",
            "Load-report bytes published and received, by direction",
            Unit::Bytes,
            self.gossip_bytes.clone(),
        );
        r.register(
            "lease_renewals",
            "Leases renewed: each load report renews every lease this peer holds",
            self.lease_renewals.clone(),
        );
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics text, for scrapers and tools that
/// do not read OpenMetrics (`promtool check metrics`, an older Prometheus, people with curl): a
/// counter family is named with its `_total`, and the `# UNIT` and `# EOF` lines go.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: u64) {
    r.register(name, help, ConstGauge::new(value as i64));
}

fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    r.register(name, help, ConstCounter::new(value));
}

fn register_snapshot(r: &mut Registry, now: &Snapshot) {
    gauge(
        r,
        "queued_tasks",
        "Tasks in this peer's ready queue",
        now.queued,
    );
    gauge(
        r,
        "running_tasks",
        "Tasks running in this peer's slots",
        now.running,
    );
    gauge(r, "slots", "Tasks this peer runs at once", now.slots);
    gauge(
        r,
        "known_peers",
        "Other peers heard from recently",
        now.peers,
    );
    gauge(r, "connections", "Connections open now", now.connections);
    let records = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
    for state in TaskState::ALL {
        let n = now.records.get(&state).copied().unwrap_or(0);
        records
            .get_or_create(&vec![("state", state.as_str().to_string())])
            .set(n as i64);
    }
    r.register(
        "records",
        "Task records this peer keeps in memory (live work, and ended ones for a few seconds), \
         by state",
        records,
    );
    let c = &now.counters;
    for (name, help, value) in [
        (
            "placements",
            "Tasks placed by this peer as a primary",
            c.placements,
        ),
        (
            "retries",
            "Failed or lost attempts given another, decided by this peer",
            c.retries,
        ),
        (
            "steal_requests",
            "Steal requests this peer sent",
            c.steal_requests,
        ),
        (
            "steals_taken",
            "Tasks this peer received by stealing",
            c.tasks_stolen,
        ),
        (
            "steals_given",
            "Tasks this peer gave to thieves",
            c.tasks_given,
        ),
        (
            "tasks_executed",
            "Attempts started in this peer's slots",
            c.tasks_executed,
        ),
        (
            "leases_reclaimed",
            "Leases this peer re-claimed from silent holders",
            c.leases_reclaimed,
        ),
        (
            "tasks_abandoned",
            "Tasks stopped because no home member could be reached",
            c.tasks_abandoned,
        ),
        (
            "completions_stale",
            "Completions under an old epoch, refused",
            c.completions_stale,
        ),
        (
            "completions_duplicate",
            "Completions of tasks that already had a result",
            c.completions_duplicate,
        ),
        (
            "home_sets_repaired",
            "Home sets this peer repaired as primary",
            c.rehomed,
        ),
        (
            "restore_errors",
            "Stored rows refused on read-back",
            c.restore_errors,
        ),
        (
            "store_commits",
            "Store transactions committed (one fsync each)",
            now.store.commits,
        ),
        (
            "store_rows_written",
            "Rows the store wrote or deleted",
            now.store.rows,
        ),
        (
            "store_records_compacted",
            "Ended records deleted after the retention period",
            now.store.compacted,
        ),
    ] {
        counter(r, name, help, value);
    }
    let rejected = Family::<Labels, Counter>::default();
    for (kind, n) in &c.rejected_by_kind {
        rejected
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc_by(*n);
    }
    r.register(
        "rejected_messages",
        "Messages (or parts of them) this peer refused, by the kind of message",
        rejected,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_by_convention_and_carries_its_figures() {
        let metrics = Metrics::default();
        metrics.submitted(3);
        metrics.attempt("success", std::time::Duration::from_millis(5));
        metrics.report_sent(120, 2);
        let mut now = Snapshot {
            queued: 4,
            slots: 2,
            ..Snapshot::default()
        };
        now.counters.placements = 7;
        now.counters.rejected_by_kind.insert("place", 1);
        now.records.insert(TaskState::Running, 2);
        let text = metrics.render(&now);
        for line in [
            "taskswarm_tasks_submitted_total 3",
            "taskswarm_attempts_total{ending=\"success\"} 1",
            "taskswarm_task_run_seconds_count 1",
            "taskswarm_gossip_bytes_total{direction=\"out\"} 120",
            "taskswarm_lease_renewals_total 2",
            "taskswarm_queued_tasks 4",
            "taskswarm_slots 2",
            "taskswarm_placements_total 7",
            "taskswarm_rejected_messages_total{kind=\"place\"} 1",
            "taskswarm_records{state=\"running\"} 2",
            "taskswarm_records{state=\"completed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap_or_default();
            assert!(name.starts_with("taskswarm_"), "{line}");
        }
        let classic = classic(&text);
        assert!(
            classic.contains("# TYPE taskswarm_placements_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP taskswarm_placements_total Tasks placed"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE taskswarm_task_run_seconds histogram\n"),
            "{classic}"
        );
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
    }

    #[test]
    fn the_example_grafana_dashboard_names_only_metrics_a_peer_serves() {
        let dashboard = include_str!("../../docs/grafana-dashboard.json");
        // Labelled families appear once they have a series.
        let metrics = Metrics::default();
        metrics.attempt("success", std::time::Duration::from_millis(1));
        metrics.report_sent(1, 1);
        let mut now = Snapshot::default();
        now.counters.rejected_by_kind.insert("place", 1);
        let served = classic(&metrics.render(&now));
        let families: Vec<&str> = served
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        let mut named = 0;
        for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("taskswarm_") || word == "taskswarm_" {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|f| families.contains(f))
                .unwrap_or(word);
            assert!(
                families.contains(&family),
                "the dashboard names {word}, not served"
            );
            named += 1;
        }
        assert!(named >= 20, "the dashboard names {named} metrics");
    }
}
