//! `GET /metrics` on real peer processes: the figures agree with what the API says, and the text
//! is well formed (checked by `promtool check metrics` where it is installed, and by the test's
//! own reading of the format always).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use taskswarm::TaskState;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

/// The samples of a metrics text, by name with labels (`name{k="v"}`), checking its form on the
/// way: every sample belongs to a family declared by a `# TYPE` line (a histogram's by its
/// `_bucket`, `_sum` and `_count`), has a number, and every family has a `# HELP`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut families: BTreeMap<&str, &str> = BTreeMap::new();
    let mut helped = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                families.insert(name, kind).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split_once(' ').unwrap().0);
            continue;
        }
        assert!(!line.starts_with('#'), "an unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|f| families.get(f) == Some(&"histogram"))
            .unwrap_or(name);
        assert!(families.contains_key(family), "{name} has no # TYPE");
        assert!(name.starts_with("taskswarm_"), "{name}");
        samples.insert(series.to_string(), value);
    }
    for family in families.keys() {
        assert!(helped.contains(family), "{family} has no # HELP");
    }
    samples
}

/// `promtool check metrics` on `text`, if promtool is installed (Debian's `prometheus`).
fn promtool(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        println!("promtool is not installed: the metrics were checked by this test's reader only");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("promtool check metrics: ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_api_and_are_well_formed() {
    let dir = tempfile::Builder::new()
        .prefix("metrics")
        .tempdir()
        .unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let cluster = Cluster::start(Options::local(3, binary, dir.path().to_path_buf()))
        .await
        .unwrap();
    let mut specs: Vec<_> = (0..30).map(|_| json!({ "program": "true" })).collect();
    specs.extend(
        (0..2).map(|_| json!({ "program": "false", "retries": 2, "backoff": "fixed:10ms" })),
    );
    let ids = cluster.submit(0, &specs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks = cluster.wait_all(0, &ids, deadline).await.unwrap();
    let failed = tasks
        .iter()
        .filter(|t| t.state == TaskState::Failed)
        .count();
    assert_eq!(failed, 2, "{tasks:#?}");

    let http = reqwest::Client::new();
    let mut swarm = BTreeMap::<&str, f64>::new();
    for (i, peer) in cluster.peers.iter().enumerate() {
        let response = http
            .get(format!("{}/metrics", peer.api))
            .bearer_auth(cluster.token().unwrap())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        let text = response.text().await.unwrap();
        promtool(&text);
        let m = samples(&text);
        let view = cluster.cluster(i).await.unwrap();
        let c = &view.counters;
        let get = |name: &str| m.get(name).copied().unwrap_or_else(|| panic!("no {name}"));
        println!(
            "peer {}: executed {}, stolen {}, given {}, placements {}, retries {}",
            i + 1,
            get("taskswarm_tasks_executed_total"),
            get("taskswarm_steals_taken_total"),
            get("taskswarm_steals_given_total"),
            get("taskswarm_placements_total"),
            get("taskswarm_retries_total"),
        );
        assert_eq!(
            get("taskswarm_tasks_executed_total"),
            c.tasks_executed as f64
        );
        assert_eq!(get("taskswarm_steals_taken_total"), c.tasks_stolen as f64);
        assert_eq!(get("taskswarm_steals_given_total"), c.tasks_given as f64);
        assert_eq!(
            get("taskswarm_steal_requests_total"),
            c.steal_requests as f64
        );
        assert_eq!(
            get("taskswarm_leases_reclaimed_total"),
            c.leases_reclaimed as f64
        );
        assert_eq!(get("taskswarm_slots"), f64::from(view.me.slots));
        assert_eq!(
            get("taskswarm_store_commits_total"),
            view.store.commits as f64
        );
        // Every attempt this peer started ended, and the runtime counted it by its ending.
        let ended: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("taskswarm_attempts_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(ended, c.tasks_executed as f64);
        assert_eq!(get("taskswarm_task_run_seconds_count"), ended);
        for name in [
            "taskswarm_attempts_total{ending=\"success\"}",
            "taskswarm_attempts_total{ending=\"failure\"}",
            "taskswarm_placements_total",
            "taskswarm_retries_total",
            "taskswarm_tasks_submitted_total",
        ] {
            *swarm.entry(name).or_default() += m.get(name).copied().unwrap_or(0.0);
        }
        if i == 0 {
            // Every task was accepted through peer 1, which keeps its record: each one's latency.
            assert_eq!(get("taskswarm_tasks_submitted_total"), 32.0);
            assert_eq!(get("taskswarm_task_latency_seconds_count"), 32.0);
        }
    }
    println!("the swarm: {swarm:?}");
    assert_eq!(swarm["taskswarm_attempts_total{ending=\"success\"}"], 30.0);
    // Each failing task ran twice: one retry each.
    assert_eq!(swarm["taskswarm_attempts_total{ending=\"failure\"}"], 4.0);
    assert_eq!(swarm["taskswarm_retries_total"], 2.0);
    assert!(swarm["taskswarm_placements_total"] >= 34.0, "{swarm:?}");
    assert_eq!(swarm["taskswarm_tasks_submitted_total"], 32.0);
}
