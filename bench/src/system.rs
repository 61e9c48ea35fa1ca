//! What the generator needs from the operating system: enough file
//! descriptors, and the server's resident memory.

/// Raises the open-file soft limit as far as the hard limit allows; warns
/// clearly when that is below what the run needs.
pub fn raise_open_files(needed: u64) -> u64 {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            eprintln!("warning: cannot raise the open-file limit (RLIMIT_NOFILE): {error}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    if limit < needed {
        eprintln!(
            "warning: the open-file limit is {limit}, but this run needs about {needed}; \
             connections past it will fail. Raise it (e.g. `ulimit -n {needed}` as root, \
             or the hard limit in /etc/security/limits.conf)."
        );
    }
    limit
}

/// Resident set size of process `pid`, in bytes (VmRSS in /proc/{pid}/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
