//! `flopnet explain`: the ledger as a derivation in words, for a learner.

use super::format::thousands as t;
use crate::cost::LayerCost;
use crate::cost::{Config, Ledger};
use crate::spec::{Activation, Conv, Kind, Layer, Loss, Optimizer, Padding, Pool, Spec};

fn act_words(f: Activation) -> &'static str {
    match f {
        Activation::Identity => "identity (a = z): no work",
        Activation::Relu => "ReLU, max(z, 0): 1 comparison each",
        Activation::Relu6 => "ReLU6, min(max(z, 0), 6): 2 comparisons each",
        Activation::LeakyRelu => "leaky ReLU, z if z > 0 else 0.01 z: 1 multiplication and 1 comparison each",
        Activation::Sigmoid => "sigmoid, 1 / (1 + exp(-z)): 1 exp, 1 addition and 1 division each",
        Activation::Tanh => "tanh: 1 tanh evaluation each",
        Activation::Softmax => {
            "softmax over the layer: find the max (M-1 comparisons), subtract it (M), exp (M), sum (M-1 additions), divide (M)"
        }
    }
}

fn grad_words(f: Activation, from_ce: bool) -> &'static str {
    match f {
        Activation::Identity => "f'(z) = 1, so delta = g: free",
        Activation::Softmax if from_ce => {
            "with cross-entropy the loss already handed back dL/dz = p - y, so delta is free"
        }
        Activation::Softmax => {
            "softmax's Jacobian: s = Σ g_k a_k, then delta_j = a_j (g_j - s): 2M multiplications, 2M-1 additions"
        }
        Activation::Relu => "f'(z) is 1 or 0: keep g where z > 0 (1 comparison each)",
        Activation::Relu6 => "keep g where 0 < a < 6 (2 comparisons each)",
        Activation::LeakyRelu => "keep g where z > 0, else 0.01 g (1 comparison, 1 multiplication each)",
        Activation::Sigmoid => "f'(z) = a (1 - a): delta = g · a · (1 - a), 2 multiplications and 1 subtraction each",
        Activation::Tanh => "f'(z) = 1 - a²: delta = g · (1 - a · a), 2 multiplications and 1 subtraction each",
    }
}

/// A dense layer's forward pass in words.
fn dense_forward(i: usize, l: &Layer, c: &LayerCost) -> String {
    let (n, m) = (l.inputs as u128, l.outputs as u128);
    let mut o = format!(
        "  layer {} → {}: a_j = {}(b_j + Σ_{{i=1}}^{{{n}}} W_ij x_i) for {m} neurons{}:\n",
        i + 1,
        i + 2,
        l.activation,
        if l.input.is_image() { format!(" (reading the {} maps flattened)", l.input) } else { String::new() }
    );
    o += &format!(
        "    {n} × {m} = {} multiplications, {m} sums over {} terms = {} additions, {m} {} applications\n",
        t(n * m),
        t(n + 1),
        t(n * m),
        l.activation
    );
    o += &format!("    {}\n", act_words(l.activation));
    o += &format!(
        "    layer total: {} FLOPs, {} parameters ({n} × {m} weights + {m} biases)\n",
        t(c.forward.flop()),
        t(c.params)
    );
    o
}

/// Stride and padding in words: `stride 1, padding 2`.
fn placement(conv: &Conv) -> String {
    let (ph, pw) = conv.pads();
    let pad = match (conv.padding, ph == pw) {
        (Padding::Fixed(0), _) => "no padding".to_string(),
        (Padding::Same, _) => format!("padding {ph} (same size)"),
        (_, true) => format!("padding {ph}"),
        _ => format!("padding {ph},{pw}"),
    };
    format!("stride {}, {pad}", conv.stride)
}

/// A convolution's forward pass in words: why it costs what it costs, and what a dense layer on
/// the same image would cost.
fn conv_forward(i: usize, l: &Layer, conv: &Conv, c: &LayerCost) -> String {
    let (inp, out) = (l.input, l.output);
    let (f, h2, w2) = (out.c as u128, out.h as u128, out.w as u128);
    // A filter reads its group's C/g channels.
    let (ch, kh, kw) = ((inp.c / conv.groups) as u128, conv.kh as u128, conv.kw as u128);
    let outputs = f * h2 * w2;
    let window = ch * kh * kw;
    let macs = outputs * window;
    let weights = f * window;
    let mut o = format!("  layer {}, {} ({} → {}), {}:\n", i + 1, super::kind_label(l), inp, out, l.activation);
    o += &format!(
        "    {f} filters, each a {ch}×{kh}×{kw} kernel, slide over the {}×{} image ({}) and make {f} feature maps of {h2}×{w2}.\n",
        inp.h,
        inp.w,
        placement(conv)
    );
    o += &format!(
        "    Each of the F·H'·W' = {f}·{h2}·{w2} = {} outputs reads a C×kh×kw = {ch}×{kh}×{kw} = {}-value window:\n",
        t(outputs),
        t(window)
    );
    // Without a bias each window's sum is one addition short of its products.
    let additions = if conv.bias {
        format!("as many additions ({} to sum each window, 1 for the bias)", t(window - 1))
    } else {
        format!("{} additions ({} to sum each window; no bias)", t(macs - outputs), t(window - 1))
    };
    o += &format!(
        "    F·H'·W'·C·kh·kw = {f}·{h2}·{w2}·{ch}·{kh}·{kw} = {} multiplications, and {additions};\n    padded positions count as multiplications by zero, as an im2col product does them.\n",
        t(macs),
    );
    if conv.groups > 1 {
        let g = conv.groups;
        let kind = if g == inp.c && g == out.c { "a depthwise convolution" } else { "a grouped convolution" };
        o += &format!(
            "    This is {kind}: the {} channels split into {g} groups and each filter reads only its group's {ch}, so\n    every window is {g}× smaller than a full convolution's and so are the products ({} instead of {}).\n    That is why a depthwise convolution is cheap; backward, dW and dX cost as many products as forward.\n",
            inp.c,
            t(macs),
            t(macs * g as u128)
        );
    }
    o += &format!("    {} {} applications: {}\n", t(outputs), l.activation, act_words(l.activation));
    let biases = if conv.bias { f } else { 0 };
    o += &format!(
        "    The kernels are shared by every position: {f} × {ch} × {kh} × {kw} = {} weights + {biases} biases = {} parameters.\n",
        t(weights),
        t(weights + biases)
    );
    let dense = inp.size() as u128 * outputs;
    o += &format!(
        "    A dense layer from the same {} ({} values) to the same {} ({} values) would need {} × {} =\n    {} multiplications and as many weights: {:.0}× the work of the convolution and {}× its weights.\n",
        inp,
        t(inp.size() as u128),
        out,
        t(outputs),
        t(inp.size() as u128),
        t(outputs),
        t(dense),
        dense as f64 / macs.max(1) as f64,
        t(dense / weights.max(1))
    );
    o += &format!("    layer total: {} FLOPs, {} parameters\n", t(c.forward.flop()), t(c.params));
    o
}

/// A pooling layer's forward pass in words.
fn pool_forward(i: usize, l: &Layer, p: Pool, c: &LayerCost) -> String {
    let out = l.output;
    let outputs = out.size() as u128;
    let k2 = p.k as u128 * p.k as u128;
    let mut o = format!("  layer {}, {} ({} → {}):\n", i + 1, super::kind_label(l), l.input, out);
    let stride = if p.stride == p.k { String::new() } else { format!(", moved {} at a time", p.stride) };
    o += &match l.kind {
        Kind::MaxPool(_) => format!(
            "    each of the {}·{}·{} = {} outputs is the largest of a {k}×{k} window{stride}: k²−1 = {} comparisons each,\n    {} comparisons; no multiplications and no parameters\n",
            out.c,
            out.h,
            out.w,
            t(outputs),
            k2 - 1,
            t(outputs * (k2 - 1)),
            k = p.k
        ),
        _ => format!(
            "    each of the {}·{}·{} = {} outputs is the mean of a {k}×{k} window{stride}: k²−1 = {} additions and one\n    multiplication by 1/{} each, {} additions and {} multiplications; no parameters\n",
            out.c,
            out.h,
            out.w,
            t(outputs),
            k2 - 1,
            k2,
            t(outputs * (k2 - 1)),
            t(outputs),
            k = p.k
        ),
    };
    o += &format!("    layer total: {} FLOPs\n", t(c.forward.flop()));
    o
}

/// A convolution's or pooling layer's backward pass in words, with the ledger's counts.
fn shaped_backward(i: usize, l: &Layer, c: &crate::cost::Backward, delta_words: &str) -> String {
    let mut o = format!("  layer {}, {} ({} → {}):\n", i + 1, super::kind_label(l), l.input, l.output);
    match l.kind {
        Kind::Conv2d(_) => {
            let out = l.output;
            o += &format!("    delta = g ⊙ f'(z): {delta_words}\n");
            o += &format!(
                "    dW: each weight gathers one product per output position, F·H'·W'·C·kh·kw = {} multiplications\n",
                t(c.weight_grad.mul)
            );
            match l.kind {
                Kind::Conv2d(conv) if !conv.bias => o += "    db: none, the convolution has no bias\n",
                _ => {
                    o += &format!(
                        "    db: each filter's bias sums delta over its {}×{} map: {} additions\n",
                        out.h,
                        out.w,
                        t(c.bias_grad.add)
                    )
                }
            }
            if i == 0 {
                o += "    dX: skipped — the inputs are data, nobody needs their gradient\n";
            } else {
                o += &format!(
                    "    dX: every kernel is spread back over the windows it read (the transposed product, then col2im): {} multiplications, {} additions\n",
                    t(c.input_grad.mul),
                    t(c.input_grad.add)
                );
            }
        }
        Kind::MaxPool(_) => {
            o += &format!(
                "    each gradient goes back to the position its window's maximum came from; nothing else receives any ({} FLOPs)\n",
                t(c.total.flop())
            );
        }
        Kind::AvgPool(_) => {
            o += &format!(
                "    each gradient is shared equally by the k² positions of its window ({} FLOPs)\n",
                t(c.total.flop())
            );
        }
        _ => o += &graph_backward(l, c, delta_words),
    }
    if !c.grad_sum.is_zero() {
        o += &format!(
            "    its output is read by several layers, so the gradients they hand back are summed first: {} additions\n",
            t(c.grad_sum.add)
        );
    }
    o
}

/// What a graph adds to a chain, in a paragraph.
fn graph_intro(spec: &Spec) -> String {
    let count = |f: &dyn Fn(&Kind) -> bool| spec.layers.iter().filter(|l| f(&l.kind)).count();
    let adds = count(&|k| matches!(k, Kind::Add(_)));
    let concats = count(&|k| *k == Kind::Concat);
    let norms = count(&|k| *k == Kind::BatchNorm);
    let grouped = count(&|k| matches!(k, Kind::Conv2d(c) if c.groups > 1));
    let fan_out = (0..spec.layers.len()).filter(|&i| spec.consumers(i) > 1).count();
    let mut o = format!(
        "It is a graph, not a chain: {adds} residual join{} (element-wise sums), {concats} concatenation{}, {fan_out} tensor{} read\n\
         by more than one layer, {norms} batch normalization{} and {grouped} grouped or depthwise convolution{}.\n",
        if adds == 1 { "" } else { "s" },
        if concats == 1 { "" } else { "s" },
        if fan_out == 1 { "" } else { "s" },
        if norms == 1 { "" } else { "s" },
        if grouped == 1 { "" } else { "s" },
    );
    o += "A join adds its inputs value by value (one addition per value and extra input) and hands its gradient\n\
          back to each input unchanged; where a tensor feeds several layers, the gradients they return are summed\n\
          once (one addition per value and extra reader). Concatenating moves data and costs nothing.\n\n";
    o
}

/// The forward pass of a kind of real architectures, in words.
fn graph_forward(spec: &Spec, i: usize, l: &Layer, c: &LayerCost) -> String {
    let reads: Vec<&str> = spec.sources[i].iter().map(|s| spec.source_name(*s)).collect();
    let mut o = format!(
        "  layer {}, {} ({} → {}), reading {}:\n",
        i + 1,
        super::kind_label(l),
        l.input,
        l.output,
        reads.join(" and ")
    );
    let values = t(l.outputs as u128);
    o += &match l.kind {
        Kind::BatchNorm => format!(
            "    batch normalization: per channel, the batch's mean and variance (a sum, a difference and a square per value),\n    then x̂ = (x − μ)/√(σ² + ε) and γ·x̂ + β (3 multiplications and 4 additions per value in all, plus a square\n    root and a division per channel, and the running statistics' update); {} learned parameters (γ and β).\n    At evaluation it is one multiplication and one addition per value. It adds little arithmetic, but every\n    value passes through it; after it comes the activation, {}\n",
            t(l.params()),
            act_words(l.activation)
        ),
        Kind::Add(k) => format!(
            "    a residual join: the element-wise sum of {k} inputs of {}, {} − 1 additions per value ({} in all), then {}\n",
            l.input,
            k,
            t(c.forward.add),
            act_words(l.activation)
        ),
        Kind::Concat => format!("    the inputs' channels stacked into {}: data movement, no arithmetic\n", l.output),
        Kind::GlobalAvgPool | Kind::AdaptiveAvgPool(..) => format!(
            "    each of the {values} outputs is the mean of its window: {} additions and {} multiplications by 1/area in all\n",
            t(c.forward.add),
            t(c.forward.mul)
        ),
        Kind::Dropout(p) => format!(
            "    inverted dropout at rate {}: each value is kept or zeroed and scaled by 1/(1 − p) (one division per step),\n    one multiplication per value ({values}); at evaluation it does nothing\n",
            p.value()
        ),
        Kind::ZeroPad { .. } => format!(
            "    the parameter-free shortcut: every {}th row and column, and zero channels up to {}: no arithmetic\n",
            l.input.h.div_ceil(l.output.h),
            l.output.c
        ),
        _ => String::new(),
    };
    o += &format!("    layer total: {} FLOPs\n", t(c.forward.flop()));
    o
}

/// The backward pass of a kind of real architectures, in words.
fn graph_backward(l: &Layer, c: &crate::cost::Backward, delta_words: &str) -> String {
    match l.kind {
        Kind::BatchNorm => format!(
            "    delta = g ⊙ f'(z): {delta_words}\n    dγ = Σ δ·x̂ and dβ = Σ δ per channel: {} FLOPs; dx = (γ/σ)/n · (n·δ − dβ − x̂·dγ), which carries the\n    batch statistics' own gradient (the classic place for a wrong backward): {} FLOPs\n",
            t(c.weight_grad.flop() + c.bias_grad.flop()),
            t(c.input_grad.flop())
        ),
        Kind::Add(_) => format!(
            "    delta = g ⊙ f'(z): {delta_words}\n    the sum's derivative is 1 for every input, so each input receives delta itself: no arithmetic. That is why\n    a residual connection is almost free backward; the one cost is where a tensor is read twice (the block's\n    input feeds the block and the join), whose two gradients are summed once\n"
        ),
        Kind::Concat => "    each input receives its own channels of the gradient: no arithmetic\n".to_string(),
        Kind::ZeroPad { .. } => {
            "    the gradient of the kept positions is the matching slice; no arithmetic\n".to_string()
        }
        _ => format!("    dX: {} multiplications, {} additions\n", t(c.input_grad.mul), t(c.input_grad.add)),
    }
}

pub fn explain_text(spec: &Spec, cfg: &Config) -> String {
    let one = Ledger::new(spec, &Config { batch: 1, examples: 1, epochs: 1, ..*cfg });
    let full = Ledger::new(spec, cfg);
    let mut o = String::new();
    let n_layers = spec.layers.len();
    if spec.is_convolutional() {
        let count = |f: fn(&Layer) -> bool| spec.layers.iter().filter(|l| f(l)).count();
        let convs = count(|l| matches!(l.kind, Kind::Conv2d(_)));
        let pools = count(|l| matches!(l.kind, Kind::MaxPool(_) | Kind::AvgPool(_)));
        let dense = count(Layer::is_dense);
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        o += &format!(
            "The network {spec}: an input image of {} ({} values: channels × height × width), then {n_layers} layers:\n{}, {} and {}.\n",
            spec.input_shape,
            t(spec.input as u128),
            plural(convs, "convolution", "convolutions"),
            plural(pools, "pooling layer", "pooling layers"),
            plural(dense, "dense layer", "dense layers"),
        );
        o += "A convolution slides F small kernels (C×kh×kw weights each) over the image: every output value of\n\
              every feature map is one kernel's weighted sum over one C×kh×kw window, plus its bias. The same\n\
              weights serve every position, so a convolution has few parameters but many multiplications.\n\
              Pooling shrinks each map by summarising k×k windows; a dense layer reads the last maps flattened\n\
              (channel by channel, row by row), which costs nothing.\n\n";
    } else {
        o += &format!(
            "The network {spec}: {} inputs, then {n_layers} weight layer{} ({} neurons in all).\n",
            spec.input,
            if n_layers == 1 { "" } else { "s" },
            t(spec.layers.iter().map(|l| l.outputs as u128).sum())
        );
        o += "Every neuron j of a layer computes a_j = f(b_j + Σ_{i=1}^{N} W_ij x_i): it multiplies each of\n\
              the N values below it by its own weight, adds them up with its bias, and applies f.\n\
              A neuron never multiplies another neuron; it multiplies a value by a weight.\n\n";
    }

    if !spec.is_chain() || spec.layers.iter().any(|l| !l.kind.is_classic()) {
        o += &graph_intro(spec);
    }
    o += "Forward pass, one example\n";
    for (i, l) in spec.layers.iter().enumerate() {
        let c = &one.layers[i];
        match l.kind {
            Kind::Conv2d(conv) => o += &conv_forward(i, l, &conv, c),
            Kind::MaxPool(p) | Kind::AvgPool(p) => o += &pool_forward(i, l, p, c),
            Kind::Dense => o += &dense_forward(i, l, c),
            _ => o += &graph_forward(spec, i, l, c),
        }
    }
    let f = &one.per_example.forward;
    o += &format!(
        "  Forward total: {} multiplications, {} additions, {} FLOPs in all.\n\n",
        t(f.mul),
        t(f.add),
        t(f.flop())
    );

    o += &format!("The loss ({})\n", cfg.loss);
    o += &match cfg.loss {
        Loss::Ce => format!(
            "  -ln p_y (1 ln), then its gradient with respect to z: p - y scaled by 1/B ({} FLOPs per example).\n\n",
            t(one.per_example.loss.flop())
        ),
        Loss::Mse => format!(
            "  the mean of (a - y)² over the outputs and its gradient 2(a - y)/(B·M) ({} FLOPs per example).\n\n",
            t(one.per_example.loss.flop())
        ),
    };

    o += "Backward pass, one example (the chain rule, from the output back)\n";
    for (i, l) in spec.layers.iter().enumerate().rev() {
        let c = &one.layers[i].backward;
        let (n, m) = (l.inputs as u128, l.outputs as u128);
        let from_ce = i + 1 == n_layers && cfg.loss == Loss::Ce && l.activation == Activation::Softmax;
        if !l.is_dense() {
            o += &shaped_backward(i, l, c, grad_words(l.activation, from_ce));
            continue;
        }
        o += &format!("  layer {} ({n} → {m}):\n", i + 1);
        o += &format!("    delta = g ⊙ f'(z): {}\n", grad_words(l.activation, from_ce));
        o += &format!(
            "    dW = delta · xᵀ: one product per weight, {n} × {m} = {} multiplications\n",
            t(c.weight_grad.mul)
        );
        o += "    db = delta: nothing to add up for one example\n";
        if i == 0 {
            o += "    dX: skipped — the inputs are data, nobody needs their gradient\n";
        } else {
            o += &format!(
                "    dX = Wᵀ · delta, handed to the layer below: {} multiplications, {n} sums of {m} terms = {} additions\n",
                t(c.input_grad.mul),
                t(c.input_grad.add)
            );
        }
    }
    let b = &one.per_example.backward;
    let affine_mul: u128 = one.layers.iter().map(|c| c.backward.weight_grad.mul + c.backward.input_grad.mul).sum();
    o += &format!(
        "  Backward total: {} multiplications ({} of them in dW and dX), {} additions, {} FLOPs.\n",
        t(b.mul),
        t(affine_mul),
        t(b.add),
        t(b.flop())
    );
    let fwd_mul = f.mul.max(1) as f64;
    o += &format!(
        "  In multiplications backward costs {:.2}× forward: every layer but the first computes two products\n  (dW and dX) where forward computed one, and the first skips dX. In all FLOPs the ratio is {:.2}×,\n  because forward also pays for the activations{} and a single example has no gradients to add up.\n\n",
        b.mul as f64 / fwd_mul,
        b.flop() as f64 / f.flop().max(1) as f64,
        if spec
            .layers
            .iter()
            .any(|l| matches!(l.activation, Activation::Sigmoid | Activation::Tanh | Activation::Softmax))
        {
            " (exp, tanh, divisions)"
        } else {
            ""
        }
    );

    let p = spec.params();
    o += &format!("The update ({})\n", cfg.optimizer);
    o += &format!(
        "  every one of the {} parameters moves: {} ({} FLOPs).\n\n",
        t(p),
        match cfg.optimizer {
            Optimizer::Sgd => "w ← w − lr·g, 1 multiplication and 1 subtraction each",
            Optimizer::Momentum => "v ← μv + g, w ← w − lr·v, 2 multiplications and 2 additions each",
            Optimizer::Adam => "two running moments, a square root and two divisions: 6 mul, 4 add, 2 div, 1 sqrt each",
        },
        t(one.per_example.update.flop())
    );

    let step = one.per_example.total.flop();
    let products: u128 = one
        .layers
        .iter()
        .map(|c| 2 * c.forward.mac + c.backward.weight_grad.flop() + c.backward.input_grad.flop())
        .sum();
    o += "What dominates\n";
    o += &format!(
        "  One training step on one example costs {} FLOPs; {} of them ({:.0}%) are the multiplications and\n  additions of the matrix products. Activations, loss and update are the rest.\n",
        t(step),
        t(products),
        100.0 * products as f64 / step.max(1) as f64
    );
    o += &format!(
        "  Training does this for each and every example: {} examples per epoch, in batches of {}, for {} epoch{}:\n  {} FLOPs per epoch, {} for the run.\n",
        t(cfg.examples as u128),
        cfg.batch,
        cfg.epochs,
        if cfg.epochs == 1 { "" } else { "s" },
        t(full.per_epoch.total.flop()),
        t(full.training.total.flop())
    );
    if cfg.batch > 1 {
        o += &format!(
            "  Batching changes little of the arithmetic (a batch of {} sums its gradients, saving the per-example\n  updates: {} FLOPs per epoch against {} one example at a time) but lets the products run as matrix\n  products, which is what makes a CPU fast.\n",
            cfg.batch,
            t(full.per_epoch.total.flop()),
            t(one.per_example.total.flop() * cfg.examples as u128)
        );
    }
    o
}
