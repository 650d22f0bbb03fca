//! A network and its parameters as an ONNX file, encoded with the ONNX crate's protobuf types:
//! opset [`OPSET`], input `input` of shape `[batch, C, H, W]` (or `[batch, N]`), output
//! `output` of `[batch, classes]`, the batch dimension named and free; weights `layers.{i}.weight`
//! and `layers.{i}.bias` (`i` counting the layers with parameters, as in the safetensors files),
//! each node named after its layer. The metadata records the compact spec, and what training
//! applied to the inputs and its loss, as a safetensors model file does.

use super::{Stats, bad, reader};
use crate::error::Result;
use crate::init::LayerParams;
use crate::model::Recorded;
use crate::spec::{Activation, Kind, Source, Spec};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb;

/// The operator set the files are written for (ONNX Runtime 1.14 and later run it).
pub const OPSET: i64 = 17;
/// The IR version that goes with it.
const IR_VERSION: i64 = 8;

fn attr_i(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 2, i: v, ..Default::default() }
}

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 7, ints: v.to_vec(), ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn tensor(name: &str, dims: &[usize], values: &[f64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: 1,
        raw_data: values.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value as D};
    let mut dim = vec![Dimension { value: Some(D::DimParam("batch".into())), ..Default::default() }];
    dim.extend(dims.iter().map(|&d| Dimension { value: Some(D::DimValue(d as i64)), ..Default::default() }));
    let t = pb::type_proto::Tensor { elem_type: 1, shape: Some(pb::TensorShapeProto { dim }) };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto { value: Some(pb::type_proto::Value::TensorType(t)), ..Default::default() }),
        ..Default::default()
    }
}

/// Writes `spec` with `params` (one per layer) to `path` as ONNX; `stats` holds batch
/// normalization's running statistics per layer (may be empty for a network without it).
pub fn save(path: &Path, spec: &Spec, params: &[LayerParams], stats: &[Stats], recorded: &Recorded) -> Result<()> {
    let bytes = encode(path, spec, params, stats, recorded)?.encode_to_vec();
    crate::model::write_atomically(path, &bytes)
}

fn encode(
    path: &Path,
    spec: &Spec,
    params: &[LayerParams],
    stats: &[Stats],
    recorded: &Recorded,
) -> Result<pb::ModelProto> {
    if params.len() != spec.layers.len() {
        return Err(bad(
            path,
            format!("{} layers of parameters for {spec}, which has {}", params.len(), spec.layers.len()),
        ));
    }
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let input = spec.input_shape;
    // The input is [batch, C, H, W] when an image layer reads it (even a 1×1 one).
    let input_4d = input.is_image()
        || spec.layers.iter().zip(&spec.sources).any(|(l, s)| l.kind.needs_image() && s.contains(&Source::Input));
    let in_dims: Vec<usize> = if input_4d { vec![input.c, input.h, input.w] } else { vec![input.c] };
    // Each source's tensor name, and whether it holds [batch, C, H, W] (else [batch, N]).
    let mut out: Vec<String> = Vec::with_capacity(spec.layers.len());
    let mut four_d: Vec<bool> = Vec::with_capacity(spec.layers.len());
    let tensor_of = |out: &[String], s: Source| match s {
        Source::Input => "input".to_string(),
        Source::Node(i) => out[i].clone(),
    };
    let mut weight_no = 0;
    let mut relu6_bounds = false;
    for (i, l) in spec.layers.iter().enumerate() {
        let name = format!("{}_{}", l.kind.name(), spec.names[i]);
        let srcs: Vec<String> = spec.sources[i].iter().map(|&s| tensor_of(&out, s)).collect();
        let p = &params[i];
        let mut x = srcs[0].clone();
        let reads_4d = match spec.sources[i][0] {
            Source::Input => input_4d,
            Source::Node(j) => four_d[j],
        };
        let mut weights = |inits: &mut Vec<pb::TensorProto>, shape: Vec<usize>| -> (String, String) {
            let (w, b) = (format!("layers.{weight_no}.weight"), format!("layers.{weight_no}.bias"));
            weight_no += 1;
            inits.push(tensor(&w, &shape, &p.weight));
            if !p.bias.is_empty() {
                inits.push(tensor(&b, &[p.bias.len()], &p.bias));
            }
            (w, b)
        };
        if p.weight.len() != l.weight_count() || p.bias.len() != l.bias_count() {
            return Err(bad(path, format!("layer {} ({l}) has parameters of another shape", i + 1)));
        }
        match l.kind {
            Kind::Dense => {
                if reads_4d {
                    let f = format!("{name}.flatten");
                    nodes.push(node("Flatten", &f, &[&x], &f, vec![attr_i("axis", 1)]));
                    x = f;
                }
                let (w, b) = weights(&mut inits, l.weight_shape());
                nodes.push(node("Gemm", &name, &[&x, &w, &b], &name, vec![attr_i("transB", 1)]));
            }
            Kind::Conv2d(c) => {
                let (ph, pw) = c.pads();
                let (w, b) = weights(&mut inits, l.weight_shape());
                let ins: Vec<&str> = if c.bias { vec![&x, &w, &b] } else { vec![&x, &w] };
                let attrs = vec![
                    attr_ints("kernel_shape", &[c.kh as i64, c.kw as i64]),
                    attr_ints("strides", &[c.stride as i64; 2]),
                    attr_ints("pads", &[ph as i64, pw as i64, ph as i64, pw as i64]),
                    attr_i("group", c.groups as i64),
                ];
                nodes.push(node("Conv", &name, &ins, &name, attrs));
            }
            Kind::MaxPool(pl) | Kind::AvgPool(pl) => {
                let op = if matches!(l.kind, Kind::MaxPool(_)) { "MaxPool" } else { "AveragePool" };
                let attrs = vec![
                    attr_ints("kernel_shape", &[pl.k as i64; 2]),
                    attr_ints("strides", &[pl.stride as i64; 2]),
                    attr_ints("pads", &[pl.pad as i64; 4]),
                    attr_i("ceil_mode", i64::from(pl.ceil)),
                ];
                nodes.push(node(op, &name, &[&x], &name, attrs));
            }
            Kind::BatchNorm => {
                let Some(Some((mean, var))) = stats.get(i) else {
                    return Err(bad(
                        path,
                        format!(
                            "layer {} is a batch normalization without running statistics; ONNX needs them to run it",
                            i + 1
                        ),
                    ));
                };
                let (w, b) = weights(&mut inits, vec![l.input.c]);
                let (m, v) =
                    (format!("layers.{}.running_mean", weight_no - 1), format!("layers.{}.running_var", weight_no - 1));
                inits.push(tensor(&m, &[mean.len()], mean));
                inits.push(tensor(&v, &[var.len()], var));
                let eps = pb::AttributeProto {
                    name: "epsilon".into(),
                    r#type: 1,
                    f: crate::layers::batchnorm::EPS as f32,
                    ..Default::default()
                };
                nodes.push(node("BatchNormalization", &name, &[&x, &w, &b, &m, &v], &name, vec![eps]));
            }
            Kind::GlobalAvgPool => {
                let g = format!("{name}.pool");
                nodes.push(node("GlobalAveragePool", &g, &[&x], &g, vec![]));
                nodes.push(node("Flatten", &name, &[&g], &name, vec![attr_i("axis", 1)]));
            }
            Kind::Dropout(rate) => {
                let r = format!("{name}.ratio");
                inits.push(tensor(&r, &[], &[rate.value()]));
                nodes.push(node("Dropout", &name, &[&x, &r], &name, vec![]));
            }
            Kind::Add(_) => {
                let ins: Vec<&str> = srcs.iter().map(|s| s.as_str()).collect();
                let op = if ins.len() == 2 { "Add" } else { "Sum" };
                nodes.push(node(op, &name, &ins, &name, vec![]));
            }
            Kind::Concat => {
                let ins: Vec<&str> = srcs.iter().map(|s| s.as_str()).collect();
                nodes.push(node("Concat", &name, &ins, &name, vec![attr_i("axis", 1)]));
            }
            Kind::AdaptiveAvgPool(..) | Kind::ZeroPad { .. } => {
                return Err(bad(path, format!("layer {} ({l}) has no ONNX operator flopnet writes yet", i + 1)));
            }
        }
        let mut y = name.clone();
        let act = |op: &str| format!("{}.{op}", name);
        match l.activation {
            Activation::Identity => {}
            Activation::Relu6 => {
                relu6_bounds = true;
                let a = act("relu6");
                nodes.push(node("Clip", &a, &[&y, "relu6.min", "relu6.max"], &a, vec![]));
                y = a;
            }
            a => {
                let (op, attrs) = match a {
                    Activation::Relu => ("Relu", vec![]),
                    Activation::LeakyRelu => (
                        "LeakyRelu",
                        vec![pb::AttributeProto {
                            name: "alpha".into(),
                            r#type: 1,
                            f: crate::spec::LEAKY_SLOPE as f32,
                            ..Default::default()
                        }],
                    ),
                    Activation::Sigmoid => ("Sigmoid", vec![]),
                    Activation::Tanh => ("Tanh", vec![]),
                    _ => ("Softmax", vec![attr_i("axis", 1)]),
                };
                let t = act(&op.to_ascii_lowercase());
                nodes.push(node(op, &t, &[&y], &t, attrs));
                y = t;
            }
        }
        out.push(y);
        four_d.push(match l.kind {
            Kind::Dense | Kind::GlobalAvgPool => false,
            Kind::BatchNorm | Kind::Dropout(_) | Kind::Add(_) | Kind::Concat => reads_4d,
            _ => true,
        });
    }
    if relu6_bounds {
        inits.push(tensor("relu6.min", &[], &[0.0]));
        inits.push(tensor("relu6.max", &[], &[6.0]));
    }
    // The last node writes `output`.
    let last = out.last().cloned().unwrap_or_default();
    for n in nodes.iter_mut() {
        for o in n.output.iter_mut().chain(n.input.iter_mut()) {
            if *o == last {
                *o = "output".into();
            }
        }
    }
    let mut meta = HashMap::from([
        ("spec".to_string(), spec.to_string()),
        ("format".to_string(), "flopnet-onnx-1".into()),
        ("output_activation".to_string(), spec.output_activation().name().to_string()),
    ]);
    recorded.write(&mut meta);
    let mut meta: Vec<(String, String)> = meta.into_iter().collect();
    meta.sort();
    let graph = pb::GraphProto {
        node: nodes,
        name: spec.label.clone().unwrap_or_else(|| "flopnet".into()),
        initializer: inits,
        input: vec![value_info("input", &in_dims)],
        output: vec![value_info("output", &[spec.outputs()])],
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "flopnet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: meta.into_iter().map(|(key, value)| pb::StringStringEntryProto { key, value }).collect(),
        ..Default::default()
    })
}

/// What a file records of its inputs' scaling and loss (flopnet's own files; none elsewhere).
pub(crate) fn recorded(file: &reader::File) -> Result<Recorded> {
    let meta: HashMap<String, String> =
        file.proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
    Recorded::read(&file.path, &meta)
}
