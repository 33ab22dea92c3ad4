//! What this machine has — CPU cores, memory, free disk under the data directory — read once at
//! start, as the default capacity a peer advertises. Memory and disks are read with `sysinfo`
//! (in a container with a memory limit, the limit); cores are those this process may use. A
//! figure that cannot be read is zero (the peer then takes no task that asks for that resource),
//! and the reason is logged.

use std::path::Path;

use sysinfo::{DiskRefreshKind, Disks, MemoryRefreshKind, System};
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

/// The cores this process may use (its CPU affinity and cgroup quota), in thousandths.
pub fn cpus_milli() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .saturating_mul(1000)
}

/// Total memory, or the memory limit of this process's cgroup if that is lower (a container's).
pub fn memory_bytes() -> u64 {
    let mut system = System::new();
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    let total = system.total_memory();
    if total == 0 {
        tracing::warn!("cannot read this machine's memory: memory capacity is 0 (set --memory)");
        return 0;
    }
    match system.cgroup_limits() {
        Some(limits) if limits.total_memory > 0 && limits.total_memory < total => {
            limits.total_memory
        }
        _ => total,
    }
}

/// Free space for an unprivileged user on the file system holding `path` (its nearest existing
/// ancestor, if it does not exist yet): the disk mounted deepest above it, as `sysinfo` lists
/// them; a file system it does not list (a tmpfs, a container's overlay) is asked directly.
pub fn disk_free(path: &Path) -> u64 {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let existing = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage());
    let mounted = disks
        .list()
        .iter()
        .filter(|d| existing.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    if let Some(disk) = mounted
        && disk.available_space() > 0
    {
        return disk.available_space();
    }
    match nix::sys::statvfs::statvfs(&existing) {
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
