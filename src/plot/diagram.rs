//! `explain --diagram`: the network as columns of neurons joined by their connections.
//!
//! A layer wider than [`MAX_DRAWN`] is sampled (its first and last neurons, dots between), and
//! every bundle of connections carries its true count: `30 × 30 = 900 weights`. A network with
//! convolutions or pooling is drawn as a row of boxes instead, one per volume, labelled with the
//! layer's kind and shape (`conv5x5x32p2`, `32x28x28`) and its weights between them: a
//! convolution's output is not connected to every input, so lines between neurons would lie.

use super::palette::{BLUE, GREY, ORANGE, TEXT};
use super::{DrawResult, Picture};
use crate::cost;
use crate::report::format::thousands as t;
use crate::spec::{Kind, Layer, Shape, Spec};
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
    /// Columns drawn as boxes with their kind and shape inside (networks with convolutions).
    pub boxes: bool,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub header: String,
    pub neurons: usize,
    /// The volume the column holds (the box's height follows its height in pixels).
    pub shape: Shape,
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

/// The words on the connections into a layer: its weights and biases, or what pooling does.
fn bundle(l: &Layer) -> [String; 2] {
    match l.kind {
        Kind::Dense => {
            let (n, m) = (l.inputs as u128, l.outputs as u128);
            [format!("{} × {} = {} weights", t(n), t(m), t(n * m)), format!("+ {} biases", t(m))]
        }
        Kind::Conv2d(c) => [
            format!("{} × {} × {} × {} = {} weights", c.filters, l.input.c, c.kh, c.kw, t(l.weight_count() as u128)),
            format!("+ {} biases, shared by every position", c.filters),
        ],
        Kind::MaxPool(p) => [format!("max of {0}×{0} windows", p.k), "no weights".into()],
        Kind::AvgPool(p) => [format!("mean of {0}×{0} windows", p.k), "no weights".into()],
        Kind::BatchNorm => [format!("{} scales and shifts", l.input.c), "batch statistics".into()],
        k => [k.name().replace('_', " "), "no weights".into()],
    }
}

/// A box's height: taller for bigger maps, a vector a thin bar.
fn box_height(s: Shape) -> i32 {
    if s.is_image() {
        (40 + 8 * s.h.min(32) as i32).min(BOX_MAX)
    } else {
        60 + 20 * ((s.c as f64).log10() as i32).min(5)
    }
}
const BOX_MAX: i32 = 300;
const BOX_W: i32 = 120;

impl Diagram {
    pub fn new(spec: &Spec) -> Diagram {
        if spec.is_convolutional() {
            return Diagram::boxes(spec);
        }
        let last = spec.layers.len() - 1;
        let mut columns = vec![Column {
            header: "input".into(),
            shape: spec.input_shape,
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
                shape: l.output,
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
        Diagram {
            title: format!("{spec}: each neuron connects to every neuron of the next layer"),
            subtitle: summary(spec),
            columns,
            bundles,
            boxes: false,
        }
    }

    /// A network with convolutions: one box per volume, from the input image to the outputs.
    fn boxes(spec: &Spec) -> Diagram {
        let last = spec.layers.len() - 1;
        let mut columns = vec![Column {
            header: "input".into(),
            neurons: spec.input,
            shape: spec.input_shape,
            footer: vec![spec.input_shape.to_string(), format!("{} values", t(spec.input as u128))],
            color: GREY,
        }];
        let mut bundles = Vec::new();
        for (i, l) in spec.layers.iter().enumerate() {
            bundles.push(bundle(l));
            let kind = crate::report::kind_label(l);
            let name = match l.kind {
                Kind::MaxPool(_) | Kind::AvgPool(_) => kind,
                Kind::Dense => format!("dense {}, {}", l.outputs, l.activation),
                Kind::Conv2d(_) => format!("{kind}, {}", l.activation),
                _ => kind,
            };
            columns.push(Column {
                header: if i == last { format!("layer {} (output)", i + 1) } else { format!("layer {}", i + 1) },
                neurons: l.outputs,
                shape: l.output,
                footer: vec![name, l.output.to_string()],
                color: match l.kind {
                    _ if i == last => ORANGE,
                    Kind::Conv2d(_) | Kind::Dense | Kind::BatchNorm => BLUE,
                    _ => GREY,
                },
            });
        }
        Diagram {
            title: format!("{spec}: kernels slide over the maps, dense layers connect everything"),
            subtitle: summary(spec),
            columns,
            bundles,
            boxes: true,
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
        if self.boxes {
            let w = (2 * SIDE + COL * (self.columns.len() as i32 - 1)).max(900);
            return (w as u32, (TOP + BOX_MAX + BOTTOM + 20) as u32);
        }
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
        if self.boxes {
            let mid = TOP + BOX_MAX / 2;
            for (i, labels) in self.bundles.iter().enumerate() {
                let (x0, x1) = (self.x(i) + BOX_W / 2 + 6, self.x(i + 1) - BOX_W / 2 - 6);
                root.draw(&PathElement::new(vec![(x0, mid), (x1, mid)], TEXT.stroke_width(2)))?;
                root.draw(&PathElement::new(
                    vec![(x1 - 10, mid - 6), (x1, mid), (x1 - 10, mid + 6)],
                    TEXT.stroke_width(2),
                ))?;
                let xm = (self.x(i) + self.x(i + 1)) / 2;
                root.draw(&Text::new(labels[0].as_str(), (xm, slot_top - 48), centre(13)))?;
                root.draw(&Text::new(labels[1].as_str(), (xm, slot_top - 28), centre(12)))?;
            }
            for (i, c) in self.columns.iter().enumerate() {
                let x = self.x(i);
                root.draw(&Text::new(c.header.as_str(), (x, slot_top - 82), centre(15)))?;
                let bh = box_height(c.shape);
                let (x0, y0) = (x - BOX_W / 2, mid - bh / 2);
                // A stack of maps: the back sheets show there is more than one channel.
                let sheets = if c.shape.is_image() { c.shape.c.min(3) as i32 } else { 1 };
                for k in (0..sheets).rev() {
                    let d = 6 * k;
                    let rect = [(x0 + d, y0 - d), (x0 + BOX_W + d - 12 * (sheets - 1), y0 + bh - d)];
                    root.draw(&Rectangle::new(rect, c.color.mix(0.85).filled()))?;
                    root.draw(&Rectangle::new(rect, TEXT.stroke_width(1)))?;
                }
                for (k, line) in c.footer.iter().enumerate() {
                    root.draw(&Text::new(line.as_str(), (x, slot_bottom + 20 + 18 * k as i32), centre(13)))?;
                }
            }
            return Ok(());
        }
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

/// The subtitle: parameters split into weights and biases, and one example's forward FLOPs.
fn summary(spec: &Spec) -> String {
    let weights: u128 = spec.layers.iter().map(|l| l.weight_count() as u128).sum();
    let biases: u128 = spec.layers.iter().map(|l| l.bias_count() as u128).sum();
    format!(
        "{} parameters = {} weights + {} biases; one forward pass costs {} FLOPs per example",
        t(spec.params()),
        t(weights),
        t(biases),
        t(cost::inference(spec, 1).flop())
    )
}
