//! The benchmark's pictures (issue 14, goal 6): small line charts written
//! as SVG text, so that BENCHMARKS.md can show the latency distributions
//! and the memory curve it records.
//!
//! Hand-written rather than a plotting crate: a chart here is a few axes,
//! ticks and polylines, about a hundred lines, and no crate (with its font
//! and image dependencies) needs to be built for the benchmark.

use std::fmt::Write as _;

/// One named line of `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart with linear axes from 0 (or the data's minimum for x) to the
/// data's maximum.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
}

/// The plot area's width; the picture is this plus the margins, the right
/// one as wide as the longest legend label needs.
const PLOT_W: f64 = 480.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
/// The right margin at least (legend swatch, gap, a short label).
const RIGHT: f64 = 170.0;
/// A generous width of one character at font-size 12 (sans-serif digits
/// and lower case are ~6.7 px): a label is never cut off at the edge.
const CHAR_W: f64 = 7.5;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// "Nice" tick values covering `0..=max` (about five).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(mag * 10.0);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(v);
        v += step;
    }
    out
}

/// A tick's text: thousands as `2k` or `1.5k` (one decimal when that is
/// exact), otherwise the number itself, with two decimals when not whole.
fn label(v: f64) -> String {
    let k = v / 1000.0;
    if v.abs() >= 1000.0 && k.fract() == 0.0 {
        format!("{k:.0}k")
    } else if v.abs() >= 1000.0 && (k * 10.0).fract() == 0.0 {
        format!("{k:.1}k")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart<'_> {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.05 };
        let longest = self
            .series
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let right = RIGHT.max(42.0 + longest as f64 * CHAR_W + 12.0);
        let (pw, ph) = (PLOT_W, H - TOP - BOTTOM);
        let w = LEFT + pw + right;
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - y / y1 * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{H}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            w / 2.0,
            esc(self.title)
        );
        // Axes and ticks.
        let _ = writeln!(
            s,
            "<path d=\"M{LEFT} {TOP}V{}H{}\" stroke=\"black\" fill=\"none\"/>",
            TOP + ph,
            LEFT + pw
        );
        for t in ticks(0.0, y1) {
            let y = py(t);
            let _ = writeln!(
                s,
                "<path d=\"M{LEFT} {y:.1}h{pw}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in ticks(x0, x1) {
            let x = px(t);
            let _ = writeln!(
                s,
                "<path d=\"M{x:.1} {}v5\" stroke=\"black\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 18.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            LEFT + pw / 2.0,
            H - 12.0,
            esc(self.x_label),
            TOP + ph / 2.0,
            esc(self.y_label)
        );
        // Lines and legend.
        for (i, ser) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let d: Vec<String> = ser
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y.min(y1))))
                .collect();
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                d.join(" ")
            );
            let ly = TOP + 10.0 + i as f64 * 20.0;
            let _ = writeln!(
                s,
                "<path d=\"M{} {ly}h24\" stroke=\"{colour}\" stroke-width=\"3\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                LEFT + pw + 12.0,
                LEFT + pw + 42.0,
                ly + 4.0,
                esc(&ser.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes the chart to `dir/name`; says where on stderr.
    pub fn write(&self, dir: &str, name: &str) {
        let path = std::path::Path::new(dir).join(name);
        let res = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, self.svg()));
        match res {
            Ok(()) => eprintln!("bench: drew {}", path.display()),
            Err(e) => eprintln!("bench: could not write {}: {e}", path.display()),
        }
    }
}

/// The empirical distribution of `sorted` latencies (ns) as a CDF in
/// milliseconds: `(latency_ms, fraction ≤ it)`.
pub fn cdf(sorted: &[u64]) -> Vec<(f64, f64)> {
    let n = sorted.len().max(1) as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &ns)| (ns as f64 / 1e6, (i + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{CHAR_W, Chart, Series, label};

    #[test]
    fn tick_labels_keep_a_decimal_of_thousands() {
        assert_eq!(label(1500.0), "1.5k");
        assert_eq!(label(2000.0), "2k");
        assert_eq!(label(12_500.0), "12.5k");
        assert_eq!(label(1250.0), "1250");
        assert_eq!(label(500.0), "500");
        assert_eq!(label(0.25), "0.25");
    }

    /// A legend label as long as the benchmark's longest ("emap, 1000
    /// subscribers" was cut at the right edge of a 720-pixel picture): the
    /// picture is wide enough for the label's end.
    #[test]
    fn the_picture_is_wide_enough_for_its_longest_legend_label() {
        let name = "emap, 100000 subscribers with a waiting task each".to_owned();
        let chars = name.chars().count() as f64;
        let chart = Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            series: vec![Series {
                name,
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            }],
        };
        let svg = chart.svg();
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .expect("the svg's width");
        let start: f64 = svg
            .rsplit("<text x=\"")
            .next()
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .expect("the legend label's x");
        assert!(
            start + chars * CHAR_W <= width,
            "label from {start} of {chars} chars in a {width}-wide picture"
        );
    }
}
