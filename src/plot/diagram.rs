//! `explain --diagram`: the network as columns of neurons joined by their connections.
//!
//! A layer wider than [`MAX_DRAWN`] is sampled (its first and last neurons, dots between), and
//! every bundle of connections carries its true count: `30 × 30 = 900 weights`.

use super::palette::{BLUE, GREY, ORANGE, TEXT};
use super::{DrawResult, Picture};
use crate::cost;
use crate::report::format::thousands as t;
use crate::spec::Spec;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The most neurons drawn in one column; wider layers show their first and last few.
pub const MAX_DRAWN: usize = 10;
const HEAD: usize = 5;
const TAIL: usize = 4;

const COL: i32 = 240;
const SIDE: i32 = 130;
const TOP: i32 = 170;
const SLOT: i32 = 40;
const BOTTOM: i32 = 80;

/// What the diagram shows, taken from a spec.
#[derive(Clone, Debug)]
pub struct Diagram {
    pub title: String,
    pub subtitle: String,
    /// Each column: header, neuron count, the words under it.
    pub columns: Vec<Column>,
    /// Between column i and i+1: the count labels of the bundle.
    pub bundles: Vec<[String; 2]>,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub header: String,
    pub neurons: usize,
    /// Lines under the column.
    pub footer: Vec<String>,
    pub color: RGBColor,
}

impl Column {
    /// The slots drawn, top to bottom: `Some(neuron)` or `None` for the gap of a sampled layer.
    fn slots(&self) -> Vec<Option<usize>> {
        let n = self.neurons;
        if n <= MAX_DRAWN {
            (0..n).map(Some).collect()
        } else {
            (0..HEAD).map(Some).chain([None]).chain((n - TAIL..n).map(Some)).collect()
        }
    }
}

impl Diagram {
    pub fn new(spec: &Spec) -> Diagram {
        let last = spec.layers.len() - 1;
        let mut columns = vec![Column {
            header: "input".into(),
            neurons: spec.input,
            footer: vec![format!("{} values", t(spec.input as u128))],
            color: GREY,
        }];
        let mut bundles = Vec::new();
        for (i, l) in spec.layers.iter().enumerate() {
            let (n, m) = (l.inputs as u128, l.outputs as u128);
            bundles.push([format!("{} × {} = {} weights", t(n), t(m), t(n * m)), format!("+ {} biases", t(m))]);
            columns.push(Column {
                header: if i == last { format!("layer {} (output)", i + 1) } else { format!("layer {}", i + 1) },
                neurons: l.outputs,
                footer: vec![format!("{} neurons, {}", t(m), l.activation)],
                color: if i == last { ORANGE } else { BLUE },
            });
        }
        for c in &mut columns {
            if c.neurons > MAX_DRAWN {
                c.footer.push(format!("({} of {} drawn)", HEAD + TAIL, t(c.neurons as u128)));
            }
        }
        let weights: u128 = spec.layers.iter().map(|l| (l.inputs * l.outputs) as u128).sum();
        let biases: u128 = spec.layers.iter().map(|l| l.outputs as u128).sum();
        Diagram {
            title: format!("{spec}: each neuron connects to every neuron of the next layer"),
            subtitle: format!(
                "{} parameters = {} weights + {} biases; one forward pass costs {} FLOPs per example",
                t(spec.params()),
                t(weights),
                t(biases),
                t(cost::inference(spec, 1).flop())
            ),
            columns,
            bundles,
        }
    }

    fn x(&self, col: usize) -> i32 {
        let span = COL * (self.columns.len() as i32 - 1);
        (self.size().0 as i32 - span) / 2 + COL * col as i32
    }

    /// The y of each slot of a column, centred on the tallest column.
    fn ys(&self, col: usize) -> Vec<(i32, Option<usize>)> {
        let slots = self.columns[col].slots();
        let tallest = self.columns.iter().map(|c| c.slots().len()).max().unwrap_or(1) as i32;
        let offset = TOP + (tallest - slots.len() as i32) * SLOT / 2 + SLOT / 2;
        slots.into_iter().enumerate().map(|(k, s)| (offset + k as i32 * SLOT, s)).collect()
    }
}

impl Picture for Diagram {
    fn size(&self) -> (u32, u32) {
        let tallest = self.columns.iter().map(|c| c.slots().len()).max().unwrap_or(1) as i32;
        let w = (2 * SIDE + COL * (self.columns.len() as i32 - 1)).max(900);
        (w as u32, (TOP + tallest * SLOT + BOTTOM) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (w, h) = self.size();
        let centre =
            |size: u32| ("sans-serif", size).into_font().color(&TEXT).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(self.title.as_str(), (w as i32 / 2, 24), centre(20)))?;
        root.draw(&Text::new(self.subtitle.as_str(), (w as i32 / 2, 52), centre(15)))?;
        let slot_top = TOP;
        let slot_bottom = h as i32 - BOTTOM;
        // Connections first, so the neurons sit on top of them.
        for (i, labels) in self.bundles.iter().enumerate() {
            let (x0, x1) = (self.x(i), self.x(i + 1));
            for &(y0, a) in &self.ys(i) {
                for &(y1, b) in &self.ys(i + 1) {
                    if a.is_some() && b.is_some() {
                        root.draw(&PathElement::new(vec![(x0, y0), (x1, y1)], GREY.mix(0.35).stroke_width(1)))?;
                    }
                }
            }
            let xm = (x0 + x1) / 2;
            root.draw(&Text::new(labels[0].as_str(), (xm, slot_top - 48), centre(15)))?;
            root.draw(&Text::new(labels[1].as_str(), (xm, slot_top - 28), centre(13)))?;
        }
        for (i, c) in self.columns.iter().enumerate() {
            let x = self.x(i);
            root.draw(&Text::new(c.header.as_str(), (x, slot_top - 82), centre(15)))?;
            for (y, s) in self.ys(i) {
                match s {
                    Some(_) => {
                        root.draw(&Circle::new((x, y), 12, c.color.filled()))?;
                        root.draw(&Circle::new((x, y), 12, TEXT.stroke_width(1)))?;
                    }
                    None => {
                        for dy in [-9, 0, 9] {
                            root.draw(&Circle::new((x, y + dy), 2, TEXT.filled()))?;
                        }
                    }
                }
            }
            for (k, line) in c.footer.iter().enumerate() {
                root.draw(&Text::new(line.as_str(), (x, slot_bottom + 20 + 18 * k as i32), centre(13)))?;
            }
        }
        Ok(())
    }
}
