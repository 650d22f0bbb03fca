//! `flopnet bench`: training (or inference) throughput of the fast engine on synthetic data,
//! the median of repeated timed runs after a warm-up, with per-layer times from a separate
//! timed pass so the clocks do not slow the headline figure.

use crate::cost::{self, Step};
use crate::engine::{Engine, Settings};
use crate::error::Result;
use crate::init;
use crate::reference::Hyper;
use crate::spec::{Loss, Optimizer, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    pub batch: usize,
    /// Steps per timed run; 0 picks enough for about 0.2 s.
    pub steps: usize,
    pub runs: usize,
    pub threads: usize,
    pub forward_only: bool,
    pub loss: Loss,
    pub optimizer: Optimizer,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerBench {
    pub layer: usize,
    pub shape: String,
    pub forward_seconds: f64,
    pub forward_gflops: f64,
    pub backward_seconds: f64,
    pub backward_gflops: f64,
    /// For a convolution whose backward may skip δ's zeros: the share of δ that was nonzero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_nonzero: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub spec: String,
    pub batch: usize,
    pub threads: usize,
    pub forward_only: bool,
    /// Batch normalizations folded into the convolution before them (inference only).
    pub folded_batch_norms: usize,
    pub optimizer: Optimizer,
    pub steps_per_run: usize,
    /// Median over runs, and the slowest and fastest run.
    pub samples_per_sec: f64,
    pub samples_per_sec_min: f64,
    pub samples_per_sec_max: f64,
    pub step_seconds: f64,
    /// Counted FLOPs per step (the ledger's) divided by the median step time.
    pub gflops: f64,
    pub flop_per_step: u128,
    /// Per step, from the timed pass.
    pub layers: Vec<LayerBench>,
    pub loss_seconds: f64,
    pub update_seconds: f64,
    /// The kernel path that ran (`engine::simd::Path`) and its FMA ceiling with `threads`
    /// threads, GFLOP/s (`engine::simd::fma_ceiling`, measured after the timed runs).
    pub simd: String,
    pub fma_ceiling_gflops: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub fn run(spec: &Spec, cfg: &BenchConfig) -> Result<BenchReport> {
    let settings = Settings {
        loss: cfg.loss,
        optimizer: cfg.optimizer,
        hyper: Hyper::defaults(cfg.optimizer),
        max_batch: cfg.batch,
        threads: cfg.threads,
    };
    // Inference runs the network with its batch normalizations folded (`fold`), as `eval` does;
    // the counts and the layer table are then those of the folded network.
    let params = init::init(spec, 1);
    let (mut engine, folded) = if cfg.forward_only {
        let running: Vec<(Vec<f64>, Vec<f64>)> = spec
            .layers
            .iter()
            .map(|l| match l.kind {
                crate::spec::Kind::BatchNorm => (vec![0.0; l.input.c], vec![1.0; l.input.c]),
                _ => Default::default(),
            })
            .collect();
        let (engine, f) = crate::fold::inference_engine(spec, &params, &running, settings)?;
        (engine, Some(f))
    } else {
        (Engine::new(spec, &params, settings)?, None)
    };
    let label = spec.to_string();
    let spec = folded.as_ref().map_or(spec, |f| &f.spec);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..cfg.batch * spec.input).map(|_| rng.r#gen::<f32>()).collect();
    let labels: Vec<u8> = (0..cfg.batch).map(|_| rng.gen_range(0..spec.outputs()) as u8).collect();
    let step = |e: &mut Engine| -> Result<()> {
        if cfg.forward_only { e.forward(&x).map(|_| ()) } else { e.train_step(&x, &labels).map(|_| ()) }
    };
    // Warm-up: caches, page faults, the pool's threads, and a step count for ~0.2 s runs.
    let t = Instant::now();
    let mut warm = 0;
    while warm < 3 || t.elapsed().as_secs_f64() < 0.2 {
        step(&mut engine)?;
        warm += 1;
    }
    let per_step = t.elapsed().as_secs_f64() / warm as f64;
    let steps = if cfg.steps > 0 { cfg.steps } else { ((0.2 / per_step) as usize).clamp(3, 1_000_000) };
    let mut rates = Vec::with_capacity(cfg.runs);
    for _ in 0..cfg.runs.max(1) {
        let t = Instant::now();
        for _ in 0..steps {
            step(&mut engine)?;
        }
        rates.push((steps * cfg.batch) as f64 / t.elapsed().as_secs_f64());
    }
    let lo = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().cloned().fold(0.0, f64::max);
    let rate = median(&mut rates);
    let step_seconds = cfg.batch as f64 / rate;
    let b = cfg.batch as u128;
    let counts = Step::new(spec, cfg.loss, cfg.optimizer, b);
    let flop = if cfg.forward_only { cost::inference(spec, b).flop() } else { counts.phases().total.flop() };

    engine.start_timers();
    for _ in 0..steps {
        step(&mut engine)?;
    }
    let timers = engine.timers().cloned().unwrap_or_default();
    let per = |s: f64| s / steps as f64;
    let gf = |f: u128, s: f64| if s > 0.0 { f as f64 / s / 1e9 } else { 0.0 };
    let layers = counts
        .layers
        .iter()
        .enumerate()
        .map(|(l, c)| {
            let (fs, bs) = (per(timers.forward[l]), per(timers.backward[l]));
            LayerBench {
                layer: l + 1,
                shape: match spec.layers[l].kind {
                    crate::spec::Kind::Dense => format!("{} → {}", c.inputs, c.outputs),
                    _ => format!("{} {} → {}", spec.layers[l], c.input_shape, c.output_shape),
                },
                forward_seconds: fs,
                forward_gflops: gf(c.forward.flop(), fs),
                backward_seconds: bs,
                backward_gflops: if cfg.forward_only { 0.0 } else { gf(c.backward.total.flop(), bs) },
                delta_nonzero: (timers.delta_nonzero[l] > 0.0).then(|| per(timers.delta_nonzero[l])),
            }
        })
        .collect();
    Ok(BenchReport {
        spec: label,
        folded_batch_norms: folded.as_ref().map_or(0, |f| f.folded),
        batch: cfg.batch,
        threads: cfg.threads,
        forward_only: cfg.forward_only,
        optimizer: cfg.optimizer,
        steps_per_run: steps,
        samples_per_sec: rate,
        samples_per_sec_min: lo,
        samples_per_sec_max: hi,
        step_seconds,
        gflops: flop as f64 / step_seconds / 1e9,
        flop_per_step: flop,
        layers,
        loss_seconds: per(timers.loss),
        update_seconds: per(timers.update),
        simd: crate::engine::simd::path().name().to_string(),
        fma_ceiling_gflops: {
            let flush = crate::engine::simd::flush_denormals;
            let team = crate::engine::team::Team::new(cfg.threads.max(1), flush)
                .map_err(|e| crate::Error::Usage(e.to_string()))?;
            crate::engine::simd::fma_ceiling(&team)
        },
    })
}
