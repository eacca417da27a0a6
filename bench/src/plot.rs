//! The three SVG plots of `BENCHMARKS.md`, written by hand.
//!
//! A plotting crate would pull a font stack and a rasteriser into the bench build for three
//! simple charts; plain SVG text is small, diffs well in git and renders on GitHub. All charts
//! share one 640×400 frame ([`Canvas`]) with axes, "nice" ticks and a legend, and degrade to a
//! "no data" chart instead of dividing by zero or emitting `NaN`.

use crate::report::{percent, rate, thousands};
use crate::results::Results;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
/// The plot area; the margins hold tick labels, axis titles and the chart title.
const LEFT: f64 = 76.0;
const RIGHT: f64 = 616.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 330.0;
const COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
/// Latencies below this are drawn at it: the log axis starts here.
const MIN_LATENCY_MS: f64 = 0.1;

/// End-to-end deliveries/s per worker count as bars, with dashed lines for the database ceiling
/// and the naive baseline.
pub fn throughput_vs_workers(r: &Results) -> String {
    let title = "End-to-end throughput by worker count";
    let mut runs: Vec<_> = r.throughput.iter().filter(|t| t.per_second.is_finite() && t.per_second >= 0.0).collect();
    if runs.is_empty() {
        return no_data(title);
    }
    runs.sort_by_key(|t| t.workers);
    let ceiling = finite_or_zero(r.ceiling.per_second);
    let naive = finite_or_zero(r.naive.per_second);
    let top = runs.iter().map(|t| t.per_second).fold(ceiling.max(naive), f64::max);
    // Slots of width 1 per bar, plus free room on the right for the dashed lines' labels.
    let ticks = runs.iter().enumerate().map(|(i, t)| (i as f64 + 0.5, t.workers.to_string())).collect();
    let x = Axis { lo: 0.0, hi: runs.len() as f64 + 0.8, ticks, grid: false, log: false, title: "worker processes" };
    let mut c = Canvas::new(title, x, Axis::from_zero(top * 1.12, "deliveries/s"));
    // Lines first, so the bars and their labels stay on top of them.
    c.reference(ceiling, "database ceiling", "#444444");
    c.reference(naive, "naive baseline", COLORS[3]);
    for (i, t) in runs.iter().enumerate() {
        let (x0, x1) = (c.px(i as f64 + 0.25), c.px(i as f64 + 0.75));
        let (y0, y1) = (c.py(0.0), c.py(t.per_second));
        c.push(format!(
            r#"<rect x="{x0:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
            x1 - x0,
            y0 - y1,
            COLORS[0]
        ));
        let label = format!("{} ({})", rate(t.per_second), percent(t.ratio_to_ceiling));
        c.text((x0 + x1) / 2.0, y1 - 6.0, "middle", &label);
    }
    c.finish()
}

/// The latency distribution of each latency run: x is latency in ms on a log axis from 0.1 ms,
/// y the fraction of deliveries at or below it.
pub fn latency_cdf(r: &Results) -> String {
    let title = "Latency distribution, enqueue → delivered";
    let mut runs: Vec<_> = r.latency.iter().collect();
    runs.sort_by(|a, b| a.offered_per_second.total_cmp(&b.offered_per_second));
    let lines: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|l| {
            let points: Vec<_> =
                finite_points(&l.cdf).map(|(ms, f)| (ms.max(MIN_LATENCY_MS), f.clamp(0.0, 1.0))).collect();
            (format!("{}/s offered", rate(l.offered_per_second)), points)
        })
        .filter(|line| !line.1.is_empty())
        .collect();
    let max_ms = lines.iter().flat_map(|(_, p)| p.iter().map(|(ms, _)| *ms)).fold(1.0, f64::max);
    if lines.is_empty() {
        return no_data(title);
    }
    let mut c = Canvas::new(title, Axis::log10(MIN_LATENCY_MS, max_ms, "latency (ms, log scale)"), Axis::fraction());
    let mut legend = Vec::new();
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.line(points, color, false);
        legend.push((label.as_str(), color));
    }
    c.legend(&legend);
    c.finish()
}

/// Deliveries/s while draining the large backlog, against minutes since the start, with a dashed
/// line for the small-queue figure of the same worker count.
pub fn throughput_over_time(r: &Results) -> String {
    let b = &r.backlog;
    let title = format!("Throughput while draining a {}-row backlog", thousands(b.pending_at_start));
    let points: Vec<(f64, f64)> = finite_points(&b.series).map(|(s, v)| (s / 60.0, v.max(0.0))).collect();
    if points.is_empty() {
        return no_data(&title);
    }
    let small = finite_or_zero(b.small_queue_per_second);
    let last = points.iter().map(|(m, _)| *m).fold(0.0, f64::max);
    let top = points.iter().map(|(_, v)| *v).fold(small, f64::max);
    let x = Axis::from_zero(last, "minutes since start");
    let mut c = Canvas::new(&title, x, Axis::from_zero(top * 1.12, "deliveries/s"));
    c.line(&points, COLORS[0], false);
    c.reference(small, "small queue", "#444444");
    c.finish()
}

/// One axis: data values mapped onto the plot area, with labelled ticks.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    grid: bool,
    ticks: Vec<(f64, String)>,
    title: &'static str,
}

impl Axis {
    /// `0..max` rounded up to a tick, with about five 1-2-5 steps; a degenerate `max` gives `0..1`.
    fn from_zero(max: f64, title: &'static str) -> Axis {
        let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
        let step = nice_step(max / 5.0);
        let n = (max / step - 1e-9).ceil().max(1.0) as u32;
        let ticks = (0..=n).map(|i| f64::from(i) * step).map(|v| (v, tick_label(v, step))).collect();
        Axis { lo: 0.0, hi: f64::from(n) * step, log: false, grid: true, ticks, title }
    }

    /// The fraction of deliveries, `0..1`.
    fn fraction() -> Axis {
        Axis { title: "fraction of deliveries at or below", ..Axis::from_zero(1.0, "") }
    }

    /// A log10 axis from `lo` to `max` rounded up to 1, 2 or 5 × 10ⁿ, gridlines at each decade.
    fn log10(lo: f64, max: f64, title: &'static str) -> Axis {
        let hi = nice_step(max.max(lo * 10.0));
        // Tolerances absorb `powi` rounding, e.g. 10⁻¹ = 0.09999….
        let ticks = (-1..=6)
            .map(|e| 10f64.powi(e))
            .filter(|v| *v >= lo * 0.999_999 && *v <= hi * 1.000_001)
            .map(|v| (v, if v < 1.0 { format!("{v:.1}") } else { rate(v) }))
            .collect();
        Axis { lo, hi, log: true, grid: true, ticks, title }
    }

    /// Where `v` falls along the axis, `0..=1`; outside values are pinned to the ends.
    fn frac(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.max(self.lo).log10() } else { x };
        let (v, lo, hi) = (f(v), f(self.lo), f(self.hi));
        if hi > lo && v.is_finite() { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 }
    }
}

/// An SVG being drawn onto the shared frame.
struct Canvas {
    svg: String,
    x: Axis,
    y: Axis,
}

impl Canvas {
    /// Background, title, gridlines, axes, tick labels and axis titles.
    fn new(title: &str, x: Axis, y: Axis) -> Canvas {
        let mut c = Canvas { svg: header(title), x, y };
        for (v, label) in c.y.ticks.clone() {
            let py = c.py(v);
            if c.y.grid {
                c.push(format!(r##"<line x1="{LEFT}" y1="{py:.1}" x2="{RIGHT}" y2="{py:.1}" stroke="#e0e0e0"/>"##));
            }
            c.text(LEFT - 6.0, py + 4.0, "end", &label);
        }
        for (v, label) in c.x.ticks.clone() {
            let px = c.px(v);
            if c.x.grid {
                c.push(format!(r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{BOTTOM}" stroke="#e0e0e0"/>"##));
            }
            c.text(px, BOTTOM + 18.0, "middle", &label);
        }
        c.push(format!(
            r#"<polyline points="{LEFT},{TOP} {LEFT},{BOTTOM} {RIGHT},{BOTTOM}" fill="none" stroke="black"/>"#
        ));
        c.text((LEFT + RIGHT) / 2.0, BOTTOM + 40.0, "middle", c.x.title);
        let mid = (TOP + BOTTOM) / 2.0;
        c.push(format!(
            r#"<text x="18" y="{mid}" text-anchor="middle" transform="rotate(-90 18 {mid})">{}</text>"#,
            escape(c.y.title)
        ));
        c
    }

    fn px(&self, v: f64) -> f64 {
        LEFT + self.x.frac(v) * (RIGHT - LEFT)
    }

    fn py(&self, v: f64) -> f64 {
        BOTTOM - self.y.frac(v) * (BOTTOM - TOP)
    }

    fn push(&mut self, element: String) {
        self.svg.push_str(&element);
        self.svg.push('\n');
    }

    /// Text with a white halo, so it stays readable where it crosses a line or a bar.
    fn text(&mut self, x: f64, y: f64, anchor: &str, s: &str) {
        self.push(format!(
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            escape(s)
        ));
    }

    /// A line through data points; a lone point is drawn as a dot, since a line needs two.
    fn line(&mut self, points: &[(f64, f64)], color: &str, dashed: bool) {
        let coords: Vec<String> =
            points.iter().map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y))).collect();
        let dash = if dashed { r#" stroke-dasharray="6 4""# } else { "" };
        self.push(format!(
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"{dash}/>"#,
            coords.join(" ")
        ));
        if let [(x, y)] = points {
            self.push(format!(r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, self.px(*x), self.py(*y)));
        }
    }

    /// A horizontal dashed line across the plot at `value`, labelled at its right end; nothing for
    /// a value that was not measured.
    fn reference(&mut self, value: f64, label: &str, color: &str) {
        if value <= 0.0 {
            return;
        }
        self.line(&[(self.x.lo, value), (self.x.hi, value)], color, true);
        self.text(RIGHT - 4.0, self.py(value) - 5.0, "end", label);
    }

    /// A boxed legend in the bottom-right corner of the plot area, one entry per line (where a
    /// rising CDF leaves the plot empty).
    fn legend(&mut self, entries: &[(&str, &str)]) {
        let longest = entries.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
        // Roughly 7 px per character of 12 px sans-serif, plus the colour swatch.
        let (w, h) = (longest as f64 * 7.0 + 44.0, entries.len() as f64 * 18.0 + 8.0);
        let (x, y) = (RIGHT - w - 8.0, BOTTOM - h - 8.0);
        self.push(format!(
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="white" stroke="#999999"/>"##
        ));
        for (i, (label, color)) in entries.iter().enumerate() {
            let row = y + 4.0 + 18.0 * i as f64 + 9.0;
            self.push(format!(
                r#"<line x1="{:.1}" y1="{row:.1}" x2="{:.1}" y2="{row:.1}" stroke="{color}" stroke-width="3"/>"#,
                x + 8.0,
                x + 30.0
            ));
            self.text(x + 36.0, row + 4.0, "start", label);
        }
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>\n");
        self.svg
    }
}

/// The SVG start tag, white background and chart title.
fn header(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    )
}

/// A chart that has only its title and says so: a phase that did not run or measured nothing.
fn no_data(title: &str) -> String {
    let mut svg = header(title);
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"16\" fill=\"#888888\">no data</text>\n</svg>\n",
        WIDTH / 2.0,
        HEIGHT / 2.0
    ));
    svg
}

/// A 1, 2 or 5 × 10ⁿ step at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = if m <= 1.0 + 1e-9 {
        1.0
    } else if m <= 2.0 + 1e-9 {
        2.0
    } else if m <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// As many decimals as the step needs: `0.2` → `0.4`, `5000` → `5,000`.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    if decimals == 0 { rate(v) } else { format!("{v:.decimals$}") }
}

fn finite_points(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() { v.max(0.0) } else { 0.0 }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::tests::sample;

    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    fn all(r: &Results) -> [String; 3] {
        [throughput_vs_workers(r), latency_cdf(r), throughput_over_time(r)]
    }

    #[test]
    fn sample_run_plots_are_well_formed() {
        for svg in all(&sample()) {
            assert_well_formed(&svg);
            assert!(!svg.contains("no data"));
        }
        let svg = throughput_vs_workers(&sample());
        assert!(svg.contains("database ceiling") && svg.contains("naive baseline"));
        assert!(latency_cdf(&sample()).contains("1,000/s offered"));
        assert!(throughput_over_time(&sample()).contains("small queue"));
    }

    #[test]
    fn empty_runs_say_no_data() {
        let mut r = sample();
        r.throughput.clear();
        r.latency.iter_mut().for_each(|l| l.cdf.clear());
        r.backlog.series.clear();
        for svg in all(&r) {
            assert_well_formed(&svg);
            assert!(svg.contains("no data"));
        }
    }

    #[test]
    fn single_points_and_zeros_do_not_break_scales() {
        let mut r = sample();
        r.throughput.truncate(1);
        r.throughput[0].per_second = 0.0;
        r.ceiling.per_second = 0.0;
        r.naive.per_second = f64::NAN;
        r.latency.truncate(1);
        r.latency[0].cdf = vec![(0.0, 1.0)];
        r.backlog.series = vec![(0.0, 0.0)];
        r.backlog.small_queue_per_second = f64::INFINITY;
        for svg in all(&r) {
            assert_well_formed(&svg);
        }
    }

    #[test]
    fn ticks_are_nice() {
        let a = Axis::from_zero(23_300.0 * 1.12, "");
        let labels: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0", "10,000", "20,000", "30,000"]);
        let f = Axis::fraction();
        assert_eq!(f.ticks.last().map(|(_, l)| l.as_str()), Some("1.0"));
        let log = Axis::log10(0.1, 180.0, "");
        assert_eq!(log.hi, 200.0);
        assert_eq!(log.ticks.len(), 4);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
