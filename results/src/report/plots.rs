//! The report's charts, drawn with plotters' SVG back-end into strings.
//!
//! A [`Chart`] is data only (lines of points, axes, a title); [`Chart::to_svg`] draws
//! it. Two x axes exist: the HdrHistogram percentile axis (`x = log10(1 / (1 - p))`, so
//! 0 is the median's left end, 1 is p90, 2 is p99 … 5 is p99.999) and run time in
//! seconds. The y axis is either a logarithmic latency axis (µs) or a linear one.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::prelude::*;

use crate::human;

/// Width and height of every chart, pixels (the SVG scales with the page).
pub(crate) const CHART_SIZE: (u32, u32) = (640, 380);

/// Highest percentile axis position: 5 nines, p99.999.
pub(crate) const PERCENTILE_AXIS_END: f64 = 5.0;

/// One line of a chart: a colour, solid or dashed, drawn as one or more segments (a gap
/// where a figure does not exist, e.g. an interval without deliveries).
#[derive(Clone, Debug)]
pub(crate) struct Line {
    /// Legend text.
    pub label: String,
    /// Stroke colour.
    pub color: RGBColor,
    /// Dashed (the secondary figure of a run: uncorrected, offered, p50, publish).
    pub dashed: bool,
    /// Continuous runs of points.
    pub segments: Vec<Vec<(f64, f64)>>,
}

impl Line {
    /// A line from optional values: a `None` breaks it.
    pub fn from_optional(
        label: String,
        color: RGBColor,
        dashed: bool,
        points: impl IntoIterator<Item = (f64, Option<f64>)>,
    ) -> Self {
        let mut segments = vec![Vec::new()];
        for (x, y) in points {
            match y {
                Some(y) if y.is_finite() => {
                    if let Some(s) = segments.last_mut() {
                        s.push((x, y));
                    }
                }
                _ => segments.push(Vec::new()),
            }
        }
        segments.retain(|s| !s.is_empty());
        Self {
            label,
            color,
            dashed,
            segments,
        }
    }

    fn points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.segments.iter().flatten()
    }
}

/// The x axis of a chart.
#[derive(Clone, Debug)]
pub(crate) enum XAxis {
    /// Percentile on HdrHistogram's log scale, 0 ..= [`PERCENTILE_AXIS_END`].
    Percentile,
    /// Seconds of the run clock, 0 ..= `end`; from each `drain_from` on, the drain after
    /// the measured phase is shaded.
    Seconds {
        /// Right end of the axis.
        end: f64,
        /// Where each run's measured phase ended.
        drain_from: Vec<f64>,
        /// The fault windows of the runs (injected, healed), shaded in red.
        faults: Vec<(f64, f64)>,
    },
}

/// The y axis of a chart and how its ticks read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum YAxis {
    /// Latency in µs on a log scale.
    LatencyUs,
    /// Messages per second, from 0.
    Rate,
    /// Availability in percent, up to 100.
    Percent,
    /// CPU, percent of one core, from 0.
    Cpu,
    /// Memory in MiB, from 0.
    MiB,
}

/// A chart: title, axes, lines, legend corner.
#[derive(Clone, Debug)]
pub(crate) struct Chart {
    /// Caption above the plot.
    pub title: String,
    /// The x axis.
    pub x: XAxis,
    /// The y axis.
    pub y: YAxis,
    /// Description under the x axis.
    pub x_desc: String,
    /// Description beside the y axis.
    pub y_desc: String,
    /// The lines, drawn in order.
    pub lines: Vec<Line>,
}

/// Why a chart could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart `{title}`: {message}")]
pub struct PlotError {
    /// The chart's title.
    pub title: String,
    /// What plotters reported.
    pub message: String,
}

/// HdrHistogram's percentile axis: position `x = log10(1 / (1 - p))` from 0 to
/// [`PERCENTILE_AXIS_END`], labelled at every nine (0 %, 90 %, 99 %, …), with light grid
/// lines at the halves of each decade (50 %, 95 %, 99.5 %, …).
#[derive(Clone, Debug)]
struct PercentileAxis;

impl Ranged for PercentileAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = value / PERCENTILE_AXIS_END;
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let nines = (0..=PERCENTILE_AXIS_END as u32).map(f64::from);
        if hint.weight().allow_light_points() {
            // 1 - p = 0.5 × 10^-k: 50 %, 95 %, 99.5 %, …
            nines
                .clone()
                .chain(nines.map(|k| k + 2f64.log10()))
                .filter(|x| *x <= PERCENTILE_AXIS_END)
                .collect()
        } else {
            nines.collect()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..PERCENTILE_AXIS_END
    }
}

/// `p` (0..1) for a position on the percentile axis.
pub(crate) fn quantile_at(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

/// A percentile axis tick: `0%`, `90%`, `99%`, `99.9%`, … .
fn percentile_tick(x: f64) -> String {
    let p = quantile_at(x) * 100.0;
    // Enough decimals to show every nine of the position, and no trailing zeros.
    let decimals = ((x + 0.5).floor() as usize).saturating_sub(1).min(6);
    let text = format!("{p:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}%")
}

fn y_tick(axis: YAxis, v: f64) -> String {
    match axis {
        YAxis::LatencyUs => human::latency_tick_us(v),
        YAxis::Rate => {
            if v.abs() >= 1_000.0 {
                format!("{}k", human::trim_number(v / 1_000.0))
            } else {
                human::trim_number(v)
            }
        }
        YAxis::Percent | YAxis::Cpu => format!("{}%", human::trim_number(v)),
        YAxis::MiB => format!("{} MiB", human::trim_number(v)),
    }
}

/// Powers of ten around `[lo, hi]` (both > 0), at least two decades apart.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let mut hi = 10f64.powf(hi.max(lo).log10().ceil());
    if hi / lo < 100.0 {
        hi = lo * 100.0;
    }
    (lo, hi)
}

impl Chart {
    /// True when no line has a point.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.segments.is_empty())
    }

    /// The y range: log decades for latency, from 0 (or just under the lowest
    /// availability) to a little above the highest value otherwise.
    fn y_range(&self) -> (f64, f64) {
        let values = || self.lines.iter().flat_map(Line::points).map(|p| p.1);
        let lo = values().fold(f64::INFINITY, f64::min);
        let hi = values().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        match self.y {
            YAxis::LatencyUs => log_range(lo.max(1e-3), hi.max(1e-3)),
            YAxis::Percent => {
                // Show a dip at its scale: 99.9 % is not 0 %.
                let floor = if lo >= 99.0 {
                    99.0
                } else if lo >= 90.0 {
                    90.0
                } else {
                    0.0
                };
                (floor, 100.0 + (100.0 - floor) * 0.04)
            }
            YAxis::Rate | YAxis::Cpu | YAxis::MiB => (0.0, if hi > 0.0 { hi * 1.12 } else { 1.0 }),
        }
    }

    /// Draws the chart as a standalone SVG document (`<svg …>…</svg>`).
    ///
    /// # Errors
    /// A [`PlotError`] if plotters fails (it writes to memory, so only on a bug).
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let mut svg = String::new();
        let result = {
            let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
            let (y_lo, y_hi) = self.y_range();
            match self.y {
                YAxis::LatencyUs => self.draw_on_x(&root, (y_lo..y_hi).log_scale(), (y_lo, y_hi)),
                _ => self.draw_on_x(&root, y_lo..y_hi, (y_lo, y_hi)),
            }
        };
        result.map_err(|message| PlotError {
            title: self.title.clone(),
            message,
        })?;
        Ok(svg)
    }

    /// Draws with the y coordinate `y` on this chart's x axis (the axes are distinct
    /// types to plotters, hence one call per kind).
    fn draw_on_x<Y>(
        &self,
        root: &DrawingArea<SVGBackend<'_>, Shift>,
        y: Y,
        y_bounds: (f64, f64),
    ) -> Result<(), String>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let y_fmt = |v: &f64| y_tick(self.y, *v);
        match &self.x {
            XAxis::Percentile => self.draw(
                root,
                PercentileAxis,
                y,
                &|x: &f64| percentile_tick(*x),
                &y_fmt,
                y_bounds,
            ),
            XAxis::Seconds { end, .. } => self.draw(
                root,
                0f64..*end,
                y,
                &|x: &f64| format!("{}s", human::trim_number(*x)),
                &y_fmt,
                y_bounds,
            ),
        }
    }

    fn draw<X, Y>(
        &self,
        root: &DrawingArea<SVGBackend<'_>, Shift>,
        x: X,
        y: Y,
        x_fmt: &dyn Fn(&f64) -> String,
        y_fmt: &dyn Fn(&f64) -> String,
        (y_lo, y_hi): (f64, f64),
    ) -> Result<(), String>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|e| text(&e))?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 17))
            .margin(12)
            .margin_right(30)
            .x_label_area_size(42)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(|e| text(&e))?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .x_label_formatter(x_fmt)
            .y_label_formatter(y_fmt)
            .x_labels(12)
            .y_labels(10)
            .light_line_style(RGBColor(236, 236, 236))
            .bold_line_style(RGBColor(205, 205, 205))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()
            .map_err(|e| text(&e))?;
        if let XAxis::Seconds {
            end,
            drain_from,
            faults,
        } = &self.x
        {
            for &(from, to) in faults.iter().filter(|(from, _)| *from < *end) {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(from, y_lo), (to.min(*end), y_hi)],
                        RGBColor(214, 39, 40).mix(0.12).filled(),
                    )))
                    .map_err(|e| text(&e))?;
            }
            // The drain after the measured phase: completions still count, nothing new
            // is sent, so rates fall by design.
            for &from in drain_from.iter().filter(|&&d| d < *end) {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(from, y_lo), (*end, y_hi)],
                        RGBColor(120, 120, 120).mix(0.08).filled(),
                    )))
                    .map_err(|e| text(&e))?;
            }
        }
        for line in &self.lines {
            let style = ShapeStyle::from(&line.color).stroke_width(2);
            for (i, segment) in line.segments.iter().enumerate() {
                let anno = if line.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(segment.iter().copied(), 7, 4, style))
                        .map_err(|e| text(&e))?
                } else {
                    chart
                        .draw_series(LineSeries::new(segment.iter().copied(), style))
                        .map_err(|e| text(&e))?
                };
                if i == 0 && !line.label.is_empty() {
                    let dashed = line.dashed;
                    anno.label(line.label.as_str()).legend(move |(x, y)| {
                        let first = if dashed { 7 } else { 18 };
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (first, 0)], style)
                            + PathElement::new(
                                vec![(if dashed { 11 } else { 0 }, 0), (18, 0)],
                                style,
                            )
                    });
                }
            }
        }
        let position = match (&self.x, self.y) {
            (XAxis::Percentile, _) => SeriesLabelPosition::UpperLeft,
            (_, YAxis::Percent) => SeriesLabelPosition::LowerLeft,
            _ => SeriesLabelPosition::UpperRight,
        };
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| text(&e))?;
        root.present().map_err(|e| text(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_ticks() {
        assert_eq!(percentile_tick(0.0), "0%");
        assert_eq!(percentile_tick(1.0), "90%");
        assert_eq!(percentile_tick(2.0), "99%");
        assert_eq!(percentile_tick(3.0), "99.9%");
        assert_eq!(percentile_tick(5.0), "99.999%");
        assert!((quantile_at(2.0) - 0.99).abs() < 1e-12);
    }

    #[test]
    fn ranges() {
        assert_eq!(log_range(150.0, 8_000.0), (100.0, 10_000.0));
        assert_eq!(
            log_range(150.0, 300.0),
            (100.0, 10_000.0),
            "two decades at least"
        );
        let chart = |y, values: &[f64]| Chart {
            title: "t".into(),
            x: XAxis::Seconds {
                end: 3.0,
                drain_from: vec![],
                faults: vec![],
            },
            y,
            x_desc: String::new(),
            y_desc: String::new(),
            lines: vec![Line::from_optional(
                "a".into(),
                BLACK,
                false,
                values.iter().enumerate().map(|(i, v)| (i as f64, Some(*v))),
            )],
        };
        assert_eq!(chart(YAxis::Percent, &[100.0, 99.5]).y_range().0, 99.0);
        assert_eq!(chart(YAxis::Percent, &[100.0, 40.0]).y_range().0, 0.0);
        assert_eq!(
            chart(YAxis::Rate, &[0.0, 1_000.0]).y_range(),
            (0.0, 1_120.0)
        );
    }

    #[test]
    fn gaps_split_lines() {
        let line = Line::from_optional(
            "x".into(),
            BLACK,
            false,
            [
                (0.0, Some(1.0)),
                (1.0, None),
                (2.0, Some(2.0)),
                (3.0, Some(3.0)),
            ],
        );
        assert_eq!(
            line.segments,
            vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]
        );
        let empty = Line::from_optional("x".into(), BLACK, false, [(0.0, None)]);
        assert!(empty.segments.is_empty());
    }

    #[test]
    fn draws_svg_with_legend_and_ticks() {
        let chart = Chart {
            title: "End-to-end latency by percentile".into(),
            x: XAxis::Percentile,
            y: YAxis::LatencyUs,
            x_desc: "percentile".into(),
            y_desc: "latency".into(),
            lines: vec![
                Line::from_optional(
                    "reference".into(),
                    RGBColor(78, 121, 167),
                    false,
                    (0..=500).map(|i| (f64::from(i) / 100.0, Some(100.0 + f64::from(i)))),
                ),
                Line::from_optional(
                    "reference uncorrected".into(),
                    RGBColor(78, 121, 167),
                    true,
                    (0..=500).map(|i| (f64::from(i) / 100.0, Some(90.0 + f64::from(i)))),
                ),
            ],
        };
        let svg = chart.to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "99.9%",
            "99.999%",
            "reference uncorrected",
            "100µs",
            "End-to-end latency by percentile",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("<polyline"), "lines drawn");
    }
}
