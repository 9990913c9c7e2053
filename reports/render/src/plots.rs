//! SVG plots drawn with plotters: score histograms (the paper's Figure 3) and
//! DET curves on normal-deviate axes (ISO/IEC 19795-1).

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use statrs::distribution::{ContinuousCDF, Normal};

/// One set of scores to draw.
pub struct Series<'a> {
    pub label: String,
    pub scores: &'a [f32],
    pub color: RGBColor,
}

pub const GENUINE: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
pub const ZEI: RGBColor = RGBColor(0x88, 0x88, 0x88);
pub const POISONED: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
pub const CONTROL: RGBColor = RGBColor(0x75, 0x70, 0xb3);
/// Colours for several triggers on one DET plot.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0xe7, 0x29, 0x8a),
    RGBColor(0x66, 0xa6, 0x1e),
    RGBColor(0xe6, 0xab, 0x02),
    RGBColor(0xa6, 0x76, 0x1d),
    RGBColor(0x1f, 0x78, 0xb4),
    RGBColor(0x6a, 0x3d, 0x9a),
    RGBColor(0xb1, 0x59, 0x28),
];

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {what}: {message}")]
pub struct PlotError {
    what: String,
    message: String,
}

fn err(what: &str) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        what: what.to_string(),
        message,
    }
}

const BINS: usize = 50;

/// Draws the legend box, the same on every plot.
fn finish<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|x| x.to_string())
}

/// A histogram of each series (share of that series per bin, drawn as
/// outlined areas) with an optional vertical threshold line.
pub fn histogram(
    title: &str,
    series: &[Series<'_>],
    threshold: Option<(f32, String)>,
) -> Result<String, PlotError> {
    let e = err(title);
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.scores.iter().copied())
            .filter(|x| x.is_finite())
    };
    let lo = finite().fold(f32::INFINITY, f32::min);
    let hi = finite().fold(f32::NEG_INFINITY, f32::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        let lo = ((lo.min(threshold.as_ref().map_or(lo, |t| t.0)) * 20.0).floor() / 20.0).max(-1.0);
        let hi = ((hi * 20.0).ceil() / 20.0).min(1.0);
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.05, lo + 0.05)
        }
    } else {
        (-1.0, 1.0)
    };
    let width = (hi - lo) / BINS as f32;
    let mut curves = Vec::new();
    let mut ymax = 0f32;
    for s in series {
        let mut counts = [0usize; BINS];
        let mut n = 0usize;
        for &x in s.scores.iter().filter(|x| x.is_finite()) {
            let b = (((x - lo) / width) as usize).min(BINS - 1);
            counts[b] += 1;
            n += 1;
        }
        let shares: Vec<f32> = counts
            .iter()
            .map(|&c| if n == 0 { 0.0 } else { c as f32 / n as f32 })
            .collect();
        ymax = shares.iter().copied().fold(ymax, f32::max);
        let mut points = Vec::with_capacity(2 * BINS);
        for (i, &y) in shares.iter().enumerate() {
            points.push((lo + i as f32 * width, y));
            points.push((lo + (i + 1) as f32 * width, y));
        }
        curves.push((points, n));
    }
    let ymax = (ymax * 1.1).max(0.05);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..hi, 0f32..ymax)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("pair score: cos(translated probe, reference)")
            .y_desc("share of samples per bin")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (s, (points, n)) in series.iter().zip(curves) {
            let color = s.color;
            chart
                .draw_series(
                    AreaSeries::new(points, 0.0, color.mix(0.22))
                        .border_style(color.stroke_width(2)),
                )
                .map_err(|x| e(x.to_string()))?
                .label(format!("{} (n = {n})", s.label))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
        }
        if let Some((t, label)) = threshold {
            chart
                .draw_series(LineSeries::new(
                    vec![(t, 0.0), (t, ymax)],
                    BLACK.stroke_width(2),
                ))
                .map_err(|x| e(x.to_string()))?
                .label(label)
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], BLACK.stroke_width(2))
                });
        }
        finish(&mut chart, SeriesLabelPosition::UpperLeft).map_err(&e)?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// Error-rate pairs of a DET curve: for every threshold t among the scores,
/// (share of `impostor` scores ≥ t, share of `genuine` scores < t).
pub fn det_points(genuine: &[f32], impostor: &[f32]) -> Vec<(f64, f64)> {
    let mut g: Vec<f32> = genuine.iter().copied().filter(|x| x.is_finite()).collect();
    let mut i: Vec<f32> = impostor.iter().copied().filter(|x| x.is_finite()).collect();
    if g.is_empty() || i.is_empty() {
        return Vec::new();
    }
    g.sort_by(f32::total_cmp);
    i.sort_by(f32::total_cmp);
    let mut ts: Vec<f32> = g.iter().chain(i.iter()).copied().collect();
    ts.sort_by(f32::total_cmp);
    ts.dedup();
    ts.iter()
        .map(|&t| {
            let fnmr = g.partition_point(|&x| x < t) as f64 / g.len() as f64;
            let fmr = (i.len() - i.partition_point(|&x| x < t)) as f64 / i.len() as f64;
            (fmr, fnmr)
        })
        .collect()
}

/// A linear axis in normal-deviate units whose ticks sit at chosen rates.
#[derive(Clone)]
struct ProbitAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for ProbitAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }
}

const DET_TICKS: [f64; 8] = [0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8];

fn rate_label(r: f64) -> String {
    let p = 100.0 * r;
    if p < 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// DET curves: each series' scores as impostors against `genuine`, on
/// normal-deviate axes from 0.1 % to 80 %; rates outside are drawn on the
/// edge.
pub fn det(title: &str, genuine: &[f32], impostors: &[Series<'_>]) -> Result<String, PlotError> {
    let e = err(title);
    let normal = Normal::standard();
    let probit = |r: f64| normal.inverse_cdf(r.clamp(0.0007, 0.85));
    let (lo, hi) = (probit(0.0007), probit(0.85));
    let keys: Vec<f64> = DET_TICKS.iter().map(|&r| normal.inverse_cdf(r)).collect();
    let label = |v: &f64| rate_label(normal.cdf(*v));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(
                ProbitAxis {
                    lo,
                    hi,
                    ticks: keys.clone(),
                },
                ProbitAxis {
                    lo,
                    hi,
                    ticks: keys,
                },
            )
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("samples passing as agreement (FMR)")
            .y_desc("clean samples flagged (FNMR)")
            .x_label_formatter(&label)
            .y_label_formatter(&label)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for s in impostors {
            let color = s.color;
            let points: Vec<(f64, f64)> = det_points(genuine, s.scores)
                .into_iter()
                .map(|(fmr, fnmr)| (probit(fmr), probit(fnmr)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        finish(&mut chart, SeriesLabelPosition::UpperRight).map_err(&e)?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}
