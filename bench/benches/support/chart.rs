//! Draws a bench's latency percentiles as an SVG chart, so that a run leaves a picture beside
//! its table: one group of bars per percentile, one bar (and one colour) per server
//! ([`LatencyChart`]); or draws a sweep as lines, one panel per measure ([`LineChart`]).
//!
//! The charts go to `bench-charts/` in cargo's target directory (the one holding the bench
//! binary), named `<bench>-<scenario>.svg`; `GETTY_BENCH_CHART_DIR` puts them elsewhere.
//! A chart that cannot be drawn is reported and skipped: it never fails the bench.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;

/// Each percentile's slot on the x axis is this many units wide (integer units: a float
/// axis with chosen key points has no label formatter in plotters).
const SLOT: i32 = 100;

/// Above this ratio of the largest to the smallest latency, the y axis is logarithmic: a
/// linear one would flatten the small bars to nothing.
const LOG_SCALE_RATIO: f64 = 20.0;

/// Bar colours, one per server in order: the first (getty-rs, by the benches' convention)
/// gets the strongest.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One server's latencies, in µs, in the order of the chart's percentiles.
pub struct Series {
    pub name: String,
    pub micros: Vec<f64>,
}

/// What one chart shows.
pub struct LatencyChart<'a> {
    /// The bench's name: the first part of the file name.
    pub bench: &'a str,
    /// The scenario's short name (`a`, `set-P16`): the second part of the file name.
    pub scenario: &'a str,
    /// The title above the chart.
    pub title: &'a str,
    /// The percentiles' names, along the x axis (`p50`, `p99`, `max`).
    pub percentiles: &'a [&'a str],
    pub series: Vec<Series>,
}

impl LatencyChart<'_> {
    /// Draws the chart and prints where it went, or why it could not be drawn.
    pub fn report(&self) {
        match self.draw() {
            Ok(path) => println!("  chart: {}", path.display()),
            Err(e) => eprintln!("  chart {}-{} not drawn: {e}", self.bench, self.scenario),
        }
    }

    /// Draws the chart into its file and returns that file's path.
    pub fn draw(&self) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let dir = chart_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{}-{}.svg", self.bench, file_safe(self.scenario)));
        self.draw_to(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn draw_to(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let values: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.micros.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        if values.is_empty() || self.percentiles.is_empty() {
            return Err("no latency to draw".into());
        }
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);

        let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let slots = self.percentiles.len();
        // Slot i spans [i, i + 1) slots; its label sits at its middle.
        let middles = (0..slots as i32).map(|i| i * SLOT + SLOT / 2).collect();
        let x_range = (0..slots as i32 * SLOT).with_key_points(middles);
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(self.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64);
        if high / low > LOG_SCALE_RATIO {
            // Whole decades, so that the bars start from a round floor.
            let floor = 10f64.powf(low.log10().floor());
            let ceiling = 10f64.powf(high.log10().ceil());
            let mut chart = builder.build_cartesian_2d(x_range, (floor..ceiling).log_scale())?;
            self.draw_axes_and_bars(&mut chart, floor, "latency, µs (log scale)")?;
        } else {
            let mut chart = builder.build_cartesian_2d(x_range, 0.0..high * 1.15)?;
            self.draw_axes_and_bars(&mut chart, 0.0, "latency, µs")?;
        }
        root.present()?;
        Ok(())
    }

    /// The mesh, one bar per server in each percentile's slot (each with its value above it)
    /// and the legend. Bars rise from `base`, the bottom of the y axis.
    fn draw_axes_and_bars<'a, X, Y>(
        &self,
        chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
        base: f64,
        y_desc: &str,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        X: Ranged<ValueType = i32> + ValueFormatter<i32>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let percentiles = self.percentiles;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| {
                let slot = usize::try_from(x / SLOT).unwrap_or(usize::MAX);
                percentiles.get(slot).copied().unwrap_or("").to_owned()
            })
            .x_desc("percentile")
            .y_desc(y_desc)
            .y_label_formatter(&|y| format_tick(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;

        // The bars of a slot fill its middle 80%, each a little narrower than its share.
        let share = SLOT * 8 / 10 / self.series.len().max(1) as i32;
        let width = (share * 9 / 10).max(1);
        for (index, series) in self.series.iter().enumerate() {
            let colour = PALETTE[index % PALETTE.len()];
            let left = |slot: usize| slot as i32 * SLOT + SLOT / 10 + index as i32 * share;
            let bars = series
                .micros
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > base)
                .map(|(slot, &v)| (left(slot), v));
            chart
                .draw_series(
                    bars.clone()
                        .map(|(x, v)| Rectangle::new([(x, base), (x + width, v)], colour.filled())),
                )?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled())
                });
            chart.draw_series(bars.map(|(x, v)| {
                Text::new(
                    format_micros(v),
                    (x, v),
                    ("sans-serif", 11)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Bottom)),
                )
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()?;
        Ok(())
    }
}

/// A latency in µs, with as many decimals as its size deserves.
fn format_micros(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An axis tick: whole numbers (the log axis's decades) without decimals.
fn format_tick(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else {
        format_micros(v)
    }
}

/// `GETTY_BENCH_CHART_DIR`, or `bench-charts/` in the target directory: the bench binary
/// is `<target>/<profile>/deps/<name>`, so that is three levels up from it.
fn chart_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GETTY_BENCH_CHART_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench-charts")
}

/// `name` with anything but letters, digits, `-` and `_` turned into `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One server's values along a line chart's x axis (NaN where it has none).
#[allow(dead_code)] // Only the sweep draws lines.
pub struct Line {
    pub name: String,
    pub values: Vec<f64>,
}

/// One panel of a line chart: a measure (its axis name) and one line per server.
#[allow(dead_code)] // Only the sweep draws lines.
pub struct Panel {
    /// The y axis's name, with its unit.
    pub y_desc: String,
    pub lines: Vec<Line>,
}

/// A sweep drawn as lines: the swept setting along the x axis (its points evenly spaced,
/// named by their labels), one panel per measure, side by side, one line per server.
#[allow(dead_code)] // Only the sweep draws lines.
pub struct LineChart<'a> {
    /// The bench's name: the first part of the file name.
    pub bench: &'a str,
    /// The sweep's short name: the second part of the file name.
    pub name: &'a str,
    pub title: &'a str,
    /// The x axis's name (`connections`, `message size`).
    pub x_desc: &'a str,
    /// The swept values' names, in order along the x axis.
    pub x_labels: &'a [String],
    pub panels: Vec<Panel>,
}

#[allow(dead_code)] // Only the sweep draws lines.
impl LineChart<'_> {
    /// Draws the chart and prints where it went, or why it could not be drawn.
    pub fn report(&self) {
        match self.draw() {
            Ok(path) => println!("  chart: {}", path.display()),
            Err(e) => eprintln!("  chart {}-{} not drawn: {e}", self.bench, self.name),
        }
    }

    /// Draws the chart into its file and returns that file's path.
    pub fn draw(&self) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let dir = chart_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{}-{}.svg", self.bench, file_safe(self.name)));
        self.draw_to(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn draw_to(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        if self.x_labels.is_empty() || self.panels.is_empty() {
            return Err("nothing to draw".into());
        }
        let width = WIDTH / 2 * self.panels.len().max(2) as u32;
        let root = SVGBackend::new(path, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(self.title, ("sans-serif", 20))?;
        let areas = root.split_evenly((1, self.panels.len()));
        for (panel, area) in self.panels.iter().zip(&areas) {
            self.draw_panel(panel, area)?;
        }
        root.present()?;
        Ok(())
    }

    fn draw_panel(
        &self,
        panel: &Panel,
        area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let values: Vec<f64> = panel
            .lines
            .iter()
            .flat_map(|l| l.values.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        let points = self.x_labels.len() as i32;
        // Point i sits at the middle of slot i.
        let middles = (0..points).map(|i| i * SLOT + SLOT / 2).collect();
        let x_range = (0..points * SLOT).with_key_points(middles);
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72);
        if high / low > LOG_SCALE_RATIO {
            let floor = 10f64.powf(low.log10().floor());
            let ceiling = 10f64.powf(high.log10().ceil());
            let mut chart = builder.build_cartesian_2d(x_range, (floor..ceiling).log_scale())?;
            self.draw_lines(&mut chart, panel, &format!("{} (log scale)", panel.y_desc))
        } else {
            let mut chart = builder.build_cartesian_2d(x_range, 0.0..high * 1.15)?;
            self.draw_lines(&mut chart, panel, &panel.y_desc)
        }
    }

    /// The mesh, one line with marked points per server, and the legend.
    fn draw_lines<'a, X, Y>(
        &self,
        chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
        panel: &Panel,
        y_desc: &str,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        X: Ranged<ValueType = i32> + ValueFormatter<i32>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let labels = self.x_labels;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| {
                let slot = usize::try_from(x / SLOT).unwrap_or(usize::MAX);
                labels.get(slot).cloned().unwrap_or_default()
            })
            .x_desc(self.x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|y| format_count(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for (index, line) in panel.lines.iter().enumerate() {
            let colour = PALETTE[index % PALETTE.len()];
            let points: Vec<(i32, f64)> = line
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(i, &v)| (i as i32 * SLOT + SLOT / 2, v))
                .collect();
            chart
                // A path, not a LineSeries: that needs plotters' `line_series` feature.
                .draw_series(std::iter::once(PathElement::new(
                    points.clone(),
                    colour.stroke_width(2),
                )))?
                .label(line.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(legend_corner(panel))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()?;
        Ok(())
    }
}

/// Where the legend hides no line: the upper left corner when the lines rise to the
/// right, the upper right one when they fall.
#[allow(dead_code)] // Only the sweep draws lines.
fn legend_corner(panel: &Panel) -> SeriesLabelPosition {
    let end = |last: bool| -> f64 {
        let ends = panel.lines.iter().filter_map(|l| {
            let mut values = l.values.iter().copied().filter(|v| v.is_finite());
            if last {
                values.next_back()
            } else {
                values.next()
            }
        });
        ends.fold(0.0, f64::max)
    };
    if end(true) > end(false) {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// An axis tick of a count or a rate: 1.2k, 3.4M.
#[allow(dead_code)] // Only the sweep draws lines.
fn format_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format_tick(v)
    }
}
