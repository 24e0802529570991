//! The worker's HTTP endpoint (`--http ADDR:PORT`): health for probes, the
//! worker's state as JSON, Prometheus metrics. HTTP/1.1 by `hyper`.
//!
//! Owns: the listener, its connection limits and timeouts, the routes, the
//! view types it renders ([`WorkerView`], [`JobView`]). Must not touch: the
//! worker's state — it reads the last [`WorkerView`] the worker published
//! on a `watch` channel and the metrics' atomics, and never holds a lock
//! the worker's loop takes.
//!
//! Architecture invariant: **no client of the endpoint can delay dispatch.**
//! At most [`MAX_CONNECTIONS`] connections are served at once (more are
//! closed on accept); a connection lives at most [`CONNECTION_TIMEOUT`],
//! headers must arrive within [`HEADER_TIMEOUT`]; one request per
//! connection; request bodies are never read.
//!
//! Routes (anything else is 404, a method other than GET or HEAD 405):
//! - `GET /`: `200 ok: registered` / `200 ok: connecting` (connecting or
//!   reconnecting within its retry budget), `503 draining` / `503 failed:
//!   …` (after giving up). One line of text. A plugin file that is gone or
//!   broken does not fail health (restarting the worker would not fix it,
//!   and the worker reports itself full meanwhile); `/worker` says so.
//! - `GET /worker`: [`WorkerView`] as JSON.
//! - `GET /metrics`: [`super::metrics::WorkerMetrics`] as Prometheus text.

use super::metrics::WorkerMetrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Connections served at once; more are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, whatever the client does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the worker is, as the endpoint reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Not yet registered, or reconnecting, within its retry budget.
    #[default]
    Connecting,
    Registered,
    /// Declining jobs, waiting for running ones (after a signal).
    Draining,
    /// Gave up on the server (wrong credentials, `--max-retries`); exits
    /// once its jobs end.
    Failed,
}

/// The worker as `GET /worker` shows it; published by the worker's loop.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerView {
    /// `AW_…`, the id of the current registration; empty before one.
    pub worker_id: String,
    pub agent_name: String,
    pub state: WorkerState,
    pub registered: bool,
    pub draining: bool,
    /// The server URL the worker is registered with.
    pub url: Option<String>,
    /// Why it failed, when `state` is `failed`.
    pub error: Option<String>,
    pub max_jobs: u32,
    /// The load last reported to the server (0..1; 1 = full).
    pub load: f32,
    /// Whether the worker reports itself full (`WS_FULL`).
    pub full: bool,
    /// The plugin file new jobs would load.
    pub plugin: PluginView,
    pub jobs: Vec<JobView>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PluginView {
    pub path: String,
    /// `ok`, `validating`, `missing` or `invalid`.
    pub state: &'static str,
    /// What is wrong with it (one line), unless `ok`.
    pub error: Option<String>,
}

/// A running job, as `GET /worker` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub room: String,
    /// The participant a participant/publisher job is for; empty for a
    /// room job.
    pub participant_identity: String,
    /// When the job process started, Unix time in milliseconds.
    pub started_unix_ms: u64,
    /// Seconds since then, when rendered.
    pub age_s: f64,
    pub pid: u32,
    /// Resident set size at the last sample (every second), bytes.
    pub rss_bytes: u64,
    /// User + system CPU time at the last sample, seconds.
    pub cpu_seconds: f64,
    /// Asked to shut down (terminated, memory limit, drain timeout).
    pub shutting_down: bool,
}

/// How much any client may hold of the endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            connection_timeout: CONNECTION_TIMEOUT,
        }
    }
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: watch::Receiver<WorkerView>,
    metrics: Arc<WorkerMetrics>,
    limits: Limits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // EMFILE and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the limit: closed at once, never queued.
            drop(stream);
            continue;
        };
        let view = view.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = respond(&req, &view, &metrics);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
            drop(permit);
        });
    }
}

fn respond<B>(
    req: &Request<B>,
    view: &watch::Receiver<WorkerView>,
    metrics: &WorkerMetrics,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/" => {
            let (status, line) = health(&view.borrow());
            text(status, format!("{line}\n"))
        }
        "/worker" => {
            let mut v = view.borrow().clone();
            let now = unix_ms();
            for j in &mut v.jobs {
                j.age_s = now.saturating_sub(j.started_unix_ms) as f64 / 1000.0;
            }
            let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
            with_type(StatusCode::OK, "application/json", body)
        }
        "/metrics" => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode().into_bytes(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /, /worker or /metrics\n".into(),
        ),
    }
}

/// The health answer for a view: what a probe sees.
pub fn health(v: &WorkerView) -> (StatusCode, String) {
    match v.state {
        WorkerState::Failed => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "failed: {}",
                v.error.as_deref().unwrap_or("gave up on the server")
            ),
        ),
        WorkerState::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining".into()),
        WorkerState::Registered => (StatusCode::OK, "ok: registered".into()),
        WorkerState::Connecting => (StatusCode::OK, "ok: connecting".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn with_type(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Now, Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn routes_answer_and_idle_clients_cannot_hold_the_endpoint() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(WorkerView {
            agent_name: "a".into(),
            max_jobs: 2,
            plugin: PluginView {
                state: "ok",
                ..Default::default()
            },
            ..Default::default()
        });
        let metrics = Arc::new(WorkerMetrics::new());
        metrics.jobs_started.inc();
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_millis(200),
            connection_timeout: Duration::from_millis(400),
        };
        tokio::spawn(serve(listener, rx, metrics, limits));
        assert!(get(port, "/").await.starts_with("HTTP/1.1 200"));
        tx.send_modify(|v| v.state = WorkerState::Draining);
        let r = get(port, "/").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.ends_with("draining\n"),
            "{r}"
        );
        assert!(get(port, "/worker").await.contains("\"agent_name\": \"a\""));
        assert!(get(port, "/metrics")
            .await
            .contains("lk_go_worker_jobs_started_total 1"));
        assert!(get(port, "/nope").await.starts_with("HTTP/1.1 404"));
        // Idle connections beyond the limit are closed at once; the ones
        // within it end at the header timeout; then the endpoint answers.
        let mut idle = Vec::new();
        for _ in 0..limits.max_connections + 3 {
            idle.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        let mut buf = [0u8; 64];
        for mut s in idle {
            // Closed by the endpoint (EOF, a 408, or a reset), never left open.
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "an idle connection was left open");
        }
        assert!(get(port, "/").await.starts_with("HTTP/1.1 503"));
    }
}
