//! `taskswarm-testnet`: a local testnet of taskswarm peers with a demo workload, and the
//! benchmark (`bench`) with its standard workloads and chaos. Usually run through
//! `testnet/run.sh`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use taskswarm::TaskState;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use taskswarm::job::JobInput;
use taskswarm::spec::SpecInput;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

mod audit;
mod bench;
mod chaos;
mod picture;
mod swarm;
mod workload;

/// Starts N taskswarm peers on 127.0.0.1, runs a demo workload and shows where each task ran.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    demo: DemoArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the peers and run the demo workload (the default).
    Demo(DemoArgs),
    /// Run the standard workloads on fresh testnets and report throughput, latency, balance and
    /// recovery (markdown table, JSON, SVG).
    Bench(bench::BenchArgs),
    /// Stop the peers of a testnet left running (the last one by default).
    Stop {
        /// The testnet directory printed when it started.
        dir: Option<PathBuf>,
        /// The same, as an option (`stop --dir DIR`, as the demo takes it).
        #[arg(long = "dir", value_name = "DIR", conflicts_with = "dir")]
        dir_option: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct DemoArgs {
    /// How many peers to start.
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Slots per peer.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Run the demo, then stop every peer; exit 0 only if every task completed and every peer ran
    /// some.
    #[arg(long)]
    once: bool,
    /// The testnet directory (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The taskswarm binary (default: build this workspace's, release profile).
    #[arg(long, env = "TASKSWARM_BIN")]
    bin: Option<PathBuf>,
}

fn last_run_file() -> PathBuf {
    std::env::temp_dir().join("taskswarm-testnet-last")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Cmd::Stop { dir, dir_option }) => stop(dir.or(dir_option)),
        Some(Cmd::Demo(demo)) => run_demo(demo).await,
        Some(Cmd::Bench(bench)) => bench::run(bench).await,
        None => run_demo(args.demo).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn stop(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(dir) => dir,
        None => PathBuf::from(
            std::fs::read_to_string(last_run_file())
                .context("no testnet was left running (give its directory)")?
                .trim(),
        ),
    };
    let pids = std::fs::read_to_string(dir.join("pids"))
        .with_context(|| format!("{} has no pids file", dir.display()))?;
    let mut stopped = 0;
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // Only signal processes that are still taskswarm peers (a PID may have been reused).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("taskswarm") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            stopped += 1;
        }
    }
    println!(
        "stopped {stopped} peers of the testnet in {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The label the demo's last peer has, and its labelled tasks need.
const DEMO_LABEL: &str = "gpu=1";

/// The demo's dependency job: `text` feeds `words` and `lines`, whose counts `report` reads.
fn demo_job() -> JobInput {
    let sh = |name: &str, after: &[&str], script: &str| SpecInput {
        name: Some(name.into()),
        after: after.iter().map(|a| a.to_string()).collect(),
        program: Some("sh".into()),
        args: vec!["-c".into(), script.into()],
        ..SpecInput::default()
    };
    JobInput {
        tasks: vec![
            sh(
                "text",
                &[],
                "printf 'no broker\\nno head node\\nnothing lost\\n'",
            ),
            sh(
                "words",
                &["text"],
                "wc -w < \"$TASKSWARM_INPUT_TEXT\" | tr -d ' '",
            ),
            sh(
                "lines",
                &["text"],
                "wc -l < \"$TASKSWARM_INPUT_TEXT\" | tr -d ' '",
            ),
            sh(
                "report",
                &["words", "lines"],
                "echo \"$(cat \"$TASKSWARM_INPUT_WORDS\") words on $(cat \"$TASKSWARM_INPUT_LINES\") lines\"",
            ),
        ],
    }
}

/// How many demo tasks need [`DEMO_LABEL`].
const DEMO_LABELLED: usize = 4;

/// The demo workload: one `echo hello`, process tasks and handler tasks of a few hundred
/// milliseconds, and a few tasks that need the label only the last peer has.
fn demo_specs() -> Vec<serde_json::Value> {
    let mut specs = vec![json!({ "program": "echo", "args": ["hello from taskswarm"] })];
    for n in 0..24 {
        let script = "sleep 0.3; echo \"task $0 ran under lease epoch $TASKSWARM_EPOCH\"";
        specs.push(
            json!({ "program": "sh", "args": ["-c", script, n.to_string()], "timeout_ms": 10_000 }),
        );
    }
    for _ in 0..16 {
        specs.push(json!({ "handler": "sleep", "input": "200" }));
    }
    for _ in 0..DEMO_LABELLED {
        specs.push(json!({ "handler": "sleep", "input": "100", "labels": [DEMO_LABEL] }));
    }
    specs
}

/// Runs the demo's dependency job through peer 1 and prints where each task ran and what the
/// last one said; whether it all completed.
async fn run_demo_job(cluster: &Cluster) -> anyhow::Result<bool> {
    let tasks = cluster
        .api(0)?
        .submit_job(&demo_job())
        .await
        .context("the demo job was refused")?;
    let named: Vec<(String, String)> = tasks.into_iter().map(|t| (t.name, t.id)).collect();
    let ids: Vec<String> = named.iter().map(|(_, id)| id.clone()).collect();
    let tasks = cluster
        .wait_all(0, &ids, Instant::now() + Duration::from_secs(60))
        .await?;
    let peer_no = |id: &Option<String>| {
        cluster
            .peers
            .iter()
            .position(|p| Some(&p.peer_id) == id.as_ref())
            .map_or("-".to_string(), |i| (i + 1).to_string())
    };
    let line: Vec<String> = named
        .iter()
        .zip(&tasks)
        .map(|((name, _), t)| format!("{name} ({} on peer {})", t.state, peer_no(&t.executed_by)))
        .collect();
    println!(
        "
a dependency job, text → (words, lines) → report: {}",
        line.join(", ")
    );
    if let Some(report) = tasks.last() {
        println!(
            "report said: {}",
            report.stdout.as_deref().unwrap_or("").trim_end()
        );
    }
    Ok(tasks.iter().all(|t| t.state == TaskState::Completed))
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.peers < 2 {
        bail!("--peers must be at least 2");
    }
    if args.slots == 0 {
        bail!("--slots must be at least 1");
    }
    let binary = match args.bin {
        Some(bin) => bin,
        None => taskswarm_binary("release")?,
    };
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("taskswarm-testnet-{}", std::process::id())),
    };
    println!(
        "starting {} peers ({} slots each) in {}",
        args.peers,
        args.slots,
        dir.display()
    );
    let options = Options {
        peers: args.peers,
        slots: args.slots,
        allow_exec: true,
        binary,
        dir: dir.clone(),
        ready_deadline: Duration::from_secs(30),
        node_args: Vec::new(),
        // The last peer has a GPU, in the demo's words: tasks that need `gpu=1` run there.
        peer_args: (0..args.peers)
            .map(|i| {
                if i + 1 == args.peers {
                    vec!["--label".to_string(), DEMO_LABEL.to_string()]
                } else {
                    Vec::new()
                }
            })
            .collect(),
        netns: false,
        private: true,
    };
    let started = Instant::now();
    let cluster = Cluster::start(options).await?;
    println!(
        "all {} peers see each other after {:.2} s",
        args.peers,
        started.elapsed().as_secs_f64()
    );
    for (i, peer) in cluster.peers.iter().enumerate() {
        println!("  peer {}  {}  api {}", i + 1, peer.peer_id, peer.api);
    }

    let specs = demo_specs();
    let work_ms = 24.0 * 300.0 + 16.0 * 200.0 + DEMO_LABELLED as f64 * 100.0;
    let ideal = work_ms / 1000.0 / f64::from(args.slots * args.peers as u32);
    println!("submitting {} demo tasks to peer 1", specs.len());
    let begun = Instant::now();
    let ids = cluster.submit(0, &specs).await?;
    let tasks = cluster
        .wait_all(0, &ids, Instant::now() + Duration::from_secs(120))
        .await?;
    let makespan = begun.elapsed().as_secs_f64();

    let mut table: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for peer in &cluster.peers {
        table.insert(peer.peer_id.clone(), (0, 0));
    }
    for task in &tasks {
        let row = table
            .entry(
                task.executed_by
                    .clone()
                    .unwrap_or_else(|| "(nobody)".into()),
            )
            .or_default();
        if task.kind == "process" {
            row.0 += 1
        } else {
            row.1 += 1
        }
    }
    println!();
    println!(
        "{:<5} {:<54} {:>7} {:>7} {:>5}",
        "peer", "peer id", "process", "handler", "total"
    );
    for (i, peer) in cluster.peers.iter().enumerate() {
        let (p, h) = table.get(&peer.peer_id).copied().unwrap_or_default();
        println!(
            "{:<5} {:<54} {:>7} {:>7} {:>5}",
            i + 1,
            peer.peer_id,
            p,
            h,
            p + h
        );
    }
    let completed = tasks
        .iter()
        .filter(|t| t.state == TaskState::Completed)
        .count();
    let idle: Vec<usize> = cluster
        .peers
        .iter()
        .enumerate()
        .filter(|(_, p)| table.get(&p.peer_id).is_none_or(|(a, b)| a + b == 0))
        .map(|(i, _)| i + 1)
        .collect();
    if let Some(hello) = tasks.first() {
        println!(
            "\nfirst task said: {}",
            hello.stdout.as_deref().unwrap_or("").trim_end()
        );
    }
    println!(
        "{completed}/{} tasks completed in {makespan:.2} s (ideal {ideal:.2} s, ratio {:.2})",
        tasks.len(),
        makespan / ideal
    );
    for task in tasks.iter().filter(|t| t.state != TaskState::Completed) {
        println!("  {} {}: {:?}", task.id, task.state, task.error);
    }
    if !idle.is_empty() {
        println!("peers that ran nothing: {idle:?}");
    }
    let labelled_peer = cluster.peers.last().map(|p| p.peer_id.clone());
    let labelled: Vec<&taskswarm::TaskView> =
        tasks.iter().filter(|t| !t.needs.is_empty()).collect();
    let on_labelled = labelled
        .iter()
        .filter(|t| t.executed_by == labelled_peer)
        .count();
    println!(
        "{on_labelled}/{} tasks that need {DEMO_LABEL} ran on peer {}, the only one labelled {DEMO_LABEL}",
        labelled.len(),
        cluster.peers.len()
    );
    let job_ok = run_demo_job(&cluster).await?;
    let views_ok = check_views(&cluster).await?;
    let ok = completed == tasks.len()
        && idle.is_empty()
        && on_labelled == labelled.len()
        && job_ok
        && views_ok;

    if args.once {
        drop(cluster);
        println!("stopped every peer");
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let first_api = cluster.peers[0].api.clone();
    let token_file = cluster.token_file();
    let pids = cluster.detach();
    std::fs::write(last_run_file(), dir.display().to_string())?;
    println!(
        "\nthe peers keep running; they share the swarm key {}",
        dir.join("swarm.key").display()
    );
    if let Some(file) = token_file {
        println!("their APIs need the testnet's token:");
        println!("  export TASKSWARM_TOKEN_FILE={}", file.display());
    }
    println!("Try:");
    println!("  the dashboard: {first_api}/   (it asks for the token)");
    println!("  target/release/taskswarm status --api {first_api}");
    println!("  target/release/taskswarm submit --api {first_api} --wait -- uname -a");
    println!(
        "stop them with: testnet/run.sh stop   (their PIDs are in {})",
        pids.display()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The value of the sample `name` (no labels) in a Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// After the demo, what every peer shows agrees: its metrics with its API's counters, its view of
/// the swarm with the swarm, and its list of the swarm's completed tasks with every other's.
async fn check_views(cluster: &Cluster) -> anyhow::Result<bool> {
    let peers = cluster.peers.len();
    let (mut metrics_agree, mut sees_all) = (0, 0);
    let mut lists = Vec::new();
    for i in 0..peers {
        let api = cluster.api(i)?;
        let text = api.metrics().await?;
        let view = api.cluster().await?;
        let executed = sample(&text, "taskswarm_tasks_executed_total");
        if executed == Some(view.counters.tasks_executed as f64)
            && sample(&text, "taskswarm_slots") == Some(f64::from(view.me.slots))
        {
            metrics_agree += 1;
        }
        if view.swarm.peers as usize == peers {
            sees_all += 1;
        }
        let query = taskswarm::api_client::TaskQuery {
            state: Some(TaskState::Completed),
            limit: Some(1000),
            ..Default::default()
        };
        let mut ids: Vec<String> = api
            .list(&query)
            .await?
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect();
        ids.sort();
        lists.push(ids);
    }
    let same_lists = lists.windows(2).all(|w| w[0] == w[1]);
    println!(
        "metrics agree with the API on {metrics_agree}/{peers} peers; {sees_all}/{peers} peers see \
         all {peers}; every peer lists the same {} completed tasks of the swarm: {}",
        lists.first().map_or(0, Vec::len),
        if same_lists { "yes" } else { "NO" }
    );
    Ok(metrics_agree == peers && sees_all == peers && same_lists)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn stop_takes_the_directory_as_an_option_too() {
        for args in [
            &["taskswarm-testnet", "stop", "--dir", "/tmp/t"][..],
            &["taskswarm-testnet", "stop", "/tmp/t"][..],
        ] {
            match Args::try_parse_from(args).unwrap().command {
                Some(Cmd::Stop { dir, dir_option }) => {
                    assert_eq!(
                        dir.or(dir_option),
                        Some(PathBuf::from("/tmp/t")),
                        "{args:?}"
                    );
                }
                other => panic!("{args:?} parsed as {other:?}"),
            }
        }
    }
}
