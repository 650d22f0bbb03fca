//! What `--augment crop=4,flip` adds to gathering a batch: 128 Fashion-MNIST-sized images
//! (1×28×28) and 128 CIFAR-sized ones (3×32×32), gathered from shuffled rows of a 60,000-image
//! set, with and without the crops and flips. Backs the per-epoch cost in the README.

use flopnet::data::Dataset;
use flopnet::data::augment::Augment;

fn main() {
    divan::main();
}

const BATCH: usize = 128;

fn set(shape: [usize; 3]) -> (Dataset, Vec<usize>) {
    let n = 60_000;
    let f: usize = shape.iter().product();
    let features = (0..n * f).map(|i| (i % 251) as f32 / 251.0).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    let d = Dataset { features, labels, shape, classes: 10, class_names: vec![] };
    let order = flopnet::train::epoch_order(n, 1, 1);
    (d, order)
}

#[divan::bench(args = ["1x28x28", "3x32x32"], consts = [false, true])]
fn gather_a_batch<const AUGMENT: bool>(bencher: divan::Bencher, shape: &str) {
    let shape = if shape == "1x28x28" { [1, 28, 28] } else { [3, 32, 32] };
    let (d, order) = set(shape);
    let f = d.feature_len();
    let (mut x, mut y) = (vec![0f32; BATCH * f], vec![0u8; BATCH]);
    let aug: Augment = "crop=4,flip".parse().unwrap();
    let mut k = 0;
    bencher.bench_local(|| {
        let idx = &order[k * BATCH..(k + 1) * BATCH];
        if AUGMENT {
            aug.gather(&d, idx, &mut x, &mut y, 1, 1, k * BATCH);
        } else {
            d.gather(idx, &mut x, &mut y);
        }
        k = (k + 1) % (order.len() / BATCH);
    });
}
