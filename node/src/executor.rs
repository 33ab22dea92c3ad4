//! The executor: runs a task's attempt and turns what happened into an [`Outcome`].
//!
//! Two kinds of task: **process tasks** (a program with arguments, environment and standard
//! input, in its own process group so a timeout kills everything it started, and that group is
//! killed too when the peer dies (the `reaper` module); stdout and stderr are captured up to a
//! cap while the rest is drained and dropped) and **handler tasks** (an async Rust
//! function registered by name: bytes in, bytes out). Every run sees its task id and lease epoch
//! (`TASKSWARM_TASK_ID` and `TASKSWARM_EPOCH` for processes, [`HandlerContext`] for handlers) so it
//! can fence its own side effects. The executor never decides what to run: the scheduler does.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use taskswarm_protocol::{Input, Outcome, ProcessSpec, TaskId, TaskKind, TaskSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::oneshot;

mod reaper;

/// What a handler sees of the run it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerContext {
    /// The task.
    pub task: TaskId,
    /// The epoch of the lease this attempt runs under: a fencing token for side effects.
    pub epoch: u64,
    /// The results of the tasks it depends on (its spec's `after`), in that order.
    pub inputs: Vec<Input>,
}

/// The boxed future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// A registered handler: takes the context and the input bytes, returns output bytes or an error
/// message.
pub type Handler = Arc<dyn Fn(HandlerContext, Vec<u8>) -> HandlerFuture + Send + Sync>;

/// Wraps an async function as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(HandlerContext, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
{
    Arc::new(move |ctx, input| Box::pin(f(ctx, input)))
}

/// Runs attempts. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    handlers: Arc<BTreeMap<String, Handler>>,
    allow_exec: bool,
    output_cap: usize,
    /// This peer's id, given to a process as `TASKSWARM_PEER`.
    peer: Option<String>,
    /// Kills the running tasks' process groups if this peer dies; started with the executor
    /// when it may run processes, so that it is ready before the first task starts (`None` if
    /// it may not, or could not start).
    reaper: Arc<Option<reaper::Reaper>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("allow_exec", &self.allow_exec)
            .field("output_cap", &self.output_cap)
            .finish()
    }
}

/// The inputs of a process task, written to files for it to read: a private directory (mode
/// 0700, a random name, readable by this peer's user only) named in `TASKSWARM_INPUTS` holds one
/// file per dependency, named after it, and `TASKSWARM_INPUT_<NAME>` (the name upper-cased,
/// other characters than letters and digits as `_`) names each file. The directory is removed when
/// the run ends.
#[derive(Debug, Default)]
struct InputFiles {
    /// Kept for its `Drop`, which removes the directory.
    _dir: Option<tempfile::TempDir>,
    vars: Vec<(String, String)>,
}

impl InputFiles {
    fn write(task: TaskId, epoch: u64, inputs: &[Input]) -> std::io::Result<Self> {
        if inputs.is_empty() {
            return Ok(Self::default());
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("taskswarm-inputs-{}-{epoch}-", task.short()))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let path = dir.path().to_path_buf();
        let mut files = Self {
            _dir: Some(dir),
            vars: vec![("TASKSWARM_INPUTS".into(), path.display().to_string())],
        };
        for input in inputs {
            let file_name: String = input
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let file = path.join(&file_name);
            std::fs::write(&file, &input.output)?;
            let var: String = input
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            files
                .vars
                .push((format!("TASKSWARM_INPUT_{var}"), file.display().to_string()));
        }
        Ok(files)
    }

    fn env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The search path a process task gets: the peer's own, or a common default if it has none.
fn task_path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// The program to start: a name without a `/` is looked up on `path`, here, so the child can be
/// started with `posix_spawn` (a child whose search path differs from the peer's would otherwise
/// be forked from the whole peer, which costs milliseconds). A name not found is left as it is,
/// and the spawn reports it missing.
fn resolve(program: &str, path: &std::ffi::OsStr) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return program.into();
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| program.into())
}

impl Executor {
    /// An executor with these handlers; it runs processes only if `allow_exec`. Each of stdout and
    /// stderr is kept up to `output_cap` bytes.
    pub fn new(handlers: BTreeMap<String, Handler>, allow_exec: bool, output_cap: usize) -> Self {
        Self {
            handlers: Arc::new(handlers),
            allow_exec,
            output_cap,
            peer: None,
            reaper: Arc::new(allow_exec.then(start_reaper).flatten()),
        }
    }

    /// Names the peer that runs the attempts: processes see it as `TASKSWARM_PEER`.
    pub fn on_peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }

    /// The names of the registered handlers, sorted.
    pub fn handler_names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// Runs one attempt of `spec` under the lease at `epoch`. Sending on (or dropping the sender
    /// of) `abort` stops it: a process's whole group is killed, a handler's future dropped.
    pub async fn run(
        &self,
        task: TaskId,
        epoch: u64,
        spec: TaskSpec,
        inputs: Vec<Input>,
        abort: oneshot::Receiver<()>,
    ) -> Outcome {
        let timeout = spec.timeout_ms.map(Duration::from_millis);
        match spec.kind {
            TaskKind::Process(process) if self.allow_exec => {
                let files = match InputFiles::write(task, epoch, &inputs) {
                    Ok(files) => files,
                    Err(e) => {
                        return Outcome::Error {
                            message: format!("cannot write the inputs from its dependencies: {e}"),
                        };
                    }
                };
                self.run_process(task, epoch, process, &files, timeout, abort)
                    .await
            }
            TaskKind::Process(_) => Outcome::Error {
                message: "this peer does not run process tasks (start it with --allow-exec)".into(),
            },
            TaskKind::Handler { name, input } => {
                tokio::select! {
                    outcome = self.run_handler(HandlerContext { task, epoch, inputs }, &name, input, timeout) => outcome,
                    _ = abort => Outcome::Error { message: "aborted".into() },
                }
            }
        }
    }

    async fn run_handler(
        &self,
        context: HandlerContext,
        name: &str,
        input: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Outcome {
        let Some(handler) = self.handlers.get(name) else {
            return Outcome::Error {
                message: format!("no handler named {name:?} on this peer"),
            };
        };
        let run = handler(context, input);
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(result) => result,
                Err(_) => {
                    return Outcome::TimedOut {
                        stdout: Vec::new(),
                        stderr: Vec::new(),
                    };
                }
            },
            None => run.await,
        };
        match result {
            Ok(output) => Outcome::Returned { output },
            Err(message) => Outcome::Error { message },
        }
    }

    async fn run_process(
        &self,
        task: TaskId,
        epoch: u64,
        spec: ProcessSpec,
        inputs: &InputFiles,
        timeout: Option<Duration>,
        abort: oneshot::Receiver<()>,
    ) -> Outcome {
        let path = task_path();
        let mut command = Command::new(resolve(&spec.program, &path));
        // A clean environment: nothing of the peer's (its tokens, its keys' paths, its user's
        // settings) reaches a task, only the search path, what the spec sets and TASKSWARM_*.
        command
            .args(&spec.args)
            .env_clear()
            .env("PATH", &path)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("TASKSWARM_TASK_ID", task.to_string())
            .env("TASKSWARM_EPOCH", epoch.to_string())
            .envs(self.peer.iter().map(|p| ("TASKSWARM_PEER", p)))
            .envs(inputs.env())
            .stdin(if spec.stdin.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return not_started(&spec.program, &e),
        };
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let reaper = self.reaper.as_ref().as_ref();
        if let (Some(reaper), Some(group)) = (reaper, group) {
            reaper.watch(group);
        }
        if let Some(mut stdin) = child.stdin.take() {
            let input = spec.stdin;
            tokio::spawn(async move {
                // A child that exits without reading its input is not an error of ours.
                let _ = stdin.write_all(&input).await;
            });
        }
        let cap = self.output_cap;
        let stdout = tokio::spawn(capture(child.stdout.take(), cap));
        let stderr = tokio::spawn(capture(child.stderr.take(), cap));
        let limit = timeout.unwrap_or(Duration::MAX);
        let mut aborted = false;
        let status = tokio::select! {
            status = tokio::time::timeout(limit, child.wait()) => status.ok(),
            _ = abort => {
                aborted = true;
                None
            }
        };
        // Whether it finished or timed out, nothing it started outlives the attempt (and holds
        // its output pipes open).
        kill_group(group);
        if let (Some(reaper), Some(group)) = (reaper, group) {
            reaper.forget(group);
        }
        if status.is_none() {
            let _ = child.wait().await;
        }
        let stdout = stdout.await.unwrap_or_default();
        let stderr = stderr.await.unwrap_or_default();
        if aborted {
            return Outcome::Error {
                message: "aborted".into(),
            };
        }
        match status {
            None => Outcome::TimedOut { stdout, stderr },
            Some(Ok(status)) => Outcome::Exited {
                code: status.code(),
                stdout,
                stderr,
            },
            Some(Err(e)) => Outcome::Error {
                message: format!("waiting for {:?}: {e}", spec.program),
            },
        }
    }
}

/// Starts the reaper. A peer that cannot start one still runs tasks, and says what it lacks.
/// The outcome of a program that did not start. Missing, not executable or not a program: it
/// would fail the same way again, so it is not retried ([`Outcome::NotStarted`]). Anything else
/// (too many processes or open files, no memory) may pass, and is a failure like any other.
fn not_started(program: &str, error: &std::io::Error) -> Outcome {
    let message = format!("cannot start {program:?}: {error}");
    let for_good = matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    ) || error.raw_os_error() == Some(nix::libc::ENOEXEC);
    if for_good {
        Outcome::NotStarted { message }
    } else {
        Outcome::Error { message }
    }
}

fn start_reaper() -> Option<reaper::Reaper> {
    match reaper::Reaper::start() {
        Ok(reaper) => Some(reaper),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the reaper: task processes will outlive this peer if it is killed");
            None
        }
    }
}

/// Kills a whole process group (the task and everything it started).
fn kill_group(group: Option<Pid>) {
    if let Some(group) = group
        && let Err(e) = killpg(group, Signal::SIGKILL)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(%group, error = %e, "could not kill the process group of a task");
    }
}

/// Reads a pipe to its end, keeping the first `cap` bytes.
async fn capture<R: AsyncRead + Unpin>(pipe: Option<R>, cap: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskswarm_protocol::PeerKey;

    fn process(program: &str, args: &[&str], timeout_ms: Option<u64>) -> TaskSpec {
        let kind = TaskKind::Process(ProcessSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            stdin: b"from stdin".to_vec(),
        });
        TaskSpec {
            timeout_ms,
            ..TaskSpec::new(PeerKey::from_bytes([0; 32]), 0, kind)
        }
    }

    fn id() -> TaskId {
        TaskId::from_bytes([1; 32])
    }

    /// An abort signal that never fires (its sender is leaked for the test's lifetime).
    fn never() -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn an_abort_kills_a_running_process_group() {
        let exec = Executor::new(BTreeMap::new(), true, 1024);
        let (tx, rx) = oneshot::channel();
        let run = tokio::spawn({
            let exec = exec.clone();
            async move {
                exec.run(
                    id(),
                    1,
                    process("sh", &["-c", "sleep 30 & wait"], None),
                    Vec::new(),
                    rx,
                )
                .await
            }
        });
        tx.send(()).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            outcome,
            Outcome::Error {
                message: "aborted".into()
            }
        );
    }

    #[tokio::test]
    async fn a_process_sees_only_the_path_its_spec_and_taskswarm_variables() {
        let exec = Executor::new(BTreeMap::new(), true, 1024).on_peer("peer-x");
        let outcome = exec
            .run(id(), 7, process("env", &[], None), Vec::new(), never())
            .await;
        let Outcome::Exited {
            code: Some(0),
            stdout,
            ..
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        let mut names: Vec<String> = String::from_utf8(stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "GREETING",
                "PATH",
                "TASKSWARM_EPOCH",
                "TASKSWARM_PEER",
                "TASKSWARM_TASK_ID"
            ],
            "the peer's own environment (CARGO_*, HOME, …) stays out"
        );
    }

    #[test]
    fn inputs_go_to_a_private_directory_removed_after_the_run() {
        use std::os::unix::fs::PermissionsExt;
        let input = Input {
            task: id(),
            name: "words list".into(),
            completed: true,
            output: b"7".to_vec(),
        };
        let files = InputFiles::write(id(), 4, &[input]).unwrap();
        let vars: BTreeMap<&str, &str> = files.env().collect();
        let dir = std::path::PathBuf::from(vars["TASKSWARM_INPUTS"]);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only this peer's user can read it");
        assert_eq!(
            std::fs::read(vars["TASKSWARM_INPUT_WORDS_LIST"]).unwrap(),
            b"7"
        );
        drop(files);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_process_sees_its_input_environment_and_epoch() {
        let exec = Executor::new(BTreeMap::new(), true, 1024);
        let script = "cat; echo \" $GREETING $TASKSWARM_EPOCH\"; echo oops >&2; exit 3";
        let outcome = exec
            .run(
                id(),
                7,
                process("sh", &["-c", script], None),
                Vec::new(),
                never(),
            )
            .await;
        assert_eq!(
            outcome,
            Outcome::Exited {
                code: Some(3),
                stdout: b"from stdin hi 7\n".to_vec(),
                stderr: b"oops\n".to_vec(),
            }
        );
    }

    #[tokio::test]
    async fn a_program_killed_by_a_signal_has_no_exit_code() {
        let exec = Executor::new(BTreeMap::new(), true, 1024);
        let outcome = exec
            .run(
                id(),
                1,
                process("sh", &["-c", "echo before; kill -9 $$"], None),
                Vec::new(),
                never(),
            )
            .await;
        assert_eq!(
            outcome,
            Outcome::Exited {
                code: None,
                stdout: b"before\n".to_vec(),
                stderr: Vec::new(),
            }
        );
    }

    #[tokio::test]
    async fn output_is_capped() {
        let exec = Executor::new(BTreeMap::new(), true, 10);
        let outcome = exec
            .run(
                id(),
                1,
                process("sh", &["-c", "seq 1 10000"], None),
                Vec::new(),
                never(),
            )
            .await;
        let Outcome::Exited {
            code: Some(0),
            stdout,
            ..
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(stdout, b"1\n2\n3\n4\n5\n");
    }

    /// Whether a process is gone (or a zombie waiting to be reaped by init).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let exec = Executor::new(BTreeMap::new(), true, 1024);
        // The task starts a grandchild that would live 30 s, prints its pid and waits.
        let script = "sleep 30 & echo $!; wait";
        let outcome = exec
            .run(
                id(),
                1,
                process("sh", &["-c", script], Some(300)),
                Vec::new(),
                never(),
            )
            .await;
        let Outcome::TimedOut { stdout, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        let pid = String::from_utf8_lossy(stdout).trim().to_string();
        assert!(!pid.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone(&pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {pid} outlived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn processes_need_exec_allowed_and_programs_must_exist() {
        let no_exec = Executor::new(BTreeMap::new(), false, 1024);
        let outcome = no_exec
            .run(id(), 1, process("true", &[], None), Vec::new(), never())
            .await;
        assert!(matches!(outcome, Outcome::Error { .. }));
        let exec = Executor::new(BTreeMap::new(), true, 1024);
        let outcome = exec
            .run(
                id(),
                1,
                process("/no/such/program", &[], None),
                Vec::new(),
                never(),
            )
            .await;
        assert!(
            matches!(&outcome, Outcome::NotStarted { message } if message.contains("cannot start")),
            "{outcome:?}"
        );
        assert_eq!(
            taskswarm_protocol::retry::Ending::of(&outcome),
            taskswarm_protocol::retry::Ending::NotStarted,
            "not retried"
        );
    }

    #[tokio::test]
    async fn handlers_run_by_name_with_their_context() {
        let mut handlers = BTreeMap::new();
        handlers.insert(
            "epoch".to_string(),
            handler(|ctx: HandlerContext, input: Vec<u8>| async move {
                Ok([input, ctx.epoch.to_string().into_bytes()].concat())
            }),
        );
        handlers.insert(
            "fail".to_string(),
            handler(|_, _| async { Err("no".to_string()) }),
        );
        let exec = Executor::new(handlers, false, 1024);
        let spec = |name: &str| {
            let kind = TaskKind::Handler {
                name: name.into(),
                input: b"e=".to_vec(),
            };
            TaskSpec::new(PeerKey::from_bytes([0; 32]), 0, kind)
        };
        assert_eq!(
            exec.run(id(), 4, spec("epoch"), Vec::new(), never()).await,
            Outcome::Returned {
                output: b"e=4".to_vec()
            }
        );
        assert_eq!(
            exec.run(id(), 4, spec("fail"), Vec::new(), never()).await,
            Outcome::Error {
                message: "no".into()
            }
        );
        assert!(matches!(
            exec.run(id(), 4, spec("missing"), Vec::new(), never())
                .await,
            Outcome::Error { .. }
        ));
    }
}
