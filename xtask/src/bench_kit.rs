//! What every benchmark scenario shares: the contenders' binaries
//! ([`Tools`]), a contender process with timestamped output ([`Proc`]),
//! reaping what contenders leave behind, reading a process's RSS and CPU,
//! and the samples table ([`Results`]) with its statistics.
//!
//! Owns: those pieces. Must not touch: any scenario (`bench`, `echo_bench`,
//! `worker_bench`, `frontend_bench` use this; it uses none of them) or the
//! report.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) struct Tools {
    pub lk_go: PathBuf,
    /// plugins/echo, release build.
    pub echo: PathBuf,
    pub plugins: PathBuf,
    pub python_sdk: PathBuf,
    pub python_agents: PathBuf,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A contender process whose output lines arrive timestamped.
pub(crate) struct Proc {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    pub(crate) seen: Vec<String>,
    /// Lines containing `count_marker` seen so far, matched or not.
    pub(crate) counted: usize,
    pub(crate) count_marker: Option<&'static str>,
}

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: the agent's worker forks a job process,
            // and killing the group ends both.
            .process_group(0);
        let mut child = cmd.spawn().context("spawn contender")?;
        SPAWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id() as i32);
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            counted: 0,
            count_marker: None,
        })
    }

    /// Waits for a line containing `needle`; returns its arrival and text.
    pub(crate) fn wait_for(&mut self, needle: &str, within: Duration) -> Option<(Instant, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    if self.count_marker.is_some_and(|m| line.contains(m)) {
                        self.counted += 1;
                    }
                    if line.contains(needle) {
                        return Some((at, line));
                    }
                    // The last 200 lines, for error messages.
                    if self.seen.len() >= 200 {
                        self.seen.remove(0);
                    }
                    self.seen.push(line);
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits up to `within` for the process to exit on its own.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the contender's whole process group and reaps it (also what
    /// dropping a `Proc` does, on every path, early returns included).
    pub(crate) fn kill(self) {
        drop(self)
    }

    pub(crate) fn interrupt_and_wait(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pgid = self.child.id() as i32;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Process groups of every contender spawned (each `Proc` leads its own).
static SPAWNED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Collects every exited child of the bench (and, as the bench is a
/// child subreaper, every orphaned grandchild): without this the Python
/// contenders' forkserver children stayed behind as defunct processes.
fn reap_exited() -> usize {
    let mut reaped = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on our own children.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped += 1;
    }
}

/// Processes of group `pgid` that still run (zombies are not counted:
/// they only wait to be reaped).
fn running_in_group(pgid: i32) -> Vec<String> {
    let Ok(out) = Command::new("ps")
        .args(["-o", "pid=,stat=,args=", "-g", &pgid.to_string()])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|st| !st.starts_with('Z'))
        })
        .map(|l| l.trim().to_string())
        .collect()
}

/// Makes the bench the reaper of its contenders' orphans (see
/// [`reap_all`]).
pub(crate) fn become_subreaper() {
    // SAFETY: prctl with a constant option; failure leaves init as reaper.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Kills any contender process group still running (a grandchild that
/// outlived its leader), reaps every exited one, and says how many groups
/// were spawned and how many had to be killed.
pub(crate) fn reap_all() -> (usize, usize) {
    let groups = std::mem::take(&mut *SPAWNED.lock().unwrap_or_else(|e| e.into_inner()));
    reap_exited();
    let mut left = 0;
    for pgid in &groups {
        let running = running_in_group(*pgid);
        if !running.is_empty() {
            left += 1;
            eprintln!(
                "bench: process group {pgid} outlived its leader: {}",
                running.join("; ")
            );
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
    if left > 0 {
        std::thread::sleep(Duration::from_millis(200));
        reap_exited();
    }
    (groups.len(), left)
}

/// A number after `key` in a line (`unix_us=123`, `"unix_us":123`, or the
/// token after a word).
pub(crate) fn field(line: &str, key: &str) -> Option<u64> {
    let i = line.find(key)? + key.len();
    let rest = line[i..].trim_start_matches(['=', ':', '"', ' ']);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// VmHWM (peak RSS) of a process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// user + system CPU seconds of a process so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that closes the command name; utime, stime are
    // fields 14 and 15 of the whole line.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Clock ticks per second for /proc times (asked once of getconf).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Samples per scenario and contender.
#[derive(Default)]
pub(crate) struct Results {
    /// scenario → contender → samples
    pub(crate) samples: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// scenario → contender → runs that produced no sample
    pub(crate) missing: BTreeMap<String, BTreeMap<String, usize>>,
    pub(crate) units: BTreeMap<String, &'static str>,
}

impl Results {
    pub(crate) fn add(
        &mut self,
        scenario: &str,
        unit: &'static str,
        contender: &str,
        v: Option<f64>,
    ) {
        self.units.insert(scenario.to_string(), unit);
        match v {
            Some(v) => self
                .samples
                .entry(scenario.into())
                .or_default()
                .entry(contender.into())
                .or_default()
                .push(v),
            None => {
                *self
                    .missing
                    .entry(scenario.into())
                    .or_default()
                    .entry(contender.into())
                    .or_default() += 1
            }
        }
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile.
pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub(crate) fn lk_go_job(tools: &Tools, plugin: &str, room: &str, url: &str) -> Command {
    let mut c = Command::new(&tools.lk_go);
    c.args(["job", "run-script"])
        .arg(tools.plugins.join(plugin))
        .args(["--room", room, "--url", url, "--log-format", "json"]);
    c
}

pub(crate) const READY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn defunct_children() -> usize {
        let me = std::process::id().to_string();
        let out = Command::new("ps")
            .args(["-o", "stat=", "--ppid", &me])
            .output()
            .expect("ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with('Z'))
            .count()
    }

    /// A contender's child that outlives its leader (the Python agents'
    /// forkserver children) used to stay behind defunct at the end of the
    /// bench: orphans went to an init that does not reap them. The bench is
    /// their reaper now, and `reap_all` collects them.
    #[test]
    fn orphans_of_a_contender_are_reaped() {
        become_subreaper();
        use std::os::unix::process::CommandExt;
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 0.3 & exit 0"])
            .process_group(0)
            .spawn()
            .expect("sh");
        SPAWNED.lock().unwrap().push(leader.id() as i32);
        leader.wait().unwrap();
        // The orphan (reparented to us) exits and waits to be reaped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while defunct_children() == 0 {
            assert!(
                Instant::now() < deadline,
                "the orphan never became our child"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (spawned, left) = reap_all();
        assert_eq!((spawned, left), (1, 0));
        assert_eq!(defunct_children(), 0, "reaped");
    }
}
