//! The standard workloads of the benchmark. Each one runs once against a fresh testnet and
//! returns its figures and the final view of every task it submitted, from which the counts that
//! must stay zero (lost, recorded twice) are taken.
//!
//! - `noop-handler`, `noop-exec`: 10,000 no-op tasks (the built-in `noop` handler; the program
//!   `true`), as fast as the client can submit them; `tasks_per_s` is completed tasks over the
//!   time from the first submission to the last result. They run once per client shape
//!   ([`Client`]): in bulk (batches of 500 through every peer), and one task per request through
//!   peer 1 with 1 or more requests in flight (2,000 tasks by default when fewer than 8 are in
//!   flight, so that a run stays short).
//! - `latency`: 1,000 sequential round trips (submit one `noop` task through peer 1, wait for its
//!   result); `p50_ms`, `p99_ms`.
//! - `skew`: 200 tasks of 20 ms all submitted to peer 1; `makespan_over_ideal`, the ideal being
//!   total work over total slots.
//! - `crash`: 400 tasks of 100 ms submitted to peer 1; one second in, the last peer is killed with
//!   SIGKILL; `reexec_after_kill_s` is the time from the kill to the first new start of a task the
//!   killed peer was running, `rerun_after_kill_max_s` to the last (every task it was running has
//!   started again by then).
//!
//! Every workload also reports `cpu_us_per_task`: the CPU time (user and system) that all peer
//! processes used during the run, with the task processes they ran, over the tasks that
//! completed; and `cpu_s`, that time in seconds.

use std::time::{Duration, Instant};
use taskswarm::TaskState;

use futures::StreamExt;
use serde_json::{Value, json};
use taskswarm::TaskView;
use taskswarm::job::JobInput;
use taskswarm::spec::SpecInput;

use crate::swarm::{Control, Swarm, wall_ms};

/// A standard workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Workload {
    /// 10,000 no-op handler tasks, as fast as possible.
    NoopHandler,
    /// 10,000 no-op process tasks (`true`), as fast as possible.
    NoopExec,
    /// 5,000 process tasks of 100 ms, each of which appends its peer, epoch and start time to a
    /// file of its own, so that runs are counted from outside the swarm (see [`crate::audit`]):
    /// for partitions (run only when named).
    LoggedExec,
    /// 1,000 sequential submit-and-wait round trips.
    Latency,
    /// 200 tasks of 20 ms submitted to one peer.
    Skew,
    /// 400 tasks of 100 ms while a peer is killed.
    Crash,
    /// A 3-level fan-out/fan-in job (needs task dependencies).
    Dag,
    /// 200,000 no-op handler tasks in bulk: each peer's memory after the first tenth and at the
    /// end, and how long peer 1 takes to serve its API again after a restart (takes minutes; run
    /// only when named).
    Memory,
}

impl Workload {
    /// Every workload, in report order.
    pub(crate) const ALL: [Workload; 8] = [
        Workload::NoopHandler,
        Workload::NoopExec,
        Workload::LoggedExec,
        Workload::Latency,
        Workload::Skew,
        Workload::Crash,
        Workload::Dag,
        Workload::Memory,
    ];

    /// The workloads a bench runs when none is named: all but the long memory soak and the
    /// partition workload.
    pub(crate) fn default_set() -> Vec<Workload> {
        Self::ALL
            .into_iter()
            .filter(|w| !matches!(w, Workload::Memory | Workload::LoggedExec))
            .collect()
    }

    /// Its name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::NoopHandler => "noop-handler",
            Workload::NoopExec => "noop-exec",
            Workload::LoggedExec => "logged-exec",
            Workload::Latency => "latency",
            Workload::Skew => "skew",
            Workload::Crash => "crash",
            Workload::Dag => "dag",
            Workload::Memory => "memory",
        }
    }

    /// Whether its tasks are submitted by the client shape of the run (the throughput
    /// workloads); the others have a shape of their own.
    pub(crate) fn takes_client(self) -> bool {
        matches!(
            self,
            Workload::NoopHandler | Workload::NoopExec | Workload::LoggedExec
        )
    }

    /// How many tasks it submits unless told otherwise.
    pub(crate) fn default_tasks(self) -> usize {
        match self {
            Workload::NoopHandler | Workload::NoopExec => 10_000,
            Workload::LoggedExec => 5_000,
            Workload::Latency => 1_000,
            Workload::Skew => 200,
            Workload::Crash => 400,
            Workload::Dag => 52,
            Workload::Memory => 200_000,
        }
    }
}

/// How the benchmark's client submits the tasks of a throughput workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Client {
    /// Batches of 500 specs per request, through every peer in turn, one request per peer at a
    /// time.
    Bulk,
    /// One spec per request through peer 1 (the next live peer if it is down), with up to
    /// `in_flight` requests outstanding on keep-alive connections; the results are waited for
    /// after the last submission, as a client that keeps futures does.
    OneByOne {
        /// Requests outstanding at once.
        in_flight: usize,
    },
}

impl Client {
    /// `bulk`, or `one-by-one/N` with N requests in flight.
    pub(crate) fn name(self) -> String {
        match self {
            Client::Bulk => "bulk".into(),
            Client::OneByOne { in_flight } => format!("one-by-one/{in_flight}"),
        }
    }
}

/// The client shapes `--client` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ClientKind {
    /// Batches of 500 specs per request, through every peer.
    Bulk,
    /// One spec per request through peer 1, `--in-flight` requests outstanding.
    OneByOne,
}

/// One workload with one client shape: a row group of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Case {
    /// What runs.
    pub(crate) workload: Workload,
    /// How it is submitted (only the throughput workloads vary it).
    pub(crate) client: Client,
}

impl Case {
    /// The cases for `workloads`: the throughput workloads once per client shape, the others
    /// once each.
    pub(crate) fn all(workloads: &[Workload], clients: &[Client]) -> Vec<Case> {
        let mut cases = Vec::new();
        for &workload in workloads {
            if workload.takes_client() {
                cases.extend(clients.iter().map(|&client| Case { workload, client }));
            } else {
                cases.push(Case {
                    workload,
                    client: Client::Bulk,
                });
            }
        }
        cases
    }

    /// Its name in the report: the workload's, with the client shape if it is not bulk
    /// (`noop-handler one-by-one/64`).
    pub(crate) fn name(self) -> String {
        match self.client {
            Client::Bulk => self.workload.name().to_string(),
            client => format!("{} {}", self.workload.name(), client.name()),
        }
    }

    /// How many tasks it submits unless told otherwise.
    pub(crate) fn default_tasks(self) -> usize {
        match self.client {
            Client::OneByOne { in_flight } if in_flight < 8 => 2_000,
            _ => self.workload.default_tasks(),
        }
    }
}

/// What one run of a workload measured.
#[derive(Debug, Default)]
pub(crate) struct RunResult {
    /// Named figures (`tasks_per_s`, `p50_ms`, …).
    pub(crate) figures: Vec<(&'static str, f64)>,
    /// Tasks the swarm acknowledged.
    pub(crate) tasks: usize,
    /// Tasks submitted but never acknowledged (the request failed; chaos only).
    pub(crate) unacknowledged: usize,
    /// Tasks that completed.
    pub(crate) completed: usize,
    /// Tasks that failed (an error, not a loss).
    pub(crate) failed: usize,
    /// Acknowledged tasks with no final record by the deadline.
    pub(crate) lost: usize,
    /// Tasks started more than once.
    pub(crate) ran_twice: usize,
    /// Tasks with more than one final result recorded.
    pub(crate) recorded_twice: usize,
    /// Why tasks failed (the last attempt's ending and detail), with counts.
    pub(crate) failures: std::collections::BTreeMap<String, usize>,
    /// The final (or last seen) views.
    pub(crate) views: Vec<TaskView>,
    /// The views of tasks that did not simply run once to completion (ran twice, recorded twice,
    /// failed, or not ended), for diagnosis; at most [`MAX_ANOMALIES`].
    pub(crate) anomalies: Vec<TaskView>,
    /// When the run began and ended (ms since the Unix epoch).
    pub(crate) span_ms: (u64, u64),
    /// What the audit after a partition's heal found, for a run with a partition.
    pub(crate) after_heal: Option<crate::audit::AfterHeal>,
}

/// The most anomalous task views a run keeps.
pub(crate) const MAX_ANOMALIES: usize = 20;

impl RunResult {
    pub(crate) fn count(&mut self, views: Vec<Option<TaskView>>) {
        self.tasks += views.len();
        for view in views {
            let Some(view) = view else {
                self.lost += 1;
                continue;
            };
            match view.state.as_str() {
                "completed" => self.completed += 1,
                "failed" | "cancelled" => {
                    self.failed += 1;
                    let why = view.attempts.last().map_or_else(
                        || view.error.clone().unwrap_or_default(),
                        |a| format!("{}: {}", a.ending, a.detail),
                    );
                    *self.failures.entry(why).or_default() += 1;
                }
                _ => self.lost += 1,
            }
            if starts(&view) > 1 {
                self.ran_twice += 1;
            }
            let results = view
                .history
                .iter()
                .filter(|t| matches!(t.state, TaskState::Completed | TaskState::Failed))
                .count();
            let successes = view
                .attempts
                .iter()
                .filter(|a| a.ending == "success")
                .count();
            if results > 1 || successes > 1 {
                self.recorded_twice += 1;
            }
            let odd = view.state != TaskState::Completed
                || starts(&view) > 1
                || results > 1
                || successes > 1;
            if odd && self.anomalies.len() < MAX_ANOMALIES {
                self.anomalies.push(view.clone());
            }
            self.views.push(view);
        }
    }
}

/// How many times a task was started, by its history.
fn starts(view: &TaskView) -> usize {
    view.history
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count()
}

fn noop_spec(workload: Workload) -> Value {
    match workload {
        Workload::NoopExec => json!({ "program": "true" }),
        _ => json!({ "handler": "noop" }),
    }
}

fn sleep_spec(ms: u64) -> Value {
    json!({ "handler": "sleep", "input": ms.to_string() })
}

/// Runs `case` with `tasks` tasks (its default if `None`) against the testnet behind
/// `control`/`swarm`, whose peers have `slots` slots each.
pub(crate) async fn run(
    case: Case,
    tasks: Option<usize>,
    control: &Control,
    swarm: &Swarm,
    slots: u32,
) -> anyhow::Result<RunResult> {
    let n = tasks.unwrap_or(case.default_tasks());
    let begun = wall_ms();
    let cpu_before = control.cpu().await;
    let workload = case.workload;
    let mut result = match workload {
        Workload::NoopHandler | Workload::NoopExec => {
            throughput(swarm, noop_spec(workload), n, case.client).await
        }
        Workload::LoggedExec => {
            let runs = crate::audit::runs_dir(&control.dir);
            std::fs::create_dir_all(&runs)?;
            throughput(swarm, crate::audit::logged_spec(&runs), n, case.client).await
        }
        Workload::Latency => latency(swarm, n).await,
        Workload::Skew => skew(swarm, n, slots).await,
        Workload::Crash => crash(control, swarm, n).await?,
        Workload::Dag => dag(swarm, n, slots).await,
        Workload::Memory => memory(control, swarm, n).await?,
    };
    let cpu = control.cpu().await.saturating_sub(cpu_before).as_secs_f64();
    if result.completed > 0 {
        let per_task = cpu * 1e6 / result.completed as f64;
        result.figures.push(("cpu_us_per_task", per_task));
    }
    result.figures.push(("cpu_s", cpu));
    result.span_ms = (begun, wall_ms());
    Ok(result)
}

/// Submits `specs` in batches through every peer in turn, at most one request per peer at a
/// time; returns each accepted batch with the peer that took it, and how many were refused.
async fn submit_all(
    swarm: &Swarm,
    specs: &[Value],
    batch: usize,
    deadline: Instant,
) -> (Vec<(usize, Vec<String>)>, usize) {
    let size = swarm.size;
    let answers: Vec<_> =
        futures::stream::iter(specs.chunks(batch).enumerate())
            .map(|(k, chunk)| async move {
                (chunk.len(), swarm.submit(k % size, chunk, deadline).await)
            })
            .buffer_unordered(size)
            .collect()
            .await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (len, answer) in answers {
        match answer {
            Ok(batch) => accepted.push(batch),
            Err(e) => {
                tracing::warn!("a batch of {len} was not acknowledged: {e:#}");
                refused += len;
            }
        }
    }
    (accepted, refused)
}

/// Waits for every accepted batch at the peer that took it.
async fn wait_all(
    swarm: &Swarm,
    batches: &[(usize, Vec<String>)],
    deadline: Instant,
) -> Vec<Option<TaskView>> {
    futures::future::join_all(
        batches
            .iter()
            .map(|(peer, ids)| swarm.wait(*peer, ids, deadline)),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

async fn throughput(swarm: &Swarm, spec: Value, n: usize, client: Client) -> RunResult {
    let specs = vec![spec; n];
    let deadline = Instant::now() + Duration::from_secs(300);
    let begun = Instant::now();
    let (batches, refused) = match client {
        Client::Bulk => submit_all(swarm, &specs, 500, deadline).await,
        Client::OneByOne { in_flight } => {
            submit_one_by_one(swarm, &specs, in_flight, deadline).await
        }
    };
    let submitted = begun.elapsed().as_secs_f64();
    let views = wait_all(swarm, &batches, deadline).await;
    let elapsed = begun.elapsed().as_secs_f64();
    let mut result = RunResult {
        unacknowledged: refused,
        ..RunResult::default()
    };
    result.count(views);
    result.figures = vec![
        ("tasks_per_s", result.completed as f64 / elapsed),
        ("submit_s", submitted),
        ("total_s", elapsed),
    ];
    result
}

/// Runs `n` no-op tasks in bulk in ten rounds of a tenth each (a swarm that keeps up: the live
/// work stays about one round), and reads every peer's resident memory after the first round and
/// after the last: with ended records on disk only, memory follows the live work, not the tasks
/// run so far (`rss_growth` is the largest ratio of a peer's memory at the end to its memory
/// after the first round). Then stops peer 1 and measures how long it takes to serve its API
/// again with every ended record on its disk (`restart_s`).
async fn memory(control: &Control, swarm: &Swarm, n: usize) -> anyhow::Result<RunResult> {
    let round = (n / 10).max(1);
    let deadline = Instant::now() + Duration::from_secs(1800);
    let begun = Instant::now();
    let mut result = RunResult::default();
    let mut rss = Vec::new();
    let mut left = n;
    while left > 0 && Instant::now() < deadline {
        let this = round.min(left);
        left -= this;
        let specs = vec![noop_spec(Workload::NoopHandler); this];
        let (batches, refused) = submit_all(swarm, &specs, 500, deadline).await;
        result.unacknowledged += refused;
        let views = wait_all(swarm, &batches, deadline).await;
        // The bench keeps only the counts: 200,000 views are not worth their memory here.
        let mut counted = RunResult::default();
        counted.count(views);
        result.tasks += counted.tasks;
        result.completed += counted.completed;
        result.failed += counted.failed;
        result.lost += counted.lost;
        result.ran_twice += counted.ran_twice;
        result.recorded_twice += counted.recorded_twice;
        let room = MAX_ANOMALIES.saturating_sub(result.anomalies.len());
        result
            .anomalies
            .extend(counted.anomalies.into_iter().take(room));
        if rss.is_empty() || left == 0 {
            rss.push(control.rss().await);
        }
    }
    anyhow::ensure!(rss.len() == 2, "the memory workload ran out of time");
    let elapsed = begun.elapsed().as_secs_f64();
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let most = |at: &[Option<u64>]| at.iter().flatten().copied().max().unwrap_or(0);
    let ratio = rss[0]
        .iter()
        .zip(&rss[1])
        .filter_map(|(a, b)| Some(*b.as_ref()? as f64 / (*a.as_ref()?).max(1) as f64))
        .fold(0.0, f64::max);
    control.stop_peer(0).await?;
    let restarting = Instant::now();
    control.restart(0).await?;
    let restart_s = restarting.elapsed().as_secs_f64();
    result.figures = vec![
        ("tasks_per_s", result.completed as f64 / elapsed),
        ("rss_mb_first", mb(most(&rss[0]))),
        ("rss_mb_end", mb(most(&rss[1]))),
        ("rss_growth", ratio),
        ("restart_s", restart_s),
    ];
    Ok(result)
}

/// Submits `specs` one per request through peer 1 (the next live peer while it is down), with
/// up to `in_flight` requests outstanding; returns the accepted ids grouped by the peer that
/// took them (in groups of at most 500, to wait for), and how many were refused.
async fn submit_one_by_one(
    swarm: &Swarm,
    specs: &[Value],
    in_flight: usize,
    deadline: Instant,
) -> (Vec<(usize, Vec<String>)>, usize) {
    let answers: Vec<_> = futures::stream::iter(specs)
        .map(|spec| swarm.submit(0, std::slice::from_ref(spec), deadline))
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut by_peer: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    let mut refused = 0;
    for answer in answers {
        match answer {
            Ok((peer, ids)) => by_peer.entry(peer).or_default().extend(ids),
            Err(e) => {
                tracing::warn!("a task was not acknowledged: {e:#}");
                refused += 1;
            }
        }
    }
    let mut groups = Vec::new();
    for (peer, ids) in by_peer {
        groups.extend(ids.chunks(500).map(|chunk| (peer, chunk.to_vec())));
    }
    (groups, refused)
}

async fn latency(swarm: &Swarm, n: usize) -> RunResult {
    let spec = json!({ "handler": "noop" });
    let mut times = Vec::with_capacity(n);
    let mut views = Vec::with_capacity(n);
    let mut result = RunResult::default();
    let deadline = Instant::now() + Duration::from_secs(300);
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let began = Instant::now();
        match swarm.round_trip(0, &spec).await {
            Ok(view) => {
                times.push(began.elapsed().as_secs_f64() * 1000.0);
                views.push(Some(view));
            }
            Err(e) => {
                tracing::warn!("a round trip failed: {e:#}");
                result.unacknowledged += 1;
            }
        }
    }
    result.count(views);
    times.sort_by(f64::total_cmp);
    result.figures = vec![
        ("p50_ms", percentile(&times, 0.50)),
        ("p99_ms", percentile(&times, 0.99)),
    ];
    result
}

/// The `q` quantile of sorted values (nearest rank); NaN if there are none.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn skew(swarm: &Swarm, n: usize, slots: u32) -> RunResult {
    const MS: u64 = 20;
    let specs = vec![sleep_spec(MS); n];
    let ideal = n as f64 * MS as f64 / 1000.0 / (swarm.size as f64 * f64::from(slots));
    let deadline =
        Instant::now() + Duration::from_secs(60).max(Duration::from_secs_f64(ideal * 20.0));
    let begun = Instant::now();
    let (batches, refused) = submit_all(swarm, &specs, n.max(1), deadline).await;
    let views = wait_all(swarm, &batches, deadline).await;
    let makespan = begun.elapsed().as_secs_f64();
    let mut result = RunResult {
        unacknowledged: refused,
        ..RunResult::default()
    };
    result.count(views);
    result.figures = vec![
        ("makespan_over_ideal", makespan / ideal),
        ("makespan_s", makespan),
    ];
    result
}

/// A 3-level fan-out/fan-in job of `n` sleep tasks of 20 ms: one root, `n − 2` tasks after it, and
/// one sink after all of those. The ideal makespan is the root, the middle level spread over
/// every slot, and the sink; `order_violations` counts tasks that started before a dependency
/// had completed (it must be 0).
async fn dag(swarm: &Swarm, n: usize, slots: u32) -> RunResult {
    const MS: u64 = 20;
    let width = n.saturating_sub(2).max(1);
    let task = |name: String, after: Vec<String>| SpecInput {
        name: Some(name),
        after,
        handler: Some("sleep".into()),
        input: Some(MS.to_string()),
        ..SpecInput::default()
    };
    let mids: Vec<String> = (0..width).map(|i| format!("m{i}")).collect();
    let mut tasks = vec![task("root".into(), Vec::new())];
    tasks.extend(mids.iter().map(|m| task(m.clone(), vec!["root".into()])));
    tasks.push(task("sink".into(), mids.clone()));
    let job = JobInput { tasks };
    let total_slots = (swarm.size as u64 * u64::from(slots)).max(1);
    let ideal = (2 * MS + (width as u64).div_ceil(total_slots) * MS) as f64 / 1000.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let begun = Instant::now();
    let mut result = RunResult::default();
    let (at, ids) = match swarm.submit_job(0, &job, deadline).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::warn!("the dag job was not acknowledged: {e:#}");
            result.unacknowledged = job.tasks.len();
            return result;
        }
    };
    let views = wait_all(swarm, &[(at, ids)], deadline).await;
    let makespan = begun.elapsed().as_secs_f64();
    result.count(views);
    let ended_at = |v: &TaskView| {
        v.history
            .iter()
            .find(|t| t.state == TaskState::Completed)
            .map(|t| t.at_ms)
    };
    let started_at = |v: &TaskView| {
        v.history
            .iter()
            .find(|t| t.state == TaskState::Running)
            .map(|t| t.at_ms)
    };
    let by_id: std::collections::BTreeMap<&str, &TaskView> =
        result.views.iter().map(|v| (v.id.as_str(), v)).collect();
    let violations = result
        .views
        .iter()
        .filter(|v| {
            let Some(start) = started_at(v) else {
                return false;
            };
            v.after.iter().any(|dep| {
                by_id
                    .get(dep.as_str())
                    .and_then(|d| ended_at(d))
                    .is_none_or(|end| end > start)
            })
        })
        .count();
    result.figures = vec![
        ("makespan_over_ideal", makespan / ideal),
        ("makespan_s", makespan),
        ("order_violations", violations as f64),
    ];
    result
}

async fn crash(control: &Control, swarm: &Swarm, n: usize) -> anyhow::Result<RunResult> {
    const MS: u64 = 100;
    let victim = swarm.size - 1;
    anyhow::ensure!(victim > 0, "the crash workload needs at least 2 peers");
    let specs = vec![sleep_spec(MS); n];
    let deadline = Instant::now() + Duration::from_secs(120);
    let (batches, refused) = submit_all(swarm, &specs, n.max(1), deadline).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = control.kill(victim).await?;
    let views = wait_all(swarm, &batches, deadline).await;
    let mut result = RunResult {
        unacknowledged: refused,
        ..RunResult::default()
    };
    result.count(views);
    let reruns = rerun_delays(&result.views, &control.peer_ids[victim], killed_at);
    if let Some(first) = reruns.iter().copied().min_by(f64::total_cmp) {
        result.figures.push(("reexec_after_kill_s", first));
    }
    if let Some(last) = reruns.iter().copied().max_by(f64::total_cmp) {
        result.figures.push(("rerun_after_kill_max_s", last));
    }
    Ok(result)
}

/// For each task that `victim` was running when it was killed at `killed_at` (wall ms), how long
/// after the kill it started again, in seconds.
fn rerun_delays(views: &[TaskView], victim: &str, killed_at: u64) -> Vec<f64> {
    views
        .iter()
        .filter(|v| was_running_on(v, victim, killed_at))
        .filter_map(|v| {
            v.history
                .iter()
                .find(|t| t.state == TaskState::Running && t.at_ms > killed_at)
                .map(|t| (t.at_ms - killed_at) as f64 / 1000.0)
        })
        .collect()
}

/// Whether the last start of `view` before `at` was on `peer`, with no end recorded between it
/// and `at`: the task was running there at that moment.
fn was_running_on(view: &TaskView, peer: &str, at: u64) -> bool {
    let before: Vec<_> = view.history.iter().filter(|t| t.at_ms <= at).collect();
    let Some(start) = before.iter().rposition(|t| t.state == TaskState::Running) else {
        return false;
    };
    before[start].peer.as_deref() == Some(peer)
        && before[start + 1..].iter().all(|t| {
            !matches!(
                t.state,
                TaskState::Completed | TaskState::Failed | TaskState::Cancelled
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(state: &str, peer: &str, at_ms: u64) -> taskswarm::view::TransitionView {
        taskswarm::view::TransitionView {
            state: state.parse().unwrap(),
            peer: Some(peer.into()),
            epoch: 0,
            at_ms,
            note: String::new(),
        }
    }

    #[test]
    fn a_rerun_is_timed_from_the_kill_for_each_task_the_victim_was_running() {
        let view = |history| TaskView {
            history,
            ..serde_json::from_value(json!({
                "id": "t", "state": "completed", "kind": "handler", "lease_epoch": 0,
                "origin": "o", "attempts": [], "history": [], "home": [], "submitted_ms": 0
            }))
            .unwrap()
        };
        let views = vec![
            // Running on the victim at the kill (1,000), started again at 2,500 and 3,000 ms.
            view(vec![
                moved("running", "v", 900),
                moved("running", "p", 2_500),
            ]),
            view(vec![
                moved("running", "v", 950),
                moved("running", "p", 3_000),
            ]),
            // Ran to its end on the victim before the kill, or ran elsewhere: not a re-run.
            view(vec![
                moved("running", "v", 100),
                moved("completed", "v", 200),
            ]),
            view(vec![
                moved("running", "p", 900),
                moved("running", "q", 1_500),
            ]),
        ];
        assert_eq!(rerun_delays(&views, "v", 1_000), vec![1.5, 2.0]);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
