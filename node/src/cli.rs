//! The command line: `taskswarm node`, `submit`, `status` and `task show|list`. Everything but
//! `node` talks to a peer's HTTP API (`--api`, or `TASKSWARM_API`).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use taskswarm::TaskState;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write as _;
use taskswarm::config::{LogFormat, NodeConfig};
use taskswarm::spec::{SpecInput, parse_backoff, parse_duration, parse_retry_on};
use taskswarm::view::show_epoch;
use taskswarm::{ClusterView, Peer, TaskView};

/// Writes a line of the command's own output. A reader that went away (`taskswarm task list |
/// head`) makes it an error like any other, which `main` turns into a quiet end.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Writes `text` as it is (no line added).
fn out_text(text: &str) -> std::io::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())
}

/// Whether `error` is a write to a reader that went away (a closed pipe).
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// taskswarm: a peer-to-peer task scheduler with no broker and no head node.
///
/// Every peer accepts, places, runs and steals tasks. Start a few peers with `taskswarm node`,
/// pointing each at another with `--bootstrap`, then submit work to any of them.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a peer until interrupted (Ctrl-C or SIGTERM).
    Node(NodeArgs),
    /// Submit a process task (`-- PROGRAM [ARGS…]`), a handler task, or a file of specs.
    Submit(SubmitArgs),
    /// Print a shell completion script: `taskswarm completions bash >
    /// /etc/bash_completion.d/taskswarm` (zsh: into a directory on $fpath as `_taskswarm`; fish:
    /// ~/.config/fish/completions/taskswarm.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Show every live peer (load, resources, labels, version, uptime) and the swarm's totals.
    Status {
        #[command(flatten)]
        api: ApiArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take a peer out of service: it takes no new work, hands its queued tasks and what it led
    /// to other peers at once, lets the tasks it runs finish (up to --deadline), then leaves the
    /// swarm and stops. Waits until it has stopped (needs an admin token).
    Drain {
        #[command(flatten)]
        api: ApiArg,
        /// How long the tasks it runs may take to finish before it leaves anyway (what still
        /// runs is then taken over by the others at once), such as 10m.
        #[arg(long, value_parser = taskswarm::spec::parse_duration_or_zero, default_value = "60s")]
        deadline: Duration,
        /// Return once the drain has begun, without waiting for the peer to stop.
        #[arg(long)]
        no_wait: bool,
    },
    /// Inspect tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Manage the swarm's membership secret.
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage the tokens a peer's API accepts.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The peer's config file.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print a config file with every key, its default and what it means
    /// (`taskswarm config example > taskswarm.toml`; then `taskswarm node --config taskswarm.toml`).
    Example,
}

#[derive(Debug, clap::Args)]
struct TokenFileArg {
    /// The token file [default: DATA_DIR/tokens.toml].
    #[arg(long, env = "TASKSWARM_TOKENS", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The peer's data directory, whose tokens.toml is meant.
    #[arg(long, default_value = "taskswarm-data")]
    data_dir: PathBuf,
}

impl TokenFileArg {
    fn path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tokens.toml"))
    }
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Make a new token and print it (once: only its digest is kept). A running peer reads the
    /// file again on SIGHUP.
    Add {
        /// What it allows: read, submit, cancel or admin. May be repeated.
        #[arg(long = "role", required = true)]
        roles: Vec<taskswarm::tokens::Role>,
        /// Who holds it: recorded as the client of the tasks it submits or cancels.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        file: TokenFileArg,
    },
    /// List the tokens (names and roles; the tokens themselves are not kept).
    List {
        #[command(flatten)]
        file: TokenFileArg,
    },
    /// Remove a token.
    Remove {
        /// Its name.
        name: String,
        #[command(flatten)]
        file: TokenFileArg,
    },
}

#[derive(Debug, Subcommand)]
enum SwarmCmd {
    /// Write a new swarm key: give the same file to every peer (`node --swarm-key FILE`), and
    /// only they can connect to each other. Keep it secret, like a password.
    Init {
        /// Where to write it (readable only by you).
        #[arg(long, default_value = "swarm.key")]
        out: PathBuf,
        /// Replace an existing key (every member then needs the new one).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// The config file (TOML): `taskswarm config example` prints one with every key and its
    /// default. `TASKSWARM_<KEY>` variables win over it, and flags over both.
    #[arg(long, env = "TASKSWARM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: taskswarm::config::Flags,
}

#[derive(Debug, clap::Args)]
struct ApiArg {
    /// The peer's API.
    #[arg(long, env = "TASKSWARM_API", default_value = "http://127.0.0.1:7070")]
    api: String,
    /// A file holding the API token to present (the token itself can also come from the
    /// TASKSWARM_TOKEN environment variable).
    #[arg(long, env = "TASKSWARM_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl ApiArg {
    fn client(&self) -> anyhow::Result<Api> {
        let token = match &self.token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading the token file {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("TASKSWARM_TOKEN").ok(),
        };
        Ok(Api::new(
            &self.api,
            token.as_deref().filter(|t| !t.is_empty()),
        )?)
    }
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    #[command(flatten)]
    api: ApiArg,
    /// Wait for the tasks to end and show their results.
    #[arg(long)]
    wait: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// A file of specs, one JSON object per line (`{"program": "echo", "args": ["hi"]}` or
    /// `{"handler": "echo", "input": "hi"}`, with optional "timeout_ms"); `-` reads stdin.
    #[arg(long, conflicts_with_all = ["handler", "command", "job"])]
    file: Option<PathBuf>,
    /// A job file: named tasks (`[[task]]` tables in TOML, or `{"tasks": [...]}` in a .json
    /// file) whose `after` lists name the tasks they wait for; submitted as a unit.
    #[arg(long, conflicts_with_all = ["handler", "command"])]
    job: Option<PathBuf>,
    /// Start only after task ID has completed (its result becomes an input). May be repeated.
    #[arg(long, value_name = "ID")]
    after: Vec<String>,
    /// Run even if a task it waits for (--after) failed or was cancelled.
    #[arg(long)]
    run_anyway: bool,
    /// A name for the task, shown by `task show`.
    #[arg(long)]
    name: Option<String>,
    /// Run the registered handler NAME instead of a program.
    #[arg(long, value_name = "NAME", conflicts_with = "command")]
    handler: Option<String>,
    /// The handler's input, as text.
    #[arg(long, requires = "handler")]
    input: Option<String>,
    /// A per-attempt time limit, such as 500ms, 30s or 2m.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// At most N attempts in all [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    retries: Option<u32>,
    /// The wait between attempts: fixed:DUR or exp:BASE[:MAX] [default: exp:100ms:10s].
    #[arg(long, value_parser = check_backoff)]
    backoff: Option<String>,
    /// Which failed attempts are retried: failure, timeout, lost-lease (comma-separated), or none
    /// [default: all three].
    #[arg(long, value_parser = check_retry_on)]
    retry_on: Option<String>,
    /// Where to place the task instead of by the receiving peer's policy: random, round-robin,
    /// weighted, least-loaded or p2c.
    #[arg(long)]
    placement: Option<taskswarm::protocol::placement::Policy>,
    /// CPU cores the task needs while it runs, such as 2 or 0.5: it runs only on a peer with that
    /// many, and counts them against the peer while it runs.
    #[arg(long, value_parser = check_cpus)]
    cpus: Option<String>,
    /// Memory the task needs, such as 512M or 2G.
    #[arg(long, value_parser = check_bytes)]
    memory: Option<String>,
    /// Disk the task needs, such as 1G.
    #[arg(long, value_parser = check_bytes)]
    disk: Option<String>,
    /// A label the peer must have, such as gpu=1 (peers get theirs with `node --label`). May be
    /// repeated.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = check_label)]
    labels: Vec<String>,
    /// Higher starts first [default: 0]; a waiting task gains one level every 10 s, so lower
    /// priorities are never starved.
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// How long the task is expected to run, such as 30s: busy peers give long tasks away first.
    #[arg(long, value_parser = parse_duration)]
    cost: Option<Duration>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    command: Vec<String>,
}

fn check_cpus(text: &str) -> Result<String, String> {
    taskswarm::protocol::resources::parse_cpus(text).map(|_| text.to_string())
}

fn check_bytes(text: &str) -> Result<String, String> {
    taskswarm::protocol::resources::parse_bytes(text).map(|_| text.to_string())
}

fn check_label(text: &str) -> Result<String, String> {
    text.parse::<taskswarm::protocol::Label>()
        .map(|_| text.to_string())
}

fn check_backoff(text: &str) -> Result<String, String> {
    parse_backoff(text).map(|_| text.to_string())
}

fn check_retry_on(text: &str) -> Result<String, String> {
    parse_retry_on(&[text.to_string()]).map(|_| text.to_string())
}

#[derive(Debug, Subcommand)]
enum TaskCmd {
    /// Show a task, with every attempt and transition (asked of its home set if this peer does
    /// not keep it).
    Show {
        /// The task id.
        id: String,
        #[command(flatten)]
        api: ApiArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a task's proof yourself and print its chain: the spec signed by the peer it was
    /// submitted through (naming the client and the home set), and the record sealed by the home
    /// member that wrote it. Exits 0 if every signature holds, 1 if not.
    Verify {
        /// The task id.
        id: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Cancel a task wherever it runs (its process group is killed).
    Cancel {
        /// The task id.
        id: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// List the swarm's tasks, newest first: the peer asks every live peer for the records it
    /// keeps. A task that is not running says why.
    List {
        /// Only tasks in this state: waiting, unschedulable, running, completed, failed or
        /// cancelled.
        #[arg(long)]
        state: Option<TaskState>,
        /// Only tasks that need this label (KEY=VALUE).
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
        /// Only tasks asked for by this client (the name of its API token).
        #[arg(long, value_name = "NAME")]
        submitter: Option<String>,
        /// Only tasks submitted within this long before now, such as 10m or 2h.
        #[arg(long, value_parser = taskswarm::spec::parse_duration, value_name = "DURATION")]
        since: Option<Duration>,
        /// At most this many tasks (all that match, page after page, if not given).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Only the tasks whose records the peer itself keeps (it is in their home sets).
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        api: ApiArg,
        /// Print JSON (every task, in one list).
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Cmd::Node(node) => run_node(node).await,
        Cmd::Submit(submit) => run_submit(submit).await,
        Cmd::Status { api, json } => run_status(&api.client()?, json).await,
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "taskswarm", &mut script);
            out!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Drain {
            api,
            deadline,
            no_wait,
        } => run_drain(&api.client()?, deadline, no_wait).await,
        Cmd::Token(command) => run_token(command),
        Cmd::Config(ConfigCmd::Example) => {
            out_text(taskswarm::config::EXAMPLE)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Swarm(SwarmCmd::Init { out, force }) => {
            let key = taskswarm::admission::generate_key();
            taskswarm::admission::write_key(&out, &key, force)?;
            out!("wrote a new swarm key to {}", out.display());
            out!("fingerprint {}", key.fingerprint());
            out!("start every peer with --swarm-key {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Task(TaskCmd::Show { id, api, json }) => {
            let task = api.client()?.task(&id).await?;
            print_task(&task, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Task(TaskCmd::Verify { id, api }) => {
            let proof = api.client()?.proof(&id).await?;
            match taskswarm::proof::check(&id, &proof.sealed) {
                Ok(chain) => {
                    out!("task {id}: the proof holds");
                    for line in chain {
                        out!("  {line}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    out!("task {id}: {error}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Task(TaskCmd::Cancel { id, api }) => {
            let answer = api.client()?.cancel(&id).await?;
            out!("cancelling {}", answer.id);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Task(TaskCmd::List {
            state,
            label,
            submitter,
            since,
            limit,
            local,
            api,
            json,
        }) => {
            let since_ms = since.map(|ago| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.saturating_sub(ago).as_millis() as u64
            });
            let query = taskswarm::api_client::TaskQuery {
                local,
                state,
                label,
                submitter,
                since_ms,
                ..Default::default()
            };
            let list = list_all(&api.client()?, query, limit).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_task_list(&list)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ----- node -----

fn builtin_handlers(builder: taskswarm::PeerBuilder) -> taskswarm::PeerBuilder {
    builder
        .handler("echo", |_, input| async move { Ok(input) })
        .handler("noop", |_, _| async { Ok(Vec::new()) })
        .handler("sleep", |_, input: Vec<u8>| async move {
            let text = String::from_utf8_lossy(&input);
            let ms: u64 = text
                .trim()
                .parse()
                .map_err(|_| format!("sleep takes milliseconds as text, not {text:?}"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Vec::new())
        })
}

/// Starts the log on standard error, in the configured form; `RUST_LOG` wins over `log`.
fn start_log(config: &NodeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

async fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(args.config.as_deref(), &args.flags)?;
    start_log(&config);
    if let Some(file) = &args.config {
        tracing::info!(file = %file.display(), "settings read");
    }
    let mut builder = Peer::builder()
        .data_dir(&config.data_dir)
        .api(config.api)
        .allow_exec(config.allow_exec)
        .replicas(config.replicas)
        .report_interval(config.heartbeat)
        .lease_ttl(config.lease_ttl)
        .repair_after(config.repair_after)
        .retention(config.retention)
        .placement(config.placement);
    if let Some(cpus) = config.cpus {
        builder = builder.cpus_milli(cpus);
    }
    if let Some(memory) = config.memory {
        builder = builder.memory(memory);
    }
    if let Some(disk) = config.disk {
        builder = builder.disk(disk);
    }
    for label in config.labels.clone() {
        builder = builder.label(label);
    }
    if let Some(slots) = config.slots {
        builder = builder.slots(slots);
    }
    if let Some(key) = config.key.clone() {
        builder = builder.key_file(key);
    }
    for addr in config.listen.clone() {
        builder = builder.listen(addr);
    }
    for addr in config.bootstrap.clone() {
        builder = builder.bootstrap(addr);
    }
    if let Some(file) = &config.swarm_key {
        builder = builder.swarm_key(taskswarm::admission::read_key(file)?);
    }
    if let Some(file) = config.tokens_file() {
        let tokens = taskswarm::tokens::Tokens::read(&file)?;
        if tokens.is_empty() {
            tracing::warn!(file = %file.display(), "the token file has no tokens: every API request but /healthz will be refused");
        }
        builder = builder.api_tokens(tokens);
    }
    let allowlist = read_allowlist(&config)?;
    if let Some(peers) = &allowlist {
        builder = builder.allowlist(peers.iter().copied());
    }
    let peer = builtin_handlers(builder)
        .spawn()
        .await
        .context("starting the peer")?;
    out!("peer id: {}", peer.peer_id());
    for addr in peer.listen_addrs() {
        out!("listening on {addr}");
    }
    if let Some(api) = peer.api_addr() {
        out!("api: http://{api}");
    }
    out!("peer file: {}", config.data_dir.join("peer.json").display());
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            _ = term.recv() => break,
            _ = hangup.recv() => reload(&config, &peer).await,
            // Drained through the API (`taskswarm drain`).
            _ = peer.stopped() => {
                out!("drained; stopped");
                peer.shutdown().await;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    out!(
        "draining: up to {:?} for the tasks it runs (Ctrl-C again to leave now)",
        config.stop_deadline
    );
    if peer.drain(config.stop_deadline).await.is_ok() {
        tokio::select! {
            _ = peer.stopped() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    out!("stopping");
    peer.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Drains the peer behind `api`, and (unless `no_wait`) waits until it has stopped answering.
async fn run_drain(api: &Api, deadline: Duration, no_wait: bool) -> anyhow::Result<ExitCode> {
    let me = api.cluster().await?.me.peer_id;
    let answer = api.drain(Some(deadline)).await?;
    out!(
        "draining {me}: up to {:?} for the tasks it runs",
        Duration::from_millis(answer.deadline_ms)
    );
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // It leaves at the deadline at the latest; give it that, and a little to stop.
    let give_up = std::time::Instant::now() + deadline + Duration::from_secs(30);
    let mut last = None;
    while std::time::Instant::now() < give_up {
        match api.cluster().await {
            Ok(view) => {
                let now = (view.me.running, view.me.queued);
                if last != Some(now) {
                    out!("  running {}, queued {}", now.0, now.1);
                    last = Some(now);
                }
            }
            Err(_) => {
                out!("stopped");
                return Ok(ExitCode::SUCCESS);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{me} still answers {deadline:?} after its drain began")
}

/// The allowlist from `allow_peer` and the `allow_peers` file, if either is given.
fn read_allowlist(
    config: &NodeConfig,
) -> anyhow::Result<Option<std::collections::BTreeSet<libp2p::PeerId>>> {
    if config.allow_peer.is_empty() && config.allow_peers.is_none() {
        return Ok(None);
    }
    let mut peers: std::collections::BTreeSet<libp2p::PeerId> =
        config.allow_peer.iter().copied().collect();
    if let Some(file) = &config.allow_peers {
        peers.extend(taskswarm::admission::read_allowlist(file)?);
    }
    Ok(Some(peers))
}

/// SIGHUP: reads the token file and the allowlist file again. A file that does not read keeps
/// what was there.
async fn reload(config: &NodeConfig, peer: &Peer) {
    if let Some(file) = config.tokens_file() {
        match taskswarm::tokens::Tokens::read(&file) {
            Ok(tokens) => {
                let n = tokens.entries().len();
                if peer.set_api_tokens(tokens) {
                    tracing::info!(tokens = n, "SIGHUP: API tokens read again");
                } else {
                    tracing::warn!(
                        "SIGHUP: the API was started open; restart the peer to require tokens"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: the API tokens were not replaced"),
        }
    }
    if config.allow_peers.is_none() {
        return;
    }
    match read_allowlist(config) {
        Ok(Some(peers)) => {
            peer.set_allowlist(peers).await;
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "SIGHUP: the allowlist was not replaced"),
    }
}

fn run_token(command: TokenCmd) -> anyhow::Result<ExitCode> {
    use taskswarm::tokens::Tokens;
    match command {
        TokenCmd::Add { roles, name, file } => {
            let path = file.path();
            let token = Tokens::add(&path, &name, roles.into_iter().collect())?;
            eprintln!(
                "added token {name:?} to {}; it is shown only now. A running peer reads the file \
                 again on SIGHUP.",
                path.display()
            );
            out!("{token}");
        }
        TokenCmd::List { file } => {
            let path = file.path();
            let tokens = Tokens::read(&path)?;
            out!("{} tokens in {}", tokens.entries().len(), path.display());
            for entry in tokens.entries() {
                out!("{:<24} {}", entry.name, entry.roles_text());
            }
        }
        TokenCmd::Remove { name, file } => {
            let path = file.path();
            Tokens::remove(&path, &name)?;
            out!("removed token {name:?} from {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ----- API client -----

type Api = taskswarm::api_client::ApiClient;

// ----- submit -----

async fn run_submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let api = args.api.client()?;
    if let Some(file) = &args.file {
        return submit_file(&api, file, args.wait, args.json).await;
    }
    if let Some(file) = &args.job {
        return submit_job(&api, file, args.wait, args.json).await;
    }
    let common = SpecInput {
        timeout_ms: args.timeout.map(|t| t.as_millis() as u64),
        retries: args.retries,
        backoff: args.backoff.clone(),
        retry_on: args.retry_on.clone().map(|r| vec![r]),
        placement: args.placement.map(|p| p.to_string()),
        cpus: args.cpus.clone().map(serde_json::Value::String),
        memory: args.memory.clone().map(serde_json::Value::String),
        disk: args.disk.clone().map(serde_json::Value::String),
        labels: args.labels.clone(),
        priority: args.priority,
        cost_ms: args.cost.map(|c| c.as_millis() as u64),
        name: args.name.clone(),
        after: args.after.clone(),
        run_anyway: args.run_anyway,
        ..SpecInput::default()
    };
    let spec = match (&args.handler, args.command.split_first()) {
        (Some(name), _) => SpecInput {
            handler: Some(name.clone()),
            input: args.input.clone(),
            ..common
        },
        (None, Some((program, rest))) => SpecInput {
            program: Some(program.clone()),
            args: rest.to_vec(),
            ..common
        },
        (None, None) => {
            bail!("nothing to submit: give -- PROGRAM [ARGS…], --handler NAME or --file FILE")
        }
    };
    let id = api.submit_one(&spec).await?;
    if !args.wait {
        if args.json {
            out!("{}", serde_json::json!({ "id": id }));
        } else {
            out!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let task = api.wait(&id).await?;
    print_task(&task, args.json)?;
    Ok(if task.state == TaskState::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn submit_file(
    api: &Api,
    file: &PathBuf,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut specs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let spec: SpecInput = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a task spec", file.display(), n + 1))?;
        specs.push(spec);
    }
    if specs.is_empty() {
        bail!("{}: no task specs", file.display());
    }
    let bar = progress(specs.len() as u64, "submitted", json);
    let mut ids = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(1000) {
        let chunk_ids = api.submit(chunk).await?;
        bar.inc(chunk_ids.len() as u64);
        ids.extend(chunk_ids);
    }
    bar.finish();
    if !wait {
        if json {
            out!("{}", serde_json::json!({ "ids": ids }));
        } else {
            for id in &ids {
                out!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = progress(ids.len() as u64, "finished", json);
    let mut tasks = Vec::with_capacity(ids.len());
    for id in &ids {
        tasks.push(api.wait(id).await?);
        bar.inc(1);
    }
    bar.finish();
    let failed = tasks
        .iter()
        .filter(|t| t.state != TaskState::Completed)
        .count();
    if json {
        out!("{}", serde_json::to_string_pretty(&tasks)?);
    } else {
        out!("{} completed, {failed} failed", tasks.len() - failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Submits a job file (TOML, or JSON if it ends in .json) and, with `wait`, waits for every task.
async fn submit_job(api: &Api, file: &PathBuf, wait: bool, json: bool) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let job: taskswarm::job::JobInput = if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}: not a job", file.display()))?
    } else {
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a job file: {}", file.display(), e.message()))?
    };
    // Checked here too, so that a bad file is named before anything is sent.
    taskswarm::job::check(job.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let answer = api.submit_job(&job).await?;
    let tasks: Vec<(String, String)> = answer
        .iter()
        .map(|t| (t.name.clone(), t.id.clone()))
        .collect();
    if !wait {
        if json {
            let answer = taskswarm::api_client::JobSubmitted { tasks: answer };
            out!("{}", serde_json::to_string(&answer)?);
        } else {
            for (name, id) in &tasks {
                out!("{name:<16} {id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut views = Vec::with_capacity(tasks.len());
    for (_, id) in &tasks {
        views.push(api.wait(id).await?);
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        for ((name, id), view) in tasks.iter().zip(&views) {
            let why = view
                .error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default();
            out!("{name:<16} {id}  {}{why}", view.state);
        }
    }
    let all_done = views.iter().all(|v| v.state == TaskState::Completed);
    Ok(if all_done {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn progress(len: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{elapsed}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

// ----- output -----

fn describe(task: &TaskView) -> String {
    match (&task.command, &task.handler) {
        (Some(command), _) => command.join(" "),
        (_, Some(handler)) => format!("handler {handler}"),
        _ => String::new(),
    }
}

fn print_task(task: &TaskView, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(task)?);
        return Ok(());
    }
    out!("task        {}", task.id);
    out!("state       {}", task.state);
    if let Some(reason) = &task.reason {
        out!("why         {reason}");
    }
    if let Some(name) = &task.name {
        out!("name        {name}");
    }
    for dep in &task.after {
        out!("after       {dep}");
    }
    out!("what        {}", describe(task));
    match &task.client {
        Some(client) => out!("submitted   by {client} through {}", task.origin),
        None => out!("submitted   through {}", task.origin),
    }
    if task.priority != 0 {
        out!("priority    {}", task.priority);
    }
    if !task.needs.is_empty() {
        out!("needs       {}", task.needs.join(", "));
    }
    let show = |label: &str, value: &Option<String>| -> std::io::Result<()> {
        match value {
            Some(v) => writeln!(std::io::stdout().lock(), "{label:<11} {v}"),
            None => Ok(()),
        }
    };
    if let Some(code) = task.exit_code {
        out!("exit code   {code}");
    }
    show("executed by", &task.executed_by)?;
    if !task.is_final() {
        show("held by", &task.holder)?;
    }
    out!("lease epoch {}", show_epoch(task.lease_epoch));
    if let Some(ms) = task.duration_ms {
        out!("took        {ms} ms");
    }
    out!("home set    {}", task.home.join(", "));
    show("error", &task.error)?;
    if !task.attempts.is_empty() {
        out!("attempts");
        for (n, a) in task.attempts.iter().enumerate() {
            let code = a
                .exit_code
                .map(|c| format!(" exit {c}"))
                .unwrap_or_default();
            let detail = a.detail.trim();
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", detail.replace('\n', " "))
            };
            out!(
                "  {} {}  {:<10} epoch {} on {}{code}{detail}",
                n + 1,
                taskswarm::view::format_time(a.at_ms),
                a.ending,
                show_epoch(a.epoch),
                a.peer
            );
        }
    }
    out!("history");
    for t in &task.history {
        out!(
            "  {}  {:<9} epoch {} {} {}",
            taskswarm::view::format_time(t.at_ms),
            t.state,
            show_epoch(t.epoch),
            t.peer.as_deref().unwrap_or("-"),
            t.note
        );
    }
    for (label, text) in [
        ("stdout", &task.stdout),
        ("stderr", &task.stderr),
        ("output", &task.output),
    ] {
        if let Some(text) = text.as_ref().filter(|t| !t.is_empty()) {
            out!("--- {label} ---");
            out_text(text)?;
            if !text.ends_with('\n') {
                out!();
            }
        }
    }
    Ok(())
}

/// Every task `query` matches, page after page, at most `limit`.
async fn list_all(
    api: &Api,
    mut query: taskswarm::api_client::TaskQuery,
    limit: Option<u64>,
) -> anyhow::Result<taskswarm::api_client::TaskList> {
    let page_size = |left: Option<u64>| left.map_or(1000, |l| l.clamp(1, 1000) as u32);
    query.limit = Some(page_size(limit));
    let mut list = api.list(&query).await?;
    let mut left = limit.map(|l| l.saturating_sub(list.tasks.len() as u64));
    while let Some(cursor) = list.next.take()
        && left.is_none_or(|l| l > 0)
    {
        query.cursor = Some(cursor);
        query.limit = Some(page_size(left));
        let page = api.list(&query).await?;
        left = left.map(|l| l.saturating_sub(page.tasks.len() as u64));
        list.tasks.extend(page.tasks);
        list.next = page.next;
        list.peers_answered = list.peers_answered.min(page.peers_answered);
        list.counts = page.counts;
    }
    Ok(list)
}

/// A table with the house style: no borders but a line under the header.
fn table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(
            header
                .iter()
                .map(|h| comfy_table::Cell::new(h.to_uppercase())),
        );
    table
}

fn print_task_list(list: &taskswarm::api_client::TaskList) -> anyhow::Result<()> {
    let mut rows = table(&["task", "state", "name", "what", "peer", "submitted", "why"]);
    for t in &list.tasks {
        let peer = t.executed_by.as_ref().or(t.holder.as_ref());
        rows.add_row(vec![
            t.id.chars().take(12).collect::<String>(),
            t.state.to_string(),
            t.name.clone().unwrap_or_default(),
            truncate(&describe(t), 40),
            peer.map(|p| short_peer(p)).unwrap_or_default(),
            taskswarm::view::format_time(t.submitted_ms),
            t.reason.clone().unwrap_or_default(),
        ]);
    }
    if !list.tasks.is_empty() {
        out!("{rows}");
    }
    let answered = match (list.peers_asked, list.peers_answered) {
        (Some(asked), Some(answered)) if answered < asked => {
            format!(" ({answered} of {asked} peers answered: some tasks may be missing)")
        }
        _ => String::new(),
    };
    let more = if list.next.is_some() {
        " (more: raise --limit)"
    } else {
        ""
    };
    out!("{} tasks; {}{answered}{more}", list.tasks.len(), list.scope);
    if let Some(counts) = &list.counts {
        let by_state: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        if !by_state.is_empty() {
            out!("matching in the swarm: {}", by_state.join(", "));
        }
    }
    Ok(())
}

/// A peer id as people tell peers apart: its last 8 characters.
fn short_peer(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let start = chars.len().saturating_sub(8);
    format!("…{}", chars[start..].iter().collect::<String>())
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A duration as people read an uptime: `3m 12s`, `2h 5m`, `4d 1h`.
fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

async fn run_status(api: &Api, json: bool) -> anyhow::Result<ExitCode> {
    let cluster: ClusterView = api.cluster().await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&cluster)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&[
        "peer", "version", "up", "slots", "running", "queued", "cpus", "memory", "labels", "api",
        "heard",
    ]);
    let me = std::iter::once((&cluster.me, "this peer".to_string()));
    let others = cluster
        .peers
        .iter()
        .map(|p| (p, format!("{} ms ago", p.last_heard_ms)));
    for (p, heard) in me.chain(others) {
        let heard = if p.draining {
            format!("{heard}; draining")
        } else {
            heard
        };
        rows.add_row(vec![
            p.peer_id.clone(),
            p.version.clone(),
            uptime(p.uptime_ms),
            p.slots.to_string(),
            p.running.to_string(),
            p.queued.to_string(),
            p.cpus.clone(),
            p.memory.clone(),
            p.labels.join(","),
            p.api.clone().unwrap_or_else(|| "-".into()),
            heard,
        ]);
    }
    out!("{rows}");
    let t = &cluster.swarm;
    out!(
        "swarm: {} {}, {} slots, {} running, {} queued{}",
        t.peers,
        if t.peers == 1 { "peer" } else { "peers" },
        t.slots,
        t.running,
        t.queued,
        if t.draining > 0 {
            format!(", {} draining", t.draining)
        } else {
            String::new()
        }
    );
    out!("access: {}", cluster.admission.describe());
    let c = &cluster.counters;
    out!(
        "this peer: {} tasks executed, {} stolen, {} given; {} messages rejected",
        c.tasks_executed,
        c.tasks_stolen,
        c.tasks_given,
        c.rejected_malformed
            + c.rejected_oversize
            + c.rejected_signature
            + c.rejected_id_mismatch
            + c.rejected_unauthorized
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn completions_cover_the_subcommands_and_bash_reads_its_script() {
        use clap::CommandFactory;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "taskswarm", &mut script);
            let script = String::from_utf8_lossy(&script);
            for word in ["node", "submit", "status", "completions", "state"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
            if shell == clap_complete::Shell::Bash
                && let Ok(out) = std::process::Command::new("bash")
                    .args(["-n", "-c", &script])
                    .output()
            {
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn uptimes_read_as_people_say_them() {
        assert_eq!(uptime(999), "0s");
        assert_eq!(uptime(192_000), "3m 12s");
        assert_eq!(uptime(7_500_000), "2h 5m");
        assert_eq!(uptime(349_200_000), "4d 1h");
    }
}
