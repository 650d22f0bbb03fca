//! How much a bucketed all-reduce overlapped with the backward pass (PyTorch DDP's) could save a
//! data-parallel step at most, measured under `mpirun -n P` on this machine:
//! `cargo build --release --features mpi --example overlap_bound` then
//! `mpirun -n 2 target/release/examples/overlap_bound SPEC BATCH [STEPS]`.
//!
//! Each rank trains on its share of the global batch as `train` does, one all-reduce of the whole
//! gradient arena per step, and times per step: the forward and backward, the all-reduce, and
//! (with the engine's timers) each layer's backward. A layer's gradients are ready when its
//! backward ends, so an overlapped all-reduce could send every layer's gradients but the first
//! layer's while the first layer's backward runs: the most it can hide per step is the smaller of
//! that backward and the all-reduce of those gradients (timed alone here). The first layer's
//! gradients are summed after the backward either way. Medians over the steps, printed by rank 0.

use flopnet::data::{self, DataSource, LoadOptions};
use flopnet::engine::{Engine, Settings};
use flopnet::reference::Hyper;
use flopnet::spec::{self, Defaults, Loss, Optimizer};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let text = args.get(1).map_or("784-800-10", String::as_str);
    let batch: usize = args.get(2).map_or(Ok(128), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(300), |s| s.parse())?;
    let mut comm = flopnet::dist::connect()?;
    let (rank, p) = (comm.rank(), comm.size());
    let spec = spec::parse(text, Defaults::default())?;
    let splits = data::load(&DataSource::parse(None), &LoadOptions { normalize: None, val_split: 0.0, seed: 1 })?;
    let train = &splits.train;
    let share = flopnet::dist::share(batch, rank, p);
    let b = share.len();
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Adam,
        hyper: Hyper::defaults(Optimizer::Adam),
        max_batch: b,
        threads: 1,
    };
    let ledger = flopnet::cost::Ledger::new(
        &spec,
        &flopnet::cost::Config { loss: Loss::Ce, optimizer: Optimizer::Adam, batch, examples: batch, epochs: 1 },
    );
    let sizes: Vec<usize> = ledger.layers.iter().map(|l| l.params as usize).collect();
    let mut engine = Engine::new(&spec, &flopnet::init::init(&spec, 1), settings)?;
    let f = train.feature_len();
    let (mut x, mut y) = (vec![0.0f32; b * f], vec![0u8; b]);
    let params = engine.grads_mut().len();
    let mut compute = Vec::new();
    let mut reduce = Vec::new();
    let mut backward: Vec<Vec<f64>> = Vec::new();
    for s in 0..steps + 20 {
        let at = (s * batch) % (train.len() - batch);
        let idx: Vec<usize> = (at + share.start..at + share.end).collect();
        train.gather(&idx, &mut x, &mut y);
        if s == 20 {
            engine.start_timers();
        }
        let before: Vec<f64> = engine.timers().map_or(vec![0.0; sizes.len()], |t| t.backward.clone());
        let t0 = Instant::now();
        engine.compute_gradients_of(&x, &y, batch)?;
        let t1 = Instant::now();
        comm.sum_f32(engine.grads_mut());
        let t2 = Instant::now();
        engine.apply_update();
        if s >= 20 {
            compute.push((t1 - t0).as_secs_f64());
            reduce.push((t2 - t1).as_secs_f64());
            let now = engine.timers().map_or(vec![0.0; sizes.len()], |t| t.backward.clone());
            backward.push(now.iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<f64>>());
        }
    }
    // Each layer's gradients all-reduced alone, the median of `steps`.
    let alone: Vec<f64> = sizes
        .iter()
        .map(|&n| {
            if n == 0 {
                return 0.0;
            }
            let mut buf = vec![1.0f32; n];
            median(
                (0..steps)
                    .map(|_| {
                        let t = Instant::now();
                        comm.sum_f32(&mut buf);
                        t.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        })
        .collect();
    let per_layer: Vec<f64> = (0..sizes.len()).map(|l| median(backward.iter().map(|v| v[l]).collect())).collect();
    // DDP with one bucket a layer and perfect progress: layer l's sum starts once its backward
    // ended (the backward runs from the top layer down) and the sum above it is done.
    let (mut clock, mut done) = (0.0f64, 0.0f64);
    for l in (0..sizes.len()).rev() {
        clock += per_layer[l];
        if sizes[l] > 0 {
            done = done.max(clock) + alone[l];
        }
    }
    let exposed = (done - clock).max(0.0);
    let (c, r) = (median(compute), median(reduce));
    if rank == 0 {
        println!("{text}, global batch {batch} over {p} ranks, 1 thread each, {steps} steps, medians:");
        println!(
            "  forward+backward {:.3} ms; one all-reduce of the {params} gradients after it {:.3} ms ({:.0}% of the step)",
            c * 1e3,
            r * 1e3,
            100.0 * r / (c + r)
        );
        for l in (0..sizes.len()).rev() {
            println!(
                "  layer {l} ({}): backward {:.3} ms, its {} gradients all-reduced alone {:.3} ms",
                ledger.layers[l].kind,
                per_layer[l] * 1e3,
                sizes[l],
                alone[l] * 1e3
            );
        }
        println!(
            "  one bucket a layer, overlapped: {:.3} ms of all-reduce left after the backward, against {:.3} ms: at most {:.1}% of the step saved",
            exposed * 1e3,
            r * 1e3,
            100.0 * (r - exposed) / (c + r)
        );
    }
    Ok(())
}
