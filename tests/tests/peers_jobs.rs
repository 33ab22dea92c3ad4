//! Jobs against real `taskswarm` processes on loopback: a diamond `a → (b, c) → d` runs in
//! dependency order and `d` reads what `b` and `c` printed; a cycle is refused naming it; a failed
//! dependency fails its dependents unless they run anyway; the job completes when the peer running
//! `b` is killed with SIGKILL. Every wait is bounded; every process is ended by PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};
use taskswarm::TaskState;

use serde_json::{Value, json};
use taskswarm::TaskView;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

async fn cluster(name: &str, peers: usize) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let options = Options::local(peers, binary, dir.path().to_path_buf());
    (Cluster::start(options).await.unwrap(), dir)
}

fn sh(name: &str, after: &[&str], script: &str) -> Value {
    json!({ "name": name, "after": after, "program": "sh", "args": ["-c", script] })
}

/// Submits a job to peer `i`; returns the ids by name, in dependency order.
async fn submit_job(cluster: &Cluster, i: usize, tasks: Vec<Value>) -> Vec<(String, String)> {
    let (status, answer) = cluster
        .post(i, "/v1/jobs", &json!({ "tasks": tasks }))
        .await
        .unwrap();
    assert!(status.is_success(), "{status}: {answer}");
    answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn by_name<'a>(names: &[(String, String)], tasks: &'a [TaskView], name: &str) -> &'a TaskView {
    let id = &names.iter().find(|(n, _)| n == name).unwrap().1;
    tasks.iter().find(|t| &t.id == id).unwrap()
}

fn at(task: &TaskView, state: TaskState) -> u64 {
    task.history
        .iter()
        .find(|t| t.state == state)
        .map(|t| t.at_ms)
        .unwrap_or_else(|| panic!("{} never {state}: {task:#?}", task.id))
}

fn diamond(b_script: &str) -> Vec<Value> {
    vec![
        sh(
            "d",
            &["b", "c"],
            "cat \"$TASKSWARM_INPUT_B\" \"$TASKSWARM_INPUT_C\"",
        ),
        sh("b", &["a"], b_script),
        sh("c", &["a"], "echo C"),
        sh("a", &[], "echo A"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_in_dependency_order_and_d_reads_b_and_c() {
    let (cluster, _dir) = cluster("job-diamond", 3).await;
    let names = submit_job(&cluster, 0, diamond("cat \"$TASKSWARM_INPUT_A\"; echo B")).await;
    let order: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d"], "dependency order");
    let ids: Vec<String> = names.iter().map(|(_, id)| id.clone()).collect();
    let tasks = cluster.wait_all(0, &ids, deadline(60)).await.unwrap();
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Completed),
        "{tasks:#?}"
    );
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| by_name(&names, &tasks, n));
    assert!(at(b, TaskState::Running) >= at(a, TaskState::Completed));
    assert!(at(c, TaskState::Running) >= at(a, TaskState::Completed));
    assert!(
        at(d, TaskState::Running) >= at(b, TaskState::Completed).max(at(c, TaskState::Completed))
    );
    let seen = d.stdout.as_deref().unwrap_or_default();
    println!("d printed {seen:?}");
    assert_eq!(seen, "A\nB\nC\n");

    // A cycle is refused, naming it; so is a dependency no live peer knows.
    let cycle = vec![sh("x", &["y"], "true"), sh("y", &["x"], "true")];
    let (status, answer) = cluster
        .post(0, "/v1/jobs", &json!({ "tasks": cycle }))
        .await
        .unwrap();
    println!("a job with a cycle: {status} {answer}");
    assert_eq!(status.as_u16(), 400);
    assert!(
        answer["error"].as_str().unwrap().contains("x → y → x"),
        "{answer}"
    );
    // The same from the command line: a TOML job file, and one with a cycle.
    let (dir, binary) = (
        tempfile::tempdir().unwrap(),
        taskswarm_binary("debug").unwrap(),
    );
    let file = dir.path().join("job.toml");
    std::fs::write(
        &file,
        "[[task]]\nname = \"hello\"\nhandler = \"echo\"\ninput = \"hi\"\n\n\
         [[task]]\nname = \"shout\"\nafter = [\"hello\"]\nprogram = \"sh\"\n\
         args = [\"-c\", \"tr a-z A-Z < $TASKSWARM_INPUT_HELLO\"]\n",
    )
    .unwrap();
    let run = |file: &std::path::Path| {
        std::process::Command::new(&binary)
            .args(["submit", "--wait", "--job"])
            .arg(file)
            .env("TASKSWARM_API", &cluster.peers[1].api)
            .env("TASKSWARM_TOKEN_FILE", cluster.token_file().unwrap())
            .output()
            .unwrap()
    };
    let out = run(&file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("submit --job --wait printed:\n{stdout}");
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("shout") && l.ends_with("completed"))
    );
    let bad = dir.path().join("cycle.toml");
    std::fs::write(
        &bad,
        "[[task]]\nname = \"x\"\nafter = [\"y\"]\nprogram = \"true\"\n\
         [[task]]\nname = \"y\"\nafter = [\"x\"]\nprogram = \"true\"\n",
    )
    .unwrap();
    let out = run(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!(
        "a job file with a cycle: exit {:?}, {}",
        out.status.code(),
        stderr.trim()
    );
    assert!(!out.status.success());
    assert!(
        stderr.contains("the job has a cycle: x → y → x"),
        "{stderr}"
    );

    let dangling = json!({ "program": "true", "after": ["ab".repeat(32)] });
    let (status, answer) = cluster.post(0, "/v1/tasks", &dangling).await.unwrap();
    assert_eq!(status.as_u16(), 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no live peer knows")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dependency_fails_its_dependents_unless_they_run_anyway() {
    let (cluster, _dir) = cluster("job-failed", 3).await;
    let mut tasks = diamond("exit 3");
    tasks[1]["retries"] = json!(1);
    tasks.push(json!({
        "name": "cleanup", "after": ["b"], "run_anyway": true,
        "program": "sh", "args": ["-c", "echo cleaned"]
    }));
    let names = submit_job(&cluster, 0, tasks).await;
    let ids: Vec<String> = names.iter().map(|(_, id)| id.clone()).collect();
    let tasks = cluster.wait_all(0, &ids, deadline(60)).await.unwrap();
    let state = |n: &str| by_name(&names, &tasks, n).state;
    let d = by_name(&names, &tasks, "d");
    println!(
        "b {}, c {}, d {} ({:?}), cleanup {}",
        state("b"),
        state("c"),
        d.state,
        d.error,
        state("cleanup")
    );
    assert_eq!(state("b"), TaskState::Failed);
    assert_eq!(state("c"), TaskState::Completed);
    assert_eq!(d.state, TaskState::Failed);
    assert_eq!(d.error.as_deref(), Some("dependency b failed"));
    assert!(d.attempts.is_empty(), "d never ran");
    assert_eq!(state("cleanup"), TaskState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_completes_when_the_peer_running_b_is_killed() {
    let (mut cluster, _dir) = cluster("job-kill", 4).await;
    let names = submit_job(&cluster, 0, diamond("sleep 2; echo B")).await;
    let b = names.iter().find(|(n, _)| n == "b").unwrap().1.clone();
    // Wait for b to run, then kill the peer running it.
    let until = deadline(30);
    let holder = loop {
        let view: TaskView = cluster.api(0).unwrap().task(&b).await.unwrap();
        if view.state == TaskState::Running {
            break view.holder.unwrap();
        }
        assert!(Instant::now() < until, "b never started: {view:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = cluster
        .peers
        .iter()
        .position(|p| p.peer_id == holder)
        .unwrap();
    println!(
        "b ran on {holder}, peer {} of {:?}",
        victim + 1,
        cluster
            .peers
            .iter()
            .map(|p| p.peer_id.as_str())
            .collect::<Vec<_>>()
    );
    cluster.kill(victim).unwrap();
    let reader = cluster.live_other_than(victim).unwrap();
    let ids: Vec<String> = names.iter().map(|(_, id)| id.clone()).collect();
    let tasks = cluster.wait_all(reader, &ids, deadline(60)).await.unwrap();
    let d = by_name(&names, &tasks, "d");
    println!(
        "killed peer {} running b; the job: {:?}; d printed {:?}",
        victim + 1,
        tasks.iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
        d.stdout
    );
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Completed),
        "{tasks:#?}"
    );
    assert_eq!(d.stdout.as_deref(), Some("B\nC\n"));
    let b = by_name(&names, &tasks, "b");
    assert_ne!(b.executed_by.as_deref(), Some(holder.as_str()), "{b:#?}");
    // The home set records the lost attempt when it knew of it: if the killed peer was b's
    // primary too, and died before its placement of b reached the others, they only saw b
    // waiting, and placed it anew.
    if victim != 0 {
        assert!(
            b.attempts
                .iter()
                .any(|a| a.ending == "lost-lease" && a.peer == holder),
            "b was re-run after its peer died: {b:#?}"
        );
    }
}
