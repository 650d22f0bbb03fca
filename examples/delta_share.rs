//! How much of each convolution's output gradient δ is nonzero while a network trains on real
//! data (the figure behind the sparse backward's 25% bound, docs/kernels.md):
//! `cargo run --release --example delta_share [SPEC] [STEPS] [DATA] [BATCH]`, on Fashion-MNIST
//! where it is installed, else on the embedded subset, or on DATA (a file or directory, as
//! `train --data` takes it). Prints the share per convolution every 100 steps (chains), and
//! the layers whose weight gradient was all zero at that step: a network that stopped
//! learning, whose δ is zero everywhere (docs/prediction.md, "Dead networks").

use flopnet::data::{DataSource, LoadOptions, load};
use flopnet::engine::{Engine, Settings};
use flopnet::reference::Hyper;
use flopnet::spec::{Loss, Optimizer};

fn main() -> flopnet::Result<()> {
    let mut args = std::env::args().skip(1);
    let text = args.next().unwrap_or("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10".into());
    let steps: usize = args.next().map_or(500, |s| s.parse().expect("STEPS is a number"));
    let spec = flopnet::spec::parse(&text, Default::default())?;
    let source = match args.next() {
        Some(path) => DataSource::Path(path.into()),
        None if std::path::Path::new("/usr/share/datasets/fashion-mnist").is_dir() => DataSource::FashionMnist,
        None => DataSource::Embedded,
    };
    let data = load(&source, &LoadOptions::default()).map_err(|e| flopnet::Error::Usage(e.to_string()))?;
    let train = &data.train;
    let batch: usize = args.next().map_or(64, |s| s.parse().expect("BATCH is a number"));
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Momentum,
        hyper: Hyper::defaults(Optimizer::Momentum),
        max_batch: batch,
        threads: 2,
    };
    let mut engine = Engine::new(&spec, &flopnet::init::init(&spec, 1), settings)?;
    let f = train.feature_len();
    let (mut x, mut y) = (vec![0.0f32; batch * f], vec![0u8; batch]);
    println!("{spec} on {source}, batch {batch}, momentum");
    engine.start_timers();
    for step in 0..steps {
        // A fixed stride through the set stands in for a shuffle.
        let idx: Vec<usize> = (0..batch).map(|r| (step * batch + r) * 7919 % train.len()).collect();
        train.gather(&idx, &mut x, &mut y);
        engine.train_step(&x, &y)?;
        if (step + 1) % 100 == 0 {
            let t = engine.timers().cloned().unwrap_or_default();
            let shares: Vec<String> = t
                .delta_nonzero
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > 0.0)
                // Summed over the last 100 steps: their mean, as a percentage.
                .map(|(l, s)| format!("layer {} {:.1}%", l + 1, s))
                .collect();
            let dead: Vec<String> = (0..spec.layers.len())
                .filter(|&l| {
                    let (dw, _) = engine.layer_grads(l);
                    !dw.is_empty() && dw.iter().all(|&v| v == 0.0)
                })
                .map(|l| (l + 1).to_string())
                .collect();
            println!(
                "steps {}–{}: δ nonzero {}; weight gradient all zero at step {}: layers {}",
                step - 98,
                step + 1,
                shares.join(", "),
                step + 1,
                if dead.is_empty() { "none".to_string() } else { dead.join(" ") }
            );
            engine.start_timers();
        }
    }
    Ok(())
}
