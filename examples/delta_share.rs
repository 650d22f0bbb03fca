//! How much of each convolution's output gradient δ is nonzero while a network trains on real
//! data (the figure behind the sparse backward's 25% bound, docs/kernels.md):
//! `cargo run --release --example delta_share [SPEC] [STEPS]`, on Fashion-MNIST where it is
//! installed, else on the embedded subset. Prints the share per convolution every 100 steps.

use flopnet::data::{DataSource, LoadOptions, load};
use flopnet::engine::{Engine, Settings};
use flopnet::reference::Hyper;
use flopnet::spec::{Loss, Optimizer};

fn main() -> flopnet::Result<()> {
    let mut args = std::env::args().skip(1);
    let text = args.next().unwrap_or("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10".into());
    let steps: usize = args.next().map_or(500, |s| s.parse().expect("STEPS is a number"));
    let spec = flopnet::spec::parse(&text, Default::default())?;
    let source = if std::path::Path::new("/usr/share/datasets/fashion-mnist").is_dir() {
        DataSource::FashionMnist
    } else {
        DataSource::Embedded
    };
    let data = load(&source, &LoadOptions::default()).map_err(|e| flopnet::Error::Usage(e.to_string()))?;
    let train = &data.train;
    let batch = 64;
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
            println!("steps {}–{}: δ nonzero {}", step - 98, step + 1, shares.join(", "));
            engine.start_timers();
        }
    }
    Ok(())
}
