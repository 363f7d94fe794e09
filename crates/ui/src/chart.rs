//! SVG line charts: one line per instance over a time window, a y axis with labelled
//! ticks, an x axis in minutes before now, a legend, and the service's request/limit
//! as a dashed line when it has one. Pure: the caller passes the time. A missing sample
//! (`None`) or a gap longer than `max_gap_ms` breaks the line instead of bridging it.
use std::fmt::Write as _;

use holdfast_api::types::InstanceUsage;

use crate::format;

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// (time in ms, value), oldest first.
    pub points: Vec<(u64, Option<f64>)>,
}

/// What the y axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millicores,
    Bytes,
}

/// A whole chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub unit: Unit,
    pub series: Vec<Series>,
    /// Drawn dashed across the chart, with its label (`limit 500m`).
    pub reference: Option<(String, f64)>,
    pub from_ms: u64,
    pub to_ms: u64,
    /// A longer step between two samples is a gap, not a line.
    pub max_gap_ms: u64,
}

const WIDTH: f64 = 640.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = 628.0;
const PLOT_TOP: f64 = 28.0;
const PLOT_BOTTOM: f64 = 208.0;
const LEGEND_TOP: f64 = 236.0;
const LEGEND_ROW: f64 = 18.0;
const LEGEND_PER_ROW: usize = 3;
const TICKS: u32 = 4;
/// Distinguishable line colours, used in turn.
const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

/// The CPU chart of a service's instances: millicores, the service's CPU as the limit.
pub fn cpu_chart(instances: &[InstanceUsage], now_ms: u64, window_ms: u64, interval_ms: u64) -> String {
    let series = instances
        .iter()
        .map(|i| Series {
            label: i.instance.clone(),
            points: i.samples.iter().map(|s| (s.at_ms, s.cpu_millis.map(f64::from))).collect(),
        })
        .collect();
    let limit = instances.iter().filter_map(|i| i.cpu_request_millis).max();
    render(&Chart {
        title: "CPU (millicores)".into(),
        unit: Unit::Millicores,
        series,
        reference: limit.map(|l| (format!("limit {}", format::millicores(u64::from(l))), f64::from(l))),
        from_ms: now_ms.saturating_sub(window_ms),
        to_ms: now_ms,
        max_gap_ms: interval_ms.saturating_mul(3),
    })
}

/// The memory chart of a service's instances: bytes, the service's memory as the limit.
pub fn memory_chart(instances: &[InstanceUsage], now_ms: u64, window_ms: u64, interval_ms: u64) -> String {
    let series = instances
        .iter()
        .map(|i| Series {
            label: i.instance.clone(),
            points: i.samples.iter().map(|s| (s.at_ms, s.memory_bytes.map(|b| b as f64))).collect(),
        })
        .collect();
    let limit = instances.iter().filter_map(|i| i.memory_request_bytes).max();
    render(&Chart {
        title: "Memory".into(),
        unit: Unit::Bytes,
        series,
        reference: limit.map(|l| (format!("limit {}", format::bytes(l)), l as f64)),
        from_ms: now_ms.saturating_sub(window_ms),
        to_ms: now_ms,
        max_gap_ms: interval_ms.saturating_mul(3),
    })
}

/// The chart as a standalone `<svg>` element.
pub fn render(c: &Chart) -> String {
    let scale = YScale::new(c);
    let legend_rows = c.series.len().div_ceil(LEGEND_PER_ROW) as f64;
    let height = LEGEND_TOP + legend_rows * LEGEND_ROW;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="{}">"#,
        escape(&c.title)
    );
    let _ = write!(s, r#"<text class="chart-title" x="{PLOT_LEFT}" y="16">{}</text>"#, escape(&c.title));
    y_axis(&mut s, &scale);
    x_axis(&mut s, c);
    if let Some((label, value)) = &c.reference {
        let y = scale.y(*value);
        let _ = write!(
            s,
            r##"<line class="limit" x1="{PLOT_LEFT}" x2="{PLOT_RIGHT}" y1="{y:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="6 4"/><text class="limit-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            PLOT_RIGHT - 4.0,
            y - 4.0,
            escape(label)
        );
    }
    let mut drawn = 0;
    for (i, series) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if let Some(d) = path_data(c, &scale, series) {
            let _ = write!(
                s,
                r#"<path class="series" d="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><title>{}</title></path>"#,
                escape(&series.label)
            );
            drawn += 1;
        }
        legend_item(&mut s, i, color, &series.label);
    }
    if drawn == 0 {
        let _ = write!(
            s,
            r#"<text class="no-data" x="{:.1}" y="{:.1}" text-anchor="middle">no samples in this window yet</text>"#,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PLOT_TOP + PLOT_BOTTOM) / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The value → pixel mapping: 0 at the bottom, a round number at the top.
struct YScale {
    unit: Unit,
    /// Bytes per displayed unit (1 for millicores).
    divisor: f64,
    suffix: &'static str,
    step: f64,
}

impl YScale {
    fn new(c: &Chart) -> YScale {
        let max = c
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(|(t, _)| *t >= c.from_ms && *t <= c.to_ms).filter_map(|(_, v)| *v))
            .chain(c.reference.as_ref().map(|(_, v)| *v))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let (divisor, suffix) = match c.unit {
            Unit::Millicores => (1.0, "m"),
            Unit::Bytes => byte_unit(max),
        };
        let step = nice_step(max / divisor * 1.05 / f64::from(TICKS));
        let step = if c.unit == Unit::Millicores { step.max(1.0) } else { step };
        YScale { unit: c.unit, divisor, suffix, step }
    }

    fn top(&self) -> f64 {
        self.step * f64::from(TICKS) * self.divisor
    }

    fn y(&self, value: f64) -> f64 {
        let v = value.clamp(0.0, self.top());
        PLOT_BOTTOM - v / self.top() * (PLOT_BOTTOM - PLOT_TOP)
    }

    fn label(&self, tick: u32) -> String {
        let v = self.step * f64::from(tick);
        match self.unit {
            Unit::Millicores => format!("{v:.0}{}", self.suffix),
            Unit::Bytes if v.fract() == 0.0 => format!("{v:.0} {}", self.suffix),
            Unit::Bytes => format!("{v:.1} {}", self.suffix),
        }
    }
}

/// The binary unit the largest value reads best in.
fn byte_unit(max: f64) -> (f64, &'static str) {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut divisor = 1.0;
    let mut unit = 0;
    while max / divisor >= 1024.0 && unit + 1 < UNITS.len() {
        divisor *= 1024.0;
        unit += 1;
    }
    (divisor, UNITS[unit])
}

/// The smallest round step (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10ⁿ) at least `raw`; 1 for
/// nothing.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * 0.999_999)
        .unwrap_or(raw)
}

fn y_axis(s: &mut String, scale: &YScale) {
    for tick in 0..=TICKS {
        let y = scale.y(scale.step * f64::from(tick) * scale.divisor);
        let _ = write!(
            s,
            r##"<line class="grid" x1="{PLOT_LEFT}" x2="{PLOT_RIGHT}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            PLOT_LEFT - 6.0,
            y + 4.0,
            scale.label(tick)
        );
    }
}

fn x_axis(s: &mut String, c: &Chart) {
    let _ = write!(
        s,
        r##"<line class="axis" x1="{PLOT_LEFT}" x2="{PLOT_RIGHT}" y1="{PLOT_BOTTOM}" y2="{PLOT_BOTTOM}" stroke="#888"/>"##
    );
    let span = c.to_ms.saturating_sub(c.from_ms);
    for tick in 0..=TICKS {
        let before_ms = span - span * u64::from(tick) / u64::from(TICKS);
        let x = PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * f64::from(tick) / f64::from(TICKS);
        let label = if before_ms == 0 { "now".to_string() } else { format!("-{}m", before_ms / 60_000) };
        let _ = write!(
            s,
            r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            PLOT_BOTTOM + 16.0
        );
    }
}

/// The `d` of one series' path: a new subpath after every gap; `None` without any point
/// in the window. A lone point is a zero-length segment, drawn as a dot by the round cap.
fn path_data(c: &Chart, scale: &YScale, series: &Series) -> Option<String> {
    let span = c.to_ms.saturating_sub(c.from_ms).max(1) as f64;
    let mut d = String::new();
    let mut last: Option<u64> = None;
    let mut open = false;
    for (at, value) in &series.points {
        let (at, value) = match value {
            Some(v) if v.is_finite() && *at >= c.from_ms && *at <= c.to_ms => (*at, *v),
            _ => {
                open = false;
                continue;
            }
        };
        let x = PLOT_LEFT + (at - c.from_ms) as f64 / span * (PLOT_RIGHT - PLOT_LEFT);
        let y = scale.y(value);
        let continues = open && last.is_some_and(|l| at.saturating_sub(l) <= c.max_gap_ms);
        if continues {
            let _ = write!(d, " L{x:.1} {y:.1}");
        } else {
            let _ = write!(d, "{}M{x:.1} {y:.1} l0 0", if d.is_empty() { "" } else { " " });
        }
        open = true;
        last = Some(at);
    }
    (!d.is_empty()).then_some(d)
}

fn legend_item(s: &mut String, i: usize, color: &str, label: &str) {
    let col = (i % LEGEND_PER_ROW) as f64;
    let row = (i / LEGEND_PER_ROW) as f64;
    let x = PLOT_LEFT + col * (PLOT_RIGHT - PLOT_LEFT) / LEGEND_PER_ROW as f64;
    let y = LEGEND_TOP + row * LEGEND_ROW;
    let _ = write!(
        s,
        r#"<rect class="swatch" x="{x:.1}" y="{:.1}" width="12" height="4" fill="{color}"/><text class="legend" x="{:.1}" y="{y:.1}">{}</text>"#,
        y - 6.0,
        x + 18.0,
        escape(label)
    );
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use holdfast_api::types::UsageSample;

    use super::*;

    const NOW: u64 = 10_000_000;
    const HOUR: u64 = 3_600_000;

    fn instance(name: &str, samples: &[(u64, Option<u32>, Option<u64>)]) -> InstanceUsage {
        InstanceUsage {
            instance: name.into(),
            service: "web".into(),
            project: "p".into(),
            node: "n1".into(),
            cpu_request_millis: None,
            memory_request_bytes: None,
            cpu_millis: None,
            memory_bytes: None,
            cpu_avg_millis: None,
            cpu_peak_millis: None,
            memory_peak_bytes: None,
            samples: samples
                .iter()
                .map(|(at, cpu, mem)| UsageSample { at_ms: *at, cpu_millis: *cpu, memory_bytes: *mem })
                .collect(),
        }
    }

    fn paths(svg: &str) -> Vec<&str> {
        svg.split(r#"<path class="series" d=""#).skip(1).filter_map(|p| p.split('"').next()).collect()
    }

    #[test]
    fn one_path_per_instance_with_axes_and_legend() {
        let a = instance("web-0", &[(NOW - 60_000, Some(100), Some(64 << 20)), (NOW, Some(150), Some(70 << 20))]);
        let b = instance("web-1", &[(NOW - 30_000, Some(20), Some(32 << 20))]);
        let svg = cpu_chart(&[a.clone(), b.clone()], NOW, HOUR, 10_000);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(paths(&svg).len(), 2, "{svg}");
        assert!(svg.contains(">web-0</text>") && svg.contains(">web-1</text>"), "legend");
        assert!(svg.contains(">now</text>") && svg.contains(">-60m</text>") && svg.contains(">-30m</text>"));
        assert!(svg.contains(">160m</text>"), "150m rounds up to a 4 × 40m axis: {svg}");
        assert!(!svg.contains("stroke-dasharray"), "no limit without resources");
        let mem = memory_chart(&[a, b], NOW, HOUR, 10_000);
        assert_eq!(paths(&mem).len(), 2);
        assert!(mem.contains(" MiB</text>"), "{mem}");
    }

    #[test]
    fn the_limit_is_a_dashed_line_and_widens_the_axis() {
        let mut a = instance("web-0", &[(NOW - 1000, Some(100), Some(1 << 20))]);
        a.cpu_request_millis = Some(500);
        a.memory_request_bytes = Some(256 << 20);
        let svg = cpu_chart(std::slice::from_ref(&a), NOW, HOUR, 10_000);
        assert!(svg.contains(r#"class="limit""#) && svg.contains("stroke-dasharray"));
        assert!(svg.contains(">limit 500m</text>") && svg.contains(">600m</text>"), "{svg}");
        let mem = memory_chart(&[a], NOW, HOUR, 10_000);
        assert!(mem.contains(">limit 256 MiB</text>"), "{mem}");
    }

    #[test]
    fn empty_single_and_missing_samples() {
        let empty = cpu_chart(&[], NOW, HOUR, 10_000);
        assert!(paths(&empty).is_empty() && empty.contains("no samples"));
        let none = cpu_chart(&[instance("web-0", &[(NOW, None, None)])], NOW, HOUR, 10_000);
        assert!(paths(&none).is_empty() && none.contains("no samples") && none.contains(">web-0</text>"));
        let one = cpu_chart(&[instance("web-0", &[(NOW - 5000, Some(7), None)])], NOW, HOUR, 10_000);
        let d = paths(&one);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with('M') && d[0].ends_with("l0 0") && !d[0].contains('L'), "a dot: {}", d[0]);
        // A None and a gap longer than 3 intervals both break the line.
        let gappy = instance(
            "web-0",
            &[
                (NOW - 90_000, Some(1), None),
                (NOW - 80_000, None, None),
                (NOW - 70_000, Some(2), None),
                (NOW, Some(3), None),
            ],
        );
        let d = cpu_chart(&[gappy], NOW, HOUR, 10_000);
        assert_eq!(paths(&d)[0].matches('M').count(), 3, "{d}");
        // Samples older than the window are left out.
        let old = cpu_chart(&[instance("web-0", &[(NOW - 2 * HOUR, Some(5), None)])], NOW, HOUR, 10_000);
        assert!(paths(&old).is_empty());
    }

    #[test]
    fn labels_are_escaped() {
        let svg = cpu_chart(&[instance("<script>&", &[(NOW, Some(1), None)])], NOW, HOUR, 10_000);
        assert!(svg.contains("&lt;script&gt;&amp;") && !svg.contains("<script>"));
    }

    #[test]
    fn round_steps() {
        assert_eq!(nice_step(33.6), 40.0);
        assert_eq!(nice_step(9.25), 10.0);
        assert!((nice_step(0.35) - 0.4).abs() < 1e-9);
        assert_eq!(nice_step(131.25), 150.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(byte_unit(300.0 * 1024.0 * 1024.0), (1024.0 * 1024.0, "MiB"));
    }
}
