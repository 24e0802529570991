//! Helpers shared by the integration tests and by `cargo xtask`.
//!
//! Owns: finding the workspace's build outputs (the `lk-go` binary, the
//! plugins `cargo xtask build-plugins` puts in `target/plugins/`), starting
//! and stopping local `livekit-server` instances on free loopback ports, and
//! running the CLI with a safety-net timeout.
//!
//! Every helper fails loudly (panics with what to run) when something it needs
//! is missing: a test that needs the server or a plugin never passes without it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The livekit-server version tests and demos use.
pub const LIVEKIT_SERVER_VERSION: &str = "v1.13.5";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where `cargo xtask build-plugins` puts every example and fixture plugin.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("LK_GO_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("plugins"))
}

/// Path of plugin `lib<name>.so`; panics with the fix if it was not built.
pub fn plugin(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("lib{name}.so"));
    assert!(
        p.is_file(),
        "plugin {} is missing; run `cargo xtask build-plugins` (needs cc and go) first",
        p.display()
    );
    p
}

/// The `lk-go` binary; panics with the fix if it was not built.
pub fn lk_go_bin() -> PathBuf {
    let p = std::env::var_os("LK_GO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug").join("lk-go"));
    assert!(
        p.is_file(),
        "{} is missing; run `cargo build -p lk-go` first",
        p.display()
    );
    p
}

/// Runs `lk-go` with `args`, killing it (and panicking) after `limit`.
pub fn run_lk_go(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(lk_go_bin());
    cmd.args(args)
        .env_remove("LIVEKIT_URL")
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .env_remove("LIVEKIT_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn lk-go");
    wait_output(child, limit)
}

/// Waits for `child` up to `limit`, then kills it and panics.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut buf);
        }
        buf
    });
    let t_err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
            panic!("process did not finish within {limit:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port on 127.0.0.1")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on 127.0.0.1")
}

/// `GET /` on the server's HTTP port; returns the status code.
pub fn http_status(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// The livekit-server binary xtask provisioned (`LIVEKIT_SERVER_BIN`), or
/// `livekit-server` on PATH, or the xtask cache; panics with the fix.
pub fn livekit_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LIVEKIT_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "LIVEKIT_SERVER_BIN={} does not exist",
            p.display()
        );
        return p;
    }
    let cached = target_dir()
        .join("livekit")
        .join("bin")
        .join("livekit-server");
    if cached.is_file() {
        return cached;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("livekit-server");
            if c.is_file() {
                return c;
            }
        }
    }
    panic!("livekit-server not found; run the tests with `cargo xtask itest`, which installs it")
}

/// A livekit-server on loopback with free ports, stopped when dropped.
pub struct LiveKitServer {
    pub http_port: u16,
    /// ICE/TCP and ICE/UDP ports (to start a replacement on the same ports).
    pub rtc_ports: (u16, u16),
    pub url: String,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl LiveKitServer {
    /// Starts a server from `xtask/livekit.yaml` with fresh ports and waits
    /// until `GET /` answers 200 (at most 30 s).
    pub fn start() -> LiveKitServer {
        Self::start_with_ports(free_tcp_port(), free_tcp_port(), free_udp_port())
    }

    /// Starts a server on livekit-server's standard ports (7880 signal,
    /// 7881 ICE/TCP, 7882 ICE/UDP): what `cargo xtask livekit` runs for a
    /// person, so `lk-go`'s default URL reaches it.
    pub fn start_on_standard_ports() -> LiveKitServer {
        Self::start_with_ports(7880, 7881, 7882)
    }

    /// Starts a server on the given ports (e.g. a restart on the ports of a
    /// killed one: `start_with_ports(old.http_port, old.rtc_ports.0,
    /// old.rtc_ports.1)`).
    pub fn start_with_ports(http_port: u16, tcp_port: u16, udp_port: u16) -> LiveKitServer {
        Self::start_configured(http_port, tcp_port, udp_port, None)
    }

    /// Starts one node of a multi-node deployment: free ports, sharing the
    /// Redis at 127.0.0.1:`redis_port` with the other nodes
    /// (livekit-server's `redis.address`; rooms and workers are then
    /// routed across nodes). [`LiveKitServer::node_id`] names it.
    pub fn start_node(redis_port: u16) -> LiveKitServer {
        Self::start_configured(
            free_tcp_port(),
            free_tcp_port(),
            free_udp_port(),
            Some(redis_port),
        )
    }

    /// The node id (`ND_…`) the server's log gives at start.
    pub fn node_id(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("starting LiveKit server"))
            .and_then(|l| l.split("\"nodeID\": \"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    }

    fn start_configured(
        http_port: u16,
        tcp_port: u16,
        udp_port: u16,
        redis_port: Option<u16>,
    ) -> LiveKitServer {
        let bin = livekit_server_bin();
        let template = std::fs::read_to_string(workspace_root().join("xtask").join("livekit.yaml"))
            .expect("read xtask/livekit.yaml");
        let mut config = template
            .replace("port: 7880", &format!("port: {http_port}"))
            .replace("tcp_port: 7881", &format!("tcp_port: {tcp_port}"))
            .replace("udp_port: 7882", &format!("udp_port: {udp_port}"));
        assert!(
            config.contains(&format!("port: {http_port}")),
            "livekit.yaml lost its port line"
        );
        if let Some(redis) = redis_port {
            config.push_str(&format!("redis:\n  address: 127.0.0.1:{redis}\n"));
        }
        let dir = target_dir().join("livekit").join("run");
        std::fs::create_dir_all(&dir).expect("create target/livekit/run");
        let config_path = dir.join(format!("livekit-{http_port}.yaml"));
        std::fs::write(&config_path, config).expect("write server config");
        let log_path = dir.join(format!("livekit-{http_port}.log"));
        let log = std::fs::File::create(&log_path).expect("create server log");
        let mut command = Command::new(&bin);
        command
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // The server dies with whoever started it (a test, `cargo xtask
        // livekit` stopped with SIGTERM or killed), instead of holding its
        // ports for the next run. PR_SET_PDEATHSIG follows the starting
        // thread, which owns the server until it drops it.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let mut server = LiveKitServer {
            http_port,
            rtc_ports: (tcp_port, udp_port),
            url: format!("ws://127.0.0.1:{http_port}"),
            log_path,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_status(http_port) == Some(200) {
                return server;
            }
            if let Some(c) = server.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "livekit-server exited at start ({status}); log: {}",
                        server.log_path.display()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "livekit-server did not become ready within 30 s; log: {}",
                server.log_path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, as a crash would; returns once the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Blocks until the process exits.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// Its exit status, if it has exited (never blocks).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM (the server closes its rooms and exits), a second SIGTERM
    /// after a second (livekit-server v1.13.5: "force"; a server stopped
    /// right after it started otherwise waits on its start-up), then
    /// SIGKILL after `grace`; returns once the process is gone, with how it
    /// ended.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let term = |c: &Child| {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        };
        term(&c);
        let started = Instant::now();
        let deadline = started + grace;
        let mut forced = false;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if !forced && started.elapsed() >= Duration::from_secs(1) {
                forced = true;
                term(&c);
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LiveKitServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pinned official LiveKit Python SDK, the interop peer nobody here wrote.
pub const PYTHON_LIVEKIT_PIN: &str = "livekit==1.2.1";

/// The venv's python with the pinned `livekit` package (`LK_GO_PYTHON`, or
/// `target/pyenv/bin/python`); panics with the fix when missing.
pub fn python_bin() -> PathBuf {
    let p = std::env::var_os("LK_GO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("pyenv").join("bin").join("python"));
    assert!(
        p.is_file(),
        "{} is missing; run the tests with `cargo xtask itest`, which creates the venv with {PYTHON_LIVEKIT_PIN}",
        p.display()
    );
    p
}

/// A python script of tests/python/.
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests").join("python").join(name)
}

/// A join token for the dev key/secret the test servers use.
pub fn dev_token(room: &str, identity: &str) -> String {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    AccessToken::with_api_key("devkey", "secret")
        .with_identity(identity)
        .with_name(identity)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_string(),
            ..Default::default()
        })
        .to_jwt()
        .expect("mint a dev token")
}

/// Joins `room` on a dev server (devkey/secret) as `identity` through the
/// lk-go library, subscribing to nothing: the extra participant that tests,
/// the demo and the benchmarks bring in. It joins as lk-go mints jobs'
/// tokens, i.e. as an *agent*; see [`join_dev_room_as_user`].
pub async fn join_dev_room(
    url: &str,
    room: &str,
    identity: &str,
) -> Result<lk_go::room::Room, lk_go::room::ConnectError> {
    join_with(
        url,
        room,
        identity,
        lk_go::room::signal::Credentials::KeySecret {
            key: "devkey".into(),
            secret: "secret".into(),
        },
    )
    .await
}

/// Like [`join_dev_room`], as a regular participant (kind "standard", like
/// a user's browser, with [`dev_token`]). Agent-kind participants do not
/// keep a room open: livekit-server closes a room without a standard
/// participant after `empty_timeout`.
pub async fn join_dev_room_as_user(
    url: &str,
    room: &str,
    identity: &str,
) -> Result<lk_go::room::Room, lk_go::room::ConnectError> {
    let token = dev_token(room, identity);
    join_with(
        url,
        room,
        identity,
        lk_go::room::signal::Credentials::Token(token),
    )
    .await
}

async fn join_with(
    url: &str,
    room: &str,
    identity: &str,
    credentials: lk_go::room::signal::Credentials,
) -> Result<lk_go::room::Room, lk_go::room::ConnectError> {
    use lk_go::room::signal::{AutoSubscribe, LiveKitConnector, LiveKitSettings};
    use lk_go::room::{JoinRequest, Room};
    let connector = LiveKitConnector::new(LiveKitSettings {
        urls: vec![url.to_string()],
        credentials,
        auto_subscribe: AutoSubscribe::None,
        liveness_timeout: Duration::from_secs(15),
        reconnect_window: Duration::from_secs(0),
        unreachable_timeout: Duration::from_secs(0),
    });
    let mut r = Room::new(room);
    r.connect(
        &connector,
        &JoinRequest {
            room_name: room.into(),
            identity: identity.into(),
            job_id: format!("{identity}-job"),
        },
    )
    .await?;
    Ok(r)
}

/// valgrind, as `cargo xtask test` provisions it (`LK_GO_VALGRIND`, or
/// `valgrind` on PATH); panics with the fix when missing: the C-boundary
/// memory tests never skip.
pub fn valgrind_bin() -> PathBuf {
    let p = std::env::var_os("LK_GO_VALGRIND")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("valgrind"));
    let ok = Command::new(&p)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "valgrind not found ({}); run the tests with `cargo xtask test`, which installs it, or apt-get install valgrind",
        p.display()
    );
    p
}

/// Calls a RoomService method of the server on `http_port` (Twirp: POST
/// `/twirp/livekit.RoomService/<method>` with a JSON body), authorised by a
/// dev token with the `roomAdmin` grant for `room`. Returns (status, body).
pub fn room_service(http_port: u16, room: &str, method: &str, body: &str) -> (u16, String) {
    twirp_json(http_port, "RoomService", room, method, body)
}

/// A Twirp call with a JSON body to `livekit.<service>/<method>`, with the
/// admin token of [`room_service`]. Returns (status, body).
pub fn twirp_json(
    http_port: u16,
    service: &str,
    room: &str,
    method: &str,
    body: &str,
) -> (u16, String) {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    let token = AccessToken::with_api_key("devkey", "secret")
        .with_identity("lk-go-tests-admin")
        .with_grants(VideoGrants {
            room_admin: true,
            room_list: true,
            room_create: true,
            room: room.to_string(),
            ..Default::default()
        })
        .to_jwt()
        .expect("mint an admin token");
    let mut s = TcpStream::connect(("127.0.0.1", http_port)).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = format!(
        "POST /twirp/livekit.{service}/{method} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Identities of the participants the server has in `room`
/// (RoomService ListParticipants): the readiness check "the job is in".
pub fn participant_identities(http_port: u16, room: &str) -> Vec<String> {
    let (status, body) = room_service(
        http_port,
        room,
        "ListParticipants",
        &format!("{{\"room\":{}}}", serde_json::Value::from(room)),
    );
    if status != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["participants"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["identity"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `identity` is in `room` on the server (at most `within`).
pub fn wait_for_participant(http_port: u16, room: &str, identity: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if participant_identities(http_port, room)
            .iter()
            .any(|i| i == identity)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{identity} did not appear in room {room} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback TCP proxy in front of a server's signal port, to cut every
/// connection through it at once (a network blip) while the server and the
/// media path (UDP, direct) stay up. New connections keep being accepted.
pub struct TcpProxy {
    pub port: u16,
    live: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`target`.
    pub fn start(target: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = live.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut l = registry.lock().unwrap();
                    l.push(client.try_clone().unwrap());
                    l.push(upstream.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        TcpProxy { port, live }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection open through the proxy.
    pub fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// AgentDispatchService.CreateDispatch: dispatches `agent_name` to `room`
/// (creating the room) with `metadata` as the job metadata. Returns the
/// dispatch id.
pub fn create_dispatch(http_port: u16, agent_name: &str, room: &str, metadata: &str) -> String {
    let body = serde_json::json!({"agent_name": agent_name, "room": room, "metadata": metadata});
    let (status, body) = twirp_json(
        http_port,
        "AgentDispatchService",
        room,
        "CreateDispatch",
        &body.to_string(),
    );
    assert_eq!(status, 200, "CreateDispatch: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("CreateDispatch answers JSON");
    v["id"].as_str().expect("a dispatch id").to_string()
}

/// AgentDispatchService.DeleteDispatch: the server terminates its jobs.
pub fn delete_dispatch(http_port: u16, dispatch_id: &str, room: &str) {
    let body = serde_json::json!({"dispatch_id": dispatch_id, "room": room});
    let (status, body) = twirp_json(
        http_port,
        "AgentDispatchService",
        room,
        "DeleteDispatch",
        &body.to_string(),
    );
    assert_eq!(status, 200, "DeleteDispatch: {body}");
}

/// RoomService.CreateRoom without an agents list: an automatic dispatch.
pub fn create_room(http_port: u16, room: &str) {
    let body = serde_json::json!({"name": room});
    let (status, body) = room_service(http_port, room, "CreateRoom", &body.to_string());
    assert_eq!(status, 200, "CreateRoom: {body}");
}

/// The one harness for a running `lk-go` (a job or a worker): its stdout
/// and stderr are collected line by line as they arrive, so a test waits
/// for readiness (a log line such as `plugin_run_entered` or
/// `worker_registered`) instead of sleeping, signals it, and reads how it
/// ended. The child is killed if the test drops it.
pub struct LkGoProcess {
    pub child: Child,
    /// Every line in arrival order, with the stream it came from.
    lines: std::sync::Arc<std::sync::Mutex<Vec<(OutputStream, String)>>>,
    changed: std::sync::Arc<std::sync::Condvar>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl LkGoProcess {
    /// Starts `lk-go <args>` with `envs` on top of an environment without
    /// the developer's `LIVEKIT_*` variables or `LK_GO_LOG`.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> LkGoProcess {
        use std::io::BufRead;
        let mut cmd = Command::new(lk_go_bin());
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env_remove("LK_GO_LOG")
            .env_remove("LIVEKIT_URL")
            .env_remove("LIVEKIT_API_KEY")
            .env_remove("LIVEKIT_API_SECRET")
            .env_remove("LIVEKIT_AGENT_NAME")
            .env_remove("LIVEKIT_WORKER_HTTP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start lk-go");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let changed = std::sync::Arc::new(std::sync::Condvar::new());
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        let mut readers = Vec::new();
        for (stream, pipe) in [(OutputStream::Stdout, out), (OutputStream::Stderr, err)] {
            let lines = lines.clone();
            let changed = changed.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push((stream, line));
                    changed.notify_all();
                }
            }));
        }
        LkGoProcess {
            child,
            lines,
            changed,
            readers,
        }
    }

    /// Starts `lk-go <args>` (a job) and waits (at most `limit`) until its
    /// log says the plugin's `run` was entered.
    pub fn start_ready(args: &[&str], limit: Duration) -> LkGoProcess {
        let job = LkGoProcess::start(args, &[]);
        job.wait_line("plugin_run_entered", limit);
        job
    }

    /// Every line so far, both streams, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// One stream's text so far (lines joined with newlines).
    pub fn text(&self, stream: OutputStream) -> String {
        let mut out = String::new();
        for (s, l) in self.lines.lock().unwrap().iter() {
            if *s == stream {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits up to `limit` until `count` lines match `pred`; returns them,
    /// or panics with the log.
    pub fn wait_lines(
        &self,
        what: &str,
        count: usize,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = std::time::Instant::now() + limit;
        let mut guard = self.lines.lock().unwrap();
        loop {
            let matching: Vec<String> = guard
                .iter()
                .filter(|(_, l)| pred(l))
                .map(|(_, l)| l.clone())
                .collect();
            if matching.len() >= count {
                return matching;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                let log: Vec<&str> = guard.iter().map(|(_, l)| l.as_str()).collect();
                panic!(
                    "waited {limit:?} for {count} line(s) of {what}; got {}; log:\n{}",
                    matching.len(),
                    log.join("\n")
                );
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits for one line containing `needle`.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> String {
        self.wait_lines(needle, 1, limit, |l| l.contains(needle))
            .remove(0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `sig` (e.g. `libc::SIGINT`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Waits up to `limit` for the exit code (-1 for a signal; kills it and
    /// panics with the log if it does not exit).
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        self.wait_status(limit).code().unwrap_or(-1)
    }

    fn wait_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait lk-go") {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "lk-go did not exit within {limit:?}; log:\n{}",
                    self.lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit (as [`LkGoProcess::wait_exit`]) and for both
    /// pipes to close; returns (exit code, stdout, stderr).
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let status = self.wait_status(limit);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (
            status.code(),
            self.text(OutputStream::Stdout),
            self.text(OutputStream::Stderr),
        )
    }
}

impl Drop for LkGoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `lk-go: error:` lines of a stderr (a failure prints exactly one).
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("lk-go: error:"))
        .collect()
}

/// Runs the browser peer (`tests/browser/peer.mjs`: livekit-client in
/// headless Chromium, see tests/browser/README.md) with `scenario` against
/// `agent` in the room `token` names; returns its exit code and its one
/// JSON line. `cargo xtask itest` provisions Chromium (`CHROMIUM_PATH`) and
/// the npm packages; without them this panics with the fix.
pub fn run_browser(
    scenario: &str,
    url: &str,
    token: &str,
    agent: &str,
    extra: &[&str],
    limit: Duration,
) -> (Option<i32>, serde_json::Value) {
    let dir = workspace_root().join("tests").join("browser");
    assert!(
        dir.join("node_modules").join("livekit-client").is_dir(),
        "tests/browser/node_modules is missing; run the tests with `cargo xtask itest` (it runs npm ci there)"
    );
    let child = Command::new("node")
        .arg(dir.join("peer.mjs"))
        .args([scenario, url, token, agent])
        .args(extra)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node (the browser peer needs Node.js)");
    let out = wait_output(child, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "the browser peer printed no JSON line; stdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("the browser peer's JSON line");
    (out.status.code(), v)
}

/// A Redis server on a free loopback port (no persistence), stopped when
/// dropped: what two livekit-server nodes share. `LK_GO_REDIS` or
/// `redis-server` on PATH (`cargo xtask itest` installs Debian's
/// redis-server); panics with the fix when missing.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let bin = std::env::var_os("LK_GO_REDIS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let port = free_tcp_port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start {} ({e}); run the tests with `cargo xtask itest` (it installs redis-server) or set LK_GO_REDIS",
                    bin.display()
                )
            });
        let redis = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return redis;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RoomService.CreateRoom on a given node (`node_id`): the room lives
/// there, whichever node's API is asked.
pub fn create_room_on(http_port: u16, room: &str, node_id: &str) {
    let body = serde_json::json!({"name": room, "node_id": node_id});
    let (status, body) = room_service(http_port, room, "CreateRoom", &body.to_string());
    assert_eq!(status, 200, "CreateRoom: {body}");
}
