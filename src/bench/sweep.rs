//! `ringseed bench sweep`: the same bench over a grid of peers × request queue depth × upload
//! path, one row per point, so an operator sees where their box saturates.

use crate::engine::UploadPath;
use crate::metainfo::Info;

use super::{
    BenchError, BenchOptions, BenchReport, LiveSample, LocalSeeder, SeederError, SeederProbe,
    SeederSpec,
};

/// Most points one sweep runs: a grid is a product, and each point runs for seconds.
pub const MAX_POINTS: usize = 1000;

/// What a sweep runs against.
pub enum SweepTarget<'a> {
    /// A fresh in-process seeder per upload path (the grid's paths are used).
    Spawn(SeederSpec),
    /// A seeder that is already running (the grid's paths are not ours to choose), optionally a
    /// local process whose CPU and RSS are read from /proc.
    Peer {
        infos: &'a [Info],
        addr: std::net::SocketAddr,
        pid: Option<u32>,
    },
}

/// The grid and the load of each point.
pub struct SweepOptions {
    pub peers: Vec<usize>,
    pub reqq: Vec<usize>,
    pub paths: Vec<UploadPath>,
    /// Everything else of each run (duration, block size, pattern, ...); `peers` and `reqq`
    /// are set per point.
    pub base: BenchOptions,
}

/// One point of the grid.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepRow {
    pub peers: usize,
    pub reqq: usize,
    /// The spawned seeder's upload path; `None` against a given seeder.
    pub upload_path: Option<UploadPath>,
    pub gib_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub seeder_cpu_seconds_per_gib: Option<f64>,
    pub seeder_rss_peak_bytes: Option<u64>,
    pub connected: u64,
    pub errors: u64,
    pub passed: bool,
}

impl SweepRow {
    fn of(report: &BenchReport, upload_path: Option<UploadPath>) -> SweepRow {
        SweepRow {
            peers: report.peers,
            reqq: report.reqq,
            upload_path,
            gib_per_s: report.gib_per_s,
            p50_us: report.latency_us.p50,
            p99_us: report.latency_us.p99,
            seeder_cpu_seconds_per_gib: report.seeder.as_ref().map(|s| s.cpu_seconds_per_gib),
            seeder_rss_peak_bytes: report.seeder.as_ref().map(|s| s.rss_peak_bytes),
            connected: report.connected,
            errors: report.errors_total(),
            passed: report.passed(),
        }
    }

    /// The line of the chart this row belongs to.
    pub fn series_label(&self) -> String {
        match self.upload_path {
            Some(p) => format!("reqq {} {}", self.reqq, path_name(p)),
            None => format!("reqq {}", self.reqq),
        }
    }
}

pub fn path_name(p: UploadPath) -> &'static str {
    match p {
        UploadPath::Auto => "auto",
        UploadPath::Copy => "copy",
        UploadPath::Mmap => "mmap",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepReport {
    pub rows: Vec<SweepRow>,
    /// Seconds each point ran (or `null` for a byte budget).
    pub seconds_per_point: Option<f64>,
}

impl SweepReport {
    /// Every run passed its piece checks.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.passed)
    }

    /// The fastest point.
    pub fn best(&self) -> Option<&SweepRow> {
        self.rows
            .iter()
            .max_by(|a, b| a.gib_per_s.total_cmp(&b.gib_per_s))
    }

    /// Rows grouped by (reqq, path), each group sorted by peers: the chart's lines.
    pub fn series(&self) -> Vec<(String, Vec<&SweepRow>)> {
        let mut out: Vec<(String, Vec<&SweepRow>)> = Vec::new();
        for r in &self.rows {
            let label = r.series_label();
            match out.iter_mut().find(|(l, _)| *l == label) {
                Some((_, rows)) => rows.push(r),
                None => out.push((label, vec![r])),
            }
        }
        for (_, rows) in &mut out {
            rows.sort_by_key(|r| r.peers);
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("the grid is empty: give at least one value for peers, reqq and paths")]
    EmptyGrid,
    #[error("the grid has {0} points; at most {MAX_POINTS}")]
    TooManyPoints(usize),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    Seeder(#[from] SeederError),
}

/// Runs every point of the grid in order (paths outermost, so each spawned seeder serves its
/// whole sub-grid), calling `on_row` after each.
pub fn run(
    target: SweepTarget<'_>,
    opts: &SweepOptions,
    on_row: &mut dyn FnMut(&SweepRow),
    on_second: &mut dyn FnMut(&LiveSample),
) -> Result<SweepReport, SweepError> {
    let paths: Vec<Option<UploadPath>> = match &target {
        SweepTarget::Spawn(_) => opts.paths.iter().copied().map(Some).collect(),
        SweepTarget::Peer { .. } => vec![None],
    };
    let points = paths.len() * opts.peers.len() * opts.reqq.len();
    if points == 0 {
        return Err(SweepError::EmptyGrid);
    }
    if points > MAX_POINTS {
        return Err(SweepError::TooManyPoints(points));
    }
    let mut rows = Vec::with_capacity(points);
    for path in paths {
        let seeder = match (&target, path) {
            (SweepTarget::Spawn(spec), Some(p)) => Some(LocalSeeder::start(&SeederSpec {
                upload_path: p,
                ..spec.clone()
            })?),
            _ => None,
        };
        let (infos, addr, probe): (Vec<Info>, _, _) = match (&target, &seeder) {
            (SweepTarget::Peer { infos, addr, pid }, _) => {
                (infos.to_vec(), *addr, pid.map(SeederProbe::Pid))
            }
            (SweepTarget::Spawn(_), Some(s)) => (
                s.metas.iter().map(|m| m.info.clone()).collect(),
                s.addr(),
                Some(SeederProbe::InProcess(s)),
            ),
            (SweepTarget::Spawn(_), None) => continue,
        };
        for &peers in &opts.peers {
            for &reqq in &opts.reqq {
                let run_opts = BenchOptions {
                    addr,
                    peers,
                    reqq,
                    ..opts.base.clone()
                };
                let report = super::run_probed(&infos, &run_opts, probe.as_ref(), on_second)?;
                let row = SweepRow::of(&report, path);
                on_row(&row);
                rows.push(row);
            }
        }
    }
    Ok(SweepReport {
        rows,
        seconds_per_point: match opts.base.stop {
            super::Stop::Duration(d) => Some(d.as_secs_f64()),
            super::Stop::Bytes(_) => None,
        },
    })
}
