//! The audit of a run with a partition: once the cut has healed, the report is read again from
//! every peer's records (not from the answers the client got during the cut, which came from
//! whichever side it could reach), and each task's runs are counted from outside the swarm, from
//! the file each run of a `logged-exec` task appended to.
//!
//! It checks what the partition rules promise (docs/protocol.md, "Partitions"): every task ends
//! once, every member of its home set keeps the same end, and a task that ran twice ran first on a
//! side that held no majority of its home set, and began before that side could have noticed the
//! cut (a lease TTL after it). Reads and waits only; it changes nothing in the swarm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskswarm::TaskView;

use crate::swarm::Swarm;
use crate::workload::RunResult;

/// The peers' lease TTL (the bench runs them with the default).
const LEASE_TTL_MS: u64 = 1_500;
/// How long the copies may take to agree after the heal.
const SETTLE: Duration = Duration::from_secs(60);

/// The cut a run went through: its sides (0-based peers) and when it began. (Across a one-way
/// cut, each side loses the other as well: one does not hear the other, the other cannot reach
/// it; so the same rule applies.)
#[derive(Clone, Debug)]
pub(crate) struct Cut {
    pub(crate) groups: Vec<Vec<usize>>,
    pub(crate) at_ms: u64,
}

/// What the audit found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct AfterHeal {
    /// Tasks whose copies, on the members of the home set, do not all hold the same end (or
    /// that some member lacks) once the copies had [`SETTLE`] to agree.
    pub(crate) disagree: usize,
    /// Seconds from the heal until every copy agreed (or the deadline).
    pub(crate) settled_s: f64,
    /// Tasks that ran more than once, counted from their run files.
    pub(crate) ran_twice: usize,
    /// Of those, the ones whose first run was on a side without a majority of the task's home
    /// set and began before the cut could be noticed there.
    pub(crate) ran_twice_as_allowed: usize,
    /// When the first run of each task that ran twice began, in ms from the cut (negative:
    /// before it), earliest first (at most [`MAX_LISTED`]). A holder starts a task only once a
    /// majority of its home set answered a check sent after the slot freed, so these are the
    /// runs the cut caught running (or starting), not ones begun after it.
    pub(crate) first_runs_from_cut_ms: Vec<i64>,
    /// Runs counted from the run files, all tasks together.
    pub(crate) runs: usize,
    /// The tasks that ran twice otherwise than allowed (at most [`MAX_OTHERWISE`]): each with its
    /// runs (peer number, ms from the cut, epoch) and its home set (peer numbers).
    pub(crate) otherwise: Vec<String>,
}

/// The most tasks kept in [`AfterHeal::otherwise`].
const MAX_OTHERWISE: usize = 20;
/// The most entries kept in [`AfterHeal::first_runs_from_cut_ms`].
const MAX_LISTED: usize = 100;

impl AfterHeal {
    /// Tasks that ran twice otherwise than the partition rules allow.
    pub(crate) fn ran_twice_otherwise(&self) -> usize {
        self.ran_twice - self.ran_twice_as_allowed
    }
}

/// The spec of a `logged-exec` task: a process of 100 ms that first appends `peer epoch ms` to
/// the file named after its task id in `dir`.
pub(crate) fn logged_spec(dir: &Path) -> Value {
    let script = format!(
        "echo \"$TASKSWARM_PEER $TASKSWARM_EPOCH $(date +%s%3N)\" >> '{}/'\"$TASKSWARM_TASK_ID\"; sleep 0.1",
        dir.display()
    );
    json!({ "program": "sh", "args": ["-c", script] })
}

/// Where the runs of a testnet's `logged-exec` tasks are logged.
pub(crate) fn runs_dir(testnet_dir: &Path) -> PathBuf {
    testnet_dir.join("runs")
}

/// Reads every live peer's records until the copies of every task in `result` agree (or
/// [`SETTLE`] passes), recounts `result` from them, and counts runs from `runs` (if the workload
/// logged them). `peer_ids` names the peers in start order.
pub(crate) async fn after_heal(
    swarm: &Swarm,
    result: &mut RunResult,
    cut: &Cut,
    peer_ids: &[String],
    runs: Option<&Path>,
) -> AfterHeal {
    let ids: Vec<String> = result.views.iter().map(|v| v.id.clone()).collect();
    let begun = Instant::now();
    let mut copies = read_copies(swarm).await;
    while disagreeing(&copies, &ids) > 0 && begun.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(500)).await;
        copies = read_copies(swarm).await;
    }
    let mut audit = AfterHeal {
        disagree: disagreeing(&copies, &ids),
        settled_s: begun.elapsed().as_secs_f64(),
        ..AfterHeal::default()
    };
    let views: Vec<Option<TaskView>> = ids
        .iter()
        .map(|id| {
            copies
                .get(id)
                .and_then(|c| c.first())
                .map(|(_, v)| v.clone())
        })
        .collect();
    let mut recounted = RunResult {
        unacknowledged: result.unacknowledged,
        lost: result.lost,
        tasks: result.lost,
        figures: std::mem::take(&mut result.figures),
        span_ms: result.span_ms,
        ..RunResult::default()
    };
    recounted.count(views);
    *result = recounted;
    if let Some(dir) = runs {
        count_runs(&mut audit, dir, &result.views, cut, peer_ids);
    }
    audit
}

/// Every live peer's records of the tasks it keeps, by task: `(peer, view)` for each copy.
async fn read_copies(swarm: &Swarm) -> BTreeMap<String, Vec<(usize, TaskView)>> {
    let mut copies: BTreeMap<String, Vec<(usize, TaskView)>> = BTreeMap::new();
    for (i, api) in swarm.apis() {
        let listed = tokio::time::timeout(Duration::from_secs(30), api.tasks(None)).await;
        let Ok(Ok(listed)) = listed else {
            continue;
        };
        for view in listed.tasks {
            copies.entry(view.id.clone()).or_default().push((i, view));
        }
    }
    copies
}

/// How many of `ids` have copies that do not all hold the same end: a copy not ended, two ends
/// that differ (state, the run recorded, its epoch), or a task with no copy.
fn disagreeing(copies: &BTreeMap<String, Vec<(usize, TaskView)>>, ids: &[String]) -> usize {
    let end = |v: &TaskView| {
        (
            v.state,
            v.executed_by.clone(),
            v.attempts.last().map(|a| a.epoch),
        )
    };
    ids.iter()
        .filter(|id| match copies.get(*id) {
            None => true,
            Some(kept) => {
                let first = end(&kept[0].1);
                kept.iter()
                    .any(|(_, v)| !v.is_final() || end(v) != first || kept.len() < v.home.len())
            }
        })
        .count()
}

/// Counts each task's runs from its run file, and checks each task that ran twice against the
/// cut: its first run on a side without a majority of its home set, begun less than a lease
/// TTL after the cut.
fn count_runs(
    audit: &mut AfterHeal,
    dir: &Path,
    views: &[TaskView],
    cut: &Cut,
    peer_ids: &[String],
) {
    let side_of = |peer: &str| {
        let i = peer_ids.iter().position(|p| p == peer)?;
        cut.groups.iter().position(|g| g.contains(&i))
    };
    for view in views {
        let lines = std::fs::read_to_string(dir.join(&view.id)).unwrap_or_default();
        let mut runs: Vec<(u64, String, String)> = lines
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let peer = fields.next()?.to_string();
                let epoch = fields.next()?.to_string();
                let ms: u64 = fields.next()?.parse().ok()?;
                Some((ms, peer, epoch))
            })
            .collect();
        audit.runs += runs.len();
        if runs.len() < 2 {
            continue;
        }
        audit.ran_twice += 1;
        runs.sort();
        let (first_ms, first_peer, _) = &runs[0];
        if audit.first_runs_from_cut_ms.len() < MAX_LISTED {
            let from_cut = *first_ms as i64 - cut.at_ms as i64;
            audit.first_runs_from_cut_ms.push(from_cut);
            audit.first_runs_from_cut_ms.sort_unstable();
        }
        let side = side_of(first_peer);
        let members_there = view
            .home
            .iter()
            .filter(|m| side.is_some() && side_of(m) == side)
            .count();
        let majority = if view.home.len() >= 3 {
            view.home.len() / 2 + 1
        } else {
            1
        };
        let unnoticed = *first_ms < cut.at_ms + LEASE_TTL_MS;
        if side.is_some() && members_there < majority && unnoticed {
            audit.ran_twice_as_allowed += 1;
        } else if audit.otherwise.len() < MAX_OTHERWISE {
            let number = |peer: &String| peer_ids.iter().position(|p| p == peer).map(|i| i + 1);
            let runs: Vec<String> = runs
                .iter()
                .map(|(ms, peer, epoch)| {
                    let from_cut = *ms as i64 - cut.at_ms as i64;
                    format!("peer {:?} at {from_cut:+} ms epoch {epoch}", number(peer))
                })
                .collect();
            let home: Vec<Option<usize>> = view.home.iter().map(number).collect();
            audit
                .otherwise
                .push(format!("{}: {runs:?}, home {home:?}", view.id));
        }
    }
}
