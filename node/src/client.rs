//! [`Client`]: the handle through which the API, the CLI's embedded uses and library users talk to
//! a running peer. Cheap to clone; every call is a command on a bounded channel to the peer's event
//! loop, answered on a oneshot channel.

use taskswarm_protocol::{TaskId, TaskState};
use tokio::sync::{mpsc, oneshot};

use crate::spec::NewTask;
use crate::view::{ClusterView, TaskView};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The peer has shut down.
    #[error("the peer has stopped")]
    Stopped,
    /// No live peer keeps a task with this id.
    #[error("no task {0} is known to the swarm")]
    UnknownTask(TaskId),
    /// [`Client::wait_for_peers`] gave up.
    #[error("this peer knows {known} peers (itself included), not {wanted}, after {waited:?}")]
    TooFewPeers {
        /// How many were waited for.
        wanted: usize,
        /// How many it knew when it gave up.
        known: usize,
        /// How long it waited.
        waited: std::time::Duration,
    },
}

/// What a list of one peer's own records holds.
pub(crate) const LOCAL_SCOPE: &str =
    "tasks whose records this peer keeps (it is in their home sets)";

/// A request to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Submit {
        tasks: Vec<NewTask>,
        client: Option<String>,
        reply: oneshot::Sender<Vec<TaskId>>,
    },
    Task {
        id: TaskId,
        reply: oneshot::Sender<Option<TaskView>>,
    },
    Wait {
        id: TaskId,
        reply: oneshot::Sender<Option<TaskView>>,
    },
    Proof {
        id: TaskId,
        reply: oneshot::Sender<Option<taskswarm_protocol::SealedRecord>>,
    },
    /// The records this peer keeps that the filter matches.
    Tasks {
        filter: taskswarm_protocol::listing::ListFilter,
        reply: oneshot::Sender<Vec<TaskView>>,
    },
    /// A page of the swarm's tasks.
    List {
        filter: taskswarm_protocol::listing::ListFilter,
        limit: u32,
        reply: oneshot::Sender<crate::api_client::TaskList>,
    },
    Drain {
        deadline: std::time::Duration,
        reply: oneshot::Sender<()>,
    },
    Cancel {
        id: TaskId,
        client: Option<String>,
        reply: oneshot::Sender<bool>,
    },
    Cluster {
        reply: oneshot::Sender<ClusterView>,
    },
    LoadHistory {
        reply: oneshot::Sender<crate::view::LoadHistory>,
    },
    /// Every metric, in the Prometheus text format.
    Metrics {
        reply: oneshot::Sender<String>,
    },
    /// Answered once the peer knows `peers` peers, itself included.
    WaitForPeers {
        peers: usize,
        reply: oneshot::Sender<ClusterView>,
    },
    SetAllowlist {
        peers: std::collections::BTreeSet<libp2p::PeerId>,
        reply: oneshot::Sender<bool>,
    },
}

/// A handle to a running peer.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    pub(crate) fn new(commands: mpsc::Sender<Command>) -> Self {
        Self { commands }
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ClientError::Stopped)?;
        answer.await.map_err(|_| ClientError::Stopped)
    }

    /// Submits tasks through this peer (it signs them and leads their home sets); returns their
    /// ids in order, once every task is stored on its home set.
    pub async fn submit(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, ClientError> {
        self.submit_as(tasks, None).await
    }

    /// Submits tasks on behalf of a named client (the API's caller): the name is signed into each
    /// spec, so every record and proof says who asked for the task.
    pub async fn submit_as(
        &self,
        tasks: Vec<NewTask>,
        client: Option<String>,
    ) -> Result<Vec<TaskId>, ClientError> {
        self.ask(|reply| Command::Submit {
            tasks,
            client,
            reply,
        })
        .await
    }

    /// Submits one task; the handle waits for it and reads its result (see [`crate::typed`]).
    pub async fn submit_task(&self, task: NewTask) -> Result<crate::TaskHandle, ClientError> {
        let id = self.submit_one(task).await?;
        Ok(crate::TaskHandle::new(id, self.clone()))
    }

    /// Submits one task.
    pub async fn submit_one(&self, task: NewTask) -> Result<TaskId, ClientError> {
        let ids = self.submit(vec![task]).await?;
        ids.into_iter().next().ok_or(ClientError::Stopped)
    }

    /// The current view of a task: from this peer's record if it keeps one, otherwise from a peer
    /// that does.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskView>, ClientError> {
        self.ask(|reply| Command::Task { id, reply }).await
    }

    /// The record of a task with the seal of the member that wrote it: check it with
    /// [`taskswarm_protocol::SealedRecord::verify`] and read the chain from its history (see
    /// [`crate::proof`]). From this peer if it keeps the record, otherwise from a peer that does.
    pub async fn proof(
        &self,
        id: TaskId,
    ) -> Result<Option<taskswarm_protocol::SealedRecord>, ClientError> {
        self.ask(|reply| Command::Proof { id, reply }).await
    }

    /// Waits until the task has ended and returns its final view.
    pub async fn wait(&self, id: TaskId) -> Result<TaskView, ClientError> {
        self.ask(|reply| Command::Wait { id, reply })
            .await?
            .ok_or(ClientError::UnknownTask(id))
    }

    /// Submits a task and waits for its result (the embedding equivalent of `.delay().get()`).
    pub async fn run(&self, task: NewTask) -> Result<TaskView, ClientError> {
        let id = self.submit_one(task).await?;
        self.wait(id).await
    }

    /// Cancels a task wherever it runs (its process group is killed). False if no live peer
    /// keeps the task.
    pub async fn cancel(&self, id: TaskId) -> Result<bool, ClientError> {
        self.cancel_as(id, None).await
    }

    /// Cancels a task on behalf of a named client (the API's caller), recorded in its history.
    pub async fn cancel_as(&self, id: TaskId, client: Option<String>) -> Result<bool, ClientError> {
        self.ask(|reply| Command::Cancel { id, client, reply })
            .await
    }

    /// Drains this peer (see [`crate::Peer::drain`]).
    pub async fn drain(&self, deadline: std::time::Duration) -> Result<(), ClientError> {
        self.ask(|reply| Command::Drain { deadline, reply }).await
    }

    /// The tasks whose records this peer keeps, optionally only those in one state.
    pub async fn tasks(&self, state: Option<TaskState>) -> Result<Vec<TaskView>, ClientError> {
        let filter = taskswarm_protocol::listing::ListFilter {
            state,
            ..Default::default()
        };
        self.ask(|reply| Command::Tasks { filter, reply }).await
    }

    /// A page of the swarm's tasks that `query` matches: every live peer is asked for the
    /// records it keeps (with `query.local`, only this peer's, as [`Client::tasks`]).
    pub async fn list(
        &self,
        query: &crate::api_client::TaskQuery,
    ) -> Result<crate::api_client::TaskList, ClientError> {
        if query.local {
            let filter = query.filter();
            let tasks = self.ask(|reply| Command::Tasks { filter, reply }).await?;
            return Ok(crate::api_client::TaskList {
                scope: LOCAL_SCOPE.into(),
                tasks,
                next: None,
                peers_asked: None,
                peers_answered: None,
                counts: None,
            });
        }
        let (filter, limit) = (query.filter(), query.page_size());
        self.ask(|reply| Command::List {
            filter,
            limit,
            reply,
        })
        .await
    }

    /// Replaces the allowlist (see [`crate::Peer::set_allowlist`]).
    pub(crate) async fn set_allowlist(
        &self,
        peers: std::collections::BTreeSet<libp2p::PeerId>,
    ) -> Result<bool, ClientError> {
        self.ask(|reply| Command::SetAllowlist { peers, reply })
            .await
    }

    /// This peer and the peers it knows.
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.ask(|reply| Command::Cluster { reply }).await
    }

    /// Every live peer's load over the last minutes, as this peer sampled it.
    pub async fn load_history(&self) -> Result<crate::view::LoadHistory, ClientError> {
        self.ask(|reply| Command::LoadHistory { reply }).await
    }

    /// Every metric of this peer, in the Prometheus text format (what `GET /metrics` serves; see
    /// [`crate::metrics`]).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.ask(|reply| Command::Metrics { reply }).await
    }

    /// Waits until this peer knows `n` peers, itself included (it has heard the load reports of
    /// `n - 1` others), and returns what it then knows. Gives up after `timeout` with
    /// [`ClientError::TooFewPeers`].
    ///
    /// ```no_run
    /// # async fn demo(client: taskswarm::Client) -> Result<(), taskswarm::ClientError> {
    /// let swarm = client.wait_for_peers(3, std::time::Duration::from_secs(10)).await?;
    /// assert!(swarm.peers.len() >= 2);
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_peers(
        &self,
        n: usize,
        timeout: std::time::Duration,
    ) -> Result<ClusterView, ClientError> {
        let wait = self.ask(|reply| Command::WaitForPeers { peers: n, reply });
        match tokio::time::timeout(timeout, wait).await {
            Ok(view) => view,
            Err(_) => Err(ClientError::TooFewPeers {
                wanted: n,
                known: self.cluster().await?.peers.len() + 1,
                waited: timeout,
            }),
        }
    }
}
