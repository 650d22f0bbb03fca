//! The operator table: each ONNX node on the data's path becomes a flopnet layer, folds into
//! the layer before it (an activation, a bias added after a MatMul) or passes its input on
//! (Flatten, Reshape to a vector, Identity). Nodes that only compute shapes or constants (no
//! input on the data's path) are not part of the network and are not counted.
//!
//! Shapes are flopnet's own: every layer is shaped by the same [`crate::spec`] builder a
//! compact spec goes through, from the file's input shape (or `--input`), so the ledger is
//! exactly the one flopnet gives the same network written any other way.

use super::reader::{self, attr_f, attr_i, attr_ints, attr_s};
use super::{Imported, bad};
use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::spec::graph::Builder;
use crate::spec::{Activation, Conv, Defaults, Kind, LEAKY_SLOPE, Padding, Pool, Rate, Shape, Source};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb;

/// The operators flopnet reads, as the refusal lists them.
pub const SUPPORTED: &str = "Conv, Gemm, MatMul (+ Add as its bias), BatchNormalization, Relu, Clip (0..6 or 0..), LeakyRelu (slope 0.01), Sigmoid, Tanh, Softmax, LogSoftmax, MaxPool, AveragePool, GlobalAveragePool, ReduceMean over H and W, Flatten, Reshape to a vector, Add, Sum, Concat, Dropout, Identity";

/// What a tensor of the graph is.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// On the data's path: the input or a layer's output.
    Data(Source),
    /// A constant: an initializer or a Constant node's value (index into the constants).
    Const(usize),
    /// Computed from shapes or constants only (e.g. Shape → Gather → Concat for a Reshape).
    Meta,
}

/// Where a layer's parameters are, to be read when the weights are wanted.
#[derive(Clone, Debug, Default)]
struct Refs {
    weight: Option<usize>,
    /// MatMul's, or Gemm's without transB: [in, out], transposed on reading.
    transpose: bool,
    bias: Option<usize>,
    stats: Option<(usize, usize)>,
    /// A Reshape's target size checked once the graph is shaped: (node, size).
    flat: Vec<(String, usize)>,
}

struct Graph<'a> {
    path: &'a Path,
    consts: Vec<Cow<'a, pb::TensorProto>>,
    values: HashMap<&'a str, Value>,
    /// How many node inputs (and graph outputs) read each tensor.
    readers: HashMap<&'a str, usize>,
    b: Builder<'a>,
    refs: Vec<Refs>,
    acts: Vec<Option<Activation>>,
    /// Layers that came from a MatMul and have no bias yet.
    bare: Vec<bool>,
    notes: Vec<String>,
    skipped: Vec<String>,
    partial: bool,
    opset: i64,
    /// The ONNX output tensor behind each layer (for checking who else reads it).
    out_tensor: Vec<&'a str>,
    /// Each concatenation's inputs, and its output.
    concats: HashMap<Vec<Source>, Source>,
    /// Whether a concatenation was read as the one before it plus its last input.
    chained: bool,
}

/// A node named for messages: `Conv node `/layer1/conv1``.
fn who(n: &pb::NodeProto) -> String {
    let op = n.op_type.escape_debug();
    if n.name.is_empty() {
        format!("{op} node (output `{}`)", n.output.first().map_or("", |s| s.as_str()).escape_debug())
    } else {
        format!("{op} node `{}`", n.name.escape_debug())
    }
}

/// Converts the decoded graph. `input` overrides the file's input shape.
pub(crate) fn convert(
    file: &reader::File,
    input: Option<Shape>,
    partial: bool,
    defaults: Defaults,
    with_weights: bool,
) -> Result<Imported> {
    let path = file.path.as_path();
    let g = file.proto.graph.as_ref().ok_or_else(|| bad(path, "holds no graph"))?;
    let opset =
        file.proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(1, |o| o.version);
    let mut consts: Vec<Cow<pb::TensorProto>> = Vec::new();
    let mut values: HashMap<&str, Value> = HashMap::new();
    for t in &g.initializer {
        reader::dims(path, t)?;
        values.insert(t.name.as_str(), Value::Const(consts.len()));
        consts.push(Cow::Borrowed(t));
    }
    // The data input: the one graph input that is not an initializer.
    let data: Vec<&pb::ValueInfoProto> = g.input.iter().filter(|i| !values.contains_key(i.name.as_str())).collect();
    let [data] = data.as_slice() else {
        let names: Vec<String> = data.iter().map(|i| format!("`{}`", i.name.escape_debug())).collect();
        return Err(bad(
            path,
            format!(
                "has {} inputs besides its weights ({}); flopnet counts a network of one input",
                data.len(),
                names.join(", ")
            ),
        ));
    };
    let shape = match input {
        Some(s) => s,
        None => input_shape(path, data)?,
    };
    if shape.size() > crate::spec::MAX_WIDTH {
        return Err(bad(path, format!("its input {shape} holds more than {} values", crate::spec::MAX_WIDTH)));
    }
    values.insert(data.name.as_str(), Value::Data(Source::Input));
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &g.output {
        *readers.entry(o.name.as_str()).or_default() += 1;
    }
    let mut gr = Graph {
        path,
        consts,
        values,
        readers,
        b: Builder::new(&file.label, shape),
        refs: Vec::new(),
        acts: Vec::new(),
        bare: Vec::new(),
        notes: Vec::new(),
        skipped: Vec::new(),
        partial,
        opset,
        out_tensor: Vec::new(),
        concats: HashMap::new(),
        chained: false,
    };
    for n in order(path, g)? {
        gr.node(n)?;
    }
    let outs: Vec<Source> = g
        .output
        .iter()
        .filter_map(|o| match gr.values.get(o.name.as_str()) {
            Some(Value::Data(s)) => Some(*s),
            _ => None,
        })
        .collect();
    let last = gr.refs.len();
    match outs.as_slice() {
        [Source::Node(i)] if *i + 1 == last => {}
        [Source::Node(_)] => {
            return Err(bad(
                path,
                "its output is not computed last; flopnet reads a graph whose output is its last node",
            ));
        }
        [Source::Input] | [] => return Err(bad(path, "its output is not computed from its input by any layer")),
        _ => return Err(bad(path, format!("has {} outputs; flopnet counts a network of one output", outs.len()))),
    }
    // A file flopnet wrote says what its output applies where no node does (identity).
    let written = file.proto.metadata_props.iter().find(|e| e.key == "output_activation").map(|e| e.value.as_str());
    let output = match written {
        Some(a) => Some(a.parse::<Activation>().map_err(|e| bad(path, format!("metadata output_activation: {e}")))?),
        None => None,
    };
    for i in 0..last {
        let kind = gr.b.kind(i);
        if kind.takes_activation() {
            let a =
                if i + 1 == last { gr.acts[i].or(output) } else { Some(gr.acts[i].unwrap_or(Activation::Identity)) };
            gr.b.set_activation(i, a);
        }
    }
    let Graph { b, refs, notes, skipped, consts, .. } = gr;
    let spec = b.finish(defaults, Some(file.label.clone())).map_err(|e| match e {
        Error::Spec { problem, .. } => bad(path, problem),
        e => e,
    })?;
    for (i, r) in refs.iter().enumerate() {
        let l = &spec.layers[i];
        if let Some(w) = r.weight {
            let mut have = reader::dims(path, &consts[w])?;
            if r.transpose {
                have.reverse();
            }
            if have != l.weight_shape() {
                return Err(bad(
                    path,
                    format!(
                        "layer `{}` ({l}) reads {} with a weight of shape {have:?}, not {:?}",
                        spec.names[i],
                        l.input,
                        l.weight_shape()
                    ),
                ));
            }
        }
        for (node, size) in &r.flat {
            let have = spec.layers[i].outputs;
            if *size != have {
                return Err(bad(
                    path,
                    format!("{node} reshapes {have} values to {size}; flopnet reads a Reshape to a flat vector"),
                ));
            }
        }
    }
    let n = spec.layers.len();
    let mut imported = Imported {
        spec,
        params: vec![LayerParams { weight: Vec::new(), bias: Vec::new() }; n],
        stats: vec![None; n],
        notes,
        skipped,
        recorded: Default::default(),
        has_weights: false,
    };
    if with_weights {
        weights(path, &consts, &refs, &mut imported)?;
    }
    Ok(imported)
}

/// The input's shape per example: `[N, C, H, W]` or `[N, F]`, the batch dimension free.
fn input_shape(path: &Path, i: &pb::ValueInfoProto) -> Result<Shape> {
    use pb::tensor_shape_proto::dimension::Value as D;
    let name = i.name.escape_debug();
    let hint = "give --input CxHxW (or --input N for a vector)";
    let Some(pb::type_proto::Value::TensorType(t)) = i.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(bad(path, format!("its input `{name}` is not a tensor; {hint}")));
    };
    let Some(s) = &t.shape else {
        return Err(bad(path, format!("its input `{name}` has no shape; {hint}")));
    };
    let dims: Vec<Option<usize>> = s
        .dim
        .iter()
        .skip(1)
        .map(|d| match d.value {
            Some(D::DimValue(v)) if v > 0 => usize::try_from(v).ok(),
            _ => None,
        })
        .collect();
    match dims.as_slice() {
        [Some(n)] => Ok(Shape::flat(*n)),
        [Some(c), Some(h), Some(w)] => Ok(Shape::new(*c, *h, *w)),
        d if d.len() == 1 || d.len() == 3 => {
            Err(bad(path, format!("its input `{name}` has a dynamic size besides the batch; {hint}")))
        }
        d => Err(bad(
            path,
            format!(
                "its input `{name}` has {} dimensions; flopnet reads [batch, C, H, W] or [batch, features]",
                d.len() + 1
            ),
        )),
    }
}

/// The nodes in an order where each comes after what it reads (the file's order where it can),
/// or an error naming the nodes that read each other in a cycle.
fn order<'a>(path: &Path, g: &'a pb::GraphProto) -> Result<Vec<&'a pb::NodeProto>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (k, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), k).is_some() {
                return Err(bad(
                    path,
                    format!("two nodes write the tensor `{}`; each tensor has one producer", o.escape_debug()),
                ));
            }
        }
    }
    let n = g.node.len();
    let mut pending = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, node) in g.node.iter().enumerate() {
        for i in node.input.iter() {
            if let Some(&p) = producer.get(i.as_str()) {
                pending[k] += 1;
                readers[p].push(k);
            }
        }
    }
    // Kahn's algorithm over a heap of ready positions: the earliest ready node first.
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|&k| pending[k] == 0).map(std::cmp::Reverse).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(k)) = ready.pop() {
        out.push(&g.node[k]);
        for &r in &readers[k] {
            pending[r] -= 1;
            if pending[r] == 0 {
                ready.push(std::cmp::Reverse(r));
            }
        }
    }
    if out.len() < n {
        let stuck: Vec<String> = (0..n).filter(|&k| pending[k] > 0).take(4).map(|k| who(&g.node[k])).collect();
        return Err(bad(
            path,
            format!("its nodes read each other in a cycle ({}); a network is acyclic", stuck.join(", ")),
        ));
    }
    Ok(out)
}

impl<'a> Graph<'a> {
    fn value(&self, n: &pb::NodeProto, name: &str) -> Result<Value> {
        self.values.get(name).copied().ok_or_else(|| {
            bad(
                self.path,
                format!("{} reads `{}`, which no node computes and no initializer holds", who(n), name.escape_debug()),
            )
        })
    }

    fn data(&self, n: &pb::NodeProto, k: usize) -> Result<Source> {
        let name = n.input.get(k).map_or("", |s| s.as_str());
        match self.value(n, name)? {
            Value::Data(s) => Ok(s),
            _ => Err(bad(
                self.path,
                format!("{} reads the constant `{}` where it wants the data", who(n), name.escape_debug()),
            )),
        }
    }

    /// Input `k` as a constant, or None when absent.
    fn konst(&self, n: &pb::NodeProto, k: usize) -> Result<Option<usize>> {
        match n.input.get(k).map(|s| s.as_str()) {
            None | Some("") => Ok(None),
            Some(name) => match self.value(n, name)? {
                Value::Const(c) => Ok(Some(c)),
                _ => Err(bad(
                    self.path,
                    format!(
                        "{} computes its input `{}`; flopnet reads it as a constant (an initializer)",
                        who(n),
                        name.escape_debug()
                    ),
                )),
            },
        }
    }

    fn tensor(&self, c: usize) -> &pb::TensorProto {
        &self.consts[c]
    }

    fn dims(&self, c: usize) -> Result<Vec<usize>> {
        reader::dims(self.path, self.tensor(c))
    }

    fn set_outputs(&mut self, n: &'a pb::NodeProto, v: Value) {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            self.values.insert(o.as_str(), v);
        }
    }

    /// The unsupported-operator answer: an error, or with `--partial` the node skipped (its
    /// output taken as its first data input).
    fn unsupported(&mut self, n: &'a pb::NodeProto, why: &str) -> Result<()> {
        if !self.partial {
            return Err(bad(
                self.path,
                format!(
                    "{} {why}; flopnet counts {SUPPORTED}; pass --partial to count the rest of the network",
                    who(n)
                ),
            ));
        }
        self.skipped.push(format!("{} ({why})", who(n)));
        let first = n.input.iter().find_map(|i| match self.values.get(i.as_str()) {
            Some(Value::Data(s)) => Some(*s),
            _ => None,
        });
        self.set_outputs(n, first.map_or(Value::Meta, Value::Data));
        Ok(())
    }

    fn name_for(&self, n: &pb::NodeProto) -> String {
        let base = if n.name.is_empty() { format!("{}_{}", n.op_type, self.refs.len() + 1) } else { n.name.clone() };
        let base = base.escape_debug().to_string();
        if base == "input" || self.b.has_name(&base) { format!("{base}#{}", self.refs.len() + 1) } else { base }
    }

    /// Adds a layer; its output is the node's first output.
    fn push(
        &mut self,
        n: &'a pb::NodeProto,
        kind: Kind,
        units: usize,
        reads: Vec<Source>,
        refs: Refs,
    ) -> Result<Source> {
        let name = self.name_for(n);
        let at = self.b.push(Some(name), kind, units, None, reads).map_err(|e| match e {
            Error::Spec { problem, .. } => bad(self.path, format!("{}: {problem}", who(n))),
            e => e,
        })?;
        self.refs.push(refs);
        self.acts.push(None);
        self.bare.push(false);
        self.out_tensor.push(n.output.first().map_or("", |s| s.as_str()));
        self.set_outputs(n, Value::Data(at));
        Ok(at)
    }

    /// Folds an activation into the layer that computes its input.
    fn activation(&mut self, n: &'a pb::NodeProto, a: Activation) -> Result<()> {
        let src = self.data(n, 0)?;
        let Source::Node(i) = src else {
            return self.unsupported(n, "applies an activation to the input itself");
        };
        let kind = self.b.kind(i);
        let alone = self.readers.get(self.out_tensor[i]).copied().unwrap_or(0) == 1;
        if !kind.takes_activation() || self.acts[i].is_some() || !alone {
            let why = if !kind.takes_activation() {
                format!("follows a {} layer, which takes no activation in flopnet", kind.name())
            } else {
                "follows a layer whose output is also read elsewhere, or already activated; flopnet applies an activation as part of the layer before it".to_string()
            };
            return self.unsupported(n, &why);
        }
        self.acts[i] = Some(a);
        self.set_outputs(n, Value::Data(src));
        Ok(())
    }

    fn alias(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let s = self.data(n, 0)?;
        self.set_outputs(n, Value::Data(s));
        Ok(())
    }

    /// Only the first output may be read (MaxPool's indices, Dropout's mask, a training-mode
    /// BatchNormalization's running statistics are written but not used).
    fn extra_outputs_unread(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        for o in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            if self.readers.get(o.as_str()).copied().unwrap_or(0) > 0 && n.op_type != "BatchNormalization" {
                return self.unsupported(n, &format!("has its extra output `{}` read", o.escape_debug()));
            }
            self.values.insert(o.as_str(), Value::Meta);
        }
        Ok(())
    }

    fn node(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        // Inputs must exist; a node with nothing on the data's path is a shape or constant
        // computation, not part of the network.
        let mut on_path = false;
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if matches!(self.value(n, i)?, Value::Data(_)) {
                on_path = true;
            }
        }
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return self.unsupported(n, &format!("is from the operator domain `{}`", n.domain.escape_debug()));
        }
        if n.op_type == "Constant" {
            return self.constant(n);
        }
        // An identity or a change of element type passes on whatever it reads (the legacy
        // exporter shares equal weights through Identity nodes, and casts constants).
        if matches!(n.op_type.as_str(), "Identity" | "Cast" | "CastLike") {
            let v = self.value(n, n.input.first().map_or("", |s| s.as_str()))?;
            self.set_outputs(n, v);
            return Ok(());
        }
        if !on_path || n.op_type == "Shape" {
            self.set_outputs(n, Value::Meta);
            return Ok(());
        }
        match n.op_type.as_str() {
            "Conv" => self.conv(n),
            "Gemm" => self.gemm(n),
            "MatMul" => self.matmul(n),
            "BatchNormalization" => self.batchnorm(n),
            "Relu" => self.activation(n, Activation::Relu),
            "Sigmoid" => self.activation(n, Activation::Sigmoid),
            "Tanh" => self.activation(n, Activation::Tanh),
            "LeakyRelu" => {
                let alpha = attr_f(n, "alpha", 0.01);
                if (alpha - LEAKY_SLOPE).abs() > 1e-6 {
                    return self
                        .unsupported(n, &format!("has slope {alpha}; flopnet's leaky relu has slope {LEAKY_SLOPE}"));
                }
                self.activation(n, Activation::LeakyRelu)
            }
            "Clip" => self.clip(n),
            "Softmax" | "LogSoftmax" => {
                if n.op_type == "LogSoftmax" {
                    self.notes.push(format!(
                        "{} is counted as a softmax output: cross-entropy on log-softmax outputs is the same loss",
                        who(n)
                    ));
                }
                self.activation(n, Activation::Softmax)
            }
            "MaxPool" | "AveragePool" => self.pool(n),
            "GlobalAveragePool" => {
                let s = self.data(n, 0)?;
                self.push(n, Kind::GlobalAvgPool, 0, vec![s], Refs::default()).map(|_| ())
            }
            "ReduceMean" => self.reduce_mean(n),
            "Flatten" => {
                let axis = attr_i(n, "axis", 1);
                if axis != 1 {
                    return self.unsupported(n, &format!("flattens from axis {axis}; flopnet reads Flatten at axis 1"));
                }
                self.alias(n)
            }
            "Reshape" => self.reshape(n),
            "Dropout" => self.dropout(n),
            "Add" | "Sum" => self.add(n),
            "Concat" => self.concat(n),
            other => {
                self.unsupported(n, &format!("is the operator {}, which flopnet does not count", other.escape_debug()))
            }
        }
    }

    fn constant(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let mut t = pb::TensorProto::default();
        if let Some(v) = reader::attr(n, "value").and_then(|a| a.t.as_ref()) {
            t = v.clone();
        } else if let Some(a) = reader::attr(n, "value_float") {
            t.data_type = 1;
            t.float_data = vec![a.f];
        } else if let Some(a) = reader::attr(n, "value_floats") {
            t.data_type = 1;
            t.dims = vec![a.floats.len() as i64];
            t.float_data = a.floats.clone();
        } else if let Some(a) = reader::attr(n, "value_int") {
            t.data_type = 7;
            t.int64_data = vec![a.i];
        } else if let Some(a) = reader::attr(n, "value_ints") {
            t.data_type = 7;
            t.dims = vec![a.ints.len() as i64];
            t.int64_data = a.ints.clone();
        } else {
            self.set_outputs(n, Value::Meta);
            return Ok(());
        }
        reader::dims(self.path, &t)?;
        let c = self.consts.len();
        self.consts.push(Cow::Owned(t));
        self.set_outputs(n, Value::Const(c));
        Ok(())
    }

    fn conv(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let x = self.data(n, 0)?;
        let w = self.konst(n, 1)?.ok_or_else(|| bad(self.path, format!("{} has no weight", who(n))))?;
        let bias = self.konst(n, 2)?;
        let d = self.dims(w)?;
        let [f, _, kh, kw] = d[..] else {
            return self.unsupported(n, &format!("has a weight of shape {d:?}; flopnet counts 2-D convolutions"));
        };
        if d.contains(&0) || strides_or_pads_too_big(n) {
            return Err(bad(
                self.path,
                format!("{} has a weight of shape {d:?} or strides past {}", who(n), crate::spec::MAX_WIDTH),
            ));
        }
        let two = |name: &str, default: usize| -> Option<Vec<usize>> {
            match attr_ints(n, name) {
                None | Some([]) => Some(vec![default; 2]),
                Some(v) => v.iter().map(|&x| usize::try_from(x).ok()).collect(),
            }
        };
        let (Some(strides), Some(dil)) = (two("strides", 1), two("dilations", 1)) else {
            return self.unsupported(n, "has a negative stride or dilation");
        };
        if dil.iter().any(|&d| d != 1) {
            return self.unsupported(n, &format!("is dilated {dil:?}; flopnet counts undilated convolutions"));
        }
        if strides.len() != 2 || strides[0] != strides[1] || strides[0] == 0 {
            return self.unsupported(n, &format!("has strides {strides:?}; flopnet counts one stride for both axes"));
        }
        let padding = match attr_s(n, "auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => {
                let pads: Vec<i64> = attr_ints(n, "pads").map_or(vec![0; 4], <[i64]>::to_vec);
                match pads[..] {
                    [a, b, c, d] if a == b && b == c && c == d && a >= 0 && (a as usize) <= crate::spec::MAX_WIDTH => {
                        Padding::Fixed(a as usize)
                    }
                    _ => {
                        return self
                            .unsupported(n, &format!("pads {pads:?}; flopnet counts the same padding on every side"));
                    }
                }
            }
            Some("VALID") => Padding::Fixed(0),
            Some("SAME_UPPER") | Some("SAME_LOWER") if strides[0] == 1 && kh % 2 == 1 && kw % 2 == 1 => Padding::Same,
            Some(p) => return self.unsupported(n, &format!("has auto_pad {p}")),
        };
        let groups = attr_i(n, "group", 1);
        let Ok(groups) = usize::try_from(groups) else {
            return self.unsupported(n, &format!("has {groups} groups"));
        };
        if let Some(b) = bias
            && self.dims(b)? != [f]
        {
            return Err(bad(self.path, format!("{} has a bias of shape {:?} for {f} filters", who(n), self.dims(b)?)));
        }
        let conv = Conv { kh, kw, filters: f, stride: strides[0], padding, groups, bias: bias.is_some() };
        let refs = Refs { weight: Some(w), bias, ..Refs::default() };
        self.push(n, Kind::Conv2d(conv), 0, vec![x], refs)?;
        self.extra_outputs_unread(n)
    }

    fn dense(&mut self, n: &'a pb::NodeProto, w: usize, transposed: bool, bias: Option<usize>) -> Result<()> {
        let x = self.data(n, 0)?;
        let d = self.dims(w)?;
        let [a, b] = d[..] else {
            return self.unsupported(n, &format!("multiplies by a weight of shape {d:?}; flopnet counts a 2-D weight"));
        };
        let (out, inp) = if transposed { (a, b) } else { (b, a) };
        if out == 0 {
            return Err(bad(self.path, format!("{} has a weight of shape {d:?}, no outputs", who(n))));
        }
        let have = self.b.shape(x).size();
        if inp != have {
            return Err(bad(self.path, format!("{} multiplies {have} values by a weight of shape {d:?}", who(n))));
        }
        if let Some(c) = bias {
            let bd = self.dims(c)?;
            if bd.iter().product::<usize>() != out {
                return Err(bad(self.path, format!("{} adds a bias of shape {bd:?} to {out} outputs", who(n))));
            }
        }
        let refs = Refs { weight: Some(w), transpose: !transposed, bias, ..Refs::default() };
        let at = self.push(n, Kind::Dense, out, vec![x], refs)?;
        if bias.is_none()
            && let Source::Node(i) = at
        {
            self.bare[i] = true;
        }
        Ok(())
    }

    fn gemm(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let (alpha, beta) = (attr_f(n, "alpha", 1.0), attr_f(n, "beta", 1.0));
        if alpha != 1.0 || beta != 1.0 || attr_i(n, "transA", 0) != 0 {
            return self.unsupported(n, "scales its product or transposes its input (alpha, beta, transA)");
        }
        let w = self.konst(n, 1)?.ok_or_else(|| bad(self.path, format!("{} has no weight", who(n))))?;
        let bias = self.konst(n, 2)?;
        self.dense(n, w, attr_i(n, "transB", 0) != 0, bias)
    }

    fn matmul(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let Some(w) = self.konst(n, 1)? else { return self.unsupported(n, "multiplies two computed tensors") };
        self.dense(n, w, false, None)
    }

    fn batchnorm(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let x = self.data(n, 0)?;
        let mut k = [0usize; 4];
        for (j, slot) in k.iter_mut().enumerate() {
            *slot =
                self.konst(n, j + 1)?.ok_or_else(|| bad(self.path, format!("{} lacks its input {}", who(n), j + 1)))?;
        }
        let c = self.b.shape(x).c;
        for &t in &k {
            if self.dims(t)? != [c] {
                return Err(bad(
                    self.path,
                    format!("{} holds a tensor of shape {:?} for {c} channels", who(n), self.dims(t)?),
                ));
            }
        }
        let eps = attr_f(n, "epsilon", 1e-5);
        if (eps - crate::layers::batchnorm::EPS).abs() > 1e-9 {
            self.notes.push(format!(
                "{} has epsilon {eps}; flopnet counts it with {}",
                who(n),
                crate::layers::batchnorm::EPS
            ));
        }
        let refs = Refs { weight: Some(k[0]), bias: Some(k[1]), stats: Some((k[2], k[3])), ..Refs::default() };
        self.push(n, Kind::BatchNorm, 0, vec![x], refs)?;
        self.extra_outputs_unread(n)
    }

    fn clip(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let bound = |g: &Self, k: usize, attr: &str, default: f64| -> Result<f64> {
            if g.opset < 11 {
                return Ok(attr_f(n, attr, default));
            }
            match g.konst(n, k)? {
                Some(c) => reader::scalar(g.path, g.tensor(c)),
                None => Ok(default),
            }
        };
        let (lo, hi) = (bound(self, 1, "min", f64::NEG_INFINITY)?, bound(self, 2, "max", f64::INFINITY)?);
        match (lo, hi) {
            (0.0, 6.0) => self.activation(n, Activation::Relu6),
            (0.0, h) if h == f64::INFINITY => self.activation(n, Activation::Relu),
            _ => self
                .unsupported(n, &format!("clips to [{lo}, {hi}]; flopnet reads Clip as relu6 [0, 6] or relu [0, inf)")),
        }
    }

    fn pool(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let x = self.data(n, 0)?;
        let ints = |name: &str| attr_ints(n, name).map(<[i64]>::to_vec).unwrap_or_default();
        let (kernel, strides, pads) = (ints("kernel_shape"), ints("strides"), ints("pads"));
        let ceil = attr_i(n, "ceil_mode", 0) != 0;
        let same = |v: &[i64]| v.windows(2).all(|w| w[0] == w[1]);
        let usable = kernel.len() == 2
            && same(&kernel)
            && kernel[0] > 0
            && (strides.is_empty() || (strides.len() == 2 && same(&strides) && strides[0] > 0))
            && (pads.is_empty() || (pads.len() == 4 && same(&pads) && pads[0] >= 0))
            && attr_ints(n, "dilations").is_none_or(|d| d.iter().all(|&x| x == 1))
            && attr_s(n, "auto_pad").is_none_or(|p| p == "NOTSET" || p == "VALID" || p.is_empty());
        if !usable {
            return self.unsupported(
                n,
                &format!("pools with kernel {kernel:?}, strides {strides:?}, pads {pads:?}; flopnet counts square windows with one stride and the same padding on every side"),
            );
        }
        let big = |v: &[i64]| v.iter().any(|&x| x as u64 > crate::spec::MAX_WIDTH as u64);
        if big(&kernel) || big(&strides) || big(&pads) {
            return Err(bad(
                self.path,
                format!("{} has a window, stride or padding past {}", who(n), crate::spec::MAX_WIDTH),
            ));
        }
        let k = kernel[0] as usize;
        let pool = Pool {
            k,
            stride: strides.first().map_or(1, |&s| s as usize),
            pad: pads.first().map_or(0, |&p| p as usize),
            ceil,
        };
        let kind = if n.op_type == "MaxPool" { Kind::MaxPool(pool) } else { Kind::AvgPool(pool) };
        self.push(n, kind, 0, vec![x], Refs::default())?;
        self.extra_outputs_unread(n)
    }

    fn reduce_mean(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let x = self.data(n, 0)?;
        let axes: Vec<i64> = match attr_ints(n, "axes") {
            Some(a) => a.to_vec(),
            None => match self.konst(n, 1)? {
                Some(c) => reader::ints(self.path, self.tensor(c))?,
                None => Vec::new(),
            },
        };
        let mut sorted: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
        sorted.sort_unstable();
        if sorted != [2, 3] || !self.b.shape(x).is_image() {
            return self.unsupported(
                n,
                &format!("averages over axes {axes:?}; flopnet reads ReduceMean over H and W (global pooling)"),
            );
        }
        self.push(n, Kind::GlobalAvgPool, 0, vec![x], Refs::default()).map(|_| ())
    }

    fn reshape(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let x = self.data(n, 0)?;
        let target = match n.input.get(1).map(|s| self.values.get(s.as_str()).copied()) {
            Some(Some(Value::Const(c))) => Some(reader::ints(self.path, self.tensor(c))?),
            _ => None,
        };
        let size = match target.as_deref() {
            // Computed from the input's shape (a dynamic batch): [batch, -1] by construction.
            None => None,
            Some([_, s]) if *s > 0 => Some(*s as usize),
            Some([_, -1]) => None,
            Some(t) => {
                return self
                    .unsupported(n, &format!("reshapes to {t:?}; flopnet reads a Reshape to [batch, features]"));
            }
        };
        if let (Some(size), Source::Node(i)) = (size, x) {
            let node = who(n);
            self.refs[i].flat.push((node, size));
        } else if let (Some(size), Source::Input) = (size, x)
            && size != self.b.shape(x).size()
        {
            return self.unsupported(n, &format!("reshapes the input to {size} values"));
        }
        self.alias(n)
    }

    fn dropout(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let x = self.data(n, 0)?;
        let ratio = if self.opset < 12 {
            attr_f(n, "ratio", 0.5)
        } else {
            match self.konst(n, 1)? {
                Some(c) => reader::scalar(self.path, self.tensor(c))?,
                None => 0.5,
            }
        };
        let Some(rate) = Rate::new(ratio) else {
            return self.unsupported(n, &format!("drops at rate {ratio}; a rate is in [0, 1)"));
        };
        self.push(n, Kind::Dropout(rate), 0, vec![x], Refs::default())?;
        self.extra_outputs_unread(n)
    }

    fn add(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let inputs: Vec<Value> =
            n.input.iter().filter(|i| !i.is_empty()).map(|i| self.value(n, i)).collect::<Result<_>>()?;
        let data: Vec<Source> =
            inputs.iter().filter_map(|v| if let Value::Data(s) = v { Some(*s) } else { None }).collect();
        let consts: Vec<usize> =
            inputs.iter().filter_map(|v| if let Value::Const(c) = v { Some(*c) } else { None }).collect();
        match (data.as_slice(), consts.as_slice()) {
            ([Source::Node(i)], [c]) if self.bare[*i] && self.readers.get(self.out_tensor[*i]).copied() == Some(1) => {
                let out = self.b.shape(Source::Node(*i)).size();
                if self.dims(*c)?.iter().product::<usize>() != out {
                    return self.unsupported(n, "adds a constant that is not the MatMul's bias");
                }
                self.refs[*i].bias = Some(*c);
                self.bare[*i] = false;
                let i = *i;
                self.out_tensor[i] = n.output.first().map_or("", |s| s.as_str());
                self.set_outputs(n, Value::Data(Source::Node(i)));
                Ok(())
            }
            (d, []) if d.len() >= 2 => self.push(n, Kind::Add(d.len()), 0, d.to_vec(), Refs::default()).map(|_| ()),
            _ => self.unsupported(n, "adds a constant to a tensor other than a MatMul's product"),
        }
    }

    fn concat(&mut self, n: &'a pb::NodeProto) -> Result<()> {
        let mut reads = Vec::with_capacity(n.input.len().min(1024));
        for k in 0..n.input.len() {
            reads.push(self.data(n, k)?);
        }
        if reads.is_empty() {
            return self.unsupported(n, "concatenates nothing");
        }
        if let [one] = reads[..] {
            // A concatenation of one tensor is that tensor.
            self.set_outputs(n, Value::Data(one));
            return Ok(());
        }
        // DenseNet as torchvision writes it concatenates the growing list of every earlier
        // output again for each layer; an earlier concatenation of all but the last input is
        // the same values, so this one reads it and adds the last (as a spec writes DenseNet).
        let whole = reads.clone();
        if let Some(&prev) = self.concats.get(&reads[..reads.len() - 1]) {
            reads = vec![prev, reads[reads.len() - 1]];
            if !self.chained {
                self.chained = true;
                self.notes.push(format!(
                    "concatenations of a growing list of tensors (DenseNet's, e.g. {}) are counted as each adding its last input to the one before, the same values",
                    who(n)
                ));
            }
        }
        let image = reads.first().is_some_and(|s| self.b.shape(*s).is_image());
        let axis = attr_i(n, "axis", 1);
        let ok = if image { axis == 1 || axis == -3 } else { axis == 1 || axis == -1 };
        if !ok {
            return self
                .unsupported(n, &format!("concatenates along axis {axis}; flopnet concatenates channels (axis 1)"));
        }
        let at = self.push(n, Kind::Concat, 0, reads, Refs::default())?;
        self.concats.insert(whole, at);
        Ok(())
    }
}

/// Whether a convolution's strides or dilations pass what any layer holds.
fn strides_or_pads_too_big(n: &pb::NodeProto) -> bool {
    ["strides", "dilations"]
        .iter()
        .any(|a| attr_ints(n, a).is_some_and(|v| v.iter().any(|&x| x as u64 > crate::spec::MAX_WIDTH as u64)))
}

/// Reads the weights each layer refers to, checked against the layer's shapes.
fn weights(path: &Path, consts: &[Cow<pb::TensorProto>], refs: &[Refs], imported: &mut Imported) -> Result<()> {
    let get =
        |c: usize| consts.get(c).map(|t| t.as_ref()).ok_or_else(|| bad(path, "refers to a constant it does not hold"));
    let spec = &imported.spec;
    for (i, r) in refs.iter().enumerate() {
        let l = &spec.layers[i];
        let Some(w) = r.weight else { continue };
        let mut weight = reader::floats(path, get(w)?)?;
        if r.transpose {
            let (out, inp) = (l.outputs, l.inputs);
            if weight.len() != out * inp {
                return Err(bad(path, format!("layer `{}` holds weights that do not fit its shape", spec.names[i])));
            }
            let mut t = vec![0.0; weight.len()];
            for a in 0..inp {
                for b in 0..out {
                    t[b * inp + a] = weight[a * out + b];
                }
            }
            weight = t;
        }
        let bias = match r.bias {
            Some(b) => reader::floats(path, get(b)?)?,
            None => vec![0.0; l.bias_count()],
        };
        if weight.len() != l.weight_count() || bias.len() != l.bias_count() {
            return Err(bad(path, format!("layer `{}` holds weights that do not fit its shape", spec.names[i])));
        }
        imported.params[i] = LayerParams { weight, bias };
        if let Some((m, v)) = r.stats {
            imported.stats[i] = Some((reader::floats(path, get(m)?)?, reader::floats(path, get(v)?)?));
        }
    }
    imported.has_weights = true;
    Ok(())
}
