//! Text for `train`, `eval` and `bench`.

use super::format::{bytes, columns, short, thousands as t};
use crate::bench::BenchReport;
use crate::cost::Ledger;
use crate::train::{Confusion, EpochReport};

/// The run's cost account, printed before training starts.
pub fn account_text(l: &Ledger) -> String {
    format!(
        "cost: {} parameters; {} FLOPs per example step, {} per epoch of {} examples in {} batches of {}, {} for {} epoch{}\n\
         memory (ledger): {} peak (parameters {}, gradients {}, optimizer {}, activations {}, workspace {})\n",
        t(l.params),
        short(l.per_example.total.flop() as f64),
        short(l.per_epoch.total.flop() as f64),
        t(l.examples as u128),
        t(l.batches_per_epoch() as u128),
        l.batch,
        short(l.training.total.flop() as f64),
        l.epochs,
        if l.epochs == 1 { "" } else { "s" },
        bytes(l.memory.peak),
        bytes(l.memory.parameters),
        bytes(l.memory.gradients),
        bytes(l.memory.optimizer_state),
        bytes(l.memory.activations),
        bytes(l.memory.workspace),
    )
}

pub fn epoch_line(r: &EpochReport) -> String {
    let val = match (r.val_loss, r.val_acc) {
        (Some(l), Some(a)) => format!("val loss {l:.4} acc {:.2}%", 100.0 * a),
        _ => "no validation split".to_string(),
    };
    format!(
        "epoch {:>3}  train loss {:.4} acc {:.2}%  {val}  {:.2} s  {:.1} GFLOP/s",
        r.epoch,
        r.train_loss,
        100.0 * r.train_acc,
        r.seconds,
        r.gflops
    )
}

pub fn confusion_text(c: &Confusion) -> String {
    let mut o =
        format!("loss {:.4}, accuracy {:.2}% over {} examples\n\n", c.loss, 100.0 * c.acc, t(c.examples as u128));
    let mut rows = vec![vec!["class".to_string(), "accuracy".into()]];
    rows[0].extend((0..c.matrix.len()).map(|j| format!("→{j}")));
    for (i, r) in c.matrix.iter().enumerate() {
        let mut row = vec![format!("{i} {}", c.class_names[i]), format!("{:.1}%", 100.0 * c.per_class_acc[i])];
        row.extend(r.iter().map(|&n| n.to_string()));
        rows.push(row);
    }
    o += "per class (rows: true class; columns: predicted)\n";
    o += &columns(&rows, 1);
    o
}

pub fn bench_text(b: &BenchReport) -> String {
    let mut o = format!(
        "bench {} {} batch {} threads {}{}: {} samples/s (median; runs {}–{}), {:.1} µs per step, {:.1} GFLOP/s counted\n",
        b.spec,
        if b.forward_only { "inference" } else { "training" },
        b.batch,
        b.threads,
        if b.forward_only { String::new() } else { format!(" {}", b.optimizer) },
        t(b.samples_per_sec.round() as u128),
        t(b.samples_per_sec_min.round() as u128),
        t(b.samples_per_sec_max.round() as u128),
        b.step_seconds * 1e6,
        b.gflops,
    );
    let mut rows = vec![vec![
        "layer".to_string(),
        "shape".into(),
        "forward µs".into(),
        "GFLOP/s".into(),
        "backward µs".into(),
        "GFLOP/s".into(),
    ]];
    for l in &b.layers {
        rows.push(vec![
            l.layer.to_string(),
            l.shape.clone(),
            format!("{:.1}", l.forward_seconds * 1e6),
            format!("{:.1}", l.forward_gflops),
            format!("{:.1}", l.backward_seconds * 1e6),
            format!("{:.1}", l.backward_gflops),
        ]);
    }
    o += &columns(&rows, 2);
    if !b.forward_only {
        o += &format!("loss {:.1} µs, update {:.1} µs per step\n", b.loss_seconds * 1e6, b.update_seconds * 1e6);
    }
    o
}
