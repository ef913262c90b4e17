//! The chart of a simulation: load and each policy's ready capacity over time (top), and each
//! policy's replicas (bottom), as SVG and PNG.
//!
//! Text needs a TrueType font; [`load_font`] registers one from the system (DejaVu Sans, as
//! Debian's `fonts-dejavu-core` installs it) or from `WASMSCALER_FONT`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::{Point, PolicyReport};

/// Points per line at most: a month at 15 s is 172,800 runs, far more than a chart has pixels.
const MAX_POINTS: usize = 1200;
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 720;

/// Where fonts are looked for, in order, after `WASMSCALER_FONT`.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Why a chart was not drawn.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChartError {
    /// No font to draw text with.
    #[error(
        "no TrueType font for the chart's text: set WASMSCALER_FONT to a .ttf file or install fonts-dejavu-core (looked in {tried})"
    )]
    NoFont {
        /// The places looked in.
        tried: String,
    },
    /// A font file that is not a font.
    #[error("{path}: not a usable TrueType font")]
    BadFont {
        /// The file.
        path: PathBuf,
    },
    /// Nothing to draw.
    #[error("no policy has points to draw")]
    Empty,
    /// Drawing or writing failed.
    #[error("drawing {what}: {message}")]
    Draw {
        /// The chart's file or format.
        what: String,
        /// The backend's error.
        message: String,
    },
}

/// Registers a font for the charts' text, once per process.
pub fn load_font() -> Result<(), ChartError> {
    static LOADED: OnceLock<Result<(), ChartError>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = std::env::var_os("WASMSCALER_FONT")
                .map(PathBuf::from)
                .into_iter()
                .collect();
            candidates.extend(FONT_PATHS.iter().map(PathBuf::from));
            for path in &candidates {
                let Ok(bytes) = std::fs::read(path) else {
                    continue;
                };
                // The registry keeps the bytes for the process's life, as fonts are.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| ChartError::BadFont { path: path.clone() });
            }
            let tried = candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Err(ChartError::NoFont { tried })
        })
        .clone()
}

/// The chart as an SVG document.
pub fn svg(reports: &[PolicyReport], title: &str) -> Result<String, ChartError> {
    load_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(root, reports, title).map_err(|message| ChartError::Draw {
            what: "the SVG chart".into(),
            message,
        })?;
    }
    Ok(out)
}

/// The chart as a PNG file at `path`.
pub fn png(reports: &[PolicyReport], title: &str, path: &Path) -> Result<(), ChartError> {
    load_font()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(root, reports, title).map_err(|message| ChartError::Draw {
        what: path.display().to_string(),
        message,
    })
}

/// Averages `points` into at most [`MAX_POINTS`] buckets of consecutive points.
fn downsample(points: &[Point]) -> Vec<Point> {
    let per_bucket = points.len().div_ceil(MAX_POINTS).max(1);
    points
        .chunks(per_bucket)
        .map(|bucket| {
            let n = bucket.len() as f64;
            let mean = |f: fn(&Point) -> f64| bucket.iter().map(f).sum::<f64>() / n;
            Point {
                time: bucket[0].time,
                load: mean(|p| p.load),
                capacity: mean(|p| p.capacity),
                replicas: mean(|p| f64::from(p.replicas)).round() as u32,
                desired: mean(|p| f64::from(p.desired)).round() as u32,
            }
        })
        .collect()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[PolicyReport],
    title: &str,
) -> Result<(), String> {
    let series: Vec<(&str, Vec<Point>)> = reports
        .iter()
        .filter(|r| !r.series.is_empty())
        .map(|r| (r.name.as_str(), downsample(&r.series)))
        .collect();
    let Some((_, first)) = series.first() else {
        return Err(ChartError::Empty.to_string());
    };
    let end = series
        .iter()
        .filter_map(|(_, s)| s.last().map(|p| p.time))
        .fold(0.0_f64, f64::max);
    // Hours on long traces, minutes on short ones.
    let (unit, scale) = if end > 3.0 * 3600.0 {
        ("time (h)", 3600.0)
    } else {
        ("time (min)", 60.0)
    };
    let x_end = (end / scale).max(1e-3);
    let top = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.load.max(p.capacity)))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let most = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.replicas))
        .max()
        .unwrap_or(1)
        .max(1);
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();

    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = root.split_vertically(HEIGHT * 3 / 5);
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_end, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("units/s")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            first.iter().map(|p| (p.time / scale, p.load)),
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label("load")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.time / scale, p.capacity)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{name}: ready capacity"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    legend(&mut chart).map_err(err)?;

    let mut replicas = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_end, 0.0..f64::from(most) * 1.15)
        .map_err(err)?;
    replicas
        .configure_mesh()
        .x_desc(unit)
        .y_desc("replicas")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        replicas
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.time / scale, f64::from(p.replicas))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{name}: replicas"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    legend(&mut replicas).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The series' legend, top left.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(time: f64, load: f64) -> Point {
        Point {
            time,
            load,
            capacity: 10.0,
            replicas: 1,
            desired: 1,
        }
    }

    #[test]
    fn long_series_are_averaged_into_buckets() {
        let points: Vec<Point> = (0..12_000)
            .map(|i| point(i as f64, (i % 2) as f64))
            .collect();
        let down = downsample(&points);
        assert!(down.len() <= MAX_POINTS, "{}", down.len());
        assert!(down.len() >= MAX_POINTS / 2, "{}", down.len());
        // 12,000 points in buckets of 10: alternating 0/1 averages to one half.
        assert_eq!(down[0].load, 0.5);
        assert_eq!(down[0].time, 0.0);
    }

    #[test]
    fn short_series_are_drawn_as_they_are() {
        let points: Vec<Point> = (0..10).map(|i| point(i as f64, i as f64)).collect();
        assert_eq!(downsample(&points), points);
    }
}
