//! The plugin file under a running worker: deploys replace it (an atomic
//! rename), remove it, or put a broken build in its place.
//!
//! Owns: noticing that the file at the plugin path changed (device, inode,
//! size, modification time), validating a new file in a child process
//! (`lk-go plugin inspect`: the loader's own checks, exit codes 65/66/80–84,
//! so a broken library's constructors run there, not in the worker), and
//! the verdict: may a job start from this file now. Must not touch: job
//! decisions and the status sent to the server (`worker::mod` asks
//! [`PluginFile::usable_now`] and reports full while it is false).
//!
//! Running jobs are not affected by a replacement: each job process mapped
//! the file it loaded, and a rename leaves that inode alive.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest a validation may take (a library whose constructors hang is
/// invalid).
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which file is at the path (a rename or rewrite changes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    // Readable, as the loader needs it.
    std::fs::File::open(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    })
}

/// Whether jobs may start from the file at the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginState {
    Ok,
    /// A new file is being validated: no job starts from it yet.
    Validating,
    /// Gone or unreadable.
    Missing,
    /// It does not load or validate: the loader's one-line error and exit
    /// code.
    Invalid(String),
}

impl PluginState {
    pub fn name(&self) -> &'static str {
        match self {
            PluginState::Ok => "ok",
            PluginState::Validating => "validating",
            PluginState::Missing => "missing",
            PluginState::Invalid(_) => "invalid",
        }
    }
}

/// A change [`PluginFile::poll`] saw, for the worker to log and report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginChange {
    Validating,
    /// The new file validated; its `lk-go plugin inspect` description.
    Validated(String),
    Missing,
    Invalid(String),
}

type Verdict = Result<String, String>;

#[derive(Debug)]
pub struct PluginFile {
    path: PathBuf,
    /// `lk-go` (runs `plugin inspect`).
    validator: PathBuf,
    /// The file that validated last.
    good: Option<FileId>,
    /// The file the current verdict is about.
    seen: Option<FileId>,
    state: PluginState,
    in_flight: Option<(FileId, oneshot::Receiver<Verdict>)>,
}

impl PluginFile {
    /// For a file the caller has just validated (the worker loads the
    /// plugin once before it registers).
    pub fn validated(path: PathBuf, validator: PathBuf) -> PluginFile {
        let id = file_id(&path);
        PluginFile {
            path,
            validator,
            good: id,
            seen: id,
            state: if id.is_some() {
                PluginState::Ok
            } else {
                PluginState::Missing
            },
            in_flight: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> &PluginState {
        &self.state
    }

    /// A job may start from the file at the path right now: it is the file
    /// that validated last. Checked when an offer arrives, not only at the
    /// last poll: a file replaced in between is not used unvalidated.
    pub fn usable_now(&self) -> bool {
        self.state == PluginState::Ok && file_id(&self.path).is_some_and(|id| Some(id) == self.good)
    }

    /// Looks at the file (call it every tick): starts validating a new
    /// file, collects a finished validation. Returns what changed.
    pub fn poll(&mut self) -> Option<PluginChange> {
        let now = file_id(&self.path);
        // A finished validation counts only for the file it validated.
        if let Some((id, rx)) = &mut self.in_flight {
            let id = *id;
            match rx.try_recv() {
                Ok(verdict) => {
                    self.in_flight = None;
                    if now == Some(id) {
                        self.seen = Some(id);
                        return Some(match verdict {
                            Ok(desc) => {
                                self.good = Some(id);
                                self.state = PluginState::Ok;
                                PluginChange::Validated(desc)
                            }
                            Err(e) => {
                                self.state = PluginState::Invalid(e.clone());
                                PluginChange::Invalid(e)
                            }
                        });
                    }
                }
                Err(oneshot::error::TryRecvError::Empty) if now == Some(id) => return None,
                Err(oneshot::error::TryRecvError::Empty) => self.in_flight = None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.in_flight = None;
                }
            }
        }
        match now {
            None => {
                self.seen = None;
                if self.state != PluginState::Missing {
                    self.state = PluginState::Missing;
                    return Some(PluginChange::Missing);
                }
                None
            }
            Some(id) if Some(id) == self.seen && self.in_flight.is_none() => None,
            Some(id) if Some(id) == self.good => {
                // The good file is back (e.g. a rollback renamed it in).
                self.seen = Some(id);
                self.state = PluginState::Ok;
                Some(PluginChange::Validated("the last validated file".into()))
            }
            Some(id) => {
                if self.in_flight.is_none() {
                    self.in_flight = Some((id, self.spawn_validation()));
                }
                if self.state != PluginState::Validating {
                    self.state = PluginState::Validating;
                    return Some(PluginChange::Validating);
                }
                None
            }
        }
    }

    /// Runs `lk-go plugin inspect PATH` with the worker's secrets removed
    /// from its environment; the verdict arrives on the receiver.
    fn spawn_validation(&self) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        let mut cmd = tokio::process::Command::new(&self.validator);
        cmd.args(["plugin", "inspect"])
            .arg(&self.path)
            .env_remove("LIVEKIT_API_SECRET")
            .env_remove("LIVEKIT_TOKEN")
            .env("LK_GO_LOG", "error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        tokio::spawn(async move {
            let verdict = match cmd.spawn() {
                Err(e) => Err(format!("could not run lk-go plugin inspect: {e}")),
                Ok(child) => {
                    match tokio::time::timeout(VALIDATE_TIMEOUT, child.wait_with_output()).await {
                        Err(_) => Err(format!(
                            "loading it took longer than {} s (a constructor that hangs?)",
                            VALIDATE_TIMEOUT.as_secs()
                        )),
                        Ok(Err(e)) => Err(format!("lk-go plugin inspect failed: {e}")),
                        Ok(Ok(out)) if out.status.success() => {
                            let text = String::from_utf8_lossy(&out.stdout);
                            let field = |k: &str| {
                                text.lines()
                                    .find_map(|l| l.strip_prefix(k))
                                    .unwrap_or("?")
                                    .trim()
                                    .to_string()
                            };
                            Ok(format!(
                                "{} {} (ABI {})",
                                field("name:"),
                                field("version:"),
                                field("abi:")
                            ))
                        }
                        Ok(Ok(out)) => {
                            let err = String::from_utf8_lossy(&out.stderr);
                            let line = err
                                .lines()
                                .rev()
                                .find(|l| !l.trim().is_empty())
                                .unwrap_or("")
                                .trim()
                                .trim_start_matches("lk-go: error: ")
                                .to_string();
                            let code = out
                                .status
                                .code()
                                .map(|c| format!("exit {c}"))
                                .unwrap_or_else(|| "killed".into());
                            Err(format!("{line} ({code})"))
                        }
                    }
                }
            };
            let _ = tx.send(verdict);
        });
        rx
    }
}
