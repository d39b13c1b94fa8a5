//! The benchmark report: the JSON written to `--out`, the targets it is
//! judged against, and the summary table printed at the end of a run.

use super::ceiling::Ceiling;
use super::driver::LoadResult;
use super::idle::IdleResult;
use super::node::PeerComparison;
use super::procstat::Machine;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Latency distribution in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Sorts `samples` in place and summarises them.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let pick = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = (q * samples.len() as f64).ceil() as usize;
            let i = rank.clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            count: samples.len(),
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
        }
    }
}

/// One load run as reported.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub clients: usize,
    /// Open-loop request rate, if the run was paced.
    pub paced_rate_per_sec: Option<f64>,
    pub submitted: usize,
    pub accepted: usize,
    pub delivered: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub accepted_per_sec: f64,
    pub delivered_per_sec: f64,
    pub submit_secs: f64,
    pub end_to_end_secs: f64,
    pub accept_latency: Latency,
    /// From the 202 at the origin to the item's arrival in the destination inbox.
    pub delivery_latency: Latency,
}

impl LoadSummary {
    pub fn new(r: &LoadResult, rate: Option<f64>) -> Self {
        Self {
            clients: r.clients,
            paced_rate_per_sec: rate,
            submitted: r.submitted,
            accepted: r.accepted,
            delivered: r.delivered,
            errors: r.errors,
            error_samples: r.error_samples.clone(),
            accepted_per_sec: r.accepted_per_sec(),
            delivered_per_sec: r.delivered_per_sec(),
            submit_secs: r.submit_window.as_secs_f64(),
            end_to_end_secs: r.e2e_window.as_secs_f64(),
            accept_latency: r.accept_latency,
            delivery_latency: r.delivery_latency,
        }
    }
}

/// CPU and memory of one gateway process over the main run.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayUsage {
    pub member: String,
    pub pid: u32,
    pub cpu_secs: f64,
    pub cpu_ms_per_exchange: f64,
    /// RSS after start-up, before any load.
    pub rss_idle_kib: u64,
    /// VmHWM at the end of the main run.
    pub rss_peak_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub load: LoadSummary,
    pub gateways: Vec<GatewayUsage>,
    /// Both gateways' CPU time over the run divided by exchanges delivered.
    pub cpu_ms_per_exchange: f64,
    /// CPU of the benchmark process (clients, inbox reader) over the run.
    pub bench_process_cpu_secs: f64,
    /// `delivered_per_sec / crypto_ceiling.ceiling_exchanges_per_sec`.
    pub fraction_of_crypto_ceiling: f64,
}

/// The main load on one store configuration of the origin member (issue 10).
#[derive(Debug, Clone, Serialize)]
pub struct StoreRun {
    /// `sqlite` or `postgresql`.
    pub store: &'static str,
    /// Origin `serve` processes (1 on SQLite).
    pub replicas: usize,
    pub load: LoadSummary,
    pub gateways: Vec<GatewayUsage>,
    /// Every gateway process's CPU (all replicas and sc) per delivered exchange.
    pub cpu_ms_per_exchange: f64,
    /// CPU of the PostgreSQL server processes over the run; `None` on SQLite
    /// or when the server is not a local throwaway cluster (`--store-url`).
    pub postgres_cpu_secs: Option<f64>,
    pub postgres_cpu_ms_per_exchange: Option<f64>,
    pub bench_process_cpu_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub levels: Vec<LoadSummary>,
    pub idle_connections: Option<IdleResult>,
}

/// A goal from issue 6 and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub goal: &'static str,
    pub value: String,
    /// `None` when this run did not measure it.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub build: &'static str,
    pub gateways: String,
    pub store: String,
    pub requested_count: usize,
    pub requested_duration_secs: Option<f64>,
    pub clients: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub started_at: String,
    pub machine: Machine,
    pub setup: Setup,
    pub crypto_ceiling: Ceiling,
    pub end_to_end: EndToEnd,
    /// Paced at half the measured end-to-end peak: the latency target's load.
    pub half_load: Option<LoadSummary>,
    pub peer_comparison: Option<PeerComparison>,
    pub scaling: Option<Scaling>,
    /// The main load per store configuration: one row, or three with
    /// `--compare-stores` (the first is the run `end_to_end` reports).
    pub stores: Vec<StoreRun>,
    pub targets: Vec<Target>,
    /// Errors over every load run of the report; a valid run has zero.
    pub errors: usize,
}

impl Report {
    /// Judges the run against the goals of issue 6.
    pub fn judge(&mut self) {
        let mut t = Vec::new();
        let frac = self.end_to_end.fraction_of_crypto_ceiling;
        t.push(Target {
            name: "end-to-end vs crypto ceiling",
            goal: ">= 50%",
            value: format!("{:.1}%", frac * 100.0),
            met: Some(frac >= 0.5),
        });
        t.push(Target {
            name: "p99 accept at half peak load",
            goal: "<= 10 ms",
            value: self
                .half_load
                .as_ref()
                .map_or("not run".into(), |h| format!("{:.2} ms", h.accept_latency.p99_ms)),
            met: self.half_load.as_ref().map(|h| h.accept_latency.p99_ms <= 10.0),
        });
        let ratio = self
            .peer_comparison
            .as_ref()
            .and_then(|p| p.rows.iter().map(|r| r.ratio_jws).min_by(|a, b| a.total_cmp(b)));
        t.push(Target {
            name: "verify rate vs Node jose (worst algorithm)",
            goal: ">= 2x",
            value: ratio.map_or_else(
                || {
                    self.peer_comparison
                        .as_ref()
                        .and_then(|p| p.skipped.clone())
                        .unwrap_or_else(|| "not run (--node)".into())
                },
                |r| format!("{r:.2}x"),
            ),
            met: ratio.map(|r| r >= 2.0),
        });
        let idle = self
            .end_to_end
            .gateways
            .iter()
            .map(|g| g.rss_idle_kib)
            .max()
            .unwrap_or(0);
        t.push(Target {
            name: "RSS idle (largest gateway)",
            goal: "<= 64 MiB",
            value: format!("{:.1} MiB", mib(idle)),
            met: Some(idle <= 64 * 1024),
        });
        let held = self.scaling.as_ref().and_then(|s| s.idle_connections.as_ref());
        t.push(Target {
            name: "RSS with idle mTLS connections",
            goal: "<= 256 MiB at 1,000",
            value: held.map_or("not run (--scaling)".into(), |h| {
                format!("{:.1} MiB with {} open", mib(h.rss_held_kib), h.opened)
            }),
            met: held.map(|h| h.rss_held_kib <= 256 * 1024 && h.opened >= 1000),
        });
        self.targets = t;
    }

    /// The human-readable summary printed after a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "Bashu bench ({} build) on {} × {}, {:.0} GiB, load avg {:.2} at start",
            self.setup.build,
            m.nproc,
            m.cpu_model,
            mib(m.mem_total_kib) / 1024.0,
            m.load_avg_1m
        );
        let c = &self.crypto_ceiling;
        let _ = writeln!(
            s,
            "\nCrypto ceiling ({} threads): ES256 sign {:.0}/s, verify {:.0}/s; {} verify + {} sign = {:.0} µs/exchange → {:.0} exchanges/s",
            c.threads,
            c.es256_sign_per_sec,
            c.es256_verify_per_sec,
            c.verify_per_exchange,
            c.sign_per_exchange,
            c.crypto_us_per_exchange,
            c.ceiling_exchanges_per_sec
        );
        let e = &self.end_to_end;
        let _ = writeln!(s, "\nEnd to end (cq → sc, gateways are separate processes):");
        let _ = writeln!(s, "{}", load_header());
        let _ = writeln!(s, "{}", load_row("peak", &e.load));
        if let Some(h) = &self.half_load {
            let _ = writeln!(s, "{}", load_row("half peak", h));
        }
        let _ = writeln!(
            s,
            "  {:.1}% of the crypto ceiling; CPU {:.2} ms/exchange (all gateway processes); bench process CPU {:.1} s",
            e.fraction_of_crypto_ceiling * 100.0,
            e.cpu_ms_per_exchange,
            e.bench_process_cpu_secs
        );
        for g in &e.gateways {
            let _ = writeln!(
                s,
                "  gateway {} (pid {}): CPU {:.2} ms/exchange, RSS idle {:.1} MiB, peak {:.1} MiB",
                g.member,
                g.pid,
                g.cpu_ms_per_exchange,
                mib(g.rss_idle_kib),
                mib(g.rss_peak_kib)
            );
        }
        if let Some(p) = &self.peer_comparison {
            let _ = writeln!(s, "\nPeer comparison (verifies/s, one core):");
            match &p.skipped {
                Some(why) => {
                    let _ = writeln!(s, "  skipped: {why}");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  {:<6} {:>12} {:>12} {:>8} {:>14} {:>8}",
                        "alg", "node jose", "bashu jws", "ratio", "bashu verifier", "ratio"
                    );
                    for r in &p.rows {
                        let _ = writeln!(
                            s,
                            "  {:<6} {:>12.0} {:>12.0} {:>7.2}x {:>14.0} {:>7.2}x",
                            r.alg,
                            r.node_jose_per_sec,
                            r.bashu_jws_per_sec,
                            r.ratio_jws,
                            r.bashu_credential_per_sec,
                            r.ratio_credential
                        );
                    }
                    let _ = writeln!(
                        s,
                        "  (Node {}, jose {})",
                        p.node_version.as_deref().unwrap_or("?"),
                        p.jose_version.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        if let Some(sc) = &self.scaling {
            let _ = writeln!(s, "\nScaling:");
            let _ = writeln!(s, "{}", load_header());
            for l in &sc.levels {
                let _ = writeln!(s, "{}", load_row(&format!("{} clients", l.clients), l));
            }
            if let Some(i) = &sc.idle_connections {
                let _ = writeln!(
                    s,
                    "  {} idle mTLS connections ({} failed): gateway RSS {:.1} → {:.1} MiB ({:.1} KiB each), fds {} → {}, {:.1} MiB after closing",
                    i.opened,
                    i.failed,
                    mib(i.rss_before_kib),
                    mib(i.rss_held_kib),
                    i.kib_per_connection,
                    i.gateway_fds_before,
                    i.gateway_fds_held,
                    mib(i.rss_after_kib)
                );
            }
        }
        if !self.stores.is_empty() {
            let _ = writeln!(s, "\nStores (main load, {} clients):", self.setup.clients);
            let _ = writeln!(
                s,
                "  {:<11} {:>8} {:>6} {:>9} {:>6} {:>11} {:>14} {:>20} {:>18}",
                "store",
                "replicas",
                "sent",
                "delivered",
                "errors",
                "delivered/s",
                "accept p99 ms",
                "gateway CPU ms/exch",
                "PG CPU ms/exch"
            );
            for r in &self.stores {
                let _ = writeln!(
                    s,
                    "  {:<11} {:>8} {:>6} {:>9} {:>6} {:>11.0} {:>14.1} {:>20.2} {:>18}",
                    r.store,
                    r.replicas,
                    r.load.submitted,
                    r.load.delivered,
                    r.load.errors,
                    r.load.delivered_per_sec,
                    r.load.accept_latency.p99_ms,
                    r.cpu_ms_per_exchange,
                    r.postgres_cpu_ms_per_exchange
                        .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"))
                );
            }
        }
        let _ = writeln!(s, "\nTargets:");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            let _ = writeln!(s, "  {:<44} {:<20} {:<30} {verdict}", t.name, t.goal, t.value);
        }
        let _ = writeln!(s, "\nErrors: {}", self.errors);
        s
    }
}

fn load_header() -> String {
    format!(
        "  {:<12} {:>6} {:>6} {:>10} {:>11} {:>26} {:>26}",
        "run",
        "sent",
        "errors",
        "accepted/s",
        "delivered/s",
        "accept p50/p90/p99/max ms",
        "delivery p50/p99/max ms"
    )
}

fn load_row(name: &str, l: &LoadSummary) -> String {
    let a = &l.accept_latency;
    let d = &l.delivery_latency;
    format!(
        "  {:<12} {:>6} {:>6} {:>10.0} {:>11.0} {:>26} {:>26}",
        name,
        l.submitted,
        l.errors,
        l.accepted_per_sec,
        l.delivered_per_sec,
        format!("{:.1}/{:.1}/{:.1}/{:.1}", a.p50_ms, a.p90_ms, a.p99_ms, a.max_ms),
        format!("{:.1}/{:.1}/{:.1}", d.p50_ms, d.p99_ms, d.max_ms)
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&mut v);
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(&mut []).count, 0);
    }
}
