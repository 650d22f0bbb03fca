//! The file itself: the protobuf model decoded with the ONNX crate's types, its tensors' shapes
//! checked and their values read (from the file or from external data beside it), every size
//! bounded before anything is allocated for it.

use super::bad;
use crate::error::Result;
use prost::Message;
use std::path::{Path, PathBuf};
use tract_onnx::pb;

/// ONNX's element types flopnet reads.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const DOUBLE: i32 = 11;

/// The most values one tensor may declare (2^34: 128 GiB of f64, past any model flopnet
/// counts); a larger one is refused before its product can overflow anything.
const MAX_VALUES: u128 = 1 << 34;

/// A decoded model and where it came from (external data is read beside it).
pub(crate) struct File {
    pub path: PathBuf,
    /// The file's name, as the network's label.
    pub label: String,
    pub proto: pb::ModelProto,
}

/// Reads and decodes `path`; `limit` bounds the bytes read.
pub(crate) fn open(path: &Path) -> Result<File> {
    // The bytes, the decoded copy of them and the f64 weights: about 5 bytes per byte of file.
    let what = "the memory available can load, at 5 bytes per byte of an ONNX file";
    let bytes = crate::files::read_input(path, crate::files::memory_limit(5), what, "pass the .onnx file")
        .map_err(|e| bad(path, e.to_string()))?;
    decode(path, &bytes)
}

/// Decodes a model held in memory; `path` names it in messages (and locates external data).
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<File> {
    let proto = pb::ModelProto::decode(bytes).map_err(|e| {
        bad(
            path,
            format!(
                "is not an ONNX model ({}); pass a file written by torch.onnx.export or onnx.save",
                one_line(&e.to_string())
            ),
        )
    })?;
    if proto.graph.is_none() {
        return Err(bad(path, "holds no graph; pass a model file exported with its graph"));
    }
    let label = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(File { path: path.to_path_buf(), label, proto })
}

/// A message on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The dimensions a tensor declares, each at least 0, their product bounded.
pub(crate) fn dims(path: &Path, t: &pb::TensorProto) -> Result<Vec<usize>> {
    // The product of the dimensions other than 0, so that no order of multiplying overflows.
    let mut total: u128 = 1;
    let mut out = Vec::with_capacity(t.dims.len().min(8));
    if t.dims.len() > 8 {
        return Err(bad(
            path,
            format!("tensor `{}` has {} dimensions; flopnet reads at most 8", name(t), t.dims.len()),
        ));
    }
    for &d in &t.dims {
        let d = u64::try_from(d)
            .map_err(|_| bad(path, format!("tensor `{}` declares a negative dimension {d}", name(t))))?;
        total = total.saturating_mul((d as u128).max(1));
        out.push(d as usize);
    }
    if total > MAX_VALUES {
        return Err(bad(
            path,
            format!(
                "tensor `{}` declares {:?}, dimensions past the {MAX_VALUES} values flopnet reads",
                name(t),
                t.dims
            ),
        ));
    }
    Ok(out)
}

/// The tensor's name, printable.
pub(crate) fn name(t: &pb::TensorProto) -> String {
    t.name.escape_debug().to_string()
}

fn count(path: &Path, t: &pb::TensorProto) -> Result<usize> {
    Ok(dims(path, t)?.iter().product())
}

/// Whether the tensor's values live in a file beside the model.
pub(crate) fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(1)
}

/// The bytes of an external tensor: `location`, `offset` and `length` as ONNX writes them,
/// the location relative to the model's directory and inside it.
fn external(path: &Path, t: &pb::TensorProto, want: usize) -> Result<Vec<u8>> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let location = get("location")
        .ok_or_else(|| bad(path, format!("tensor `{}` is stored outside the file but names no location", name(t))))?;
    let rel = Path::new(location);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(bad(
            path,
            format!(
                "tensor `{}` is stored in {location:?}, outside the model's directory; keep the data beside the model",
                name(t)
            ),
        ));
    }
    let number = |k: &str| -> Result<u64> {
        get(k).map_or(Ok(0), |v| {
            v.trim()
                .parse()
                .map_err(|_| bad(path, format!("tensor `{}` has external {k} {v:?}, not a number", name(t))))
        })
    };
    let (offset, length) = (number("offset")?, number("length")?);
    if want as u64 > crate::files::memory_limit(2) {
        return Err(bad(
            path,
            format!("tensor `{}` holds {want} bytes, more than the memory available can load", name(t)),
        ));
    }
    let data = path.parent().unwrap_or(Path::new(".")).join(rel);
    let meta = std::fs::metadata(&data).map_err(|e| {
        bad(
            path,
            format!(
                "tensor `{}` is stored in {} ({e}); put the .onnx.data file beside the model",
                name(t),
                data.display()
            ),
        )
    })?;
    let end = offset.checked_add(want as u64).filter(|&e| e <= meta.len()).ok_or_else(|| {
        bad(
            path,
            format!(
                "tensor `{}` wants bytes {offset}..+{want} of {}, which holds {}",
                name(t),
                data.display(),
                meta.len()
            ),
        )
    })?;
    if length != 0 && length != want as u64 {
        return Err(bad(
            path,
            format!("tensor `{}` declares {length} external bytes for {want} bytes of values", name(t)),
        ));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&data).map_err(|e| bad(path, format!("{}: {e}", data.display())))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| bad(path, format!("{}: {e}", data.display())))?;
    let mut out = vec![0u8; (end - offset) as usize];
    f.read_exact(&mut out).map_err(|e| bad(path, format!("{}: {e}", data.display())))?;
    Ok(out)
}

/// A float tensor's values (f32 or f64, in the file or beside it), as f64.
pub(crate) fn floats(path: &Path, t: &pb::TensorProto) -> Result<Vec<f64>> {
    let n = count(path, t)?;
    let width = match t.data_type {
        FLOAT => 4,
        DOUBLE => 8,
        other => {
            return Err(bad(
                path,
                format!(
                    "tensor `{}` holds element type {other}; flopnet reads float (1) or double (11) weights",
                    name(t)
                ),
            ));
        }
    };
    let wrong =
        |found: usize| bad(path, format!("tensor `{}` declares {:?} ({n} values) but holds {found}", name(t), t.dims));
    let raw =
        if is_external(t) { Some(external(path, t, n.checked_mul(width).ok_or_else(|| wrong(0))?)?) } else { None };
    let raw = raw.as_deref().or((!t.raw_data.is_empty()).then_some(t.raw_data.as_slice()));
    if let Some(raw) = raw {
        if raw.len() != n.saturating_mul(width) {
            return Err(wrong(raw.len() / width));
        }
        return Ok(if width == 4 {
            raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
        } else {
            raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
        });
    }
    let found = if width == 4 { t.float_data.len() } else { t.double_data.len() };
    if found != n {
        return Err(wrong(found));
    }
    Ok(if width == 4 { t.float_data.iter().map(|&x| x as f64).collect() } else { t.double_data.clone() })
}

/// A small integer tensor's values (a shape, axes): int64 or int32, at most 16 of them.
pub(crate) fn ints(path: &Path, t: &pb::TensorProto) -> Result<Vec<i64>> {
    let n = count(path, t)?;
    if n > 16 || is_external(t) {
        return Err(bad(
            path,
            format!("tensor `{}` is read as a short list of integers but declares {:?}", name(t), t.dims),
        ));
    }
    let v: Vec<i64> = match t.data_type {
        INT64 if !t.raw_data.is_empty() => {
            t.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
        }
        INT64 => t.int64_data.clone(),
        INT32 if !t.raw_data.is_empty() => {
            t.raw_data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()
        }
        INT32 => t.int32_data.iter().map(|&x| x as i64).collect(),
        FLOAT | DOUBLE => floats(path, t)?.into_iter().map(|x| x as i64).collect(),
        other => return Err(bad(path, format!("tensor `{}` holds element type {other}, not integers", name(t)))),
    };
    if v.len() != n {
        return Err(bad(path, format!("tensor `{}` declares {:?} but holds {} values", name(t), t.dims, v.len())));
    }
    Ok(v)
}

/// One float value (Clip's bounds, Dropout's ratio): a tensor of one value.
pub(crate) fn scalar(path: &Path, t: &pb::TensorProto) -> Result<f64> {
    if count(path, t)? != 1 || is_external(t) {
        return Err(bad(path, format!("tensor `{}` should hold one value but declares {:?}", name(t), t.dims)));
    }
    match t.data_type {
        FLOAT | DOUBLE => Ok(floats(path, t)?[0]),
        _ => Ok(ints(path, t)?[0] as f64),
    }
}

/// The node's attribute `name`.
pub(crate) fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

pub(crate) fn attr_i(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

pub(crate) fn attr_f(n: &pb::NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map_or(default, |a| a.f as f64)
}

pub(crate) fn attr_ints<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(n, name).map(|a| a.ints.as_slice())
}

pub(crate) fn attr_s(n: &pb::NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}
