//! The benchmark's view of a running testnet: a [`Swarm`] that workloads use to submit and wait
//! (it goes to another live peer when the one it asked is down), and the [`Control`] through which
//! the crash workload and chaos kill, restart, pause and cut peers. Workloads never hold the
//! cluster itself, so a peer can be killed while requests are in flight.
//!
//! Every request has a timeout and every wait a deadline: a stopped or partitioned peer slows a
//! workload down, it never hangs it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use taskswarm::TaskView;
use taskswarm::api_client::{ApiClient, ApiClientError};
use taskswarm::job::JobInput;
use tokio::sync::Mutex as AsyncMutex;

use taskswarm_testnet::Cluster;

/// Milliseconds since the Unix epoch: the clock the peers stamp task histories with.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Something chaos or a workload did to a peer, for the report and the picture.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Mark {
    /// When (ms since the Unix epoch).
    pub(crate) at_ms: u64,
    /// `kill`, `restart`, `stop`, `cont`, `partition` or `heal`.
    pub(crate) what: &'static str,
    /// The peers concerned (1-based, as the testnet prints them).
    pub(crate) peers: Vec<usize>,
}

/// A handle to the peers' APIs that workloads share.
#[derive(Clone, Debug)]
pub(crate) struct Swarm {
    /// Each peer's API client, `None` while it is down or paused.
    apis: Arc<Mutex<Vec<Option<ApiClient>>>>,
    /// How many peers the testnet has.
    pub(crate) size: usize,
}

/// Runs an API call with a timeout: a stopped or partitioned peer slows a workload down, it never
/// hangs it.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, ApiClientError>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

impl Swarm {
    fn new(apis: Vec<Option<ApiClient>>) -> Self {
        Self {
            size: apis.len(),
            apis: Arc::new(Mutex::new(apis)),
        }
    }

    fn set_api(&self, i: usize, api: Option<ApiClient>) {
        if let Ok(mut apis) = self.apis.lock() {
            apis[i] = api;
        }
    }

    /// The APIs of the peers that are up, each with its peer's number (0-based).
    pub(crate) fn apis(&self) -> Vec<(usize, ApiClient)> {
        let Ok(apis) = self.apis.lock() else {
            return Vec::new();
        };
        apis.iter()
            .enumerate()
            .filter_map(|(i, api)| Some((i, api.clone()?)))
            .collect()
    }

    /// The API of peer `i` if it is up, otherwise of the next live peer after it.
    fn api_near(&self, i: usize) -> Option<(usize, ApiClient)> {
        let apis = self.apis.lock().ok()?;
        (0..apis.len())
            .map(|k| (i + k) % apis.len())
            .find_map(|j| apis[j].clone().map(|api| (j, api)))
    }

    /// Submits specs through peer `prefer` (or the next live peer, if a request fails); returns
    /// the peer that took them and their ids. Tasks of a request that failed were never
    /// acknowledged, so they are not counted anywhere.
    pub(crate) async fn submit(
        &self,
        prefer: usize,
        specs: &[serde_json::Value],
        deadline: Instant,
    ) -> anyhow::Result<(usize, Vec<String>)> {
        let mut at = prefer;
        loop {
            let Some((i, api)) = self.api_near(at) else {
                bail!("no peer is up to submit to");
            };
            match within(Duration::from_secs(30), api.submit_json(specs)).await {
                Ok(ids) => return Ok((i, ids)),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(e) => {
                    tracing::debug!("submit through peer {} failed: {e:#}", i + 1);
                    at = i + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Submits a job through peer `prefer` (or the next live peer); returns the peer that took
    /// it and the ids of its tasks, in dependency order.
    pub(crate) async fn submit_job(
        &self,
        prefer: usize,
        job: &JobInput,
        deadline: Instant,
    ) -> anyhow::Result<(usize, Vec<String>)> {
        let mut at = prefer;
        loop {
            let Some((i, api)) = self.api_near(at) else {
                bail!("no peer is up to submit to");
            };
            match within(Duration::from_secs(30), api.submit_job(job)).await {
                Ok(tasks) => return Ok((i, tasks.into_iter().map(|t| t.id).collect())),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(e) => {
                    tracing::debug!("job through peer {} failed: {e:#}", i + 1);
                    at = i + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Waits until every task has ended or the deadline passes, asking peer `prefer` (the one the
    /// tasks were submitted through) or, while it is down, another live peer. Returns each task's
    /// last view, `None` for a task no peer could show.
    pub(crate) async fn wait(
        &self,
        prefer: usize,
        ids: &[String],
        deadline: Instant,
    ) -> Vec<Option<TaskView>> {
        let mut views: Vec<Option<TaskView>> = vec![None; ids.len()];
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        let mut at = prefer;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some((i, api)) = self.api_near(at) else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let wait = left.min(Duration::from_secs(5));
            let asked: Vec<String> = pending.iter().map(|&k| ids[k].clone()).collect();
            let answer = within(wait + Duration::from_secs(5), api.wait_all(&asked, wait)).await;
            match answer {
                Ok(answer) if answer.len() == pending.len() => {
                    let mut still = Vec::new();
                    for (&k, view) in pending.iter().zip(answer) {
                        let ended = view.as_ref().is_some_and(TaskView::is_final);
                        if view.is_some() {
                            views[k] = view;
                        }
                        if !ended {
                            still.push(k);
                        }
                    }
                    pending = still;
                    at = prefer;
                }
                // A malformed answer: ask the next peer.
                Ok(_) => at = i + 1,
                Err(e) => {
                    tracing::debug!("waiting at peer {} failed: {e:#}", i + 1);
                    at = i + 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        views
    }

    /// Submits one spec through peer `i` and waits for its end: one round trip as a client sees it.
    pub(crate) async fn round_trip(
        &self,
        i: usize,
        spec: &serde_json::Value,
    ) -> anyhow::Result<TaskView> {
        let Some((_, api)) = self.api_near(i) else {
            bail!("no peer is up");
        };
        let ids = within(
            Duration::from_secs(10),
            api.submit_json(std::slice::from_ref(spec)),
        )
        .await?;
        let [id] = ids.as_slice() else {
            bail!("one spec submitted, {} ids answered", ids.len());
        };
        let wait = Duration::from_secs(10);
        let view = within(wait + Duration::from_secs(5), api.wait_for(id, wait)).await?;
        anyhow::ensure!(view.is_final(), "task {id} had not ended after 10 s");
        Ok(view)
    }
}

/// The testnet itself, for what only chaos and the crash workload do.
#[derive(Clone, Debug)]
pub(crate) struct Control {
    cluster: Arc<AsyncMutex<Cluster>>,
    swarm: Swarm,
    marks: Arc<Mutex<Vec<Mark>>>,
    /// The peers' libp2p ids, in start order (a restarted peer keeps its id).
    pub(crate) peer_ids: Vec<String>,
    /// The testnet's directory.
    pub(crate) dir: std::path::PathBuf,
}

impl Control {
    /// Takes over a started cluster; returns the control and the workloads' handle.
    pub(crate) fn new(cluster: Cluster) -> (Self, Swarm) {
        let apis = cluster.peers.iter().map(|p| p.client.clone()).collect();
        let peer_ids = cluster.peers.iter().map(|p| p.peer_id.clone()).collect();
        let dir = cluster.dir.clone();
        let swarm = Swarm::new(apis);
        let control = Self {
            dir,
            cluster: Arc::new(AsyncMutex::new(cluster)),
            swarm: swarm.clone(),
            marks: Arc::new(Mutex::new(Vec::new())),
            peer_ids,
        };
        (control, swarm)
    }

    fn mark(&self, what: &'static str, peers: Vec<usize>) -> u64 {
        let at_ms = wall_ms();
        if let Ok(mut marks) = self.marks.lock() {
            marks.push(Mark {
                at_ms,
                what,
                peers: peers.iter().map(|i| i + 1).collect(),
            });
        }
        at_ms
    }

    /// CPU time the peers have used since they started (see [`Cluster::cpu`]).
    pub(crate) async fn cpu(&self) -> Duration {
        self.cluster.lock().await.cpu()
    }

    /// Each peer's resident memory now, in bytes (`None` for a peer that is down).
    pub(crate) async fn rss(&self) -> Vec<Option<u64>> {
        self.cluster.lock().await.rss()
    }

    /// Stops peer `i` with SIGTERM (as an operator does), waiting for it to exit.
    pub(crate) async fn stop_peer(&self, i: usize) -> anyhow::Result<()> {
        let mut cluster = self.cluster.lock().await;
        self.swarm.set_api(i, None);
        cluster.stop_peer(i)?;
        self.mark("stop", vec![i]);
        Ok(())
    }

    /// What has been done to peers so far.
    pub(crate) fn marks(&self) -> Vec<Mark> {
        self.marks.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Peers that are up and not paused.
    pub(crate) fn live(&self) -> Vec<usize> {
        let apis = self
            .swarm
            .apis
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        (0..apis.len()).filter(|&i| apis[i].is_some()).collect()
    }

    /// SIGKILLs peer `i`; returns when (ms since the Unix epoch).
    pub(crate) async fn kill(&self, i: usize) -> anyhow::Result<u64> {
        let mut cluster = self.cluster.lock().await;
        self.swarm.set_api(i, None);
        cluster.kill(i)?;
        Ok(self.mark("kill", vec![i]))
    }

    /// Drains peer `i` through its API (as `taskswarm drain`) and waits until its process has
    /// exited (up to `deadline` and 30 s more); fails if it does not exit, or not with status 0.
    pub(crate) async fn drain(&self, i: usize, deadline: Duration) -> anyhow::Result<()> {
        let mut cluster = self.cluster.lock().await;
        self.swarm.set_api(i, None);
        let api = cluster.peers[i]
            .client
            .clone()
            .context("the peer has no API client")?;
        self.mark("drain", vec![i]);
        api.drain(Some(deadline)).await?;
        let give_up = Instant::now() + deadline + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = cluster.peers[i].child.try_wait()? {
                break status;
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "peer {} still runs {deadline:?} after its drain began",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        cluster.peers[i].killed = true;
        self.mark("drained", vec![i]);
        anyhow::ensure!(
            status.success(),
            "peer {} exited with {status} after its drain",
            i + 1
        );
        Ok(())
    }

    /// Starts killed peer `i` again with its data directory.
    pub(crate) async fn restart(&self, i: usize) -> anyhow::Result<()> {
        let mut cluster = self.cluster.lock().await;
        cluster
            .restart(i, Instant::now() + Duration::from_secs(20))
            .await?;
        self.swarm.set_api(i, cluster.peers[i].client.clone());
        self.mark("restart", vec![i]);
        Ok(())
    }

    /// SIGSTOPs peer `i` (workloads stop asking it until it continues).
    pub(crate) async fn pause(&self, i: usize) -> anyhow::Result<()> {
        let cluster = self.cluster.lock().await;
        self.swarm.set_api(i, None);
        cluster.signal(i, Signal::SIGSTOP)?;
        self.mark("stop", vec![i]);
        Ok(())
    }

    /// SIGCONTs paused peer `i`.
    pub(crate) async fn resume(&self, i: usize) -> anyhow::Result<()> {
        let cluster = self.cluster.lock().await;
        cluster.signal(i, Signal::SIGCONT)?;
        self.swarm.set_api(i, cluster.peers[i].client.clone());
        self.mark("cont", vec![i]);
        Ok(())
    }

    /// Cuts (`cut`) or heals the network between groups of peers (network namespaces only): each
    /// group from every other, or with `one_way` what the first sends to the second.
    pub(crate) async fn partition(
        &self,
        groups: &[Vec<usize>],
        one_way: bool,
        cut: bool,
    ) -> anyhow::Result<()> {
        let cluster = self.cluster.lock().await;
        for (k, a) in groups.iter().enumerate() {
            for b in &groups[k + 1..] {
                if one_way {
                    cluster.cut_one_way(a, b, cut)?;
                } else {
                    cluster.cut(a, b, cut)?;
                }
            }
        }
        let what = if cut { "partition" } else { "heal" };
        self.mark(what, groups.iter().flatten().copied().collect());
        Ok(())
    }

    /// Whether peer `i` is down (killed and not restarted).
    pub(crate) async fn is_killed(&self, i: usize) -> bool {
        self.cluster.lock().await.peers[i].killed
    }

    /// Stops every peer.
    pub(crate) async fn stop(&self) {
        // A paused peer must run again to hear SIGTERM.
        let cluster = self.cluster.lock().await;
        for i in 0..cluster.peers.len() {
            if !cluster.peers[i].killed {
                let _ = cluster.signal(i, Signal::SIGCONT);
            }
        }
        drop(cluster);
        self.cluster.lock().await.stop();
    }
}
