//! Real `taskswarm` peer processes on loopback: submit through one, run on all.
//! Every wait is bounded by a deadline; every process is ended by PID when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use taskswarm::TaskState;

use serde_json::json;
use taskswarm::TaskView;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

async fn three_peers(name: &str) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let options = Options::local(3, binary, dir.path().to_path_buf());
    (Cluster::start(options).await.unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_json_echo_hello_through_the_cli() {
    let (cluster, _dir) = three_peers("echo").await;
    let binary = taskswarm_binary("debug").unwrap();
    let output = tokio::process::Command::new(binary)
        .args([
            "submit",
            "--api",
            &cluster.peers[0].api,
            "--wait",
            "--json",
            "--",
            "echo",
            "hello",
        ])
        .env("TASKSWARM_TOKEN_FILE", cluster.token_file().unwrap())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let task: TaskView = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.stdout.as_deref(), Some("hello\n"));
    assert_eq!(task.exit_code, Some(0));
    assert!(task.lease_epoch >= 1);
    let ran_on = task.executed_by.unwrap();
    assert!(cluster.peers.iter().any(|p| p.peer_id == ran_on));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_short_tasks_submitted_to_one_peer_run_on_all_three() {
    let (cluster, _dir) = three_peers("sixty").await;
    let specs: Vec<_> = (0..60)
        .map(|_| json!({ "program": "sleep", "args": ["0.2"] }))
        .collect();
    let ids = cluster.submit(0, &specs).await.unwrap();
    assert_eq!(ids.len(), 60);
    let tasks = cluster
        .wait_all(0, &ids, Instant::now() + Duration::from_secs(60))
        .await
        .unwrap();
    let mut per_peer: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        *per_peer
            .entry(task.executed_by.clone().unwrap())
            .or_default() += 1;
    }
    for peer in &cluster.peers {
        let ran = per_peer.get(&peer.peer_id).copied().unwrap_or(0);
        assert!(
            ran >= 10,
            "peer {} ran only {ran} of 60: {per_peer:?}",
            peer.peer_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_that_names_the_field() {
    let (cluster, _dir) = three_peers("badinput").await;
    let (status, body) = cluster
        .post(0, "/v1/tasks", &json!({ "progam": "echo" }))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400);
    assert_eq!(body["field"], "progam");
    let (status, body) = cluster
        .post(
            0,
            "/v1/tasks",
            &json!([{ "program": "echo" }, { "handler": 3 }]),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400);
    assert_eq!(body["field"], "[1].handler");

    let err = cluster
        .get::<serde_json::Value>(0, "/v1/tasks/not-an-id")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let unknown = "0".repeat(64);
    let err = cluster
        .get::<serde_json::Value>(0, &format!("/v1/tasks/{unknown}"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let err = cluster
        .get::<serde_json::Value>(0, "/v1/tasks?state=sleeping")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("state"), "{err}");

    // The peer is still healthy and serving.
    let health: serde_json::Value = cluster.get(0, "/healthz").await.unwrap();
    assert_eq!(health["ok"], true);
}
