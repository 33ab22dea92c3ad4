//! The HTTP/JSON API of a peer (binds 127.0.0.1 by default).
//!
//! - `POST /v1/tasks`: one spec or an array (see [`crate::spec::SpecInput`]); answers `{"id"}` or
//!   `{"ids"}`.
//! - `GET /v1/tasks/{id}[?wait_ms=N]`: a task's view; with `wait_ms`, waits up to N ms for it to
//!   end.
//! - `POST /v1/jobs`: a job, `{"tasks": [...]}`, each a spec with a `name` and an `after` list of
//!   names (see [`crate::job`]); answers `{"tasks": [{"name", "id"}]}` in dependency order. A
//!   cycle, an unknown name or an id no live peer knows is a 400 that names it.
//! - `POST /v1/tasks/wait`: `{"ids": [...], "wait_ms": N}`; waits up to N ms for every listed task
//!   to end and answers `{"tasks": [...]}` with each task's view in order (`null` for an id no live
//!   peer knows): one request instead of one long poll per task.
//! - `DELETE /v1/tasks/{id}`: cancels a task wherever it runs.
//! - `GET /v1/tasks/{id}/proof`: the task's record sealed by the home member that wrote it, and
//!   the chain read from it (see [`crate::proof`]).
//! - `GET /v1/tasks[?state=S&label=K=V&submitter=NAME&since_ms=T&until_ms=T&limit=N&cursor=C]`:
//!   a page of the swarm's tasks, newest first (every live peer is asked for the records it
//!   keeps); `next` is the cursor of the page after. With `scope=local`, only the tasks whose
//!   records this peer keeps. A task that is not running says why (`reason`).
//! - `GET /v1/cluster`: this peer and the peers it knows (load, resources, labels, version,
//!   uptime, API address, last heard), and the swarm's totals.
//! - `GET /v1/cluster/load`: every live peer's load, sampled every 5 s over the last 10 minutes.
//! - `GET /metrics`: this peer's metrics in the Prometheus text format ([`crate::metrics`]).
//! - `GET /healthz`: liveness.
//! - `GET /`: the dashboard ([`crate::dashboard`]); its files need no token.
//!
//! Bad input gets a 4xx with `{"error": "...", "field": "..."}`; it never panics the peer.
//!
//! **Access.** A peer started with API tokens ([`crate::tokens`]) answers every request but
//! `/healthz` and the dashboard's files only with `Authorization: Bearer TOKEN`, and only if the token's roles allow it:
//! `read` for GETs and `POST /v1/tasks/wait`, `submit` for the other POSTs, `cancel` for DELETE.
//! No token, or an unknown one, is a 401; a token without the role is a 403; both say what is
//! missing. A POST must be `Content-Type: application/json` (415 otherwise), so a web page cannot
//! make a browser post a form to a peer. Without tokens the API is open to whoever reaches it,
//! which the node allows only on a loopback address.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use taskswarm_protocol::TaskId;

use crate::api_client::{
    Cancelling, ErrorBody, JobSubmitted, JobTask, Submitted, SubmittedOne, TaskList, TaskQuery,
    WaitAnswer, WaitRequest,
};
use crate::client::{Client, ClientError};
use crate::spec;
use crate::tokens::{Role, Tokens};

/// The largest request body accepted (a batch of many specs).
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// The longest a `wait_ms` long poll may wait.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// An API error: a status and a JSON body naming the field at fault, if any.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    fn bad(field: &str, error: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field: (!field.is_empty()).then(|| field.to_string()),
        }
    }

    fn not_found(error: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: error.into(),
            field: None,
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::UnknownTask(_) => Self::not_found(e.to_string()),
            ClientError::Stopped | ClientError::TooFewPeers { .. } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: e.to_string(),
                field: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            field: self.field,
            needs: None,
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Who may use the API: anyone (no tokens), or the holders of these tokens by their roles.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Option<std::sync::Arc<std::sync::RwLock<Tokens>>>,
}

impl Access {
    /// An API open to whoever reaches it.
    pub fn open() -> Self {
        Self { tokens: None }
    }

    /// An API for the holders of these tokens.
    pub fn with_tokens(tokens: Tokens) -> Self {
        Self {
            tokens: Some(std::sync::Arc::new(std::sync::RwLock::new(tokens))),
        }
    }

    /// Whether requests need tokens.
    pub fn needs_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Replaces the tokens (the file was read again). False if the API is open.
    pub fn replace(&self, tokens: Tokens) -> bool {
        match &self.tokens {
            Some(lock) => {
                if let Ok(mut held) = lock.write() {
                    *held = tokens;
                }
                true
            }
            None => false,
        }
    }
}

/// Who made a request: the name of its token, or nobody in particular on an open API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: Option<String>,
}

/// What a request needs: nothing for `/healthz`, else a role by method and path.
fn needed(method: &Method, path: &str) -> Option<Role> {
    if path == "/healthz" || (method == Method::GET && crate::dashboard::PATHS.contains(&path)) {
        return None;
    }
    Some(match *method {
        Method::DELETE => Role::Cancel,
        Method::POST if path == "/v1/tasks/wait" => Role::Read,
        Method::POST if path == "/v1/drain" => Role::Admin,
        Method::POST => Role::Submit,
        _ => Role::Read,
    })
}

fn denied(status: StatusCode, error: String, needs: Option<Role>) -> Response {
    let body = ErrorBody {
        error,
        field: None,
        needs: needs.map(|r| r.as_str().to_string()),
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(value) = header::HeaderValue::from_str("Bearer realm=\"taskswarm\"")
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Authenticates and authorizes every request (see the module documentation).
async fn authorize(State(access): State<Access>, mut request: Request, next: Next) -> Response {
    let Some(role) = needed(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let mut caller = Caller::default();
    if let Some(tokens) = &access.tokens {
        let Some(presented) = bearer(request.headers()) else {
            let error = "this API needs a token: send `Authorization: Bearer TOKEN` (the CLI \
                         reads TASKSWARM_TOKEN or --token-file; make one with `taskswarm token \
                         add`)";
            return denied(StatusCode::UNAUTHORIZED, error.into(), Some(role));
        };
        let entry = match tokens.read() {
            Ok(tokens) => tokens.check(presented).cloned(),
            Err(_) => None,
        };
        let Some(entry) = entry else {
            let error = "unknown token: it is not in this peer's token file".to_string();
            return denied(StatusCode::UNAUTHORIZED, error, Some(role));
        };
        if !entry.allows(role) {
            let error = format!(
                "token {:?} has roles [{}]; this request needs the {role} role",
                entry.name,
                entry.roles_text()
            );
            return denied(StatusCode::FORBIDDEN, error, Some(role));
        }
        caller.name = Some(entry.name);
    }
    if request.method() == Method::POST && !is_json(request.headers()) {
        let error = "a POST body must be JSON, sent with Content-Type: application/json";
        return denied(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.into(), None);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The router for a peer's API, open to whoever reaches it.
pub fn router(client: Client) -> Router {
    router_with(client, Access::open())
}

/// The router for a peer's API, with who may use it.
pub fn router_with(client: Client, access: Access) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/load", get(load_history))
        .route("/metrics", get(metrics))
        .route("/v1/tasks", get(list_tasks).post(post_tasks))
        .route("/v1/tasks/wait", post(wait_tasks))
        .route("/v1/jobs", post(post_job))
        .route("/v1/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/v1/tasks/{id}/proof", get(get_proof))
        .route("/v1/drain", post(drain))
        .merge(crate::dashboard::router())
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see /v1/tasks, /v1/cluster, /metrics, /healthz")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(access, authorize))
        .with_state(client)
}

/// Parses a query string into pairs, naming only `allowed` keys.
fn query(raw: Option<String>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad("", format!("bad query string: {e}")))?;
    if let Some((key, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad(
            key,
            format!("unknown query parameter; expected one of {allowed:?}"),
        ));
    }
    Ok(pairs)
}

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse().map_err(|e| ApiError::bad("id", format!("{e}")))
}

async fn healthz(State(client): State<Client>) -> ApiResult<serde_json::Value> {
    let cluster = client.cluster().await?;
    Ok(Json(json!({ "ok": true, "peer_id": cluster.me.peer_id })))
}

/// The deadline a drain gets when its request names none.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// `POST /v1/drain` (admin): drains this peer; answers at once, and the peer stops once drained.
async fn drain(
    State(client): State<Client>,
    body: Option<Json<crate::api_client::DrainRequest>>,
) -> Result<Response, ApiError> {
    let deadline = body
        .and_then(|Json(b)| b.deadline_ms)
        .map_or(DRAIN_DEADLINE, std::time::Duration::from_millis);
    client.drain(deadline).await?;
    let body = crate::api_client::Draining {
        draining: true,
        deadline_ms: deadline.as_millis().try_into().unwrap_or(u64::MAX),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /metrics` (read): every metric, in OpenMetrics 1.0.0 for a scraper that asks for it
/// (`Accept: application/openmetrics-text`, as Prometheus does), in the classic Prometheus text
/// format (0.0.4) otherwise.
async fn metrics(State(client): State<Client>, headers: HeaderMap) -> Result<Response, ApiError> {
    let text = client.metrics().await?;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let response = if openmetrics {
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, kind)], text).into_response()
    } else {
        let kind = "text/plain; version=0.0.4; charset=utf-8";
        let text = crate::metrics::classic(&text);
        ([(header::CONTENT_TYPE, kind)], text).into_response()
    };
    Ok(response)
}

async fn cluster(State(client): State<Client>) -> ApiResult<crate::view::ClusterView> {
    Ok(Json(client.cluster().await?))
}

/// `GET /v1/tasks` (read): a page of the swarm's tasks, or of this peer's own with
/// `scope=local` (see [`TaskQuery`] for the filters).
async fn load_history(State(client): State<Client>) -> ApiResult<crate::view::LoadHistory> {
    Ok(Json(client.load_history().await?))
}

async fn list_tasks(
    State(client): State<Client>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TaskList>, ApiError> {
    let pairs = query(raw, &TaskQuery::KEYS)?;
    let wanted =
        TaskQuery::from_pairs(&pairs).map_err(|(field, error)| ApiError::bad(&field, error))?;
    Ok(Json(client.list(&wanted).await?))
}

async fn post_tasks(
    State(client): State<Client>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (tasks, many) = spec::parse_json(&body).map_err(|e| ApiError::bad(&e.field, e.message))?;
    let mut external: Vec<TaskId> = tasks
        .iter()
        .flat_map(|t| t.after.iter())
        .filter_map(|a| match a {
            spec::After::Task(id) => Some(*id),
            spec::After::Earlier(_) => None,
        })
        .collect();
    external.sort();
    external.dedup();
    check_known(&client, &external).await?;
    let ids = client.submit_as(tasks, caller_name(caller)).await?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if !many && let Some(id) = ids.first() {
        let body = SubmittedOne { id: id.clone() };
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    Ok((StatusCode::CREATED, Json(Submitted { ids })).into_response())
}

/// The name of the token a request came with, if any.
fn caller_name(caller: Option<axum::Extension<Caller>>) -> Option<String> {
    caller.and_then(|axum::Extension(c)| c.name)
}

/// Rejects a dependency on a task no live peer knows (a dangling id).
async fn check_known(client: &Client, ids: &[TaskId]) -> Result<(), ApiError> {
    for id in ids {
        if client.task(*id).await?.is_none() {
            return Err(ApiError::bad(
                "after",
                format!("no live peer knows task {id}"),
            ));
        }
    }
    Ok(())
}

/// `POST /v1/jobs`: a job (see [`crate::job`]); answers `{"tasks": [{"name", "id"}]}` in
/// dependency order.
async fn post_job(
    State(client): State<Client>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let job = crate::job::parse_json(&body).map_err(|e| ApiError::bad(&e.field, e.message))?;
    check_known(&client, &job.external()).await?;
    let ids = client.submit_as(job.tasks, caller_name(caller)).await?;
    let tasks = job
        .names
        .iter()
        .zip(&ids)
        .map(|(name, id)| JobTask {
            name: name.clone(),
            id: id.to_string(),
        })
        .collect();
    Ok((StatusCode::CREATED, Json(JobSubmitted { tasks })).into_response())
}

async fn get_task(
    State(client): State<Client>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<crate::view::TaskView> {
    let id = parse_id(&id)?;
    let mut wait = None;
    for (key, value) in query(raw, &["wait_ms"])? {
        if key == "wait_ms" {
            let ms: u64 = value
                .parse()
                .map_err(|_| ApiError::bad("wait_ms", "expected milliseconds as a whole number"))?;
            wait = Some(Duration::from_millis(ms).min(MAX_WAIT));
        }
    }
    if let Some(limit) = wait
        && let Ok(done) = tokio::time::timeout(limit, client.wait(id)).await
    {
        return Ok(Json(done?));
    }
    match client.task(id).await? {
        Some(view) => Ok(Json(view)),
        None => Err(ClientError::UnknownTask(id).into()),
    }
}

async fn get_proof(
    State(client): State<Client>,
    Path(id): Path<String>,
) -> ApiResult<crate::proof::ProofView> {
    let id = parse_id(&id)?;
    match client.proof(id).await? {
        Some(sealed) => Ok(Json(crate::proof::view(&sealed))),
        None => Err(ClientError::UnknownTask(id).into()),
    }
}

async fn wait_tasks(State(client): State<Client>, body: Bytes) -> Result<Response, ApiError> {
    let request: WaitRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            "",
            format!("expected {{\"ids\": [...], \"wait_ms\": N}}: {e}"),
        )
    })?;
    if request.ids.len() > spec::MAX_BATCH {
        return Err(ApiError::bad(
            "ids",
            format!("at most {} tasks per wait", spec::MAX_BATCH),
        ));
    }
    let ids = request
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            id.parse::<TaskId>()
                .map_err(|e| ApiError::bad(&format!("ids[{i}]"), format!("{e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.wait_ms).min(MAX_WAIT);
    let views = futures::future::join_all(ids.into_iter().map(|id| {
        let client = client.clone();
        async move {
            match tokio::time::timeout_at(deadline, client.wait(id)).await {
                Ok(Ok(view)) => Ok(Some(view)),
                Ok(Err(ClientError::UnknownTask(_))) => Ok(None),
                Ok(Err(e)) => Err(e),
                Err(_) => client.task(id).await,
            }
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(WaitAnswer { tasks: views }).into_response())
}

async fn cancel_task(
    State(client): State<Client>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if !client.cancel_as(id, caller_name(caller)).await? {
        return Err(ClientError::UnknownTask(id).into());
    }
    let body = Cancelling {
        id: id.to_string(),
        cancelling: true,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
