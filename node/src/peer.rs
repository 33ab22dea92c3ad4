//! [`Peer`]: a running taskswarm peer, and [`PeerBuilder`], its configuration.
//!
//! `spawn` loads or creates the key, builds the swarm, starts listening, starts the event loop and
//! (if asked) the HTTP API, and returns once the peer listens. With a data directory it writes
//! `peer.json` there (peer id, listen addresses, API address) so scripts can find it.
//! [`Peer::shutdown`] leaves the swarm (the others take over its tasks at once), then stops the
//! API and the event loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use taskswarm_protocol::{Capabilities, Config, Keypair, Label, Offer, Resources, Scheduler};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::executor::{self, Executor, Handler, HandlerContext};
use crate::keys::{self, KeyError};
use crate::network::{self, BuildError};
use crate::runtime::EventLoop;

/// How long `spawn` waits for the swarm to report a listen address.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);
/// How long ended records are kept on disk by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The thread that writes the store could not be started.
    #[error("cannot start the thread that writes the store: {0}")]
    StoreWriter(std::io::Error),
    /// The swarm could not be built.
    #[error(transparent)]
    Network(#[from] BuildError),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The API address could not be bound.
    #[error("cannot serve the API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory or `peer.json` could not be written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API would be open to the network: a non-loopback address needs tokens.
    #[error(
        "refusing to serve the API on {0} without tokens: anyone who reaches it could run \
         commands on this swarm. Make a token (`taskswarm token add --role admin`) and start \
         with --tokens FILE, or serve the API on 127.0.0.1"
    )]
    OpenApi(SocketAddr),
    /// The swarm reported no listen address in time.
    #[error("no listen address after {0:?}")]
    NotListening(Duration),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Another process (another peer) has the data directory's store open.
    #[error(
        "the data directory {path} is in use by another taskswarm peer{other}; give each peer its \
         own --data-dir"
    )]
    DataDirInUse {
        /// The data directory.
        path: PathBuf,
        /// What its `peer.json` says of the peer that uses it (`" (peer id …, pid …, api …)"`),
        /// or nothing if it does not read.
        other: String,
    },
}

/// Opens the store in `dir`, naming the other peer if one has it open.
fn open_store(dir: &std::path::Path) -> Result<crate::store::Store, PeerError> {
    crate::store::Store::open(&dir.join("store.redb")).map_err(|e| {
        if !e.is_in_use() {
            return PeerError::Store(e);
        }
        let other = std::fs::read(dir.join("peer.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<PeerFile>(&bytes).ok())
            .map(|file| {
                let api = file.api.map(|a| format!(", api {a}")).unwrap_or_default();
                format!(" (peer id {}, pid {}{api})", file.peer_id, file.pid)
            })
            .unwrap_or_default();
        PeerError::DataDirInUse {
            path: dir.to_path_buf(),
            other,
        }
    })
}

/// Configures and starts a [`Peer`].
pub struct PeerBuilder {
    key: Option<Keypair>,
    key_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    api: Option<SocketAddr>,
    slots: u32,
    allow_exec: bool,
    output_cap: usize,
    retention: Duration,
    handlers: BTreeMap<String, Handler>,
    scheduler: Config,
    /// Capacity set by hand; what is left unset is read from the machine.
    cpus_milli: Option<u32>,
    memory: Option<u64>,
    disk: Option<u64>,
    labels: Vec<Label>,
    admission: network::Admission,
    api_access: crate::api::Access,
}

impl std::fmt::Debug for PeerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerBuilder")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("api", &self.api)
            .field("slots", &self.slots)
            .field("allow_exec", &self.allow_exec)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("admission", &self.admission)
            .finish()
    }
}

impl Default for PeerBuilder {
    fn default() -> Self {
        Self {
            key: None,
            key_file: None,
            data_dir: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            api: None,
            slots: default_slots(),
            allow_exec: false,
            output_cap: 256 * 1024,
            retention: DEFAULT_RETENTION,
            handlers: BTreeMap::new(),
            scheduler: Config::default(),
            cpus_milli: None,
            memory: None,
            disk: None,
            labels: Vec::new(),
            admission: network::Admission::default(),
            api_access: crate::api::Access::open(),
        }
    }
}

/// One slot per CPU core.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

impl PeerBuilder {
    /// The capacity and labels this peer advertises: what was set, the machine's for the rest.
    fn offer(&self) -> Offer {
        let machine = || crate::machine::capacity(self.data_dir.as_deref());
        let needs_machine =
            self.cpus_milli.is_none() || self.memory.is_none() || self.disk.is_none();
        let have = if needs_machine {
            machine()
        } else {
            Resources::default()
        };
        let mut labels = self.labels.clone();
        labels.sort();
        Offer {
            capacity: Resources {
                cpu_milli: self.cpus_milli.unwrap_or(have.cpu_milli),
                memory: self.memory.unwrap_or(have.memory),
                disk: self.disk.unwrap_or(have.disk),
            },
            labels,
        }
    }

    /// Uses this key (otherwise the key file, otherwise a fresh key).
    pub fn key(mut self, key: Keypair) -> Self {
        self.key = Some(key);
        self
    }

    /// Loads the key from this file, creating it if missing (default: `DATA_DIR/key` when a data
    /// directory is set).
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// Keeps the key, the store (`store.redb`) and `peer.json` in this directory; a restarted
    /// peer with the same directory has every task and result it kept. Without one, the peer
    /// keeps its tables in memory.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// Listens on this address (default `/ip4/127.0.0.1/tcp/0`). May be given several times.
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Dials this peer at start (`/ip4/…/tcp/…/p2p/<peer id>`). May be given several times.
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Serves the HTTP API on this address (port 0 picks a free port).
    pub fn api(mut self, addr: SocketAddr) -> Self {
        self.api = Some(addr);
        self
    }

    /// Runs this many tasks at once (default: one per CPU core).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// Advertises this much CPU, in thousandths of a core, instead of the machine's cores.
    pub fn cpus_milli(mut self, milli: u32) -> Self {
        self.cpus_milli = Some(milli);
        self
    }

    /// Advertises this much memory, in bytes, instead of the machine's.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Advertises this much disk, in bytes, instead of the free space under the data directory.
    pub fn disk(mut self, bytes: u64) -> Self {
        self.disk = Some(bytes);
        self
    }

    /// Adds a label (such as `gpu=1`) that tasks can require; a key given twice keeps the last
    /// value.
    pub fn label(mut self, label: Label) -> Self {
        self.labels.retain(|l| l.key != label.key);
        self.labels.push(label);
        self
    }

    /// Makes the swarm private: every connection runs the private-network handshake with this
    /// key first, so only peers that hold it can connect (see [`crate::admission`]). Without a
    /// key, any machine that reaches the listen address can join, and the peer says so loudly.
    pub fn swarm_key(mut self, key: libp2p::pnet::PreSharedKey) -> Self {
        self.admission.swarm_key = Some(key);
        self
    }

    /// Admits only these peers (on top of the swarm key): connections to or from any other are
    /// closed, and load reports relayed from them dropped. Replace the list of a running peer
    /// with [`Peer::set_allowlist`].
    pub fn allowlist(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.admission.allowlist = Some(peers.into_iter().collect());
        self
    }

    /// Serves the API only to holders of these tokens, by their roles ([`crate::tokens`]).
    /// Without tokens the API is open to whoever reaches it, so `spawn` refuses to serve it on an
    /// address other than loopback.
    pub fn api_tokens(mut self, tokens: crate::tokens::Tokens) -> Self {
        self.api_access = crate::api::Access::with_tokens(tokens);
        self
    }

    /// Runs process tasks too (off by default: a peer then runs only registered handlers).
    pub fn allow_exec(mut self, allow: bool) -> Self {
        self.allow_exec = allow;
        self
    }

    /// Keeps the records of ended tasks (results, histories, proofs) on disk for this long, then
    /// deletes them (default 7 days). Ended records are not kept in memory: a peer's memory
    /// follows its live work, its disk the work of the retention period.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Keeps at most this many bytes of each of a process's stdout and stderr (default 256 KiB).
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Registers an async handler under `name`: it gets the run's context and input bytes and
    /// returns output bytes or an error message.
    pub fn handler<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(HandlerContext, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        self.handlers.insert(name.into(), executor::handler(f));
        self
    }

    /// Registers an async handler of a typed input under `name` (see [`crate::typed`]): its input
    /// is read as the JSON of `In`, and its output written as the JSON of `Out`. Submit to it with
    /// [`crate::NewTask::typed`].
    pub fn handler_typed<In, Out, F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        In: serde::de::DeserializeOwned + Send + 'static,
        Out: Serialize + Send + 'static,
        F: Fn(HandlerContext, In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, crate::typed::HandlerError>> + Send + 'static,
    {
        self.handlers.insert(name.into(), crate::typed::handler(f));
        self
    }

    /// Sets how often the load report (heartbeat) is sent (default 200 ms).
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.scheduler.report_interval_ms = (interval.as_millis() as u64).max(1);
        self
    }

    /// Sets the lease TTL: a peer silent for this long is taken for dead and its tasks are
    /// re-claimed (default 1.5 s). Keep it several heartbeats long.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.scheduler.lease_ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX).max(1);
        self
    }

    /// Sets how this peer chooses where the tasks it places go (default power of two choices).
    pub fn placement(mut self, policy: taskswarm_protocol::placement::Policy) -> Self {
        self.scheduler.placement = policy;
        self
    }

    /// Sets how long a home member must be gone before the tasks' primaries replace it with
    /// another peer, so every task has its full number of copies again (default 5 minutes).
    /// A member back sooner (a restart) keeps its place. Keep it longer than a restart takes.
    pub fn repair_after(mut self, grace: Duration) -> Self {
        self.scheduler.repair_after_ms = (grace.as_millis() as u64).max(1);
        self
    }

    /// Sets how many peers keep each task's record, this one included (default 3).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.scheduler.replicas = replicas.max(1);
        self
    }

    /// Starts the peer. Returns once it listens (and serves its API, if one was asked for).
    pub async fn spawn(self) -> Result<Peer, PeerError> {
        if let Some(addr) = self.api
            && !addr.ip().is_loopback()
            && !self.api_access.needs_tokens()
        {
            return Err(PeerError::OpenApi(addr));
        }
        let key = self.load_key()?;
        let store = match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| PeerError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
                open_store(dir)?
            }
            None => crate::store::Store::in_memory()?,
        };
        let mut swarm = network::build(keys::libp2p_keypair(&key), &self.admission)?;
        let peer_id = *swarm.local_peer_id();
        let listen = if self.listen.is_empty() {
            vec![loopback_any_port()]
        } else {
            self.listen.clone()
        };
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| PeerError::Listen {
                    addr,
                    reason: e.to_string(),
                })?;
        }
        let offer = self.offer();
        tracing::info!(
            cpus = %taskswarm_protocol::resources::format_cpus(offer.capacity.cpu_milli),
            memory = %taskswarm_protocol::resources::format_bytes(offer.capacity.memory),
            disk = %taskswarm_protocol::resources::format_bytes(offer.capacity.disk),
            labels = ?offer.labels.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "capacity"
        );
        let executor = Executor::new(self.handlers, self.allow_exec, self.output_cap)
            .on_peer(peer_id.to_string());
        let api_listener = match self.api {
            Some(addr) => Some(bind_api(addr).await?),
            None => None,
        };
        let config = Config {
            slots: self.slots,
            capabilities: Capabilities {
                exec: self.allow_exec,
                handlers: executor.handler_names(),
                offer,
            },
            about: taskswarm_protocol::About {
                version: env!("CARGO_PKG_VERSION").to_string(),
                api: api_listener.as_ref().map(|(_, bound)| bound.to_string()),
                uptime_ms: 0,
            },
            ..self.scheduler
        };
        let (command_tx, command_rx) = mpsc::channel(1024);
        let (listen_tx, mut listen_rx) = watch::channel(Vec::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut scheduler = Scheduler::new(key.clone(), config);
        let archive = crate::store::StoreArchive::new(store.clone());
        scheduler.set_archive(std::sync::Arc::new(archive.clone()));
        let rows = store.load()?;
        let restored = rows.len();
        for (table, bytes) in rows {
            if let Err(error) = scheduler.restore(table, &bytes) {
                let task = taskswarm_protocol::SealedRecord::from_bytes(&bytes)
                    .map(|r| r.record.id().to_string())
                    .unwrap_or_else(|_| "?".into());
                tracing::error!(
                    ?table,
                    %task,
                    %error,
                    "refusing a stored row: it changed on disk or cannot be read; the other \
                     members of the task's home set will send the record again"
                );
            }
        }
        if restored > 0 {
            tracing::info!(
                rows = restored,
                errors = scheduler.counters().restore_errors,
                "restored from the store"
            );
        }
        let admission = crate::admission::AdmissionView {
            private: self.admission.swarm_key.is_some(),
            key_fingerprint: self
                .admission
                .swarm_key
                .map(|k| k.fingerprint().to_string()),
            allowlist: self.admission.allowlist.as_ref().map(|a| a.len()),
            api_tokens: self.api_access.needs_tokens(),
        };
        if self.api.is_some() && !admission.api_tokens {
            tracing::warn!(
                "the API is OPEN: anyone who reaches it may submit, cancel and read tasks; \
                 start with --tokens FILE (`taskswarm token add`) to require tokens"
            );
        }
        if admission.private {
            tracing::info!(access = %admission.describe(), "admission");
        } else {
            tracing::warn!(
                "this swarm is OPEN: any machine that reaches this peer's listen address can join \
                 the swarm, run tasks on it and change their records; give every peer the same \
                 --swarm-key (make one with `taskswarm swarm init`)"
            );
        }
        let metrics = crate::metrics::Metrics::default();
        let event_loop = EventLoop {
            allowlist: self.admission.allowlist.clone(),
            admission,
            swarm,
            scheduler,
            committer: crate::store::Committer::start(
                store.clone(),
                self.retention,
                metrics.clone(),
            )
            .map_err(PeerError::StoreWriter)?,
            metrics,
            store,
            archive,
            executor,
            commands: command_rx,
            listen: listen_tx,
            bootstrap: self.bootstrap,
            shutdown: shutdown_rx.clone(),
        };
        let (stopped_tx, stopped) = watch::channel(false);
        let event_loop = tokio::spawn(async move {
            event_loop.run().await;
            let _ = stopped_tx.send(true);
        });
        let client = Client::new(command_tx);
        let wait = listen_rx.wait_for(|addrs| !addrs.is_empty());
        let listen_addrs = match tokio::time::timeout(LISTEN_DEADLINE, wait).await {
            Ok(Ok(addrs)) => addrs.clone(),
            _ => return Err(PeerError::NotListening(LISTEN_DEADLINE)),
        };
        let (api_addr, api) = match api_listener {
            Some((listener, bound)) => {
                let app = crate::api::router_with(client.clone(), self.api_access.clone());
                (Some(bound), Some(serve_api(listener, app, shutdown_rx)))
            }
            None => (None, None),
        };
        let peer = Peer {
            api_access: self.api_access,
            peer_id,
            listen_addrs,
            api_addr,
            client,
            shutdown: shutdown_tx,
            stopped,
            event_loop,
            api,
        };
        if let Some(dir) = &self.data_dir {
            peer.write_peer_json(dir)?;
        }
        Ok(peer)
    }

    fn load_key(&self) -> Result<Keypair, KeyError> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        let file = self
            .key_file
            .clone()
            .or_else(|| self.data_dir.as_ref().map(|d| d.join("key")));
        match file {
            Some(path) => keys::load_or_create(&path),
            None => Ok(Keypair::generate(&mut rand::rng())),
        }
    }
}

fn loopback_any_port() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}

/// Binds the API's address (before the peer starts, so its load reports can name the port).
async fn bind_api(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), PeerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| PeerError::Api { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| PeerError::Api { addr, source })?;
    Ok((listener, bound))
}

fn serve_api(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "API server stopped");
        }
    })
}

/// What `peer.json` in the data directory says.
#[derive(Debug, Serialize, serde::Deserialize, Clone, PartialEq, Eq)]
pub struct PeerFile {
    /// The peer id.
    pub peer_id: String,
    /// Full dialable addresses, ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The API address, if served.
    pub api: Option<String>,
    /// The process id of the peer.
    pub pid: u32,
}

/// A running peer.
#[derive(Debug)]
pub struct Peer {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    api_addr: Option<SocketAddr>,
    client: Client,
    api_access: crate::api::Access,
    shutdown: watch::Sender<bool>,
    /// Set when the event loop has stopped (a drain ended, or shutdown).
    stopped: watch::Receiver<bool>,
    event_loop: JoinHandle<()>,
    api: Option<JoinHandle<()>>,
}

impl Peer {
    /// A builder with the defaults.
    pub fn builder() -> PeerBuilder {
        PeerBuilder::default()
    }

    /// Submits one task through this peer; the handle waits for it and reads its result
    /// (`peer.submit(task).await?.result::<T>().await?`).
    pub async fn submit(
        &self,
        task: crate::NewTask,
    ) -> Result<crate::TaskHandle, crate::ClientError> {
        self.client().submit_task(task).await
    }

    /// A handle to submit tasks and read results.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Waits until this peer knows `n` peers, itself included, for at most `timeout`
    /// (see [`Client::wait_for_peers`]).
    pub async fn wait_for_peers(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<crate::ClusterView, crate::ClientError> {
        self.client.wait_for_peers(n, timeout).await
    }

    /// This peer's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where it listens, as dialable addresses ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .iter()
            .map(|a| {
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
            })
            .collect()
    }

    /// Where its HTTP API listens, if it serves one.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    fn write_peer_json(&self, dir: &std::path::Path) -> Result<(), PeerError> {
        let err = |source| PeerError::DataDir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let file = PeerFile {
            peer_id: self.peer_id.to_string(),
            listen: self
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            api: self.api_addr.map(|a| a.to_string()),
            pid: std::process::id(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| err(e.into()))?;
        // Write then rename, so a reader never sees half a file.
        let tmp = dir.join("peer.json.tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, dir.join("peer.json")).map_err(err)
    }

    /// Replaces the allowlist of a peer started with one ([`PeerBuilder::allowlist`]): connections
    /// of peers no longer listed are closed. Returns false if the peer has stopped or was started
    /// without an allowlist.
    pub async fn set_allowlist(&self, peers: std::collections::BTreeSet<PeerId>) -> bool {
        self.client.set_allowlist(peers).await.unwrap_or(false)
    }

    /// Replaces the API tokens of a peer started with some (the file was read again). False if
    /// its API is open.
    pub fn set_api_tokens(&self, tokens: crate::tokens::Tokens) -> bool {
        self.api_access.replace(tokens)
    }

    /// Drains this peer: it takes no new work (submissions are refused, placements handed back),
    /// hands its queued tasks back to their primaries, which place them elsewhere at once, lets
    /// the next member of each home set lead what it led, and lets the tasks it runs finish for
    /// up to `deadline`, delivering their results; then it leaves the swarm (what still runs is
    /// stopped and taken over at once) and its event loop stops. Returns once the drain has
    /// begun; [`Peer::stopped`] resolves when it is over. See
    /// [`Scheduler::drain`](taskswarm_protocol::Scheduler::drain).
    pub async fn drain(&self, deadline: std::time::Duration) -> Result<(), crate::ClientError> {
        self.client.drain(deadline).await
    }

    /// Resolves once the peer's event loop has stopped: a drain ended, or the peer was shut
    /// down.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Leaves the swarm (the others take over what this peer held and led at once, see
    /// [`Scheduler::leave`](taskswarm_protocol::Scheduler::leave)), stops the API and the event
    /// loop, and waits for both.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(api) = self.api {
            let _ = api.await;
        }
        let _ = self.event_loop.await;
    }
}
