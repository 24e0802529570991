//! The plugin's stdout and stderr: pipes the host owns and forwards.
//!
//! Owns: [`own_plugin_stdio`] — fds 1 and 2 become the write ends of two
//! pipes; a thread per pipe forwards what arrives to the process's real
//! stdout or stderr (kept on other descriptors), and [`drain`] gives them
//! a bounded time at exit.
//!
//! Why: a plugin's language runtime may die on a write that fails with
//! EPIPE. A Go c-shared library that does not ask for SIGPIPE (one written
//! without the SDK) is killed by the Go runtime when fd 1 or 2 is a closed
//! pipe, and takes lk-go with it (exit 141). The pipes here always have a
//! reader, so a plugin's write never fails that way; when the real stdout
//! is closed, the forwarder drops the bytes (counted) instead. Host log
//! lines do not go through the pipe: the log sink writes to the real
//! stderr ([`real_stderr`]).
//!
//! Must not touch: the log format or the job.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static REAL_STDERR: AtomicI32 = AtomicI32::new(2);
static DROPPED_BYTES: AtomicU64 = AtomicU64::new(0);
static FORWARDERS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// The descriptor the process's real stderr is on (2 until
/// [`own_plugin_stdio`] ran).
pub fn real_stderr() -> RawFd {
    REAL_STDERR.load(Ordering::Acquire)
}

/// Bytes a plugin wrote to stdout or stderr that could not be passed on
/// (the real one was closed or failing).
pub fn dropped_bytes() -> u64 {
    DROPPED_BYTES.load(Ordering::Relaxed)
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Puts pipes under fds 1 and 2 (see the module doc). Call once, early,
/// before any plugin is loaded and before anything logs.
pub fn own_plugin_stdio() -> std::io::Result<()> {
    for target in [1, 2] {
        // SAFETY: plain descriptor calls on our own fds; every result is checked.
        unsafe {
            let real = cvt(libc::fcntl(target, libc::F_DUPFD_CLOEXEC, 3))?;
            let mut fds = [0; 2];
            cvt(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
            let (read_end, write_end) = (fds[0], fds[1]);
            cvt(libc::dup2(write_end, target))?;
            libc::close(write_end);
            if target == 2 {
                REAL_STDERR.store(real, Ordering::Release);
            }
            let mut from = std::fs::File::from_raw_fd(read_end);
            let mut to = std::fs::File::from_raw_fd(real);
            let name = if target == 1 {
                "lk-go-stdout"
            } else {
                "lk-go-stderr"
            };
            let t = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    let mut broken = false;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if broken || to.write_all(&buf[..n]).is_err() {
                            // Keep reading: the plugin's writes must not fail.
                            broken = true;
                            DROPPED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                })?;
            FORWARDERS.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
    }
    Ok(())
}

/// At exit: closes fds 1 and 2 (so the forwarders see the end once the
/// pipes are empty) and waits for them until `deadline`.
pub fn drain(within: Duration) {
    let forwarders = std::mem::take(&mut *FORWARDERS.lock().unwrap_or_else(|e| e.into_inner()));
    if forwarders.is_empty() {
        return;
    }
    // SAFETY: /dev/null over our own fds 1 and 2 closes the pipes' write ends.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
    let deadline = Instant::now() + within;
    for t in forwarders {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
