//! Text for `train`, `eval` and `bench`.

use super::format::{bytes, columns, short, thousands as t};
use crate::bench::BenchReport;
use crate::cost::Ledger;
use crate::train::{Confusion, EpochReport};

/// The run's cost account, printed before training starts.
pub fn account_text(l: &Ledger) -> String {
    format!(
        "cost: {} parameters; {} FLOPs per step of {} (an example's share {}), {} per epoch of {} examples in {} batches of {}, {} for {} epoch{}\n\
         memory (ledger): {} peak (parameters {}, gradients {}, optimizer {}, activations {}, workspace {})\n",
        t(l.params),
        short(l.per_batch.total.flop() as f64),
        l.batch,
        short(l.per_batch.total.flop() as f64 / l.batch as f64),
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

/// The template of `train`'s progress line; its counts go through indicatif's `human_pos` and
/// `human_len` and [`progress_rate`], so every big number has thousands separators.
pub const PROGRESS_TEMPLATE: &str =
    "epoch {prefix:>3} [{bar:30}] {human_pos}/{human_len} examples  {rate}  loss {msg}  ETA {eta}";

/// The `{rate}` of [`PROGRESS_TEMPLATE`]: whole examples per second, with thousands separators.
pub fn progress_rate(per_sec: f64) -> String {
    format!("{}/s", t(if per_sec.is_finite() { per_sec.max(0.0).round() as u128 } else { 0 }))
}

pub fn epoch_line(r: &EpochReport) -> String {
    let val = match (r.val_loss, r.val_acc) {
        (Some(l), Some(a)) => format!("val loss {l:.4} acc {:.2}%", 100.0 * a),
        _ => "no validation split".to_string(),
    };
    let predicted = match r.predicted_seconds {
        Some(p) if p > 0.0 => format!(" (predicted {p:.2} s, {:+.0}%)", 100.0 * (r.seconds / p - 1.0)),
        _ => String::new(),
    };
    format!(
        "epoch {:>3}  train loss {:.4} acc {:.2}%  {val}  {:.2} s{predicted}  {:.1} GFLOP/s",
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

/// The bench report; with a prediction, its per-layer times beside the measured ones and the
/// achieved GFLOP/s against the machine's best measured matrix-product rate (`peak`).
pub fn bench_text(b: &BenchReport, predicted: Option<(&crate::predict::Prediction, f64)>) -> String {
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
    if b.folded_batch_norms > 0 {
        o += &format!(
            "batch normalization folded into the layer before it ({} of them): the table shows the folded network\n",
            b.folded_batch_norms
        );
    }
    o += &format!(
        "kernels {}: FMA ceiling {:.0} GFLOP/s on {} thread(s), {:.0}% of it counted\n",
        b.simd,
        b.fma_ceiling_gflops,
        b.threads,
        100.0 * b.gflops / b.fma_ceiling_gflops.max(1e-9)
    );
    let mut head: Vec<String> =
        ["layer", "shape", "forward µs", "GFLOP/s", "backward µs", "GFLOP/s"].into_iter().map(String::from).collect();
    if predicted.is_some() {
        head.extend(["predicted fwd µs", "predicted bwd µs", "% of peak"].into_iter().map(String::from));
    }
    let mut rows = vec![head];
    for (i, l) in b.layers.iter().enumerate() {
        let mut row = vec![
            l.layer.to_string(),
            l.shape.clone(),
            format!("{:.1}", l.forward_seconds * 1e6),
            format!("{:.1}", l.forward_gflops),
            format!("{:.1}", l.backward_seconds * 1e6),
            format!("{:.1}", l.backward_gflops),
        ];
        if let Some((p, peak)) = predicted
            && let Some(t) = p.layers.get(i)
        {
            let total = l.forward_seconds + l.backward_seconds;
            let flop = l.forward_gflops * l.forward_seconds + l.backward_gflops * l.backward_seconds;
            row.push(format!("{:.1}", t.forward_seconds * 1e6));
            row.push(format!("{:.1}", t.backward_seconds * 1e6));
            row.push(format!("{:.0}%", if total > 0.0 { 100.0 * flop / total / peak } else { 0.0 }));
        }
        rows.push(row);
    }
    o += &columns(&rows, 2);
    let shares: Vec<String> = b
        .layers
        .iter()
        .filter_map(|l| l.delta_nonzero.map(|d| format!("layer {} {:.1}%", l.layer, 100.0 * d)))
        .collect();
    if !shares.is_empty() {
        o += &format!(
            "output gradient nonzero (the sparse backward runs at ≤ {:.0}%; GFLOP/s count the zeros it skips): {}\n",
            100.0 * crate::engine::conv::SPARSE_MAX_DENSITY,
            shares.join(", ")
        );
    }
    if !b.forward_only {
        o += &format!("loss {:.1} µs, update {:.1} µs per step\n", b.loss_seconds * 1e6, b.update_seconds * 1e6);
    }
    if let Some((p, peak)) = predicted {
        let err = 100.0 * (b.step_seconds / p.step_seconds - 1.0);
        o += &format!(
            "predicted {:.1} µs per step, measured {:.1} µs ({err:+.0}%); peak = the best matrix-product rate calibrate measured, {peak:.1} GFLOP/s\n",
            p.step_seconds * 1e6,
            b.step_seconds * 1e6
        );
    }
    o
}

/// `count --predict`: the time model's answer, per layer and in total.
pub fn prediction_text(p: &crate::predict::Prediction, batch: usize) -> String {
    let mut o = format!(
        "Predicted time: {} per step (batch {batch}), {} per epoch, {} per run\n",
        seconds(p.step_seconds),
        seconds(p.epoch_seconds),
        seconds(p.run_seconds)
    );
    let mut rows = vec![vec!["layer".to_string(), "forward".into(), "backward".into(), "update".into()]];
    for l in &p.layers {
        rows.push(vec![
            l.layer.to_string(),
            seconds(l.forward_seconds),
            seconds(l.backward_seconds),
            seconds(l.update_seconds),
        ]);
    }
    rows.push(vec!["loss".into(), seconds(p.loss_seconds)]);
    rows.push(vec!["fixed".into(), seconds(p.overhead_seconds)]);
    o += &columns(&rows, 1).lines().map(|l| format!("  {l}\n")).collect::<String>();
    o += &format!("  ({})\n", p.basis);
    o
}

/// Seconds in the unit that reads best.
pub fn seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else if s >= 1e-6 || s == 0.0 {
        format!("{:.1} µs", s * 1e6)
    } else {
        // Below a microsecond a tenth of one would round fixed costs to 0.0 or 0.1.
        format!("{:.0} ns", s * 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_numbers_have_thousands_separators() {
        assert_eq!(progress_rate(1_234_567.4), "1,234,567/s");
        assert_eq!(progress_rate(f64::NAN), "0/s");
        // indicatif's raw counts ({pos}, {len}, {per_sec}) print 60000 and 12345.6789/s.
        for raw in ["{pos}", "{len}", "{per_sec}"] {
            assert!(!PROGRESS_TEMPLATE.contains(raw), "{raw} in {PROGRESS_TEMPLATE}");
        }
    }

    #[test]
    fn seconds_below_a_microsecond_keep_their_digits() {
        assert_eq!(seconds(4.2e-8), "42 ns");
        assert_eq!(seconds(0.0), "0.0 µs");
        assert_eq!(seconds(1.5e-6), "1.5 µs");
    }
}
