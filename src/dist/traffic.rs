//! What data-parallel training sends between ranks: a ring all-reduce (sum) of the gradient
//! arena once per step. With P ranks and n parameters of 4 bytes, the ring's reduce-scatter and
//! all-gather each pass every one of P chunks P−1 times, so over all ranks a step sends (and
//! receives) 2·(P−1)·4n bytes and adds (P−1)·n pairs of values; per rank that is 2·(P−1)/P × 4n
//! bytes each way and (P−1)/P × n additions. One rank trains alone: nothing moves.
//!
//! With `--sync-bn` each batch-norm layer of C channels also sums, in f64 (8 bytes), Σx and the
//! count (C + 1 values) and then Σ(x−μ)² (C) in its forward pass, and Σδ, Σδ·x̂ and the count
//! (2C + 1) in its backward pass when it hands a gradient down: three more all-reduces a step,
//! each counted as a ring of its own size.

use serde::Serialize;

/// Bytes in one gradient value (f32).
pub const VALUE_BYTES: u64 = 4;
/// Bytes in one batch-norm statistic summed by `--sync-bn` (f64).
pub const STAT_BYTES: u64 = 8;

/// One step's, epoch's or run's communication.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Traffic {
    /// Bytes each rank sends (and the same it receives), on average over the ranks.
    pub bytes_sent_per_rank: f64,
    pub bytes_received_per_rank: f64,
    /// Additions of the reduction each rank does, on average over the ranks.
    pub additions_per_rank: f64,
    /// The same over all ranks together: exact integers.
    pub bytes_sent_total: u64,
    pub additions_total: u64,
}

impl Traffic {
    fn plus(self, o: Traffic) -> Traffic {
        Traffic {
            bytes_sent_per_rank: self.bytes_sent_per_rank + o.bytes_sent_per_rank,
            bytes_received_per_rank: self.bytes_received_per_rank + o.bytes_received_per_rank,
            additions_per_rank: self.additions_per_rank + o.additions_per_rank,
            bytes_sent_total: self.bytes_sent_total + o.bytes_sent_total,
            additions_total: self.additions_total + o.additions_total,
        }
    }

    fn times(self, k: u64) -> Traffic {
        Traffic {
            bytes_sent_per_rank: self.bytes_sent_per_rank * k as f64,
            bytes_received_per_rank: self.bytes_received_per_rank * k as f64,
            additions_per_rank: self.additions_per_rank * k as f64,
            bytes_sent_total: self.bytes_sent_total * k,
            additions_total: self.additions_total * k,
        }
    }
}

/// The communication of a run on `ranks` ranks, per step, epoch and run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Communication {
    pub ranks: usize,
    pub parameters: u64,
    /// `--sync-bn`: batch-norm statistics (f64) summed per step; 0 without it.
    pub statistics: u64,
    /// All-reduces a step: the gradients', and `--sync-bn`'s.
    pub all_reduces_per_step: u64,
    pub steps_per_epoch: u64,
    pub epochs: u64,
    pub per_step: Traffic,
    pub per_epoch: Traffic,
    pub run: Traffic,
}

/// One ring all-reduce of `parameters` f32 values over `ranks` ranks.
pub fn all_reduce(parameters: u64, ranks: usize) -> Traffic {
    ring(parameters, VALUE_BYTES, ranks)
}

/// One ring all-reduce of `values` values of `bytes` bytes over `ranks` ranks.
fn ring(values: u64, bytes: u64, ranks: usize) -> Traffic {
    let p = ranks.max(1) as u64;
    let total_values = 2 * (p - 1) * values;
    let additions_total = (p - 1) * values;
    let per = |x: u64| x as f64 / p as f64;
    Traffic {
        bytes_sent_per_rank: per(total_values * bytes),
        bytes_received_per_rank: per(total_values * bytes),
        additions_per_rank: per(additions_total),
        bytes_sent_total: total_values * bytes,
        additions_total,
    }
}

/// What `--sync-bn` sums a step for batch-norm layers of `(channels, hands a gradient down)`:
/// each all-reduce's values, in order.
pub fn sync_bn_sums(norms: &[(u64, bool)]) -> Vec<u64> {
    let mut sums = Vec::new();
    for &(c, down) in norms {
        sums.extend([c + 1, c]);
        if down {
            sums.push(2 * c + 1);
        }
    }
    sums
}

/// A run of `epochs` epochs of `examples` examples in global batches of `batch`, on `ranks`
/// ranks: one all-reduce per step.
pub fn communication(parameters: u64, ranks: usize, batch: usize, examples: usize, epochs: usize) -> Communication {
    with_statistics(parameters, &[], ranks, batch, examples, epochs)
}

/// [`communication`] with `--sync-bn`'s all-reduces of `sums` f64 values each a step
/// ([`sync_bn_sums`]).
pub fn with_statistics(
    parameters: u64,
    sums: &[u64],
    ranks: usize,
    batch: usize,
    examples: usize,
    epochs: usize,
) -> Communication {
    let steps = examples.div_ceil(batch.max(1)) as u64;
    let step = sums.iter().fold(all_reduce(parameters, ranks), |t, &v| t.plus(ring(v, STAT_BYTES, ranks)));
    let epoch = step.times(steps);
    Communication {
        ranks: ranks.max(1),
        parameters,
        statistics: sums.iter().sum(),
        all_reduces_per_step: 1 + sums.len() as u64,
        steps_per_epoch: steps,
        epochs: epochs as u64,
        per_step: step,
        per_epoch: epoch,
        run: epoch.times(epochs as u64),
    }
}

/// A step on P ranks predicted: each rank's share of the batch, then the all-reduce, without
/// overlap (flopnet sums the gradients after the backward pass).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scaled {
    pub ranks: usize,
    pub link_gbps: f64,
    pub link_latency_us: f64,
    /// One rank's forward, backward and update of its share of the batch.
    pub compute_seconds: f64,
    /// The ring all-reduce: 2·(P−1) messages' latency plus the bytes each rank sends over the link.
    pub communication_seconds: f64,
    pub step_seconds: f64,
    pub epoch_seconds: f64,
    pub run_seconds: f64,
    /// Communication's share of the step: above one half it dominates.
    pub communication_share: f64,
}

/// The step of `c` given one rank's compute time and the link: 2·(P−1) × latency +
/// bytes sent per rank × 8 / (Gbit/s × 10⁹).
pub fn predict(c: &Communication, compute_seconds: f64, link_gbps: f64, link_latency_us: f64) -> Scaled {
    let messages = 2.0 * (c.ranks as f64 - 1.0) * c.all_reduces_per_step as f64;
    let comm = messages * link_latency_us * 1e-6 + c.per_step.bytes_sent_per_rank * 8.0 / (link_gbps * 1e9);
    let step = compute_seconds + comm;
    Scaled {
        ranks: c.ranks,
        link_gbps,
        link_latency_us,
        compute_seconds,
        communication_seconds: comm,
        step_seconds: step,
        epoch_seconds: step * c.steps_per_epoch as f64,
        run_seconds: step * (c.steps_per_epoch * c.epochs) as f64,
        communication_share: if step > 0.0 { comm / step } else { 0.0 },
    }
}

/// [`Scaled`] as `count --predict --ranks` prints it.
pub fn prediction_text(p: &Scaled) -> String {
    let s = crate::report::seconds;
    format!(
        "predicted on {} ranks (link {} Gbit/s, {} µs a message): {} per step = {} compute (each rank's share of the batch) + {} all-reduce; {} per epoch, {} for the run; communication is {:.0}% of the step{}\n",
        p.ranks,
        p.link_gbps,
        p.link_latency_us,
        s(p.step_seconds),
        s(p.compute_seconds),
        s(p.communication_seconds),
        s(p.epoch_seconds),
        s(p.run_seconds),
        100.0 * p.communication_share,
        if p.communication_share > 0.5 { " and dominates it" } else { "" }
    )
}

/// The communication as `count` prints it: per rank, per step, epoch and run.
pub fn text(c: &Communication) -> String {
    let b = |x: f64| crate::report::format::bytes(x.round() as u128);
    let n = |x: f64| crate::report::format::thousands(x.round() as u128);
    let mut t = format!(
        "communication: ring all-reduce of {} gradients over {} ranks, per rank (2·(P−1)/P × 4 bytes × parameters each way, (P−1)/P × parameters additions):\n",
        crate::report::format::thousands(c.parameters as u128),
        c.ranks
    );
    if c.statistics > 0 {
        t += &format!(
            "  and, for --sync-bn, {} batch-norm statistics (f64, 8 bytes) in {} more all-reduces a step\n",
            crate::report::format::thousands(c.statistics as u128),
            c.all_reduces_per_step - 1
        );
    }
    let steps = format!("run ({} epochs)", c.epochs);
    let epoch = format!("epoch ({} steps)", c.steps_per_epoch);
    for (what, x) in [("step", &c.per_step), (epoch.as_str(), &c.per_epoch), (steps.as_str(), &c.run)] {
        t += &format!(
            "  {what:<20} {:>12} sent  {:>12} received  {:>16} additions\n",
            b(x.bytes_sent_per_rank),
            b(x.bytes_received_per_rank),
            n(x.additions_per_rank)
        );
    }
    t
}

/// The communication in words, for `explain`.
pub fn explain(c: &Communication) -> String {
    let n = |x: u64| crate::report::format::thousands(x as u128);
    let p = c.ranks;
    if p == 1 {
        return "communication: one rank trains alone; no gradients move between processes.\n".into();
    }
    let b = |x: f64| format!("{} ({} bytes)", crate::report::format::bytes(x.round() as u128), n(x.round() as u64));
    let q = p - 1;
    [
        format!("communication: each step the {p} ranks sum their gradients, {} values, with a ring", n(c.parameters)),
        format!("all-reduce. The ring cuts the arena into {p} chunks. In its reduce-scatter each rank sends"),
        format!("one chunk to the next rank {q} time(s), adding each chunk it receives to its own partial sum;"),
        format!("in its all-gather it passes the summed chunks on {q} time(s) more. So each rank sends"),
        format!(
            "2·(P−1)/P × 4 bytes × parameters = 2·{q}/{p} × 4 × {} = {} a step,",
            n(c.parameters),
            b(c.per_step.bytes_sent_per_rank)
        ),
        format!(
            "receives as much, and does (P−1)/P × parameters = {} additions.",
            n(c.per_step.additions_per_rank.round() as u64)
        ),
        format!(
            "Over the {} steps of an epoch each rank sends {};",
            n(c.steps_per_epoch),
            b(c.per_epoch.bytes_sent_per_rank)
        ),
        format!("over the run's {} epoch(s), {}.", c.epochs, b(c.run.bytes_sent_per_rank)),
    ]
    .join("\n")
        + "\n"
        + &if c.statistics > 0 {
            let gradients = all_reduce(c.parameters, p).bytes_sent_per_rank;
            format!(
                "With --sync-bn the batch-norm layers also sum their statistics over the ranks, {} f64 values\nin {} more all-reduces a step (Σx and the count, Σ(x−μ)², and Σδ, Σδ·x̂ and the count\nbackward): the figures above include their {} a step.\n",
                n(c.statistics),
                c.all_reduces_per_step - 1,
                b(c.per_step.bytes_sent_per_rank - gradients)
            )
        } else {
            String::new()
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_moves_nothing() {
        let t = all_reduce(636_010, 1);
        assert_eq!((t.bytes_sent_total, t.additions_total), (0, 0));
        assert_eq!(t.bytes_sent_per_rank, 0.0);
    }

    #[test]
    fn a_ring_sends_two_p_minus_one_over_p_of_the_arena_per_rank() {
        // 784-800-10: 784·800 + 800 + 800·10 + 10 = 636,010 parameters.
        let n = 636_010u64;
        let t = all_reduce(n, 2);
        assert_eq!(t.bytes_sent_per_rank, 4.0 * n as f64, "2·1/2 × 4 bytes × n");
        assert_eq!(t.bytes_received_per_rank, t.bytes_sent_per_rank);
        assert_eq!(t.additions_per_rank, n as f64 / 2.0);
        assert_eq!(t.bytes_sent_total, 2 * 4 * n);
        let t = all_reduce(n, 8);
        assert_eq!(t.bytes_sent_per_rank, 2.0 * 7.0 / 8.0 * 4.0 * n as f64);
        assert_eq!(t.additions_per_rank, 7.0 / 8.0 * n as f64);
        assert_eq!(t.additions_total, 7 * n);
    }

    #[test]
    fn epochs_and_runs_count_every_step_including_a_short_last_one() {
        let c = communication(1000, 4, 128, 1000, 3); // 7 full batches and one of 104
        assert_eq!(c.steps_per_epoch, 8);
        assert_eq!(c.per_epoch.bytes_sent_total, 8 * 2 * 3 * 4 * 1000);
        assert_eq!(c.run.bytes_sent_total, 3 * 8 * 2 * 3 * 4 * 1000);
        assert_eq!(c.run.additions_per_rank, 3.0 * 8.0 * 0.75 * 1000.0);
    }

    #[test]
    fn a_predicted_step_adds_the_ring_s_latency_and_bytes_to_the_share_s_compute() {
        let c = communication(1_000_000, 4, 128, 1280, 2); // 10 steps an epoch
        // 6 messages of 10 µs, then 2·3/4·4·10⁶ = 6·10⁶ bytes at 8 Gbit/s (10⁹ bytes/s): 6 ms.
        let p = predict(&c, 0.004, 8.0, 10.0);
        assert!((p.communication_seconds - (60e-6 + 6e-3)).abs() < 1e-12, "{p:?}");
        assert!((p.step_seconds - (0.004 + 60e-6 + 6e-3)).abs() < 1e-12);
        assert!((p.run_seconds - 20.0 * p.step_seconds).abs() < 1e-12);
        assert!(p.communication_share > 0.5 && prediction_text(&p).contains("dominates"));
    }

    #[test]
    fn sync_bn_adds_three_all_reduces_of_f64_statistics_per_layer() {
        // Two layers of 16 and 32 channels; the first reads the data and hands no gradient down.
        let sums = sync_bn_sums(&[(16, false), (32, true)]);
        assert_eq!(sums, vec![17, 16, 33, 32, 65]);
        let (plain, synced) = (communication(1000, 4, 128, 1280, 1), with_statistics(1000, &sums, 4, 128, 1280, 1));
        assert_eq!((synced.statistics, synced.all_reduces_per_step), (163, 6));
        // Per rank: 2·3/4 × 8 bytes × 163 values more a step.
        let more = synced.per_step.bytes_sent_per_rank - plain.per_step.bytes_sent_per_rank;
        assert_eq!(more, 2.0 * 3.0 / 4.0 * 8.0 * 163.0);
        assert_eq!(synced.per_step.bytes_sent_total - plain.per_step.bytes_sent_total, 2 * 3 * 8 * 163);
        assert_eq!(synced.per_step.additions_total - plain.per_step.additions_total, 3 * 163);
        // Six all-reduces of 6 messages each at 10 µs, against one.
        let (a, b) = (predict(&plain, 0.0, 8.0, 10.0), predict(&synced, 0.0, 8.0, 10.0));
        let bytes_s = |c: &Communication| c.per_step.bytes_sent_per_rank * 8.0 / 8e9;
        assert!((a.communication_seconds - (60e-6 + bytes_s(&plain))).abs() < 1e-12);
        assert!((b.communication_seconds - (360e-6 + bytes_s(&synced))).abs() < 1e-12);
        assert!(
            text(&synced)
                .contains("and, for --sync-bn, 163 batch-norm statistics (f64, 8 bytes) in 5 more all-reduces a step")
        );
        assert!(explain(&synced).contains("163 f64 values\nin 5 more all-reduces a step"), "{}", explain(&synced));
        assert!(!text(&plain).contains("sync-bn") && !explain(&plain).contains("sync-bn"));
    }

    #[test]
    fn explain_gives_the_formula_and_the_figures() {
        let t = explain(&communication(636_010, 2, 128, 60_000, 1));
        assert!(
            t.contains("2·(P−1)/P × 4 bytes × parameters = 2·1/2 × 4 × 636,010 = 2.4 MiB (2,544,040 bytes)"),
            "{t}"
        );
        assert!(t.contains("318,005 additions") && t.contains("469 steps"), "{t}");
    }
}
