//! The human form of `flopnet count`: a per-layer table, a summary and a comparison with what
//! other tools would report for the same network.

use super::format::{bytes, columns, thousands as t};
use crate::cost::{Ledger, Phases};
use serde::Serialize;

/// `flopnet count --json`: the ledger (and the prediction, when asked for) with every count an
/// exact JSON integer, however large (written straight from the u128s, not through a JSON
/// value, which holds at most 64 bits).
pub fn count_json(
    ledger: &Ledger,
    extra: &CountExtras<impl Serialize, impl Serialize, impl Serialize>,
) -> crate::Result<String> {
    #[derive(Serialize)]
    struct Out<'a, P, C, R> {
        #[serde(flatten)]
        ledger: &'a Ledger,
        #[serde(flatten)]
        extra: &'a CountExtras<P, C, R>,
    }
    serde_json::to_string_pretty(&Out { ledger, extra }).map_err(|e| crate::Error::Usage(e.to_string()))
}

/// What `count --json` adds to the ledger when asked: the predicted times, the communication of
/// a run over several ranks (`--ranks`) and its predicted step (`--predict --ranks`).
#[derive(Serialize)]
pub struct CountExtras<P, C, R> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted: Option<P>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub communication: Option<C>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "predicted_ranks")]
    pub scaled: Option<R>,
    /// Inference with and without the batch normalizations folded (networks that have one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference: Option<crate::fold::InferenceCost>,
}

/// The inference line of `count` for a network with batch normalization: the forward passes'
/// FLOPs as given and with the normalizations folded into the layer before them (`fold`).
pub fn inference_text(c: &crate::fold::InferenceCost) -> String {
    let saved = 100.0 * (1.0 - ratio(c.folded_flops, c.flops));
    format!(
        "Inference (forward passes at evaluation), per batch of {}: {} FLOPs; with {} batch normalization{} folded into the convolution or dense layer before {}: {} FLOPs ({saved:.1}% fewer{})\n",
        c.batch,
        t(c.flops),
        c.folded,
        if c.folded == 1 { "" } else { "s" },
        if c.folded == 1 { "it" } else { "them" },
        t(c.folded_flops),
        match c.kept {
            0 => String::new(),
            1 => "; 1 stays: it does not follow one directly".to_string(),
            k => format!("; {k} stay: they do not follow one directly"),
        }
    )
}

pub fn count_text(l: &Ledger) -> String {
    let mut out =
        format!("flopnet count {}  (batch {}, loss {}, optimizer {})\n\n", l.spec, l.batch, l.loss, l.optimizer);
    out += &format!("Per batch of {} example{}:\n", l.batch, if l.batch == 1 { "" } else { "s" });
    let mut rows = vec![
        vec![
            "layer",
            "kind",
            "shape",
            "activation",
            "params",
            "fwd mul",
            "fwd add",
            "act",
            "fwd FLOPs",
            "bwd mul",
            "bwd add",
            "bwd FLOPs",
            "update FLOPs",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    for (i, (c, layer)) in l.layers.iter().zip(super::ledger_layers(l)).enumerate() {
        let b = &c.backward.total;
        rows.push(vec![
            (i + 1).to_string(),
            super::kind_label(&layer),
            super::shapes_label(&layer),
            super::activation_label(&layer),
            t(c.params),
            t(c.forward.mul),
            t(c.forward.add),
            t(c.forward.act),
            t(c.forward.flop()),
            t(b.mul),
            t(b.add),
            t(b.flop()),
            t(c.update.flop()),
        ]);
    }
    let dash = || "".to_string();
    rows.push(vec![
        "loss".into(),
        dash(),
        l.loss.to_string(),
        dash(),
        dash(),
        t(l.per_batch.loss.mul),
        t(l.per_batch.loss.add),
        dash(),
        t(l.per_batch.loss.flop()),
    ]);
    if !l.optimizer_step.is_zero() {
        let mut r = vec!["optimizer".into(), dash(), "per step".into()];
        r.resize(12, dash());
        r.push(t(l.optimizer_step.flop()));
        rows.push(r);
    }
    let pb = &l.per_batch;
    rows.push(vec![
        "total".into(),
        dash(),
        dash(),
        dash(),
        t(l.params),
        t(pb.forward.mul + pb.loss.mul),
        t(pb.forward.add + pb.loss.add),
        t(pb.forward.act),
        t(pb.forward.flop() + pb.loss.flop()),
        t(pb.backward.mul),
        t(pb.backward.add),
        t(pb.backward.flop()),
        t(pb.update.flop()),
    ]);
    out += &indent(&columns(&rows, 4));
    out += "  (fwd columns of the total row include the loss)\n\n";

    out += "FLOPs by phase (each operation counts one):\n";
    let scope = [
        ("per example", &l.per_example),
        (&*format!("per batch ({})", l.batch), &l.per_batch),
        (&*format!("per epoch ({} examples)", t(l.examples as u128)), &l.per_epoch),
        (&*format!("per run ({} epoch{})", l.epochs, if l.epochs == 1 { "" } else { "s" }), &l.training),
    ];
    let mut rows =
        vec![std::iter::once(String::new()).chain(scope.iter().map(|s| s.0.to_string())).collect::<Vec<_>>()];
    let field = |name: &str, f: fn(&Phases) -> u128| -> Vec<String> {
        std::iter::once(name.to_string()).chain(scope.iter().map(|s| t(f(s.1)))).collect()
    };
    rows.push(field("forward", |p| p.forward.flop()));
    rows.push(field("backward", |p| p.backward.flop()));
    rows.push(field("loss", |p| p.loss.flop()));
    rows.push(field("update", |p| p.update.flop()));
    rows.push(field("total", |p| p.total.flop()));
    rows.push(field("  of which mul", |p| p.total.mul));
    rows.push(field("  of which add", |p| p.total.add));
    out += &indent(&columns(&rows, 1));
    let fe = &l.per_example;
    out += &format!(
        "  backward / forward: {:.2} per example, {:.2} per batch of {}\n\n",
        ratio(fe.backward.flop(), fe.forward.flop()),
        ratio(pb.backward.flop(), pb.forward.flop()),
        l.batch
    );

    let m = &l.memory;
    out += &format!(
        "Memory (f32): parameters {}, gradients {}, optimizer state {}, activations kept per batch {}, workspace {}; peak about {}\n\n",
        bytes(m.parameters),
        bytes(m.gradients),
        bytes(m.optimizer_state),
        bytes(m.activations),
        bytes(m.workspace),
        bytes(m.peak)
    );

    out += "What other tools report for one example (each a view of the same ledger):\n";
    let macs = fe.forward.mac;
    let rows = vec![
        vec!["torchvision's figure: forward MACs of convolutions and matrix products".to_string(), t(macs)],
        vec!["MACs (thop, fvcore, torchinfo)".to_string(), t(macs)],
        vec!["FLOPs as 2 x MACs (PyTorch FlopCounterMode), forward".to_string(), t(2 * macs)],
        vec!["  and backward (dW and dX; it overcounts grouped convolutions' dW)".to_string(), t(2 * fe.backward.mac)],
        vec!["flopnet forward FLOPs (bias additions and activations included)".to_string(), t(fe.forward.flop())],
        vec!["flopnet training FLOPs per example (forward + loss + backward + update)".to_string(), t(fe.total.flop())],
    ];
    out += &indent(&columns(&rows, 1));
    out
}

fn ratio(a: u128, b: u128) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
