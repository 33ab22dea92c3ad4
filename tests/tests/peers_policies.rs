//! Scheduling policies against real `taskswarm` processes on loopback: tasks that need a label
//! run only where it is; a task no live peer can hold is unschedulable, with the reason, until a
//! peer that can joins; a high-priority task goes ahead of a queue of low-priority ones. Every wait
//! is bounded by a deadline; every process is ended by PID when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};
use taskswarm::TaskState;

use serde_json::{Value, json};
use taskswarm::TaskView;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

async fn cluster(
    name: &str,
    peers: usize,
    slots: u32,
    peer_args: Vec<Vec<String>>,
) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let mut options = Options::local(peers, binary, dir.path().to_path_buf());
    options.slots = slots;
    options.peer_args = peer_args;
    (Cluster::start(options).await.unwrap(), dir)
}

/// Polls task `id` on peer `i` until `done` holds for it, or the deadline passes.
async fn await_task(
    cluster: &Cluster,
    i: usize,
    id: &str,
    until: Instant,
    done: impl Fn(&TaskView) -> bool,
) -> TaskView {
    loop {
        let task: TaskView = cluster.api(i).unwrap().task(id).await.unwrap();
        if done(&task) {
            return task;
        }
        assert!(Instant::now() < until, "task never got there: {task:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_tasks_run_where_the_label_is_and_unfit_ones_wait_for_a_peer_that_fits() {
    let gpu = vec!["--label".to_string(), "gpu=1".to_string()];
    let (mut cluster, _dir) =
        cluster("labels", 3, 2, vec![Vec::new(), Vec::new(), gpu.clone()]).await;
    let gpu_peer = cluster.peers[2].peer_id.clone();

    let specs: Vec<Value> = (0..20)
        .map(|_| json!({ "program": "true", "labels": ["gpu=1"] }))
        .collect();
    let ids = cluster.submit(0, &specs).await.unwrap();
    let tasks = cluster.wait_all(0, &ids, deadline(60)).await.unwrap();
    let on_gpu = tasks
        .iter()
        .filter(|t| t.state == TaskState::Completed && t.executed_by.as_deref() == Some(&gpu_peer))
        .count();
    println!("{on_gpu}/20 tasks that need gpu=1 ran on peer 3, the only one labelled gpu=1");
    assert_eq!(on_gpu, 20, "{tasks:#?}");

    // More memory than any peer has: unschedulable, with the reason, until such a peer joins.
    let big = json!({ "program": "true", "memory": "64T" });
    let id = cluster.submit(0, &[big]).await.unwrap().remove(0);
    let waiting = await_task(&cluster, 0, &id, deadline(30), |t| {
        t.state == TaskState::Unschedulable
    })
    .await;
    let reason = waiting.reason.clone().unwrap_or_default();
    println!("a task needing 64 TiB: {} ({reason})", waiting.state);
    assert!(
        reason.starts_with("needs 64 TiB memory; the most a live peer has is"),
        "{reason}"
    );
    let big_peer = cluster
        .add_peer(&["--memory", "128T"], deadline(30))
        .await
        .unwrap();
    let big_id = cluster.peers[big_peer].peer_id.clone();
    let done = await_task(&cluster, 0, &id, deadline(60), TaskView::is_final).await;
    println!(
        "after a peer with 128 TiB joined: {} on peer {}",
        done.state,
        big_peer + 1
    );
    assert_eq!(done.state, TaskState::Completed, "{done:#?}");
    assert_eq!(done.executed_by.as_deref(), Some(big_id.as_str()));
    assert!(
        done.history
            .iter()
            .any(|t| t.state == TaskState::Unschedulable),
        "its history keeps the wait: {done:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_task_starts_before_the_low_priority_queue() {
    // One slot, so that starts are one after another and their order is the dispatch order (two
    // slots freed at once start two tasks whose first lines race each other to the log).
    let (cluster, dir) = cluster("priority", 1, 1, Vec::new()).await;
    let log = dir.path().join("starts.log");
    let logged = |name: &str, secs: &str, priority: i32| {
        let script = format!("echo {name} >> {}; sleep {secs}", log.display());
        json!({ "program": "sh", "args": ["-c", script], "priority": priority })
    };
    // The slot busy until the test says go (a file; the blocker gives up after 30 s), then 50
    // priority-0 tasks queue behind it, then one of priority 9.
    let go = dir.path().join("go");
    let blocker = {
        let script = format!(
            "echo blocker >> {}; i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
            log.display(),
            go.display()
        );
        json!({ "program": "sh", "args": ["-c", script] })
    };
    let mut ids = cluster.submit(0, &[blocker]).await.unwrap();
    let until = deadline(30);
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 1 {
        assert!(Instant::now() < until, "the blocker never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let low: Vec<Value> = (0..50)
        .map(|n| logged(&format!("low{n}"), "0", 0))
        .collect();
    ids.extend(cluster.submit(0, &low).await.unwrap());
    ids.extend(cluster.submit(0, &[logged("high", "0", 9)]).await.unwrap());
    std::fs::write(&go, b"").unwrap();
    let tasks = cluster.wait_all(0, &ids, deadline(60)).await.unwrap();
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Completed),
        "{tasks:#?}"
    );
    let order: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let high_at = order.iter().position(|n| n == "high").unwrap();
    let low_before = order[..high_at]
        .iter()
        .filter(|n| n.starts_with("low"))
        .count();
    println!("the priority-9 task started after {low_before} of the 50 priority-0 tasks");
    assert_eq!(low_before, 0, "start order: {order:?}");
}
