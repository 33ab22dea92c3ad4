//! # taskswarm-testnet
//!
//! Starts a local testnet of real `taskswarm` peer processes on 127.0.0.1, each with its own data
//! directory and fresh key, and talks to them through their HTTP APIs. The testnet command
//! (`testnet/run.sh`) and the multi-process tests in `tests/` both use it.
//!
//! A testnet is private unless asked otherwise ([`Options::private`]): its peers share a swarm
//! key made for it (`DIR/swarm.key`), and their APIs accept only its admin token (`DIR/token`,
//! digest in `DIR/tokens.toml`), which the [`Cluster`] presents on every call.
//!
//! A [`Cluster`] ends every process it started, by PID, when it is dropped, also when a test
//! fails, unless it was [`Cluster::detach`]ed to keep running.
//!
//! With [`Options::netns`] (root only), every peer runs in a network namespace of its own, joined
//! to the others by a veth pair and a bridge that the cluster creates and removes (see
//! [`netns`]); [`Cluster::cut`] then partitions the swarm and heals it.

#![allow(clippy::print_stdout)]

pub mod cpu;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use taskswarm::api_client::ApiClient;
use taskswarm::peer::PeerFile;
use taskswarm::{ClusterView, TaskView};

/// How to start a testnet.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many peers.
    pub peers: usize,
    /// Slots per peer.
    pub slots: u32,
    /// Whether peers run process tasks.
    pub allow_exec: bool,
    /// The `taskswarm` binary.
    pub binary: PathBuf,
    /// Where the peers' data directories and logs go.
    pub dir: PathBuf,
    /// How long to wait for the peers to start and see each other.
    pub ready_deadline: Duration,
    /// More arguments for every `taskswarm node` (such as `--lease-ttl 1500ms`).
    pub node_args: Vec<String>,
    /// More arguments for one peer's `taskswarm node`, by index (such as `--label gpu=1`).
    pub peer_args: Vec<Vec<String>>,
    /// Run every peer in a network namespace of its own (needs root).
    pub netns: bool,
    /// Give the peers a swarm key of their own and require an API token (the default); `false`
    /// starts an open swarm with open APIs.
    pub private: bool,
}

impl Options {
    /// `peers` peers of 2 slots each that run process tasks, in `dir`, given 30 s to start.
    pub fn local(peers: usize, binary: PathBuf, dir: PathBuf) -> Self {
        Self {
            peers,
            slots: 2,
            allow_exec: true,
            binary,
            dir,
            ready_deadline: Duration::from_secs(30),
            node_args: Vec::new(),
            peer_args: Vec::new(),
            netns: false,
            private: true,
        }
    }
}

/// One peer process.
#[derive(Debug)]
pub struct PeerProcess {
    /// Its process.
    pub child: Child,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its API base URL (`http://127.0.0.1:PORT`).
    pub api: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its dialable listen address.
    pub addr: String,
    /// Whether it was killed.
    pub killed: bool,
    /// A client of its API, presenting the testnet's token.
    pub client: Option<ApiClient>,
}

/// A running testnet.
#[derive(Debug)]
pub struct Cluster {
    /// The peers, in start order; peer 0 is everyone's bootstrap peer.
    pub peers: Vec<PeerProcess>,
    /// The testnet's directory.
    pub dir: PathBuf,
    options: Options,
    http: reqwest::Client,
    detached: bool,
    net: Option<netns::Net>,
    /// The admin token, for a private testnet.
    token: Option<String>,
    /// CPU time of peer processes that have exited, taken just before they were stopped.
    cpu_of_ended: Duration,
}

/// Finds the `taskswarm` binary of this workspace for `profile` (`debug` or `release`), building
/// it first with the cargo that runs us (if any) so it is never stale. `TASKSWARM_BIN` overrides.
pub fn taskswarm_binary(profile: &str) -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("TASKSWARM_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "taskswarm",
        "--bin",
        "taskswarm",
        "--manifest-path",
    ]);
    build.arg(&manifest);
    if profile == "release" {
        build.arg("--release");
    }
    let status = build
        .status()
        .context("running cargo build for the taskswarm binary")?;
    if !status.success() {
        bail!("building the taskswarm binary failed");
    }
    let bin = target.join(profile).join("taskswarm");
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

impl Cluster {
    /// Starts the peers and waits until every one knows all the others.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let net = if options.netns {
            Some(netns::Net::create(options.peers)?)
        } else {
            None
        };
        let token = if options.private {
            Some(make_secrets(&options.dir)?)
        } else {
            None
        };
        let mut cluster = Cluster {
            peers: Vec::new(),
            dir: options.dir.clone(),
            options: options.clone(),
            http: http_client(token.as_deref())?,
            detached: false,
            net,
            token,
            cpu_of_ended: Duration::ZERO,
        };
        let deadline = Instant::now() + options.ready_deadline;
        for i in 0..options.peers {
            let bootstrap = cluster.peers.first().map(|p| p.addr.clone());
            let peer = start_peer(
                &options,
                cluster.net.as_ref(),
                i,
                bootstrap.as_deref(),
                deadline,
                cluster.token.as_deref(),
            )
            .await?;
            cluster.peers.push(peer);
        }
        cluster.write_pids()?;
        cluster.await_membership(deadline).await?;
        Ok(cluster)
    }

    fn write_pids(&self) -> anyhow::Result<()> {
        let pids: Vec<String> = self
            .peers
            .iter()
            .map(|p| p.child.id().to_string())
            .collect();
        std::fs::write(self.dir.join("pids"), pids.join("\n") + "\n")?;
        Ok(())
    }

    /// The admin token the peers' APIs accept (a private testnet's), to present as
    /// `Authorization: Bearer TOKEN`.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The file holding the admin token (`TASKSWARM_TOKEN_FILE` for the command line).
    pub fn token_file(&self) -> Option<PathBuf> {
        self.token.as_ref().map(|_| self.dir.join("token"))
    }

    /// The index of the first live peer other than `not`.
    pub fn live_other_than(&self, not: usize) -> Option<usize> {
        (0..self.peers.len()).find(|&i| i != not && !self.peers[i].killed)
    }

    /// Waits until every live peer lists every other live peer.
    pub async fn await_membership(&self, deadline: Instant) -> anyhow::Result<()> {
        let want = self.peers.iter().filter(|p| !p.killed).count() - 1;
        for (i, peer) in self.peers.iter().enumerate().filter(|(_, p)| !p.killed) {
            loop {
                let seen = match self.cluster(i).await {
                    Ok(view) => view.peers.len(),
                    Err(_) => 0,
                };
                if seen >= want {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "peer {i} ({}) sees {seen} of {want} peers after the deadline",
                        peer.peer_id
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// GETs a path of peer `i`'s API as raw JSON: for tests that probe the API itself (unknown
    /// paths, bad ids, health); everything else goes through [`Cluster::api`].
    pub async fn get<T: DeserializeOwned>(&self, i: usize, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.peers[i].api);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: unexpected answer {body}"))
    }

    /// POSTs JSON to a path of peer `i`'s API; returns the status and the JSON answer: for tests
    /// that send what the typed client would not (misspelt fields, cycles, dangling names).
    pub async fn post(
        &self,
        i: usize,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let url = format!("{}{path}", self.peers[i].api);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let answer = response
            .json()
            .await
            .with_context(|| format!("POST {url}: not JSON"))?;
        Ok((status, answer))
    }

    /// A client of peer `i`'s API (presenting the testnet's token).
    pub fn api(&self, i: usize) -> anyhow::Result<&ApiClient> {
        self.peers[i]
            .client
            .as_ref()
            .with_context(|| format!("peer {i} has no API"))
    }

    /// Peer `i`'s view of the cluster.
    pub async fn cluster(&self, i: usize) -> anyhow::Result<ClusterView> {
        Ok(self.api(i)?.cluster().await?)
    }

    /// Submits specs (JSON objects) to peer `i` in one request; returns the task ids.
    pub async fn submit(
        &self,
        i: usize,
        specs: &[serde_json::Value],
    ) -> anyhow::Result<Vec<String>> {
        Ok(self.api(i)?.submit_json(specs).await?)
    }

    /// Waits until each task (submitted through peer `i`) has ended, or the deadline passes.
    pub async fn wait_all(
        &self,
        i: usize,
        ids: &[String],
        deadline: Instant,
    ) -> anyhow::Result<Vec<TaskView>> {
        let api = self.api(i)?;
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!(
                        "task {id} had not ended by the deadline ({} of {} ended)",
                        done.len(),
                        ids.len()
                    );
                }
                let task = api.wait_for(id, left.min(Duration::from_secs(30))).await?;
                if task.is_final() {
                    done.push(task);
                    break;
                }
            }
        }
        Ok(done)
    }

    /// CPU time (user and system, with the task processes they waited for) that the peers have
    /// used since they started, also those killed or stopped since. Its difference over a
    /// workload is the workload's cost in CPU.
    pub fn cpu(&self) -> Duration {
        let running: Duration = self
            .peers
            .iter()
            .filter(|p| !p.killed)
            .filter_map(|p| cpu::of_process(p.child.id()))
            .sum();
        self.cpu_of_ended + running
    }

    /// Each peer's resident memory now, in bytes (`None` for a peer that is down).
    pub fn rss(&self) -> Vec<Option<u64>> {
        self.peers
            .iter()
            .map(|p| {
                (!p.killed)
                    .then(|| cpu::rss_of_process(p.child.id()))
                    .flatten()
            })
            .collect()
    }

    /// Adds peer `i`'s CPU time to that of the ended peers, just before it is stopped.
    fn note_cpu_of(&mut self, i: usize) {
        if let Some(used) = cpu::of_process(self.peers[i].child.id()) {
            self.cpu_of_ended += used;
        }
    }

    /// Sends a signal to peer `i` (SIGSTOP, SIGCONT, …).
    pub fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.peers[i].child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("sending {signal} to peer {i}"))
    }

    /// Starts peer `i` again after it was killed, with the same data directory (so the same key
    /// and store), bootstrapped from peer 0 (or peer 1 if `i` is 0).
    pub async fn restart(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        anyhow::ensure!(self.peers[i].killed, "peer {i} is still running");
        let boot = if i == 0 { 1 } else { 0 };
        let bootstrap = self.peers[boot].addr.clone();
        let peer = start_peer(
            &self.options,
            self.net.as_ref(),
            i,
            Some(&bootstrap),
            deadline,
            self.token.as_deref(),
        )
        .await?;
        self.peers[i] = peer;
        self.write_pids()?;
        Ok(())
    }

    /// Starts one more peer, with `args` added to its command line, bootstrapped from the first
    /// live peer; returns its index.
    pub async fn add_peer(&mut self, args: &[&str], deadline: Instant) -> anyhow::Result<usize> {
        let i = self.peers.len();
        let boot = self.live_other_than(i).context("no live peer to join")?;
        let bootstrap = self.peers[boot].addr.clone();
        self.options.peer_args.resize(i + 1, Vec::new());
        self.options.peer_args[i] = args.iter().map(|a| a.to_string()).collect();
        let peer = start_peer(
            &self.options,
            self.net.as_ref(),
            i,
            Some(&bootstrap),
            deadline,
            self.token.as_deref(),
        )
        .await?;
        self.peers.push(peer);
        self.write_pids()?;
        Ok(i)
    }

    /// Stops peer `i` cleanly (SIGTERM, on which it drains for up to its `--stop-deadline`,
    /// 10 s by default; waiting up to 15 s for it to exit, then SIGKILL), so that it can be
    /// [`restart`](Self::restart)ed.
    pub fn stop_peer(&mut self, i: usize) -> anyhow::Result<()> {
        self.note_cpu_of(i);
        self.signal(i, Signal::SIGTERM)?;
        let peer = &mut self.peers[i];
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if peer.child.try_wait()?.is_some() {
                peer.killed = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its CPU time is counted already.
        self.kill_process(i)
    }

    /// Kills peer `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if !self.peers[i].killed {
            self.note_cpu_of(i);
        }
        self.kill_process(i)
    }

    /// SIGKILLs peer `i`'s process and reaps it.
    fn kill_process(&mut self, i: usize) -> anyhow::Result<()> {
        let peer = &mut self.peers[i];
        peer.child.kill().context("killing a peer")?;
        let _ = peer.child.wait();
        peer.killed = true;
        Ok(())
    }

    /// Cuts (`cut` true) or heals the network between peer groups `a` and `b`: packets between
    /// them are dropped both ways. Needs [`Options::netns`].
    pub fn cut(&self, a: &[usize], b: &[usize], cut: bool) -> anyhow::Result<()> {
        let Some(net) = &self.net else {
            bail!("partitions need the peers in network namespaces (--netns, as root)");
        };
        net.cut(a, b, cut)
    }

    /// Cuts (`cut` true) or heals one way between peer groups: what `from` sends to `to` is
    /// dropped, what `to` sends to `from` still arrives. Needs [`Options::netns`].
    pub fn cut_one_way(&self, from: &[usize], to: &[usize], cut: bool) -> anyhow::Result<()> {
        let Some(net) = &self.net else {
            bail!("partitions need the peers in network namespaces (--netns, as root)");
        };
        net.cut_one_way(from, to, cut)
    }

    /// Leaves the peers running when this value is dropped; returns the file listing their PIDs.
    pub fn detach(mut self) -> PathBuf {
        self.detached = true;
        // Peers left running keep their namespaces.
        std::mem::forget(self.net.take());
        self.dir.join("pids")
    }

    /// Stops every peer: SIGTERM, then SIGKILL for any still running after two seconds.
    pub fn stop(&mut self) {
        for peer in self.peers.iter_mut().filter(|p| !p.killed) {
            if let Ok(pid) = i32::try_from(peer.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for peer in self.peers.iter_mut().filter(|p| !p.killed) {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = peer.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = peer.child.kill();
            let _ = peer.child.wait();
            peer.killed = true;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
            // The namespaces go after their processes.
            self.net = None;
        }
    }
}

/// Makes a private testnet's secrets in `dir`: a swarm key (`swarm.key`) and one admin token
/// (digest in `tokens.toml`, the token itself in `token`), kept if they exist (a restarted
/// testnet). Returns the token.
fn make_secrets(dir: &Path) -> anyhow::Result<String> {
    let key = dir.join("swarm.key");
    if !key.exists() {
        taskswarm::admission::write_key(&key, &taskswarm::admission::generate_key(), false)?;
    }
    let token_file = dir.join("token");
    if let Ok(token) = std::fs::read_to_string(&token_file) {
        return Ok(token.trim().to_string());
    }
    let tokens = dir.join("tokens.toml");
    let _ = std::fs::remove_file(&tokens);
    let roles = std::collections::BTreeSet::from([taskswarm::tokens::Role::Admin]);
    let token = taskswarm::tokens::Tokens::add(&tokens, "testnet", roles)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)?;
        writeln!(file, "{token}")?;
    }
    Ok(token)
}

/// An HTTP client that presents `token`, if any.
fn http_client(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

async fn start_peer(
    options: &Options,
    net: Option<&netns::Net>,
    i: usize,
    bootstrap: Option<&str>,
    deadline: Instant,
    token: Option<&str>,
) -> anyhow::Result<PeerProcess> {
    let dir = options.dir.join(format!("peer{}", i + 1));
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(options.dir.join(format!("peer{}.log", i + 1)))?;
    let (mut command, ip) = match net {
        Some(net) => (net.command(i, &options.binary), net.ip(i)),
        None => (Command::new(&options.binary), "127.0.0.1".to_string()),
    };
    command
        .arg("node")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--api", &format!("{ip}:0")])
        .args(["--listen", &format!("/ip4/{ip}/tcp/0")])
        .args(["--slots", &options.slots.to_string()]);
    if options.allow_exec {
        command.arg("--allow-exec");
    }
    if let Some(addr) = bootstrap {
        command.args(["--bootstrap", addr]);
    }
    if options.private {
        // Through the environment, so that a peer's own arguments can override them.
        command.env("TASKSWARM_SWARM_KEY", options.dir.join("swarm.key"));
        command.env("TASKSWARM_TOKENS", options.dir.join("tokens.toml"));
    } else {
        command.env_remove("TASKSWARM_SWARM_KEY");
        command.env_remove("TASKSWARM_TOKENS");
    }
    command.args(&options.node_args);
    if let Some(args) = options.peer_args.get(i) {
        command.args(args);
    }
    // Its own process group, so a Ctrl-C meant for the testnet command does not reach a detached
    // testnet's peers.
    use std::os::unix::process::CommandExt;
    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", options.binary.display()))?;
    let mut peer = PeerProcess {
        child,
        dir: dir.clone(),
        api: String::new(),
        peer_id: String::new(),
        addr: String::new(),
        killed: false,
        client: None,
    };
    let file = dir.join("peer.json");
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(info) = serde_json::from_str::<PeerFile>(&text)
            && info.pid == peer.child.id()
        {
            peer.api = format!("http://{}", info.api.unwrap_or_default());
            peer.addr = info.listen.first().cloned().unwrap_or_default();
            peer.peer_id = info.peer_id;
            peer.client = Some(ApiClient::new(&peer.api, token)?);
            return Ok(peer);
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            bail!(
                "peer {} exited at start ({status}); see its log in {}",
                i + 1,
                options.dir.display()
            );
        }
        if Instant::now() > deadline {
            let _ = peer.child.kill();
            let _ = peer.child.wait();
            bail!("peer {} wrote no peer.json by the deadline", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
