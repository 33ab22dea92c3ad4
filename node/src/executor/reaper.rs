//! The reaper: kills the process groups of a peer's running tasks when the peer dies, however it
//! dies (SIGKILL, a crash, the OOM killer), so no attempt goes on that nobody will record and no
//! lease fences.
//!
//! A peer cannot clean up after its own SIGKILL, so a small helper process does: a POSIX shell
//! started once, in a process group of its own and deaf to the signals a terminal sends, that
//! reads from a pipe only the peer can write to. The executor tells it each task's process group
//! when the task starts (`+GROUP`) and when its attempt is over (`-GROUP`). When the peer dies the
//! kernel closes the pipe; the reaper reads its end, kills every group it was told of and not told
//! to forget, and exits. It also does so when the executor is dropped (an embedded peer that shuts
//! down), and the executor then reaps it.
//!
//! Why a helper and not a supervisor per task: anything that runs code between fork and exec
//! stops the standard library from using `posix_spawn`, and a forked copy of a peer with hundreds
//! of megabytes costs milliseconds per task; the reaper costs one process per peer and two short
//! writes per task. Two limits: a task started in the microseconds between its spawn and the
//! `+GROUP` write, when the peer dies just then, escapes; so does a program that leaves its
//! process group (`setsid`, a daemon that detaches).
//!
//! Never decides anything about a task: it only carries out the peer's death.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use nix::unistd::Pid;

/// The reaper's program: keep a list of groups, and kill what is left on it when the pipe ends.
/// Plain POSIX shell (no process started per line): `+N` adds group N, `-N` removes it.
const SCRIPT: &str = r#"
trap '' INT TERM HUP QUIT
groups=' '
while read -r line; do
  case $line in
    +*) groups="$groups${line#+} " ;;
    -*) g=${line#-}
        case $groups in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
  esac
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
"#;

/// A running reaper and the write end of its pipe.
#[derive(Debug)]
pub(super) struct Reaper {
    pipe: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

impl Reaper {
    /// Starts the reaper.
    pub(super) fn start() -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/bin/sh")
            .args(["-c", SCRIPT])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Self {
            pipe: Mutex::new(pipe),
            child: Mutex::new(child),
        })
    }

    /// The task whose process group is `group` started: kill it if the peer dies.
    pub(super) fn watch(&self, group: Pid) {
        self.tell(&format!("+{group}\n"));
    }

    /// The attempt in `group` is over (its group was killed): forget it.
    pub(super) fn forget(&self, group: Pid) {
        self.tell(&format!("-{group}\n"));
    }

    /// Writes one line (shorter than a pipe's atomic write, so lines from several tasks never
    /// mix). A reaper that is gone is reported once and then left alone.
    fn tell(&self, line: &str) {
        let Ok(mut pipe) = self.pipe.lock() else {
            return;
        };
        if let Some(writer) = pipe.as_mut()
            && let Err(e) = writer.write_all(line.as_bytes())
        {
            tracing::warn!(error = %e, "the reaper is gone: task processes may outlive this peer");
            *pipe = None;
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing the pipe is the peer's death as the reaper sees it: it kills what is left and
        // exits; wait for it so it does not stay a zombie.
        if let Ok(mut pipe) = self.pipe.lock() {
            pipe.take();
        }
        if let Ok(mut child) = self.child.lock() {
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn alive(pid: Pid) -> bool {
        nix::sys::signal::kill(pid, None).is_ok()
    }

    fn own_group(seconds: &str) -> Child {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg(seconds)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn pid(child: &Child) -> Pid {
        Pid::from_raw(i32::try_from(child.id()).unwrap())
    }

    #[test]
    fn the_groups_it_watches_die_when_its_pipe_closes_and_the_forgotten_do_not() {
        let reaper = Reaper::start().unwrap();
        let (mut kept, mut forgotten) = (own_group("30"), own_group("30"));
        reaper.watch(pid(&kept));
        reaper.watch(pid(&forgotten));
        reaper.forget(pid(&forgotten));
        drop(reaper);
        // The reaper has exited (its drop waited for it): the kept group was killed.
        let until = Instant::now() + Duration::from_secs(5);
        while kept.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "the watched group still runs");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(alive(pid(&forgotten)), "a forgotten group was killed");
        forgotten.kill().unwrap();
        forgotten.wait().unwrap();
    }
}
