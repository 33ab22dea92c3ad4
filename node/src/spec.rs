//! Task specs as people write them (JSON in the API, lines of a `.jsonl` file, CLI flags) and
//! their conversion into the protocol's [`TaskKind`], with errors that name the offending field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskswarm_protocol::placement::Policy;
use taskswarm_protocol::resources::{self, Label, Needs, Resources};
use taskswarm_protocol::{Backoff, ProcessSpec, RetryOn, RetryPolicy, TaskId, TaskKind};

/// A new task, before it is signed: what to run, its per-attempt time limit and its retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    /// What to run.
    pub kind: TaskKind,
    /// The per-attempt time limit.
    pub timeout: Option<Duration>,
    /// How failed attempts are retried (default: 3 attempts, exponential backoff from 100 ms).
    pub retry: RetryPolicy,
    /// Where to place it, instead of by the policy of the peer that places it.
    pub placement: Option<Policy>,
    /// What it needs of the peer that runs it (CPU, memory, disk, labels).
    pub needs: Needs,
    /// Higher starts first (default 0).
    pub priority: i32,
    /// How long it is expected to run: stealing moves long tasks first.
    pub cost: Option<Duration>,
    /// A name people know it by (a job's task names).
    pub name: Option<String>,
    /// Tasks that must complete first; their results are its inputs.
    pub after: Vec<After>,
    /// Run even if a dependency failed or was cancelled.
    pub run_anyway: bool,
}

/// A dependency of a new task: a task submitted before (`After::Task(id)`), or the task at this
/// index of the same submission, which must come earlier in it (`After::Earlier(i)`).
pub use taskswarm_protocol::Dependency as After;

/// Parses a duration that may be zero (`0s`), as [`parse_duration`] otherwise.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// Parses a duration as people write them (read by `humantime`): 250ms, 3s, 2m, 1h, 7d, or
/// `1h 30m`; a bare number is seconds. At least a millisecond.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{text:?}: {e}"))?
    } else {
        humantime::parse_duration(text).map_err(|e| {
            format!("{text:?}: {e}; write a number with a unit, such as 500ms, 30s, 5m or 7d")
        })?
    };
    if duration < Duration::from_millis(1) {
        return Err(format!("{text:?}: a duration must be at least 1ms"));
    }
    Ok(duration)
}

/// Parses a backoff: `fixed:DUR` or `exp:BASE[:MAX]` (MAX defaults to 60 × BASE, at most 10 m).
pub fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let ms = |d: Duration| d.as_millis() as u64;
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["fixed", wait] => Ok(Backoff::Fixed {
            ms: ms(parse_duration(wait)?),
        }),
        ["exp", base] => {
            let base = ms(parse_duration(base)?);
            Ok(Backoff::Exponential {
                base_ms: base,
                max_ms: (base * 60).min(600_000),
            })
        }
        ["exp", base, max] => {
            let (base, max) = (ms(parse_duration(base)?), ms(parse_duration(max)?));
            if max < base {
                return Err(format!("{text:?}: the maximum is below the base"));
            }
            Ok(Backoff::Exponential {
                base_ms: base,
                max_ms: max,
            })
        }
        _ => Err(format!(
            "{text:?}: expected fixed:DUR or exp:BASE[:MAX], such as fixed:200ms or exp:100ms:10s"
        )),
    }
}

/// Parses which failures are retried: a comma-separated list of `failure`, `timeout`,
/// `lost-lease`, or `none`.
pub fn parse_retry_on(items: &[String]) -> Result<RetryOn, String> {
    let mut on = RetryOn {
        failure: false,
        timeout: false,
        lost_lease: false,
    };
    for item in items.iter().flat_map(|i| i.split(',')) {
        match item.trim() {
            "failure" => on.failure = true,
            "timeout" => on.timeout = true,
            "lost-lease" => on.lost_lease = true,
            "none" => {}
            other => {
                return Err(format!(
                    "{other:?}: expected failure, timeout, lost-lease or none"
                ));
            }
        }
    }
    Ok(on)
}

impl NewTask {
    /// A task for a typed handler ([`crate::PeerBuilder::handler_typed`]): `input` is written as
    /// JSON.
    pub fn typed(
        name: impl Into<String>,
        input: &impl serde::Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::handler(name, serde_json::to_vec(input)?))
    }

    /// A process task.
    pub fn process(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            kind: TaskKind::Process(ProcessSpec {
                program: program.into(),
                args: args.into_iter().map(Into::into).collect(),
                env: Vec::new(),
                stdin: Vec::new(),
            }),
            timeout: None,
            retry: RetryPolicy::default(),
            placement: None,
            needs: Needs::default(),
            priority: 0,
            cost: None,
            name: None,
            after: Vec::new(),
            run_anyway: false,
        }
    }

    /// A handler task.
    pub fn handler(name: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: TaskKind::Handler {
                name: name.into(),
                input: input.into(),
            },
            timeout: None,
            retry: RetryPolicy::default(),
            placement: None,
            needs: Needs::default(),
            priority: 0,
            cost: None,
            name: None,
            after: Vec::new(),
            run_anyway: false,
        }
    }

    /// Sets the per-attempt time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Places this task by `policy` instead of by the placing peer's policy.
    pub fn with_placement(mut self, policy: Policy) -> Self {
        self.placement = Some(policy);
        self
    }

    /// Runs it only where these needs fit (and counts them against the peer while it runs).
    pub fn with_needs(
        mut self,
        resources: Resources,
        labels: impl IntoIterator<Item = Label>,
    ) -> Self {
        let mut labels: Vec<Label> = labels.into_iter().collect();
        labels.sort();
        labels.dedup();
        self.needs = Needs { resources, labels };
        self
    }

    /// Sets its priority: higher starts first.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Hints how long it runs: stealing moves long tasks first.
    pub fn with_cost(mut self, cost: Duration) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Names it (a name shows in `task show` and in dependency errors).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Makes it wait for `dependency` to complete, and get its result as an input.
    pub fn after(mut self, dependency: After) -> Self {
        self.after.push(dependency);
        self
    }

    /// Runs it even if a dependency failed or was cancelled.
    pub fn run_anyway(mut self) -> Self {
        self.run_anyway = true;
        self
    }
}

/// A task spec in JSON: either `program` (with optional `args`, `env`, `stdin`) or `handler`
/// (with optional `input`); optionally `timeout_ms`, `retries` (attempts in all), `backoff`
/// (`fixed:DUR` or `exp:BASE[:MAX]`), `retry_on` (a list of `failure`, `timeout`,
/// `lost-lease`) and `placement` (a policy name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecInput {
    /// The program of a process task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Text written to its standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The registered handler of a handler task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The handler's input, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Per-attempt time limit in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// At most this many attempts in all (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The wait between attempts: `fixed:DUR` or `exp:BASE[:MAX]` (default `exp:100ms:10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Which failed attempts are retried (default all three kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    /// Where to place it: `random`, `round-robin`, `weighted`, `least-loaded` or `p2c` (default:
    /// the placing peer's policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// CPU cores it needs while it runs: a number such as 2 or 0.5, or the same as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<serde_json::Value>,
    /// Memory it needs: bytes, or text such as "512M".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<serde_json::Value>,
    /// Disk it needs: bytes, or text such as "1G".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<serde_json::Value>,
    /// Labels the peer must have, as `key=value` strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Higher starts first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// How long it is expected to run, in milliseconds: stealing moves long tasks first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_ms: Option<u64>,
    /// A name for it (in a job, how other tasks' `after` lists name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tasks that must complete first: ids of tasks already submitted, or, in a job, names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Run even if a dependency failed or was cancelled (default false: this task fails too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_anyway: bool,
}

/// Checks a task name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: a name is 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A number or a text amount, parsed by `parse` (a number is taken as written, in `parse`'s unit).
fn amount<T>(
    field: &str,
    value: &serde_json::Value,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, SpecError> {
    let text = match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(SpecError::new(field, "expected a number or a string")),
    };
    parse(&text).map_err(|e| SpecError::new(field, e))
}

/// A spec that cannot be accepted, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field (a JSON path such as `[2].program`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The same error for the spec at `prefix` (for example `[3]`).
    pub fn within(self, prefix: &str) -> Self {
        let field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        Self { field, ..self }
    }
}

impl SpecInput {
    /// Checks the spec and builds the task.
    pub fn into_task(self) -> Result<NewTask, SpecError> {
        let kind = match (self.program, self.handler) {
            (Some(_), Some(_)) => {
                return Err(SpecError::new(
                    "handler",
                    "give either program or handler, not both",
                ));
            }
            (None, None) => return Err(SpecError::new("program", "give a program or a handler")),
            (Some(program), None) => {
                if program.trim().is_empty() {
                    return Err(SpecError::new("program", "must not be empty"));
                }
                if self.input.is_some() {
                    return Err(SpecError::new("input", "is for handler tasks; use stdin"));
                }
                TaskKind::Process(ProcessSpec {
                    program,
                    args: self.args,
                    env: self.env.into_iter().collect(),
                    stdin: self.stdin.unwrap_or_default().into_bytes(),
                })
            }
            (None, Some(name)) => {
                if name.trim().is_empty() {
                    return Err(SpecError::new("handler", "must not be empty"));
                }
                for (field, given) in [
                    ("args", !self.args.is_empty()),
                    ("env", !self.env.is_empty()),
                    ("stdin", self.stdin.is_some()),
                ] {
                    if given {
                        return Err(SpecError::new(field, "is for process tasks; use input"));
                    }
                }
                TaskKind::Handler {
                    name,
                    input: self.input.unwrap_or_default().into_bytes(),
                }
            }
        };
        if self.timeout_ms == Some(0) {
            return Err(SpecError::new("timeout_ms", "must be at least 1"));
        }
        let mut retry = RetryPolicy::default();
        if let Some(attempts) = self.retries {
            if attempts == 0 {
                return Err(SpecError::new("retries", "is attempts in all: at least 1"));
            }
            retry.max_attempts = attempts;
        }
        if let Some(backoff) = &self.backoff {
            retry.backoff = parse_backoff(backoff).map_err(|e| SpecError::new("backoff", e))?;
        }
        if let Some(on) = &self.retry_on {
            retry.retry_on = parse_retry_on(on).map_err(|e| SpecError::new("retry_on", e))?;
        }
        let placement = self
            .placement
            .as_deref()
            .map(str::parse::<Policy>)
            .transpose()
            .map_err(|e| SpecError::new("placement", e.to_string()))?;
        let mut resources = Resources::default();
        if let Some(cpus) = &self.cpus {
            resources.cpu_milli = amount("cpus", cpus, resources::parse_cpus)?;
        }
        if let Some(memory) = &self.memory {
            resources.memory = amount("memory", memory, resources::parse_bytes)?;
        }
        if let Some(disk) = &self.disk {
            resources.disk = amount("disk", disk, resources::parse_bytes)?;
        }
        let labels = self
            .labels
            .iter()
            .map(|l| l.parse::<Label>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SpecError::new("labels", e))?;
        if self.cost_ms == Some(0) {
            return Err(SpecError::new("cost_ms", "must be at least 1"));
        }
        if let Some(name) = &self.name {
            check_name(name).map_err(|e| SpecError::new("name", e))?;
        }
        let after = self
            .after
            .iter()
            .map(|a| {
                a.parse::<TaskId>().map(After::Task).map_err(|_| {
                    SpecError::new(
                        "after",
                        format!("{a:?} is not a task id (names of other tasks work in a job)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let task = NewTask {
            kind,
            timeout: self.timeout_ms.map(Duration::from_millis),
            retry,
            placement,
            needs: Needs::default(),
            priority: self.priority.unwrap_or(0),
            cost: self.cost_ms.map(Duration::from_millis),
            name: self.name,
            after,
            run_anyway: self.run_anyway,
        };
        Ok(task.with_needs(resources, labels))
    }
}

/// The most tasks one request may submit (`POST /v1/tasks`, a job) or wait for
/// (`POST /v1/tasks/wait`): a peer signs and stores a submission in one go, so a bigger batch would
/// hold its event loop for too long.
pub const MAX_BATCH: usize = 10_000;

/// Parses one JSON spec or an array of them. Returns the tasks and whether the input was an array.
pub fn parse_json(body: &[u8]) -> Result<(Vec<NewTask>, bool), SpecError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<serde_json::Value>),
        One(serde_json::Value),
    }
    let parsed: OneOrMany =
        serde_json::from_slice(body).map_err(|e| SpecError::new("", format!("not JSON: {e}")))?;
    let (values, many) = match parsed {
        OneOrMany::Many(values) => (values, true),
        OneOrMany::One(value) => (vec![value], false),
    };
    if many && values.is_empty() {
        return Err(SpecError::new("", "an empty array submits nothing"));
    }
    if values.len() > MAX_BATCH {
        return Err(SpecError::new(
            "",
            format!(
                "{} tasks in one request; at most {MAX_BATCH} (send several requests)",
                values.len()
            ),
        ));
    }
    let tasks = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let prefix = if many {
                format!("[{i}]")
            } else {
                String::new()
            };
            let at = |e: SpecError| if many { e.within(&prefix) } else { e };
            let input: SpecInput = serde_path_to_error::deserialize(value).map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." {
                    unknown_field(e.inner())
                } else {
                    field
                };
                at(SpecError::new(&field, e.inner().to_string()))
            })?;
            input.into_task().map_err(at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tasks, many))
}

/// The field an "unknown field `x`" error names, if any.
fn unknown_field(error: &serde_json::Error) -> String {
    let text = error.to_string();
    text.split('`').nth(1).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_and_a_handler_spec() {
        let (tasks, many) =
            parse_json(br#"{"program": "echo", "args": ["hi"], "timeout_ms": 5}"#).unwrap();
        assert!(!many);
        assert_eq!(
            tasks,
            vec![NewTask::process("echo", ["hi"]).with_timeout(Duration::from_millis(5))]
        );
        let (tasks, many) = parse_json(br#"[{"handler": "echo", "input": "x"}]"#).unwrap();
        assert!(many);
        assert_eq!(tasks, vec![NewTask::handler("echo", "x")]);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |body: &str| parse_json(body.as_bytes()).unwrap_err().field;
        assert_eq!(err(r#"{"program": "a", "progam": "b"}"#), "progam");
        assert_eq!(err(r#"[{"program": "a"}, {"program": 5}]"#), "[1].program");
        assert_eq!(err(r#"{"args": ["x"]}"#), "program");
        assert_eq!(err(r#"{"program": "a", "handler": "b"}"#), "handler");
        assert_eq!(err(r#"{"handler": "b", "stdin": "x"}"#), "stdin");
        assert_eq!(err(r#"{"program": "a", "timeout_ms": -1}"#), "timeout_ms");
        assert_eq!(err(r#"[]"#), "");
        assert_eq!(err(r#"{"#), "");
        assert_eq!(err(r#"{"program": "a", "backoff": "slow"}"#), "backoff");
        assert_eq!(err(r#"{"program": "a", "retries": 0}"#), "retries");
        assert_eq!(err(r#"{"program": "a", "retry_on": ["fire"]}"#), "retry_on");
    }

    #[test]
    fn retry_settings_parse() {
        let (tasks, _) = parse_json(br#"{"program": "false", "retries": 3, "backoff": "fixed:200ms", "retry_on": ["failure"]}"#).unwrap();
        let retry = tasks[0].retry;
        assert_eq!(retry.max_attempts, 3);
        assert_eq!(retry.backoff, Backoff::Fixed { ms: 200 });
        assert_eq!(
            retry.retry_on,
            RetryOn {
                failure: true,
                timeout: false,
                lost_lease: false
            }
        );
        assert_eq!(
            parse_backoff("exp:100ms:5s"),
            Ok(Backoff::Exponential {
                base_ms: 100,
                max_ms: 5000
            })
        );
        assert!(parse_backoff("exp:5s:1s").is_err());
    }

    #[test]
    fn a_placement_policy_parses_by_name() {
        let (tasks, _) = parse_json(br#"{"program": "true", "placement": "round-robin"}"#).unwrap();
        assert_eq!(tasks[0].placement, Some(Policy::RoundRobin));
        let (tasks, _) = parse_json(br#"{"program": "true"}"#).unwrap();
        assert_eq!(tasks[0].placement, None);
        let err = parse_json(br#"{"program": "true", "placement": "nearest"}"#).unwrap_err();
        assert_eq!(err.field, "placement");
        assert!(err.message.contains("nearest"), "{err}");
    }

    #[test]
    fn needs_priority_and_cost_parse() {
        let (tasks, _) = parse_json(
            br#"{"program": "train", "cpus": 2, "memory": "512M", "disk": 1073741824, "labels": ["gpu=1", "zone=a"], "priority": 9, "cost_ms": 60000}"#,
        )
        .unwrap();
        let task = &tasks[0];
        assert_eq!(task.needs.resources.cpu_milli, 2000);
        assert_eq!(task.needs.resources.memory, 512 << 20);
        assert_eq!(task.needs.resources.disk, 1 << 30);
        let labels: Vec<String> = task.needs.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(labels, ["gpu=1", "zone=a"]);
        assert_eq!(
            (task.priority, task.cost),
            (9, Some(Duration::from_secs(60)))
        );
        let (tasks, _) = parse_json(br#"{"program": "x", "cpus": "0.5"}"#).unwrap();
        assert_eq!(tasks[0].needs.resources.cpu_milli, 500);
        let err = |body: &str| parse_json(body.as_bytes()).unwrap_err().field;
        assert_eq!(err(r#"{"program": "x", "memory": "lots"}"#), "memory");
        assert_eq!(err(r#"{"program": "x", "cpus": [1]}"#), "cpus");
        assert_eq!(err(r#"{"program": "x", "labels": ["gpu"]}"#), "labels");
        assert_eq!(err(r#"{"program": "x", "cost_ms": 0}"#), "cost_ms");
        assert_eq!(err(r#"{"program": "x", "priority": "high"}"#), "priority");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("500us").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration_or_zero("-1s").is_err());
    }
}
