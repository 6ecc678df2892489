//! SVG charts of bench runs (plotters, SVG backend only): a run's throughput over time and its
//! latency distribution, and a sweep's throughput and p99 latency against the number of peers.

use std::path::Path;

use plotters::prelude::*;

use super::BenchReport;
use super::sweep::SweepReport;

#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {reason}")]
pub struct ChartError {
    pub path: String,
    pub reason: String,
}

fn err(path: &Path) -> impl Fn(String) -> ChartError + '_ {
    move |reason| ChartError {
        path: path.display().to_string(),
        reason,
    }
}

const GIB: f64 = (1u64 << 30) as f64;
const SERIES: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A quantile as "nines" (0.9 → 1, 0.99 → 2, …), the x axis of a latency distribution; 1.0
/// (the maximum) is drawn at 5 nines.
fn nines(q: f64) -> f64 {
    if q >= 0.99999 {
        5.0
    } else {
        -(1.0 - q).log10()
    }
}

fn nines_label(x: &f64) -> String {
    let q = 1.0 - 10f64.powf(-*x);
    if *x >= 5.0 {
        "max".into()
    } else if *x <= 0.0 {
        "0".into()
    } else {
        format!("p{}", trim(q * 100.0))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Throughput per second of the run (top) and its request → block latency by percentile
/// (bottom, log scale).
pub fn draw_run(report: &BenchReport, path: &Path) -> Result<(), ChartError> {
    let e = err(path);
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let (top, bottom) = root.split_vertically(350);

    let per_second: Vec<(f64, f64)> = report
        .bytes_per_second
        .iter()
        .enumerate()
        .map(|(i, &b)| (i as f64 + 1.0, b as f64 / GIB))
        .collect();
    let secs = per_second.len().max(1) as f64;
    let top_gib = per_second
        .iter()
        .map(|p| p.1)
        .fold(report.gib_per_s, f64::max)
        .max(0.001)
        * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} peers, reqq {}, {:?}: {:.3} GiB/s",
                report.peers, report.reqq, report.pattern, report.gib_per_s
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..secs + 0.5, 0f64..top_gib)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("second of the run")
        .y_desc("GiB/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    c.draw_series(LineSeries::new(
        per_second.iter().copied(),
        SERIES[0].stroke_width(2),
    ))
    .map_err(|x| e(x.to_string()))?
    .label("received per second")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], SERIES[0]));
    c.draw_series(
        per_second
            .iter()
            .map(|&p| Circle::new(p, 3, SERIES[0].filled())),
    )
    .map_err(|x| e(x.to_string()))?;
    c.draw_series(LineSeries::new(
        [(0.0, report.gib_per_s), (secs + 0.5, report.gib_per_s)],
        SERIES[7],
    ))
    .map_err(|x| e(x.to_string()))?
    .label("whole-run mean")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], SERIES[7]));
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;

    let points: Vec<(f64, f64)> = report
        .latency_percentiles_us
        .iter()
        .map(|&(q, us)| (nines(q), us.max(1) as f64 / 1000.0))
        .collect();
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = if points.is_empty() {
        (0.001, 1.0)
    } else {
        ((lo / 1.5).max(0.001), (hi * 1.5).max(lo * 2.0))
    };
    let mut c = ChartBuilder::on(&bottom)
        .caption("request → block latency by percentile", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..5.2, (lo..hi).log_scale())
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_labels(6)
        .x_label_formatter(&nines_label)
        .y_labels(12)
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    c.draw_series(LineSeries::new(
        points.iter().copied(),
        SERIES[3].stroke_width(2),
    ))
    .map_err(|x| e(x.to_string()))?;
    c.draw_series(
        points
            .iter()
            .map(|&p| Circle::new(p, 3, SERIES[3].filled())),
    )
    .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// GiB/s (top) and p99 latency (bottom) against peers, one line per (reqq, upload path).
pub fn draw_sweep(sweep: &SweepReport, path: &Path) -> Result<(), ChartError> {
    let e = err(path);
    let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let (top, bottom) = root.split_vertically(400);
    let series = sweep.series();
    let peers = || sweep.rows.iter().map(|r| r.peers as f64);
    let min_p = peers().fold(f64::MAX, f64::min).max(1.0);
    let max_p = peers().fold(1.0, f64::max).max(min_p * 2.0);
    let x_range = || ((min_p / 1.3)..(max_p * 1.3)).log_scale();
    let max_gib = sweep.rows.iter().map(|r| r.gib_per_s).fold(0.001, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption(
            "throughput by peers (where the box saturates)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range(), 0f64..max_gib)
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("peers")
        .y_desc("GiB/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (label, rows)) in series.iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.peers as f64, r.gib_per_s)).collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|x| e(x.to_string()))?;
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(|x| e(x.to_string()))?;

    let p99 = |r: &super::sweep::SweepRow| (r.p99_us.max(1) as f64) / 1000.0;
    let (lo, hi) = sweep.rows.iter().fold((f64::MAX, 0f64), |(lo, hi), r| {
        (lo.min(p99(r)), hi.max(p99(r)))
    });
    let (lo, hi) = if sweep.rows.is_empty() {
        (0.001, 1.0)
    } else {
        ((lo / 1.5).max(0.001), (hi * 1.5).max(lo * 2.0))
    };
    let mut c = ChartBuilder::on(&bottom)
        .caption("p99 request → block latency by peers", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range(), (lo..hi).log_scale())
        .map_err(|x| e(x.to_string()))?;
    c.configure_mesh()
        .x_desc("peers")
        .y_desc("p99 ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(12)
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (_, rows)) in series.iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.peers as f64, p99(r))).collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?;
        c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_nines_and_back() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), 5.0);
        assert_eq!(nines_label(&2.0), "p99");
        assert_eq!(nines_label(&3.0), "p99.9");
        assert_eq!(nines_label(&5.0), "max");
    }
}
