//! CPU time and peak memory of processes, read from `/proc` (Linux only, like the machines the
//! benchmark targets). Postgres CPU is summed over the postmaster's tree, including backends that
//! already exited (the postmaster's `cutime`/`cstime`).

use std::fs;
use std::process::Command;

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields of `/proc/<pid>/stat` after the command name, which may contain spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

fn field(fields: &[String], n: usize) -> f64 {
    // `n` is the 1-based field number of proc(5); fields here start at field 3 (state).
    fields.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
}

/// User + system CPU seconds of `pid` itself (0 when it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_fields(pid).map_or(0.0, |f| (field(&f, 14) + field(&f, 15)) / ticks_per_second())
}

/// User + system CPU seconds of this process.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

/// Peak resident set size (VmHWM) of `pid` in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds of a Postgres server: the postmaster `root` and its children, plus its reaped
/// children. Without a known postmaster (a given server), every process named `postgres` on the
/// machine counts.
pub fn postgres_cpu_seconds(root: Option<u32>) -> f64 {
    let Ok(entries) = fs::read_dir("/proc") else { return 0.0 };
    let mut total = 0.0;
    for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
        let Some(fields) = stat_fields(pid) else { continue };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let is_root = root == Some(pid) || (root.is_none() && comm.trim() == "postgres");
        let is_child = root.is_some_and(|r| field(&fields, 4) as u32 == r);
        if is_root {
            total += field(&fields, 14) + field(&fields, 15) + field(&fields, 16) + field(&fields, 17);
        } else if is_child {
            total += field(&fields, 14) + field(&fields, 15);
        }
    }
    total / ticks_per_second()
}

/// The machine's CPU model, cores and memory.
pub fn machine() -> (String, usize, f64) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    (model, cores, memory_gib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(own_cpu_seconds() > 0.0);
        assert!(peak_rss_mib(std::process::id()) > 1.0);
    }

    #[test]
    fn a_missing_process_counts_as_zero() {
        assert!(cpu_seconds(u32::MAX).abs() < f64::EPSILON);
        assert!(peak_rss_mib(u32::MAX).abs() < f64::EPSILON);
    }
}
