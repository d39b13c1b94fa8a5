//! Per-process CPU time and memory from `/proc`, so each gateway child is
//! measured on its own rather than as part of the benchmark process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why a `/proc` sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} has no field {field}")]
    Field { path: String, field: &'static str },
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now (KiB).
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM, KiB).
    pub hwm_kib: u64,
    /// Open file descriptors (sockets included).
    pub fds: usize,
}

/// `pid` or `"self"`.
pub fn sample(pid: &str) -> Result<ProcSample, ProcError> {
    let status_path = format!("/proc/{pid}/status");
    let status = read(&status_path)?;
    let rss_kib = status_kib(&status, "VmRSS:").ok_or_else(|| ProcError::Field {
        path: status_path.clone(),
        field: "VmRSS",
    })?;
    let hwm_kib = status_kib(&status, "VmHWM:").ok_or(ProcError::Field {
        path: status_path,
        field: "VmHWM",
    })?;
    let stat_path = format!("/proc/{pid}/stat");
    let stat = read(&stat_path)?;
    let ticks = cpu_ticks(&stat).ok_or(ProcError::Field {
        path: stat_path,
        field: "utime/stime",
    })?;
    let fds = std::fs::read_dir(PathBuf::from(format!("/proc/{pid}/fd")))
        .map(|d| d.count())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_secs: ticks as f64 / clock_ticks_per_sec(),
        rss_kib,
        hwm_kib,
        fds,
    })
}

/// CPU seconds of a local PostgreSQL server so far: the postmaster named
/// in `<data_dir>/postmaster.pid` plus its live children (backends, WAL
/// writer, checkpointer). A backend that exits between two readings takes
/// its CPU with it; the gateways' pooled connections keep theirs open.
pub fn postgres_cpu_secs(data_dir: &Path) -> Result<f64, ProcError> {
    let pid_path = data_dir.join("postmaster.pid");
    let pid_file = read(&pid_path.to_string_lossy())?;
    let postmaster: u32 = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| ProcError::Field {
            path: pid_path.display().to_string(),
            field: "pid",
        })?;
    let dir = std::fs::read_dir("/proc").map_err(|source| ProcError::Read {
        path: "/proc".into(),
        source,
    })?;
    let mut ticks = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Processes may exit while the directory is read: skip those.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if pid == postmaster || parent_pid(&stat) == Some(postmaster) {
            ticks += cpu_ticks(&stat).unwrap_or(0);
        }
    }
    Ok(ticks as f64 / clock_ticks_per_sec())
}

/// Field 4 of `stat`, the parent's pid.
fn parent_pid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `VmRSS:     1234 kB` → 1234.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime (fields 14 and 15 of `stat`). The command name in field 2
/// may contain spaces and parentheses, so fields are counted after the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)` without unsafe code: asks `getconf` once and
/// falls back to 100, the value on every mainstream Linux architecture.
fn clock_ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// What the report says about the machine the figures come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    /// 1-minute load average when the run started: other work on a shared machine.
    pub load_avg_1m: f64,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_kib: status_kib(&meminfo, "MemTotal:").unwrap_or(0),
            load_avg_1m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0";
        assert_eq!(cpu_ticks(stat), Some(200));
        assert_eq!(parent_pid(stat), Some(1));
    }

    #[test]
    fn reads_own_process() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.fds > 0);
    }
}
