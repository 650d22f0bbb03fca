//! Published architectures by name, each written in the compact spec form (so every model
//! here is also an example of it): torchvision's ResNet 18/34/50/101/152, VGG 11/13/16/19 with
//! and without batch norm, AlexNet, MobileNetV2, SqueezeNet 1.0/1.1 and DenseNet-121; LeNet-5;
//! and the CIFAR-10 ResNets 20/32/44/56/110 of He et al. (2016), with the parameter-free
//! shortcut (option A) where a stage halves the maps.
//!
//! ```
//! use flopnet::zoo::{self, Options};
//! let net = zoo::build("resnet18", Options::default())?.expect("a zoo model");
//! assert_eq!(net.params(), 11_689_512);
//! // torchvision's figure: forward multiply-accumulates of convolutions and matrix products.
//! assert_eq!(zoo::macs(&net), 1_814_073_344);
//! # Ok::<(), flopnet::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::spec::{self, Defaults, Shape, Spec};

/// The input and class count a model is built for (None: its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub input: Option<Shape>,
    pub classes: Option<usize>,
}

impl Options {
    pub fn is_default(&self) -> bool {
        *self == Options::default()
    }
}

/// Every model's name, in the order `flopnet zoo` lists them.
pub const NAMES: [&str; 24] = [
    "lenet5",
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "squeezenet1_0",
    "squeezenet1_1",
    "densenet121",
    "mobilenet_v2",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
];

/// The model's own input shape and class count.
fn native(name: &str) -> (Shape, usize) {
    match name {
        "lenet5" => (Shape::new(1, 32, 32), 10),
        n if cifar_depth(n).is_some() => (Shape::new(3, 32, 32), 10),
        _ => (Shape::new(3, 224, 224), 1000),
    }
}

fn cifar_depth(name: &str) -> Option<usize> {
    match name {
        "resnet20" => Some(20),
        "resnet32" => Some(32),
        "resnet44" => Some(44),
        "resnet56" => Some(56),
        "resnet110" => Some(110),
        _ => None,
    }
}

/// The body of a model (everything after the input), in the compact form, for `classes`.
fn body(name: &str, classes: usize) -> Option<String> {
    let vgg = |cfg: &[usize], bn: bool| {
        let mut s = String::new();
        for &v in cfg {
            if v == 0 {
                s += "-maxpool2";
            } else if bn {
                s += &format!("-conv3x3x{v}p1:identity-bn:relu");
            } else {
                s += &format!("-conv3x3x{v}p1:relu");
            }
        }
        s + &format!("-adaptavg7x7-4096:relu-drop0.5-4096:relu-drop0.5-{classes}")
    };
    const A: [usize; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
    const B: [usize; 15] = [64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
    const D: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
    const E: [usize; 21] =
        [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0];
    Some(match name {
        "lenet5" => format!("-conv5x5x6:tanh-avgpool2-conv5x5x16:tanh-avgpool2-conv5x5x120:tanh-84:tanh-{classes}"),
        "alexnet" => format!(
            "-conv11x11x64s4p2:relu-maxpool3s2-conv5x5x192p2:relu-maxpool3s2-conv3x3x384p1:relu-conv3x3x256p1:relu\
             -conv3x3x256p1:relu-maxpool3s2-adaptavg6x6-drop0.5-4096:relu-drop0.5-4096:relu-{classes}"
        ),
        "vgg11" | "vgg11_bn" => vgg(&A, name.ends_with("_bn")),
        "vgg13" | "vgg13_bn" => vgg(&B, name.ends_with("_bn")),
        "vgg16" | "vgg16_bn" => vgg(&D, name.ends_with("_bn")),
        "vgg19" | "vgg19_bn" => vgg(&E, name.ends_with("_bn")),
        "resnet18" => resnet(&[2, 2, 2, 2], false, classes),
        "resnet34" => resnet(&[3, 4, 6, 3], false, classes),
        "resnet50" => resnet(&[3, 4, 6, 3], true, classes),
        "resnet101" => resnet(&[3, 4, 23, 3], true, classes),
        "resnet152" => resnet(&[3, 8, 36, 3], true, classes),
        "squeezenet1_0" | "squeezenet1_1" => squeezenet(name == "squeezenet1_1", classes),
        "densenet121" => densenet(&[6, 12, 24, 16], classes),
        "mobilenet_v2" => mobilenet_v2(classes),
        n => cifar_resnet(cifar_depth(n)?, classes),
    })
}

/// torchvision's ResNet: a 7×7 stem, four stages of basic (two 3×3) or bottleneck (1×1, 3×3,
/// 1×1 at 4× width, the stride on the 3×3) blocks, a projection shortcut where the shape
/// changes.
fn resnet(blocks: &[usize; 4], bottleneck: bool, classes: usize) -> String {
    let mut s = "-conv7x7x64s2p3b0:identity-bn:relu-maxpool3s2p1".to_string();
    let mut channels = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let width = 64 << stage;
        for b in 0..n {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let out = if bottleneck { 4 * width } else { width };
            let main = if bottleneck {
                format!(
                    "conv1x1x{width}b0:identity-bn:relu-conv3x3x{width}s{stride}p1b0:identity-bn:relu-conv1x1x{out}b0:identity-bn:identity"
                )
            } else {
                format!("conv3x3x{width}s{stride}p1b0:identity-bn:relu-conv3x3x{width}p1b0:identity-bn:identity")
            };
            let shortcut = if stride != 1 || channels != out { "|proj" } else { "" };
            s += &format!("-[{main}{shortcut}]:relu");
            channels = out;
        }
    }
    s + &format!("-gap:identity-{classes}")
}

/// He et al.'s CIFAR-10 ResNet of depth 6n+2: a 3×3 stem of 16 maps, three stages of n basic
/// blocks at 16, 32 and 64 maps, the stage changes with the zero-padding shortcut.
fn cifar_resnet(depth: usize, classes: usize) -> String {
    let n = (depth - 2) / 6;
    let mut s = "-conv3x3x16p1b0:identity-bn:relu".to_string();
    for stage in 0..3 {
        let width = 16 << stage;
        for b in 0..n {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let shortcut = if stride != 1 { "|pad" } else { "" };
            s += &format!(
                "-[conv3x3x{width}s{stride}p1b0:identity-bn:relu-conv3x3x{width}p1b0:identity-bn:identity{shortcut}]:relu"
            );
        }
    }
    s + &format!("-gap:identity-{classes}")
}

/// SqueezeNet's fire module: a 1×1 squeeze, then 1×1 and 3×3 expansions concatenated.
fn fire(squeeze: usize, expand: usize) -> String {
    format!("-conv1x1x{squeeze}:relu-(conv1x1x{expand}:relu|conv3x3x{expand}p1:relu)")
}

fn squeezenet(v1_1: bool, classes: usize) -> String {
    let pool = "-maxpool3s2c";
    let mut s = if v1_1 { "-conv3x3x64s2:relu" } else { "-conv7x7x96s2:relu" }.to_string() + pool;
    let fires: &[(usize, usize)] =
        &[(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256)];
    // After which fire modules a max pooling follows.
    let pools_after: &[usize] = if v1_1 { &[1, 3] } else { &[2, 6] };
    for (i, &(sq, ex)) in fires.iter().enumerate() {
        s += &fire(sq, ex);
        if pools_after.contains(&i) {
            s += pool;
        }
    }
    s + &format!("-drop0.5-conv1x1x{classes}:relu-gap")
}

/// DenseNet-121: dense blocks whose layers (batch norm, ReLU, 1×1 to 4×32 maps, batch norm,
/// ReLU, 3×3 to 32 maps) append their output to their input, and transitions halving the maps.
fn densenet(blocks: &[usize; 4], classes: usize) -> String {
    let (growth, bottleneck) = (32, 128);
    let mut s = "-conv7x7x64s2p3b0:identity-bn:relu-maxpool3s2p1".to_string();
    let mut channels = 64;
    for (i, &n) in blocks.iter().enumerate() {
        for _ in 0..n {
            s += &format!("-(bn:relu-conv1x1x{bottleneck}b0:identity-bn:relu-conv3x3x{growth}p1b0:identity)");
            channels += growth;
        }
        if i + 1 < blocks.len() {
            channels /= 2;
            s += &format!("-bn:relu-conv1x1x{channels}b0:identity-avgpool2");
        }
    }
    s + &format!("-bn:relu-gap:identity-{classes}")
}

/// MobileNetV2: inverted residual blocks (1×1 expansion, 3×3 depthwise, 1×1 linear
/// projection), residual where the shape is kept.
fn mobilenet_v2(classes: usize) -> String {
    let mut s = "-conv3x3x32s2p1b0:identity-bn:relu6".to_string();
    let mut channels = 32;
    let settings =
        [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    for (t, c, n, first_stride) in settings {
        for i in 0..n {
            let stride = if i == 0 { first_stride } else { 1 };
            let hidden = channels * t;
            let expand = if t == 1 { String::new() } else { format!("conv1x1x{hidden}b0:identity-bn:relu6-") };
            let block = format!(
                "{expand}conv3x3x{hidden}s{stride}p1g{hidden}b0:identity-bn:relu6-conv1x1x{c}b0:identity-bn:identity"
            );
            s += &if stride == 1 && channels == c { format!("-[{block}]") } else { format!("-{block}") };
            channels = c;
        }
    }
    s + &format!("-conv1x1x1280b0:identity-bn:relu6-gap:identity-drop0.2-{classes}")
}

/// The model called `name` for `opts`, or None when the zoo has no such model.
pub fn build(name: &str, opts: Options) -> Result<Option<Spec>> {
    build_with(name, opts, Defaults::default())
}

/// [`build`], the output layer taking `d.output` (every hidden activation is the model's own).
pub fn build_with(name: &str, opts: Options, d: Defaults) -> Result<Option<Spec>> {
    if !NAMES.contains(&name) {
        return Ok(None);
    }
    let (input, classes) = native(name);
    let (input, classes) = (opts.input.unwrap_or(input), opts.classes.unwrap_or(classes));
    if classes == 0 {
        return Err(Error::Usage("--classes must be at least 1".into()));
    }
    let text = format!("{input}{}", body(name, classes).expect("every listed name has a body"));
    let mut spec = spec::parse(&text, d).map_err(|e| match e {
        Error::Spec { problem, .. } => Error::Usage(format!(
            "{name} cannot take the input {input}: {problem}; give a larger --input (it was designed for {})",
            native(name).0
        )),
        other => other,
    })?;
    spec.label =
        Some(if opts.is_default() { name.to_string() } else { format!("{name} ({input}, {classes} classes)") });
    Ok(Some(spec))
}

/// torchvision's published figure for a model: the forward multiply-accumulates of its
/// convolutions and matrix products for one example (no bias, normalization, activation or
/// pooling).
/// A view of the ledger: the `mac` of one example's forward pass.
pub fn macs(spec: &Spec) -> u128 {
    let step = crate::cost::Step::new(spec, spec::Loss::Ce, spec::Optimizer::Sgd, 1);
    step.layers.iter().map(|l| l.forward.mac).sum()
}

/// `flopnet zoo`: every model with its parameters and forward MACs at its own input.
pub fn table() -> Result<String> {
    let mut rows =
        vec![vec!["model".to_string(), "input".into(), "params".into(), "forward MACs".into(), "graph".into()]];
    for name in NAMES {
        let spec = build(name, Options::default())?.expect("a zoo name");
        rows.push(vec![
            name.to_string(),
            spec.input_shape.to_string(),
            crate::report::format::thousands(spec.params()),
            crate::report::format::thousands(macs(&spec)),
            if spec.is_chain() { "chain".into() } else { "graph".into() },
        ]);
    }
    Ok(crate::report::format::columns(&rows, 2))
}
