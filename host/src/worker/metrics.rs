//! The worker's Prometheus metrics (crate `prometheus-client`: the text
//! exposition format is its job, not ours).
//!
//! Owns: every metric's name, help, labels and buckets, and encoding them.
//! Must not touch: I/O (the endpoint in `worker::http` serves the text) or
//! decisions (the worker records what it did).
//!
//! Names carry the `lk_go_` prefix; counters get `_total` from the crate.
//! Per-job series (`job_id` label) are removed when the job ends, so the
//! series count stays bounded by `--max-jobs`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// An offer (`AvailabilityRequest`) and what the worker answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferLabels {
    /// `accepted` or `declined`.
    pub decision: &'static str,
    /// Why declined (`full`, `draining`, `shutting_down`,
    /// `plugin_unavailable`); empty when accepted.
    pub reason: &'static str,
}

/// A job's end as the worker reported it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    /// `JS_SUCCESS` or `JS_FAILED`.
    pub status: &'static str,
    /// The job process's exit code, or `signal_<n>`.
    pub exit_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconnectLabels {
    /// `worker`: the worker's agent connection was lost; `job`: a job's
    /// room session resumed or rejoined.
    pub scope: &'static str,
}

/// Every metric the worker exports. Cheap to update from any thread
/// (atomics); [`WorkerMetrics::encode`] renders them.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    pub offers: Family<OfferLabels, Counter>,
    pub jobs_started: Counter,
    pub jobs_ended: Family<EndLabels, Counter>,
    /// Job process start to end, seconds.
    pub job_duration: Histogram,
    /// Offer received to the job's signal join, seconds.
    pub dispatch_to_joined: Histogram,
    pub running_jobs: Gauge,
    /// 1 while registered with a server.
    pub registered: Gauge,
    pub reconnects: Family<ReconnectLabels, Counter>,
    pub memory_shutdowns: Counter,
    pub job_rss: Family<JobLabels, Gauge>,
    pub job_cpu: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub audio_frames_dropped: Counter,
    pub log_lines_dropped: Counter,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> WorkerMetrics {
        let mut registry = Registry::with_prefix("lk_go");
        let m = WorkerMetrics {
            offers: Family::default(),
            jobs_started: Counter::default(),
            jobs_ended: Family::default(),
            // 50 ms .. ~7 h.
            job_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.05, 4.0, 10),
            ),
            // 25 ms .. ~6 s: the server's claim wait alone is ≥ 200 ms.
            dispatch_to_joined: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.025, 2.0, 9),
            ),
            running_jobs: Gauge::default(),
            registered: Gauge::default(),
            reconnects: Family::default(),
            memory_shutdowns: Counter::default(),
            job_rss: Family::default(),
            job_cpu: Family::default(),
            audio_frames_dropped: Counter::default(),
            log_lines_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "worker_job_offers",
            "Job offers (AvailabilityRequest) answered, by decision and decline reason",
            m.offers.clone(),
        );
        registry.register(
            "worker_jobs_started",
            "Job processes started",
            m.jobs_started.clone(),
        );
        registry.register(
            "worker_jobs_ended",
            "Jobs ended, by the status reported to the server and the job process's exit code",
            m.jobs_ended.clone(),
        );
        registry.register(
            "worker_job_duration_seconds",
            "Job process lifetime",
            m.job_duration.clone(),
        );
        registry.register(
            "worker_dispatch_to_joined_seconds",
            "From the job offer to the job's participant joined the room",
            m.dispatch_to_joined.clone(),
        );
        registry.register(
            "worker_running_jobs",
            "Job processes running",
            m.running_jobs.clone(),
        );
        registry.register(
            "worker_registered",
            "1 while the worker is registered with a LiveKit server",
            m.registered.clone(),
        );
        registry.register(
            "worker_server_reconnects",
            "Connections to the server lost and re-established (worker: agent connection; job: room session resumed or rejoined)",
            m.reconnects.clone(),
        );
        registry.register(
            "worker_memory_limit_shutdowns",
            "Jobs shut down for exceeding --job-memory-limit",
            m.memory_shutdowns.clone(),
        );
        registry.register(
            "job_resident_memory_bytes",
            "A running job process's resident set size",
            m.job_rss.clone(),
        );
        registry.register(
            "job_cpu_seconds",
            "A running job process's user + system CPU time",
            m.job_cpu.clone(),
        );
        registry.register(
            "worker_audio_frames_dropped",
            "Audio frames the jobs dropped because a plugin read too slowly",
            m.audio_frames_dropped.clone(),
        );
        registry.register(
            "worker_log_lines_dropped",
            "Log lines the worker and its jobs dropped (output blocked or failed)",
            m.log_lines_dropped.clone(),
        );
        WorkerMetrics { registry, ..m }
    }

    /// The metrics in the Prometheus text format (OpenMetrics 1.0, which
    /// Prometheus and the text format parsers read).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Forgets a job's per-job series.
    pub fn remove_job(&self, job_id: &str) {
        let labels = JobLabels {
            job_id: job_id.to_string(),
        };
        self.job_rss.remove(&labels);
        self.job_cpu.remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text_and_job_series_go_away() {
        let m = WorkerMetrics::new();
        m.offers
            .get_or_create(&OfferLabels {
                decision: "declined",
                reason: "full",
            })
            .inc();
        m.job_rss
            .get_or_create(&JobLabels {
                job_id: "AJ_1".into(),
            })
            .set(1000);
        m.dispatch_to_joined.observe(0.3);
        let text = m.encode();
        assert!(
            text.contains("lk_go_worker_job_offers_total{decision=\"declined\",reason=\"full\"} 1"),
            "{text}"
        );
        assert!(text.contains("lk_go_job_resident_memory_bytes{job_id=\"AJ_1\"} 1000"));
        assert!(text.contains("lk_go_worker_dispatch_to_joined_seconds_count 1"));
        assert!(text.trim_end().ends_with("# EOF"));
        m.remove_job("AJ_1");
        assert!(!m.encode().contains("AJ_1"));
    }
}
