//! Training curves: loss and accuracy against epoch (train and validation), the achieved GFLOP/s
//! of each epoch and, where the metrics carry a prediction, predicted against measured seconds.

use super::palette::{BLUE, GREEN, GREY, ORANGE, PURPLE, RED, TEXT};
use super::{DrawResult, EpochRow, Format, Picture, save};
use crate::error::Result;
use crate::train::EpochReport;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const WIDTH: u32 = 960;
const PANEL: u32 = 300;
const TITLE: u32 = 44;

/// Loss, accuracy and throughput panels, one above the other.
#[derive(Clone, Debug)]
pub struct Curves {
    pub title: String,
    pub rows: Vec<EpochRow>,
}

struct Series<'a> {
    name: &'a str,
    color: RGBColor,
    points: Vec<(i32, f64)>,
}

impl Curves {
    pub fn new(title: impl Into<String>, rows: Vec<EpochRow>) -> Curves {
        Curves { title: title.into(), rows }
    }

    fn has_prediction(&self) -> bool {
        self.rows.iter().any(|r| r.predicted_seconds.is_some())
    }

    fn panels(&self) -> u32 {
        if self.has_prediction() { 4 } else { 3 }
    }

    fn series<'a>(&self, name: &'a str, color: RGBColor, f: impl Fn(&EpochRow) -> Option<f64>) -> Series<'a> {
        let points = self.rows.iter().filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as i32, v)));
        Series { name, color, points: points.collect() }
    }
}

impl Picture for Curves {
    fn size(&self) -> (u32, u32) {
        (WIDTH, TITLE + PANEL * self.panels())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let title = match self.rows.last() {
            Some(r) => format!("{}: {} epoch{}", self.title, r.epoch, if r.epoch == 1 { "" } else { "s" }),
            None => format!("{}: waiting for the first epoch", self.title),
        };
        let body = root.titled(&title, ("sans-serif", 24).into_font().color(&TEXT))?;
        let areas = body.split_evenly((self.panels() as usize, 1));
        let epochs = self.rows.iter().map(|r| r.epoch).max().unwrap_or(0);
        let pct = |v: f64| v * 100.0;
        panel(
            &areas[0],
            "Loss per epoch",
            "loss",
            epochs,
            &[self.series("train loss", BLUE, |r| Some(r.train_loss)), self.series("val loss", ORANGE, |r| r.val_loss)],
            Some(1.0),
        )?;
        panel(
            &areas[1],
            "Accuracy per epoch",
            "accuracy (%)",
            epochs,
            &[
                self.series("train acc", BLUE, |r| Some(pct(r.train_acc))),
                self.series("val acc", ORANGE, |r| r.val_acc.map(pct)),
            ],
            Some(100.0),
        )?;
        panel(
            &areas[2],
            "Achieved GFLOP/s per epoch (counted FLOPs / training seconds)",
            "GFLOP/s",
            epochs,
            &[self.series("GFLOP/s", GREEN, |r| Some(r.gflops))],
            None,
        )?;
        if self.has_prediction() {
            panel(
                &areas[3],
                "Seconds per epoch: predicted against measured",
                "seconds",
                epochs,
                &[
                    self.series("predicted s", PURPLE, |r| r.predicted_seconds),
                    self.series("measured s", RED, |r| Some(r.seconds)),
                ],
                None,
            )?;
        }
        Ok(())
    }
}

/// One chart: lines with points against epoch, y from 0 (or the data's minimum, if negative).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    epochs: usize,
    series: &[Series],
    y_cap: Option<f64>,
) -> DrawResult<DB> {
    let values = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let hi = values().fold(0.0f64, f64::max);
    let lo = values().fold(0.0f64, f64::min);
    let hi = match y_cap {
        // Accuracy never needs more than 100%; loss starts with a frame of 0..1 until it is known.
        Some(cap) if hi <= cap && cap == 100.0 => cap,
        Some(cap) if hi == 0.0 => cap,
        _ if hi == 0.0 => 1.0,
        _ => hi * 1.12,
    };
    let x_hi = epochs.max(1) as i32 + 1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18).into_font().color(&TEXT))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0..x_hi, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels((x_hi as usize + 1).min(12))
        .x_label_formatter(&|x| if *x == 0 { String::new() } else { x.to_string() })
        .y_label_formatter(&|y| trim_number(*y))
        .label_style(("sans-serif", 13).into_font().color(&TEXT))
        .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT))
        .max_light_lines(2)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    let mut any = false;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        any = true;
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)).point_size(3))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
    }
    if any {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(("sans-serif", 14).into_font().color(&TEXT))
            .draw()?;
    }
    Ok(())
}

/// Tick labels without trailing zeros: 0, 0.5, 1.25, 120.
pub(crate) fn trim_number(v: f64) -> String {
    let s = if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// The `train --plot FILE` chart, redrawn (atomically) after every epoch.
pub struct TrainingPlot {
    path: PathBuf,
    curves: Curves,
}

impl TrainingPlot {
    /// Checks the file name and draws the empty frame at once, so that a bad path fails before
    /// training starts and a watcher has something to open.
    pub fn create(path: &Path, title: impl Into<String>) -> Result<TrainingPlot> {
        Format::from_path(path)?;
        let plot = TrainingPlot { path: path.to_path_buf(), curves: Curves::new(title, Vec::new()) };
        save(&plot.curves, &plot.path)?;
        Ok(plot)
    }

    pub fn epoch(&mut self, r: &EpochReport) -> Result<()> {
        self.curves.rows.push(r.into());
        save(&self.curves, &self.path)
    }

    pub fn curves(&self) -> &Curves {
        &self.curves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels() {
        assert_eq!(trim_number(0.0), "0");
        assert_eq!(trim_number(0.5), "0.5");
        assert_eq!(trim_number(12.25), "12.25");
        assert_eq!(trim_number(250.0), "250");
    }
}
