//! What a job process uses: resident memory and CPU time, read from Linux
//! procfs (`/proc/<pid>/statm`, `/proc/<pid>/stat`, proc(5)).
//!
//! Owns: reading and parsing those files. Must not touch: what the worker
//! decides from the figures (warn, shut down, kill: `worker::mod`), metrics
//! or the endpoint.
//!
//! Why RSS and not PSS: RSS is one O(1) read per job (statm); PSS
//! (`smaps_rollup`, what livekit-agents samples) walks the process's page
//! tables, milliseconds for a large process, and a job process shares
//! little with its siblings (each is exec'd, not forked from a warm
//! parent: only the lk-go binary's and libraries' text, a few MB, is
//! counted in every job). Children a plugin starts are not counted.

/// One sample of a job process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
}

/// Samples process `pid`; `None` when it is gone (or not readable: another
/// user's process, no procfs).
pub fn sample(pid: u32) -> Option<ProcessUsage> {
    if pid == 0 {
        return None;
    }
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcessUsage {
        rss_bytes: rss_pages(&statm)? * page_size(),
        cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks_per_second(),
    })
}

/// The second field of statm: resident pages.
fn rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15 of stat), in clock ticks. The command
/// name (field 2) is in parentheses and may hold spaces and `)`: fields
/// are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the command come field 3 (state) .. ; utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant; no memory is involved.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: as above.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis in it.
        let stat =
            "4242 (lk (go) x) S 1 4242 4242 0 -1 4194560 1190 0 0 0 37 12 0 0 20 0 3 0 1000 1 2";
        assert_eq!(cpu_ticks(stat), Some(49));
        assert_eq!(rss_pages("5000 1234 300 10 0 900 0"), Some(1234));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).expect("own /proc entry");
        assert!(me.rss_bytes > 1024 * 1024, "{me:?}");
        assert!(sample(0).is_none());
    }
}
