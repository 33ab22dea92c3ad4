//! Ties a task's processes to the life of the peer that started them: when the peer dies, however
//! it dies (SIGKILL included), the task's program and everything it started die with it, so no
//! work goes on that nobody will record and no lease fences.
//!
//! How: the process the executor starts is a small supervisor, not the task's program. Between
//! fork and exec (in `pre_exec`), the child asks the kernel to signal it when the peer dies
//! (`PR_SET_PDEATHSIG`), with a handler that kills its whole process group; then it forks again:
//! the grandchild goes on to exec the program, in the same process group, while the supervisor
//! closes every file it inherited (so the peer sees the program's pipes end when the program's
//! do, and its spawn is not held up), waits for the program and exits as the program did (the
//! same code, or the same signal). A timeout or an abort still kills the whole group, supervisor
//! included, as before.
//!
//! Two limits, both the kernel's: the signal comes when the *thread* that started the task ends,
//! so tasks must be started from threads that live as long as the peer's runtime (the runtime's
//! workers do; a blocking pool's threads do not); and a program that moves itself out of its
//! process group (`setsid`, a daemon) escapes the group kill.
//!
//! This is the one module of the crate allowed `unsafe`: after a fork in a threaded program only
//! async-signal-safe calls may be made, which here means raw system calls; nothing in it
//! allocates, locks or touches the runtime.
#![allow(unsafe_code)]

use std::io;

/// The signal the kernel sends the supervisor when the peer dies.
const PEER_DIED: libc::c_int = libc::SIGTERM;

/// Makes `command` start its program under a supervisor that ends its process group when this
/// process dies. The command must also be put in a process group of its own.
pub(super) fn tie_to_peer(command: &mut tokio::process::Command) {
    let peer = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: `supervise` makes only async-signal-safe system calls (no allocation, no locks),
    // as a `pre_exec` closure must.
    unsafe {
        command.pre_exec(move || supervise(peer));
    }
}

/// Runs in the child between fork and exec. Returns (in the grandchild, which then execs the
/// program) or never returns (in the supervisor).
fn supervise(peer: libc::pid_t) -> io::Result<()> {
    // SAFETY: raw system calls on values of this process; see the module doc.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = end_the_group as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(PEER_DIED, &action, std::ptr::null_mut()) != 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, PEER_DIED as libc::c_ulong, 0, 0, 0) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The peer may have died before the request above: then nobody would send the signal.
        if libc::getppid() != peer {
            end_the_group(PEER_DIED);
        }
        let supervisor = libc::getpid();
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // The program: back to the default action, and killed if its supervisor is.
                libc::signal(PEER_DIED, libc::SIG_DFL);
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != supervisor {
                    libc::_exit(127);
                }
                Ok(())
            }
            program => wait_and_exit_as(program),
        }
    }
}

/// The supervisor's life after the fork: close what it inherited, wait for the program, and end
/// as it ended.
///
/// # Safety
/// Only in the supervisor, after the fork.
unsafe fn wait_and_exit_as(program: libc::pid_t) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        let mut status: libc::c_int = 0;
        loop {
            let waited = libc::waitpid(program, &mut status, 0);
            if waited == program {
                break;
            }
            if waited == -1 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let signal = libc::WTERMSIG(status);
        libc::signal(signal, libc::SIG_DFL);
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal)
    }
}

/// The handler for [`PEER_DIED`]: kills the supervisor's process group, itself included.
extern "C" fn end_the_group(_: libc::c_int) {
    // SAFETY: `kill` is async-signal-safe; 0 names the caller's own process group.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}
