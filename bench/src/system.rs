//! What the generator needs from the operating system: enough file
//! descriptors, the server's resident memory, and CPU time used.

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

/// Clock ticks per second of /proc's CPU times (`USER_HZ`): 100 on every
/// Linux architecture the bench runs on (the kernel's ABI, whatever `HZ` is).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) process `pid` has used so far, in seconds, from
/// /proc/{pid}/stat (fields 14 and 15); `None` when it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

/// CPU time of the generator itself (see [`cpu_seconds`]).
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

/// utime + stime of a /proc/{pid}/stat line, in seconds. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted
/// from the last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is the first; utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_past_a_command_with_spaces() {
        let stat =
            "4242 (my server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 1 1";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("4242 (x) S 1"), None);
        assert!(own_cpu_seconds().is_some());
    }
}
