//! The `taskswarm` command as people use it, against real peer processes on loopback: what it
//! prints, how it ends, and what it says when something is wrong. Every wait is bounded; every
//! process is ended by PID when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use taskswarm::{TaskState, TaskView};
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

async fn two_peers(name: &str) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let options = Options::local(2, binary, dir.path().to_path_buf());
    (Cluster::start(options).await.unwrap(), dir)
}

/// `taskswarm ARGS` against peer 0, with the testnet's token; its output once it ends (within
/// 30 s), stdout going to `stdout`.
async fn taskswarm(cluster: &Cluster, args: &[&str], stdout: Stdio) -> Output {
    let mut command = tokio::process::Command::new(taskswarm_binary("debug").unwrap());
    command
        .args(args)
        .env("TASKSWARM_API", &cluster.peers[0].api)
        .env("TASKSWARM_TOKEN_FILE", cluster.token_file().unwrap())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the command ended within 30 s")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_list_into_a_reader_that_went_away_ends_quietly() {
    let (cluster, _dir) = two_peers("cli-pipe").await;
    let specs: Vec<_> = (0..5)
        .map(|_| serde_json::json!({ "program": "true" }))
        .collect();
    let ids = cluster.submit(0, &specs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    cluster.wait_all(0, &ids, deadline).await.unwrap();
    // A pipe whose reader is gone before the command writes anything, as `| head` leaves it.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let output = taskswarm(&cluster, &["task", "list"], Stdio::from(writer)).await;
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_show_prints_epochs_as_people_read_them_and_json_keeps_the_number() {
    let (cluster, _dir) = two_peers("cli-epoch").await;
    let id = cluster
        .submit(0, &[serde_json::json!({ "program": "true" })])
        .await
        .unwrap()
        .remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = cluster
        .wait_all(0, std::slice::from_ref(&id), deadline)
        .await
        .unwrap();
    assert_eq!(done[0].lease_epoch, 1 << 32, "{:?}", done[0]);

    let shown = taskswarm(&cluster, &["task", "show", &id], Stdio::piped()).await;
    let stdout = text(&shown.stdout);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert!(stdout.contains("lease epoch 1.0\n"), "{stdout}");
    assert!(!stdout.contains("4294967296"), "{stdout}");

    let json = taskswarm(&cluster, &["task", "show", &id, "--json"], Stdio::piped()).await;
    let task: TaskView = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(task.lease_epoch, 1 << 32);
    assert_eq!(task.state, TaskState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_start_fails_at_once_and_says_why() {
    let (cluster, _dir) = two_peers("cli-nostart").await;
    let output = taskswarm(
        &cluster,
        &["submit", "--wait", "--json", "--", "/no/such/thing"],
        Stdio::piped(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let task: TaskView = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.attempts.len(), 1, "not retried: {task:#?}");
    assert_eq!(task.attempts[0].ending, "not-started");
    let error = task.error.unwrap_or_default();
    assert!(error.contains("cannot start \"/no/such/thing\""), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_peer_on_a_data_dir_in_use_names_the_directory_and_the_peer_using_it() {
    let (cluster, _dir) = two_peers("cli-lock").await;
    let used = cluster.peers[1].dir.to_str().unwrap().to_string();
    let output = taskswarm(
        &cluster,
        &["node", "--data-dir", &used, "--api", "127.0.0.1:0"],
        Stdio::piped(),
    )
    .await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    let expected = format!("the data directory {used} is in use by another taskswarm peer");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains(&cluster.peers[1].peer_id), "{stderr}");
    assert!(!stderr.contains("Cannot acquire lock"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_starts_from_the_example_config_and_a_typo_is_named_with_its_line() {
    let dir = tempfile::Builder::new()
        .prefix("cli-config")
        .tempdir()
        .unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let example = std::process::Command::new(&binary)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(example.status.success());
    let data_dir = dir.path().join("data");
    // The example as it is, but for a free API port and a data directory of the test's own.
    let config = text(&example.stdout)
        .replace("api = \"127.0.0.1:7070\"", "api = \"127.0.0.1:0\"")
        .replace(
            "data_dir = \"taskswarm-data\"",
            &format!("data_dir = {:?}", data_dir.display().to_string()),
        );
    let file = dir.path().join("ts.toml");
    std::fs::write(&file, &config).unwrap();

    let mut peer = tokio::process::Command::new(&binary)
        .args(["node", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let peer_file = data_dir.join("peer.json");
    let started: taskswarm::peer::PeerFile = loop {
        if let Ok(bytes) = std::fs::read(&peer_file)
            && let Ok(started) = serde_json::from_slice(&bytes)
        {
            break started;
        }
        assert!(peer.try_wait().unwrap().is_none(), "the peer exited");
        assert!(Instant::now() < deadline, "no peer.json after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let api = format!("http://{}", started.api.unwrap());
    let health: serde_json::Value = reqwest::get(format!("{api}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["peer_id"], started.peer_id.as_str());
    peer.kill().await.unwrap();

    let typo = config.replace("lease_ttl = ", "lease_tl = ");
    let line = typo
        .lines()
        .position(|l| l.starts_with("lease_tl"))
        .unwrap()
        + 1;
    std::fs::write(&file, typo).unwrap();
    let refused = std::process::Command::new(&binary)
        .args(["node", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `lease_tl`"), "{stderr}");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_a_task_across_peers_by_its_span() {
    let dir = tempfile::Builder::new()
        .prefix("cli-logs")
        .tempdir()
        .unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let mut options = Options::local(2, binary, dir.path().to_path_buf());
    options.node_args = ["--log-format", "json", "--log", "info,taskswarm=debug"]
        .map(String::from)
        .to_vec();
    let cluster = Cluster::start(options).await.unwrap();
    let id = cluster
        .submit(0, &[serde_json::json!({ "program": "true" })])
        .await
        .unwrap()
        .remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = cluster
        .wait_all(0, std::slice::from_ref(&id), deadline)
        .await
        .unwrap();
    let ran_on = cluster
        .peers
        .iter()
        .position(|p| Some(&p.peer_id) == done[0].executed_by.as_ref())
        .unwrap();

    // Each peer's log lines about the task, by its span; the record's last change may be
    // logged a moment after the client saw the task end.
    let about_task = |i: usize| -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(dir.path().join(format!("peer{}.log", i + 1))).unwrap();
        log.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|line| line["span"]["id"] == id.as_str())
            .collect()
    };
    let said = |lines: &[serde_json::Value], message: &str| {
        lines
            .iter()
            .any(|l| l["fields"]["message"] == message && l["span"]["epoch"] == "1.0")
    };
    loop {
        let runner = about_task(ran_on);
        let both_completed = (0..2).all(|i| {
            about_task(i)
                .iter()
                .any(|l| l["fields"]["state"] == "completed")
        });
        if said(&runner, "attempt started") && said(&runner, "attempt ended") && both_completed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the logs do not follow task {id}: {:#?}",
            (0..2).map(about_task).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
