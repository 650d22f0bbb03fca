//! How long `flopnet count` takes on a very deep, very wide spec: parse, ledger, and the
//! rendered table and JSON. The bound is 50 ms for 1,000 layers of width 4,096.

use flopnet::cost::{Config, Ledger};
use flopnet::spec::{Defaults, Loss, Optimizer, parse};

fn main() {
    divan::main();
}

fn deep_spec(layers: usize, width: usize) -> String {
    vec![width.to_string(); layers + 1].join("-")
}

const CFG: Config = Config { loss: Loss::Ce, optimizer: Optimizer::Adam, batch: 128, examples: 60_000, epochs: 10 };

#[divan::bench]
fn count_1000_layers_of_4096_ledger(bencher: divan::Bencher) {
    let text = deep_spec(1000, 4096);
    bencher.bench(|| {
        let spec = parse(divan::black_box(&text), Defaults::default()).unwrap();
        Ledger::new(&spec, &CFG)
    });
}

#[divan::bench]
fn count_1000_layers_of_4096_table_and_json(bencher: divan::Bencher) {
    let text = deep_spec(1000, 4096);
    bencher.bench(|| {
        let spec = parse(divan::black_box(&text), Defaults::default()).unwrap();
        let ledger = Ledger::new(&spec, &CFG);
        (flopnet::report::count_text(&ledger), serde_json::to_string(&ledger).unwrap())
    });
}

/// `count`, `explain` and `report` of every zoo model (issue 14: each under a second; here a
/// few milliseconds at most, ResNet-152 the slowest).
#[divan::bench(args = flopnet::zoo::NAMES)]
fn zoo_count_explain_report(bencher: divan::Bencher, name: &str) {
    let spec = flopnet::zoo::build(name, flopnet::zoo::Options::default()).unwrap().unwrap();
    bencher.bench(|| {
        let ledger = Ledger::new(&spec, &CFG);
        let html = flopnet::plot::report_html(&spec, &CFG, 0.0, None).unwrap();
        (flopnet::report::count_text(&ledger), flopnet::report::explain_text(&spec, &CFG), html.len())
    });
}
