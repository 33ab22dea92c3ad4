//! What a process uses, read from `/proc`: its CPU time (`/proc/PID/stat`), which the benchmark
//! divides by the tasks of a workload to report CPU per task, and its resident memory
//! (`/proc/PID/status`). Linux only; elsewhere nothing is known.

use std::time::Duration;

/// User and system time of process `pid`, all its threads, plus that of the children it has
/// waited for (a peer's task processes). `None` if the process is gone or the file cannot be
/// read.
pub fn of_process(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = ticks_in(&stat)?;
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_second()?))
}

/// The resident memory of process `pid` in bytes (`VmRSS`), if it can be read.
pub fn rss_of_process(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    rss_in(&status)
}

/// `VmRSS` (in kB in the file) in bytes, from the text of `/proc/PID/status`.
fn rss_in(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime + cutime + cstime, in clock ticks, from the text of `/proc/PID/stat`. The
/// process name (field 2) is in parentheses and may hold spaces, so fields are counted from the
/// last `)`: the state is field 3, utime field 14.
fn ticks_in(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field n (1-based, as proc(5) numbers them) is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    let sum = field(14)? + field(15)? + field(16)? + field(17)?;
    u64::try_from(sum).ok()
}

fn ticks_per_second() -> Option<f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (ticks > 0).then_some(ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_from_the_end_of_the_name() {
        let stat = "4242 (task swarm) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 30 7 3 20 0 9 0 \
                    100 0 0";
        assert_eq!(ticks_in(stat), Some(150 + 30 + 7 + 3));
        assert_eq!(ticks_in("4242 (short) S 1"), None);
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        assert_eq!(rss_in("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048 * 1024));
        assert_eq!(rss_in("Name:\tx\n"), None);
        assert!(rss_of_process(std::process::id()).is_some_and(|b| b > 0));
    }

    #[test]
    fn a_busy_process_is_seen_using_cpu() {
        // Work until a clock tick has been counted, for at most 5 s of wall time.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut spent = 0u64;
        let used = loop {
            spent = (0..100_000u64).fold(spent, |a, x| a.wrapping_add(x.wrapping_mul(x) % 7));
            let used = of_process(std::process::id()).expect("our own /proc entry");
            if used > Duration::ZERO || std::time::Instant::now() > deadline {
                break used;
            }
        };
        assert!(
            used > Duration::ZERO,
            "no CPU counted after 5 s of work ({spent})"
        );
    }
}
