//! The HTTP API from the client's side: one typed method per call, over the same request and
//! answer types the API serves ([`crate::api`] answers with them), so neither end reads a field by
//! its name in a string. The command line and the local testnet both use it.
//!
//! Every call presents the client's token, if it has one; an answer that is not a success comes
//! back as [`ApiClientError::Refused`] with the status and what the peer said was wrong.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::job::JobInput;
use crate::proof::ProofView;
use crate::spec::SpecInput;
use crate::view::{ClusterView, TaskView};

/// The answer to `POST /v1/tasks` with an array of specs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The tasks' ids, in the order of the specs.
    pub ids: Vec<String>,
}

/// The answer to `POST /v1/tasks` with one spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedOne {
    /// The task's id.
    pub id: String,
}

/// One task of a job, as `POST /v1/jobs` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTask {
    /// Its name in the job.
    pub name: String,
    /// Its id.
    pub id: String,
}

/// The answer to `POST /v1/jobs`: the tasks in dependency order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// The tasks.
    pub tasks: Vec<JobTask>,
}

/// The body of `POST /v1/tasks/wait`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    /// The tasks to wait for.
    pub ids: Vec<String>,
    /// How long to wait at most, in milliseconds.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The answer to `POST /v1/tasks/wait`: each task's view in order, `None` for one no live peer
/// knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitAnswer {
    /// The views.
    pub tasks: Vec<Option<TaskView>>,
}

/// The answer to `GET /v1/tasks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    /// Which tasks a listing holds.
    pub scope: String,
    /// The tasks (a swarm-wide list: newest first).
    pub tasks: Vec<TaskView>,
    /// Where the next page starts (`cursor=`), if there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How many peers were asked, this one included (a swarm-wide list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_asked: Option<u32>,
    /// How many answered in time: fewer than asked means some records may be missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_answered: Option<u32>,
    /// How many of the swarm's tasks match the query (all pages), by state (a swarm-wide list;
    /// each peer counts the live records it keeps and its 10,000 most recently ended ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<std::collections::BTreeMap<String, u64>>,
}

/// Which tasks `GET /v1/tasks` lists: its query string, read and written by this one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only the records the answering peer keeps (`scope=local`), instead of the whole swarm.
    pub local: bool,
    /// Only tasks in this state (`state=`).
    pub state: Option<crate::TaskState>,
    /// Only tasks that need this label, `key=value` (`label=`).
    pub label: Option<String>,
    /// Only tasks asked for by this client, the name of its token (`submitter=`).
    pub submitter: Option<String>,
    /// Only tasks submitted at or after this time, ms since the Unix epoch (`since_ms=`).
    pub since_ms: Option<u64>,
    /// Only tasks submitted before this time (`until_ms=`).
    pub until_ms: Option<u64>,
    /// The most tasks in the page (`limit=`, default [`TaskQuery::DEFAULT_LIMIT`], at most
    /// 1000).
    pub limit: Option<u32>,
    /// Where the page starts: a previous page's `next` (`cursor=`).
    pub cursor: Option<String>,
}

impl TaskQuery {
    /// The page size when a query names none.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The keys of the query string.
    pub const KEYS: [&'static str; 8] = [
        "scope",
        "state",
        "label",
        "submitter",
        "since_ms",
        "until_ms",
        "limit",
        "cursor",
    ];

    /// The query string, without the `?` (empty for the default query).
    pub fn to_query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if self.local {
            pairs.push(("scope", "local".into()));
        }
        if let Some(state) = self.state {
            pairs.push(("state", state.to_string()));
        }
        let texts = [
            ("label", self.label.clone()),
            ("submitter", self.submitter.clone()),
            ("since_ms", self.since_ms.map(|v| v.to_string())),
            ("until_ms", self.until_ms.map(|v| v.to_string())),
            ("limit", self.limit.map(|v| v.to_string())),
            ("cursor", self.cursor.clone()),
        ];
        pairs.extend(texts.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }

    /// Reads a query string's pairs; an unknown key or a bad value is an error naming the key.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, (String, String)> {
        let mut query = TaskQuery::default();
        for (key, value) in pairs {
            let bad = |what: &str| (key.clone(), what.to_string());
            let number = |what: &str| value.parse::<u64>().map_err(|_| bad(what));
            match key.as_str() {
                "scope" => {
                    query.local = match value.as_str() {
                        "local" => true,
                        "swarm" => false,
                        _ => return Err(bad("expected `swarm` or `local`")),
                    }
                }
                "state" => {
                    query.state = Some(value.parse().map_err(|e| bad(&format!("{e}")))?);
                }
                "label" => query.label = Some(value.clone()),
                "submitter" => query.submitter = Some(value.clone()),
                "since_ms" => query.since_ms = Some(number("expected ms since the Unix epoch")?),
                "until_ms" => query.until_ms = Some(number("expected ms since the Unix epoch")?),
                "limit" => {
                    let limit = number("expected a whole number from 1 to 1000")?;
                    if !(1..=1000).contains(&limit) {
                        return Err(bad("expected a whole number from 1 to 1000"));
                    }
                    query.limit = Some(limit as u32);
                }
                "cursor" => {
                    if taskswarm_protocol::listing::ListCursor::from_text(value).is_none() {
                        return Err(bad("not a cursor: pass a page's `next` as it came"));
                    }
                    query.cursor = Some(value.clone());
                }
                _ => {
                    let expected =
                        format!("unknown query parameter; expected one of {:?}", Self::KEYS);
                    return Err(bad(&expected));
                }
            }
        }
        Ok(query)
    }

    /// The scheduler's filter for it.
    pub fn filter(&self) -> taskswarm_protocol::listing::ListFilter {
        taskswarm_protocol::listing::ListFilter {
            state: self.state,
            label: self.label.clone(),
            client: self.submitter.clone(),
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            after: self
                .cursor
                .as_deref()
                .and_then(taskswarm_protocol::listing::ListCursor::from_text),
        }
    }

    /// The page size asked for.
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT).clamp(1, 1000)
    }
}

/// The answer to `DELETE /v1/tasks/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelling {
    /// The task.
    pub id: String,
    /// Always true: the cancel went out to the task's home set.
    pub cancelling: bool,
}

/// The body of `POST /v1/drain`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// How long the tasks the peer runs may take to finish before it leaves anyway, in
    /// milliseconds [default: 60,000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// The answer to `POST /v1/drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// Always true: the peer is draining.
    pub draining: bool,
    /// The deadline it was given, in milliseconds.
    pub deadline_ms: u64,
}

/// What the API says when it refuses a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong.
    pub error: String,
    /// The field at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The role the request needs, for a 401 or 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// The address is not `http://HOST:PORT`.
    #[error("{0}: expected http://HOST:PORT")]
    BadAddress(String),
    /// The token cannot travel in a header.
    #[error("the API token has characters a header cannot carry")]
    BadToken,
    /// The peer could not be reached, or the answer did not arrive.
    #[error("cannot reach the peer at {base}: {source}")]
    Unreachable {
        /// The API's address.
        base: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The peer refused the request.
    #[error("{status}: {}{}", .body.field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default(), .body.error)]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// What it said.
        body: ErrorBody,
    },
    /// The answer was not what the API answers.
    #[error("unexpected answer from {base}: {detail}")]
    Unexpected {
        /// The API's address.
        base: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// A client of one peer's API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://HOST:PORT`), presenting `token` if given.
    pub fn new(base: &str, token: Option<&str>) -> Result<Self, ApiClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ApiClientError::BadAddress(base));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiClientError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|source| ApiClientError::Unreachable {
                base: base.clone(),
                source,
            })?;
        Ok(Self { base, http })
    }

    /// The API's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Submits specs in one request; returns their ids in order.
    pub async fn submit(&self, specs: &[SpecInput]) -> Result<Vec<String>, ApiClientError> {
        let answer: Submitted = self
            .call(self.http.post(self.url("/v1/tasks")).json(specs))
            .await?;
        Ok(answer.ids)
    }

    /// Submits one spec; returns its id.
    pub async fn submit_one(&self, spec: &SpecInput) -> Result<String, ApiClientError> {
        let answer: SubmittedOne = self
            .call(self.http.post(self.url("/v1/tasks")).json(spec))
            .await?;
        Ok(answer.id)
    }

    /// Submits specs written as JSON (one object or an array), as they come; returns the ids.
    pub async fn submit_json(
        &self,
        specs: &[serde_json::Value],
    ) -> Result<Vec<String>, ApiClientError> {
        let answer: Submitted = self
            .call(self.http.post(self.url("/v1/tasks")).json(specs))
            .await?;
        Ok(answer.ids)
    }

    /// Submits a job; returns its tasks in dependency order.
    pub async fn submit_job(&self, job: &JobInput) -> Result<Vec<JobTask>, ApiClientError> {
        let answer: JobSubmitted = self
            .call(self.http.post(self.url("/v1/jobs")).json(job))
            .await?;
        Ok(answer.tasks)
    }

    /// A task's view.
    pub async fn task(&self, id: &str) -> Result<TaskView, ApiClientError> {
        self.call(self.http.get(self.url(&format!("/v1/tasks/{id}"))))
            .await
    }

    /// A task's view once it has ended, or after `wait` if it has not.
    pub async fn wait_for(&self, id: &str, wait: Duration) -> Result<TaskView, ApiClientError> {
        let path = format!("/v1/tasks/{id}?wait_ms={}", wait.as_millis());
        self.call(self.http.get(self.url(&path))).await
    }

    /// Waits until a task has ended, long-polling in steps of 30 s.
    pub async fn wait(&self, id: &str) -> Result<TaskView, ApiClientError> {
        loop {
            let task = self.wait_for(id, Duration::from_secs(30)).await?;
            if task.is_final() {
                return Ok(task);
            }
        }
    }

    /// Each task's view once all have ended or `wait` has passed (`None`: no live peer knows it).
    pub async fn wait_all(
        &self,
        ids: &[String],
        wait: Duration,
    ) -> Result<Vec<Option<TaskView>>, ApiClientError> {
        let request = WaitRequest {
            ids: ids.to_vec(),
            wait_ms: wait.as_millis() as u64,
        };
        let answer: WaitAnswer = self
            .call(self.http.post(self.url("/v1/tasks/wait")).json(&request))
            .await?;
        Ok(answer.tasks)
    }

    /// Cancels a task wherever it runs.
    pub async fn cancel(&self, id: &str) -> Result<Cancelling, ApiClientError> {
        self.call(self.http.delete(self.url(&format!("/v1/tasks/{id}"))))
            .await
    }

    /// The tasks whose records the peer keeps, in one state or all (`scope=local`).
    pub async fn tasks(&self, state: Option<crate::TaskState>) -> Result<TaskList, ApiClientError> {
        let query = TaskQuery {
            local: true,
            state,
            ..TaskQuery::default()
        };
        self.list(&query).await
    }

    /// A page of the swarm's tasks (or the peer's own, with `local`) that `query` matches.
    pub async fn list(&self, query: &TaskQuery) -> Result<TaskList, ApiClientError> {
        let path = format!("/v1/tasks?{}", query.to_query_string());
        self.call(self.http.get(self.url(&path))).await
    }

    /// Drains the peer (see [`crate::Peer::drain`]): it answers at once; the peer stops once it
    /// is drained.
    pub async fn drain(&self, deadline: Option<Duration>) -> Result<Draining, ApiClientError> {
        let body = DrainRequest {
            deadline_ms: deadline.map(|d| d.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        self.call(self.http.post(self.url("/v1/drain")).json(&body))
            .await
    }

    /// The peer and the peers it knows.
    pub async fn cluster(&self) -> Result<ClusterView, ApiClientError> {
        self.call(self.http.get(self.url("/v1/cluster"))).await
    }

    /// The peer's metrics, in the Prometheus text format (`GET /metrics`).
    pub async fn metrics(&self) -> Result<String, ApiClientError> {
        let unreachable = |source| ApiClientError::Unreachable {
            base: self.base.clone(),
            source,
        };
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let body = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
                error: text.clone(),
                ..ErrorBody::default()
            });
            return Err(ApiClientError::Refused { status, body });
        }
        Ok(text)
    }

    /// A task's proof (check it with [`crate::proof::check`]).
    pub async fn proof(&self, id: &str) -> Result<ProofView, ApiClientError> {
        self.call(self.http.get(self.url(&format!("/v1/tasks/{id}/proof"))))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiClientError> {
        let unreachable = |source| ApiClientError::Unreachable {
            base: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                error: String::from_utf8_lossy(&bytes).into_owned(),
                ..ErrorBody::default()
            });
            return Err(ApiClientError::Refused { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiClientError::Unexpected {
            base: self.base.clone(),
            detail: e.to_string(),
        })
    }
}
