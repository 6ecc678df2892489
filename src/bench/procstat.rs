//! CPU time and memory of this process and its threads, from /proc and the thread CPU clock:
//! how a bench run with an in-process seeder tells the seeder's cost from its own.

use std::path::Path;

/// CPU time summed over some threads, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_ticks: u64,
    pub system_ticks: u64,
    /// Threads counted.
    pub threads: usize,
}

impl CpuTimes {
    pub fn cpu_seconds(&self) -> f64 {
        (self.user_ticks + self.system_ticks) as f64 / clock_ticks_per_second()
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime and stime (fields 14 and 15) of a `stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime = f.next()?.parse().ok()?;
    let stime = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// CPU time of this process's threads whose name starts with any of `prefixes`.
pub fn threads_cpu(prefixes: &[&str]) -> Option<CpuTimes> {
    let mut total = CpuTimes::default();
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !prefixes.iter().any(|p| comm.trim_end().starts_with(p)) {
            continue;
        }
        if let Some((u, s)) = read_stat(&dir.join("stat")) {
            total.user_ticks += u;
            total.system_ticks += s;
            total.threads += 1;
        }
    }
    (total.threads > 0).then_some(total)
}

/// CPU time of the whole process.
pub fn process_cpu() -> Option<CpuTimes> {
    let (u, s) = read_stat(Path::new("/proc/self/stat"))?;
    Some(CpuTimes {
        user_ticks: u,
        system_ticks: s,
        threads: 0,
    })
}

fn read_stat(path: &Path) -> Option<(u64, u64)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Resident set size of this process in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_kib(Path::new("/proc/self/status"), "VmRSS:").map(|k| k * 1024)
}

/// CPU time of another process (all its threads, user + system), e.g. an external seeder.
pub fn pid_cpu(pid: u32) -> Option<CpuTimes> {
    let (u, s) = read_stat(&Path::new("/proc").join(pid.to_string()).join("stat"))?;
    Some(CpuTimes {
        user_ticks: u,
        system_ticks: s,
        threads: 0,
    })
}

/// Resident set size of another process in bytes.
pub fn pid_rss_bytes(pid: u32) -> Option<u64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    status_kib(&path, "VmRSS:").map(|k| k * 1024)
}

/// A `kB` field of a /proc status file.
fn status_kib(path: &Path, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of the calling thread, from its own CPU clock (exact, unlike /proc's ticks).
pub fn this_thread_cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces_and_parens() {
        let line = "123 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 42 17 0 0 20 0";
        assert_eq!(parse_stat(line), Some((42, 17)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(rss_bytes().is_some_and(|r| r > 0));
        assert!(process_cpu().is_some());
        assert!(this_thread_cpu_seconds().is_some());
        let me = std::process::id();
        assert!(pid_rss_bytes(me).is_some_and(|r| r > 0));
        assert!(pid_cpu(me).is_some());
        assert_eq!(pid_rss_bytes(u32::MAX), None);
    }
}
