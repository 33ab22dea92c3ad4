//! What this machine has — CPU cores, memory, free disk under the data directory — read once at
//! start, as the default capacity a peer advertises. A figure that cannot be read is zero (the peer
//! then takes no task that asks for that resource), and the reason is logged.

use std::path::Path;

use taskswarm_protocol::Resources;

/// The machine's capacity: every core, all memory, the free disk space at `data_dir` (or at the
/// working directory).
pub fn capacity(data_dir: Option<&Path>) -> Resources {
    Resources {
        cpu_milli: cpus_milli(),
        memory: memory_bytes(),
        disk: disk_free(data_dir.unwrap_or(Path::new("."))),
    }
}

/// The cores this process may use, in thousandths.
pub fn cpus_milli() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .saturating_mul(1000)
}

/// Total memory, from `/proc/meminfo`.
pub fn memory_bytes() -> u64 {
    let text = match std::fs::read_to_string("/proc/meminfo") {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /proc/meminfo: memory capacity is 0 (set --memory)");
            return 0;
        }
    };
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    match kib {
        Some(kib) => kib.saturating_mul(1024),
        None => {
            tracing::warn!("no MemTotal in /proc/meminfo: memory capacity is 0 (set --memory)");
            0
        }
    }
}

/// Free space for an unprivileged user on the file system holding `path` (its nearest existing
/// ancestor, if it does not exist yet).
pub fn disk_free(path: &Path) -> u64 {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    match nix::sys::statvfs::statvfs(existing) {
        Ok(stat) => stat.blocks_available().saturating_mul(stat.fragment_size()),
        Err(e) => {
            tracing::warn!(path = %existing.display(), error = %e, "cannot read free disk space: disk capacity is 0 (set --disk)");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_cores_memory_and_disk() {
        let have = capacity(Some(Path::new("/nonexistent/taskswarm/data")));
        assert!(have.cpu_milli >= 1000);
        assert!(have.memory > 0);
        assert!(have.disk > 0);
    }
}
