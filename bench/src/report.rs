//! What one run leaves behind with `--report`: `BENCHMARKS.md` (the machine, the commit,
//! every figure against its target, the whole output) and SVG plots beside it (latency
//! CDFs, throughput bars). Every line the bench prints goes through [`line()`] (the `out!`
//! macro), so the report holds exactly what the terminal showed; the phases that measure
//! latency hand their samples to [`series`], and every ratio figure its bar to [`bar`].
//! While it runs, a spinner (`indicatif`, on a terminal only) names the phase.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

use crate::lock;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Latency samples (µs, sorted) by name, in the order measured.
static SERIES: Mutex<Vec<(String, Vec<u64>)>> = Mutex::new(Vec::new());
/// Ratio figures: name, value as % of its baseline, target %.
static BARS: Mutex<Vec<(String, f64, f64)>> = Mutex::new(Vec::new());
/// Start-up after a clean stop (ms) and RSS right after it (MB), by messages stored.
static STORE: Mutex<Vec<(u64, f64, f64)>> = Mutex::new(Vec::new());
/// Figures with a target: name, value with unit, target, met.
static TARGETS: Mutex<Vec<(String, String, String, bool)>> = Mutex::new(Vec::new());
static PROGRESS: OnceLock<ProgressBar> = OnceLock::new();

/// Prints a line of the bench's output (above the spinner) and keeps it for the report.
pub(crate) fn line(text: String) {
    // A hidden bar (stderr not a terminal) prints nothing through `println`.
    match PROGRESS.get().filter(|bar| !bar.is_hidden()) {
        Some(bar) => bar.println(&text),
        None => println!("{text}"),
    }
    lock(&LINES).push(text);
}

/// Shows a spinner naming the phase (hidden when stderr is not a terminal).
pub(crate) fn phase(name: &str) {
    let bar = PROGRESS.get_or_init(|| {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    bar.set_message(name.to_string());
}

/// Keeps a latency sample (µs, sorted) for the CDF plot.
pub(crate) fn series(name: &str, sorted: &[u64]) {
    lock(&SERIES).push((name.to_string(), sorted.to_vec()));
}

/// Keeps a ratio figure for the throughput bars.
pub(crate) fn bar(name: &str, percent: f64, target: f64) {
    lock(&BARS).push((name.to_string(), percent, target));
}

/// Keeps one point of the start-up and RSS curve against messages stored.
pub(crate) fn store_point(stored: u64, start_ms: f64, rss_mb: f64) {
    lock(&STORE).push((stored, start_ms, rss_mb));
}

/// Keeps a figure with a target for the report's table.
pub(crate) fn target(name: &str, value: String, target: String, ok: bool) {
    lock(&TARGETS).push((name.trim().to_string(), value, target, ok));
}

/// Writes `BENCHMARKS.md` into `dir` and the plots into `dir/benchmarks/`.
pub(crate) fn write(dir: &Path, command: &str) -> anyhow::Result<()> {
    if let Some(bar) = PROGRESS.get() {
        bar.finish_and_clear();
    }
    let plots = dir.join("benchmarks");
    std::fs::create_dir_all(&plots)?;
    latency_plot(&plots.join("latency.svg"))?;
    bars_plot(&plots.join("throughput.svg"))?;
    let mut store = lock(&STORE).clone();
    store.sort_by_key(|(n, _, _)| *n);
    if store.len() > 1 {
        store_plot(&plots.join("store.svg"), &store)?;
    }
    let mut md = String::from("# Benchmarks\n\n");
    writeln!(md, "One run of `{command}`.\n")?;
    writeln!(md, "- Commit: `{}`", git(&["rev-parse", "--short", "HEAD"]))?;
    writeln!(
        md,
        "- Date (UTC): {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    )?;
    writeln!(md, "- Machine: {}\n", machine())?;
    md.push_str(
        "Every figure is read beside a baseline measured in the same run (T, a trivial axum \
         handler with the same client; the disk's own fdatasync; Redis as the peer): absolute \
         numbers drift from machine to machine. `scripts/bench --report` writes this file.\n\n",
    );
    md.push_str("## Targets\n\n| figure | value | target | |\n| --- | --- | --- | --- |\n");
    for (name, value, target, ok) in lock(&TARGETS).iter() {
        let verdict = if *ok { "met" } else { "**missed**" };
        writeln!(md, "| {name} | {value} | {target} | {verdict} |")?;
    }
    md.push_str("\n## Latency\n\n![latency CDFs](benchmarks/latency.svg)\n\n");
    md.push_str("## Throughput against baselines\n\n![throughput](benchmarks/throughput.svg)\n\n");
    if store.len() > 1 {
        md.push_str(
            "## Start-up and memory against messages stored\n\n\
             ![start-up and RSS](benchmarks/store.svg)\n\n\
             | messages stored (1 KB) | start-up after a clean stop | RSS right after it |\n\
             | --- | --- | --- |\n",
        );
        for (n, ms, mb) in &store {
            writeln!(md, "| {n} | {ms:.1} ms | {mb:.1} MB |")?;
        }
        md.push('\n');
    }
    md.push_str("## The whole output\n\n```text\n");
    for l in lock(&LINES).iter() {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");
    std::fs::write(dir.join("BENCHMARKS.md"), md)?;
    Ok(())
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

/// CPU model, cores and memory, from `/proc` (Linux).
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or("unknown CPU", str::trim);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {gib:.0} GiB")
}

/// Each latency sample as a CDF: latency (ms, log scale, so the floors and the tails both
/// show) across, share of messages up.
fn latency_plot(path: &Path) -> anyhow::Result<()> {
    let series = lock(&SERIES).clone();
    // Up to the largest p99.9, so one outlier does not flatten every curve.
    let x_max = series
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(_, s)| s[(s.len() * 999 / 1000).min(s.len() - 1)] as f64 / 1000.0)
        .fold(1.0_f64, f64::max);
    const X_MIN: f64 = 0.05;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "End-to-end latency, cumulative (to p99.9)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((X_MIN..x_max).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .x_label_formatter(&|v| format!("{v:.2}"))
        .x_labels(8)
        .y_desc("% of messages")
        .draw()?;
    for (i, (name, s)) in series.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        let step = (s.len() / 400).max(1);
        let points = s.iter().enumerate().step_by(step).map(|(k, &v)| {
            let ms = (v as f64 / 1000.0).clamp(X_MIN, x_max);
            (ms, 100.0 * (k + 1) as f64 / s.len() as f64)
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Each ratio figure as a bar (% of its baseline), with its target marked.
fn bars_plot(path: &Path) -> anyhow::Result<()> {
    let bars = lock(&BARS).clone();
    let n = bars.len().max(1);
    let x_max = bars
        .iter()
        .map(|(_, v, t)| v.max(*t))
        .fold(100.0_f64, f64::max)
        * 1.1;
    let height = 80 + 34 * n as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (labels, plot) = root.split_horizontally(330);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "Throughput, % of the baseline beside it (| = target)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .build_cartesian_2d(0.0..x_max, 0.0..n as f64)?;
    chart.configure_mesh().disable_y_mesh().x_desc("%").draw()?;
    let row = |i: usize| (n - 1 - i) as f64;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, t))| {
        let color = if v >= t { GREEN.mix(0.7) } else { RED.mix(0.7) };
        Rectangle::new([(0.0, row(i) + 0.2), (*v, row(i) + 0.8)], color.filled())
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, _, t))| {
        PathElement::new(
            vec![(*t, row(i) + 0.1), (*t, row(i) + 0.9)],
            BLACK.stroke_width(2),
        )
    }))?;
    let area_height = f64::from(height) - 30.0 - 40.0;
    for (i, (name, v, _)) in bars.iter().enumerate() {
        let y = 40.0 + area_height * (i as f64 + 0.5) / n as f64;
        let text: String = name.chars().take(48).collect();
        labels.draw(&Text::new(
            format!("{text} ({v:.0}%)"),
            (6, y as i32),
            ("sans-serif", 12),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// Start-up (ms) and RSS right after it (MB) against messages stored, side by side.
fn store_plot(path: &Path, points: &[(u64, f64, f64)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    let x_max = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64 * 1.05;
    let start_ms: fn(&(u64, f64, f64)) -> f64 = |p| p.1;
    let rss_mb: fn(&(u64, f64, f64)) -> f64 = |p| p.2;
    for (area, title, unit, value) in [
        (&left, "Start-up after a clean stop", "ms", start_ms),
        (&right, "RSS right after start-up", "MB", rss_mb),
    ] {
        let y_max = points.iter().map(value).fold(1.0_f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("messages stored (1 KB)")
            .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
            .x_labels(6)
            .y_desc(unit)
            .draw()?;
        let line = points.iter().map(|p| (p.0 as f64, value(p)));
        chart.draw_series(LineSeries::new(line.clone(), BLUE.stroke_width(2)))?;
        chart.draw_series(line.map(|xy| Circle::new(xy, 4, BLUE.filled())))?;
    }
    root.present()?;
    Ok(())
}
