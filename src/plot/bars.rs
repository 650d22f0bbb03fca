//! `count --plot`: per layer, stacked bars of the forward, backward (δ, dW, db, dX) and update
//! FLOPs of one batch, with the loss as a bar of its own and the totals in the title.

use super::palette::{BLUE, BROWN, GREEN, GREY, ORANGE, PINK, RED, TEXT};
use super::{DrawResult, Picture};
use crate::cost::Ledger;
use crate::report::format::thousands as t;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The y axis of a cost chart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    #[default]
    Linear,
    /// Logarithmic: small layers and the loss stay visible next to big ones; the top of each
    /// stack is its total, the segments' heights are not to scale.
    Log,
}

/// The segments of each bar, bottom to top.
pub const CATEGORIES: [&str; 7] =
    ["forward", "backward δ", "backward dW", "backward db", "backward dX", "update", "loss"];
const COLORS: [RGBColor; 7] = [BLUE, PINK, RED, BROWN, ORANGE, GREEN, GREY];

/// The chart's data, taken from a ledger.
#[derive(Clone, Debug)]
pub struct CostChart {
    pub title: String,
    pub subtitle: String,
    /// One bar per layer, then the loss: its label and FLOPs per category.
    pub bars: Vec<(String, [u128; 7])>,
    pub scale: Scale,
}

impl std::str::FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Scale, String> {
        match s {
            "linear" => Ok(Scale::Linear),
            "log" => Ok(Scale::Log),
            _ => Err(format!("unknown scale `{s}`; expected linear or log")),
        }
    }
}

impl CostChart {
    pub fn new(l: &Ledger, scale: Scale) -> CostChart {
        let shaped = crate::report::ledger_layers(l);
        let mut bars: Vec<(String, [u128; 7])> = l
            .layers
            .iter()
            .zip(&shaped)
            .enumerate()
            .map(|(i, (c, layer))| {
                let b = &c.backward;
                let f = [
                    c.forward.flop(),
                    b.delta.flop(),
                    b.weight_grad.flop(),
                    b.bias_grad.flop(),
                    b.input_grad.flop(),
                    c.update.flop(),
                    0,
                ];
                let label = if layer.is_dense() {
                    format!("layer {} ({}→{})", i + 1, c.inputs, c.outputs)
                } else {
                    format!("layer {} {}", i + 1, crate::report::kind_label(layer))
                };
                (label, f)
            })
            .collect();
        bars.push((format!("loss ({})", l.loss), [0, 0, 0, 0, 0, 0, l.per_batch.loss.flop()]));
        let p = &l.per_batch;
        let title = format!(
            "{}: FLOPs per batch of {} ({} loss, {}), {} in all",
            l.spec,
            l.batch,
            l.loss,
            l.optimizer,
            t(p.total.flop())
        );
        let mut subtitle = format!(
            "forward {} + loss {} + backward {} + update {}",
            t(p.forward.flop()),
            t(p.loss.flop()),
            t(p.backward.flop()),
            t(p.update.flop())
        );
        if !l.optimizer_step.is_zero() {
            subtitle += &format!(" (of which {} once per step)", t(l.optimizer_step.flop()));
        }
        if scale == Scale::Log {
            subtitle += "; log scale: a stack's top is its total";
        }
        CostChart { title, subtitle, bars, scale }
    }

    fn draw_on<DB: DrawingBackend, Y>(&self, area: &DrawingArea<DB, Shift>, y: Y, floor: f64) -> DrawResult<DB>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let n = self.bars.len() as u32;
        let mut chart = ChartBuilder::on(area)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d((0..n - 1).into_segmented(), y)?;
        let labels: Vec<&str> = self.bars.iter().map(|b| b.0.as_str()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.bars.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).map(|s| s.to_string()).unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| tick(*v))
            .y_desc("FLOPs per batch")
            .label_style(("sans-serif", 13).into_font().color(&TEXT))
            .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT))
            .max_light_lines(2)
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        // Where each segment starts: the sum of those below it.
        let mut base = vec![0u128; self.bars.len()];
        for (k, name) in CATEGORIES.iter().enumerate() {
            let color = COLORS[k];
            let mut rects = Vec::new();
            for (i, (_, v)) in self.bars.iter().enumerate() {
                if v[k] == 0 {
                    continue;
                }
                let (lo, hi) = ((base[i] as f64).max(floor), (base[i] + v[k]) as f64);
                base[i] += v[k];
                let x = i as u32;
                let mut r =
                    Rectangle::new([(SegmentValue::Exact(x), hi), (SegmentValue::Exact(x + 1), lo)], color.filled());
                r.set_margin(0, 0, 18, 18);
                rects.push(r);
            }
            chart
                .draw_series(rects)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        }
        let style = ("sans-serif", 13).into_font().color(&TEXT).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(self.bars.iter().enumerate().map(|(i, (_, v))| {
            let total: u128 = v.iter().sum();
            Text::new(t(total), (SegmentValue::CenterOf(i as u32), total as f64), style.clone())
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .label_font(("sans-serif", 14).into_font().color(&TEXT))
            .draw()?;
        Ok(())
    }

    fn tallest(&self) -> f64 {
        self.bars.iter().map(|(_, v)| v.iter().sum::<u128>()).max().unwrap_or(1).max(1) as f64
    }
}

/// An axis label: 0, 500, 1.5 k, 20 M.
fn tick(v: f64) -> String {
    let units = [(1e15, " P"), (1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k"), (1.0, "")];
    for (scale, unit) in units {
        if v.abs() >= scale {
            return format!("{}{unit}", super::curves::trim_number(v / scale));
        }
    }
    super::curves::trim_number(v)
}

impl Picture for CostChart {
    fn size(&self) -> (u32, u32) {
        (760.max(260 + 150 * self.bars.len() as u32), 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, ("sans-serif", 20).into_font().color(&TEXT))?;
        let area = area.titled(&self.subtitle, ("sans-serif", 15).into_font().color(&TEXT))?;
        let top = self.tallest();
        match self.scale {
            // Head room above the tallest bar for its total and the legend.
            Scale::Linear => self.draw_on(&area, 0.0..top * 1.35, 0.0),
            Scale::Log => self.draw_on(&area, (1.0..top * 30.0).log_scale(), 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(500.0), "500");
        assert_eq!(tick(1500.0), "1.5 k");
        assert_eq!(tick(20e6), "20 M");
    }
}
