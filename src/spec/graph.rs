//! A network as a directed acyclic graph: nodes in an order where every node comes after what
//! it reads, each naming its sources. A chain is the graph where each node reads the one
//! before it (the first reads the input).
//!
//! Both written forms (the compact line and the TOML file) go through one [`Builder`]: nodes
//! are added with their sources, shaped as they arrive, and [`Builder::finish`] checks the
//! whole (one output, nothing unused) and settles the activations nobody wrote.

use super::{Activation, Defaults, Kind, Layer, Shape, Spec};
use crate::error::{Error, Result};

/// What a node reads: the network's input or an earlier node's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Input,
    Node(usize),
}

/// Nodes added one by one, each after its sources.
pub(crate) struct Builder<'a> {
    /// The spec as given (for error messages).
    text: &'a str,
    input: Shape,
    layers: Vec<Layer>,
    written: Vec<Option<Activation>>,
    sources: Vec<Vec<Source>>,
    names: Vec<String>,
    /// Whether a node's output is a vector of features (a dense layer's, or carried from one).
    flat: Vec<bool>,
}

impl<'a> Builder<'a> {
    pub fn new(text: &'a str, input: Shape) -> Builder<'a> {
        Builder {
            text,
            input,
            layers: Vec::new(),
            written: Vec::new(),
            sources: Vec::new(),
            names: Vec::new(),
            flat: Vec::new(),
        }
    }

    pub fn shape(&self, s: Source) -> Shape {
        match s {
            Source::Input => self.input,
            Source::Node(i) => self.layers[i].output,
        }
    }

    /// Node `i`'s kind.
    pub fn kind(&self, i: usize) -> Kind {
        self.layers[i].kind
    }

    /// Whether a node is already called `name`.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Writes node `i`'s activation after the fact (a file that applies it in a node of its
    /// own); None leaves it to the defaults, as an unwritten one. The kind must take one.
    pub fn set_activation(&mut self, i: usize, a: Option<Activation>) {
        debug_assert!(a.is_none() || self.layers[i].kind.takes_activation());
        self.written[i] = a;
    }

    fn is_flat(&self, s: Source) -> bool {
        match s {
            Source::Input => !self.input.is_image(),
            Source::Node(i) => self.flat[i],
        }
    }

    /// How errors name node `i`: `layer 3` when it has no name of its own, else `node `x``.
    fn label(&self, i: usize) -> String {
        label(&self.names[i], i)
    }

    pub fn error(&self, why: impl Into<String>) -> Error {
        Error::spec(self.text, why)
    }

    /// Adds a node reading `reads`; `name` None numbers it (its position from 1).
    pub fn push(
        &mut self,
        name: Option<String>,
        kind: Kind,
        units: usize,
        activation: Option<Activation>,
        reads: Vec<Source>,
    ) -> Result<Source> {
        let i = self.layers.len();
        let name = name.unwrap_or_else(|| (i + 1).to_string());
        if self.names.contains(&name) {
            return Err(self.error(format!("two nodes are named `{name}`; give each node a name of its own")));
        }
        self.names.push(name);
        let at = self.label(i);
        if let Some(a) = activation.filter(|_| !kind.takes_activation()) {
            let what = match kind {
                Kind::MaxPool(_) | Kind::AvgPool(_) => "pooling",
                other => other.name(),
            };
            return Err(self.error(format!("{at} is {what}, which takes no activation (found `:{a}`)")));
        }
        if kind.needs_image() {
            let why = reads.iter().find(|s| self.is_flat(**s)).map(|s| match s {
                Source::Input => format!(
                    "needs an image but the input is {} flat features; write the input as CxHxW, e.g. 1x28x28",
                    self.input.c
                ),
                Source::Node(_) => {
                    "needs an image but follows a dense layer; put convolutions and pooling before the dense layers"
                        .to_string()
                }
            });
            if let Some(why) = why {
                return Err(self.error(format!("{at} ({}) {why}", kind.name())));
            }
        }
        let shapes: Vec<Shape> = reads.iter().map(|&s| self.shape(s)).collect();
        let shaped = if kind.is_join() {
            Layer::join(kind, &shapes, Activation::Identity)
        } else if let [one] = shapes.as_slice() {
            Layer::after(*one, kind, units, Activation::Identity)
        } else {
            Err(format!(
                "a {} layer reads one input, not {}; join inputs with an add or concat node",
                kind.name(),
                reads.len()
            ))
        };
        let layer = shaped.map_err(|p| self.error(format!("{at} ({}): {p}", kind.name())))?;
        let flat = match kind {
            Kind::Dense => true,
            Kind::BatchNorm | Kind::Dropout(_) | Kind::Add(_) | Kind::Concat => reads.iter().all(|s| self.is_flat(*s)),
            _ => false,
        };
        self.layers.push(layer);
        self.written.push(activation);
        self.sources.push(reads);
        self.flat.push(flat);
        Ok(Source::Node(i))
    }

    /// The finished network: the last node is the output and everything else feeds it.
    pub fn finish(mut self, d: Defaults, label: Option<String>) -> Result<Spec> {
        let n = self.layers.len();
        if n == 0 {
            return Err(self.error("a network needs at least one layer"));
        }
        let mut consumers = vec![Vec::new(); n];
        for (i, reads) in self.sources.iter().enumerate() {
            for s in reads {
                if let Source::Node(j) = s {
                    consumers[*j].push(i);
                }
            }
        }
        if let Some(i) = (0..n - 1).find(|&i| consumers[i].is_empty()) {
            return Err(self.error(format!(
                "{} is computed but nothing reads it, and only the last node is the output; feed it into a later node or remove it",
                self.label(i)
            )));
        }
        let last = &self.layers[n - 1];
        if !matches!(last.kind, Kind::Dense | Kind::GlobalAvgPool) {
            return Err(self.error(format!(
                "the last layer is {}; a network ends in a dense layer of class scores (or a global average pooling of class maps), e.g. add -10",
                last.kind.name()
            )));
        }
        for (i, readers) in consumers.iter().enumerate() {
            let kind = self.layers[i].kind;
            let before_bn = !readers.is_empty() && readers.iter().all(|&c| self.layers[c].kind == Kind::BatchNorm);
            let act = match self.written[i] {
                Some(a) => a,
                None if !kind.takes_activation() => Activation::Identity,
                None if i == n - 1 => d.output,
                // Normalization comes between a layer and its activation.
                None if before_bn => Activation::Identity,
                None if matches!(kind, Kind::Dense | Kind::Conv2d(_)) => d.hidden,
                None => Activation::Identity,
            };
            if act == Activation::Softmax && i + 1 != n {
                return Err(
                    self.error(format!("{} uses softmax, which is allowed on the output layer only", self.label(i)))
                );
            }
            self.layers[i].activation = act;
        }
        Ok(Spec {
            input: self.input.size(),
            input_shape: self.input,
            layers: self.layers,
            sources: self.sources,
            names: self.names,
            label,
        })
    }
}

/// `layer 3` for a node numbered by its position, `node `x`` for a named one.
pub(crate) fn label(name: &str, i: usize) -> String {
    if name == (i + 1).to_string() { format!("layer {name}") } else { format!("node `{name}`") }
}

/// One node of a file, before the graph is ordered: its sources by name (None: the node
/// listed before it, or the input for the first).
pub(crate) struct Listed {
    pub name: Option<String>,
    pub kind: Kind,
    pub units: usize,
    pub activation: Option<Activation>,
    pub inputs: Option<Vec<String>>,
}

/// Orders listed nodes so that each follows what it reads (keeping the listed order where it
/// can), refusing unknown names and cycles, and builds them.
pub(crate) fn from_listed(
    text: &str,
    input: Shape,
    listed: Vec<Listed>,
    d: Defaults,
    spec_label: Option<String>,
) -> Result<Spec> {
    let n = listed.len();
    let names: Vec<String> =
        listed.iter().enumerate().map(|(i, l)| l.name.clone().unwrap_or((i + 1).to_string())).collect();
    for (i, name) in names.iter().enumerate() {
        if name == "input" || names[..i].contains(name) {
            return Err(Error::spec(
                text,
                format!(
                    "two nodes are named `{name}` (`input` is the network's input); give each node a name of its own"
                ),
            ));
        }
    }
    // Each node's sources as listed positions (None: the input).
    let mut reads: Vec<Vec<Option<usize>>> = Vec::with_capacity(n);
    for (i, l) in listed.iter().enumerate() {
        let r = match &l.inputs {
            None => vec![i.checked_sub(1)],
            Some(list) if list.is_empty() => {
                return Err(Error::spec(
                    text,
                    format!("{} has `inputs = []`; name what it reads, e.g. [\"input\"]", label(&names[i], i)),
                ));
            }
            Some(list) => list
                .iter()
                .map(|s| match s.as_str() {
                    "input" => Ok(None),
                    s => names.iter().position(|m| m == s).map(Some).ok_or_else(|| {
                        Error::spec(
                            text,
                            format!(
                                "{} reads `{s}`, which is no node's name; name an existing node or `input`",
                                label(&names[i], i)
                            ),
                        )
                    }),
                })
                .collect::<Result<_>>()?,
        };
        reads.push(r);
    }
    // Kahn's algorithm, always taking the earliest listed node that is ready.
    let mut pending: Vec<usize> = reads.iter().map(|r| r.iter().flatten().count()).collect();
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while order.len() < n {
        let Some(next) = (0..n).find(|&i| !placed[i] && pending[i] == 0) else {
            let stuck: Vec<String> = (0..n).filter(|&i| !placed[i]).map(|i| format!("`{}`", names[i])).collect();
            return Err(Error::spec(
                text,
                format!(
                    "nodes {} read each other in a cycle; a network must be acyclic, so one of them has to read an earlier node instead",
                    stuck.join(", ")
                ),
            ));
        };
        placed[next] = true;
        order.push(next);
        for (i, r) in reads.iter().enumerate() {
            pending[i] -= r.iter().filter(|s| **s == Some(next)).count();
        }
    }
    let mut at = vec![0; n];
    let mut b = Builder::new(text, input);
    for &i in &order {
        let l = &listed[i];
        let sources = reads[i].iter().map(|s| s.map_or(Source::Input, |j| Source::Node(at[j]))).collect();
        let kind = match l.kind {
            Kind::Add(_) => Kind::Add(reads[i].len()),
            k => k,
        };
        let Source::Node(k) = b.push(Some(names[i].clone()), kind, l.units, l.activation, sources)? else {
            unreachable!("push returns the node it added")
        };
        at[i] = k;
    }
    b.finish(d, spec_label)
}
