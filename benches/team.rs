//! What handing a job to the engine's thread team costs: two tasks that do nothing, so the time
//! is the hand-off and the wait. Backs the "well under a microsecond" in the engine's docs.

use flopnet::engine::team::Team;
use std::sync::atomic::{AtomicUsize, Ordering};

fn main() {
    divan::main();
}

#[divan::bench(args = [1, 2])]
fn hand_off_two_empty_tasks(bencher: divan::Bencher, size: usize) {
    let team = Team::new(size, || {}).unwrap();
    let hits = AtomicUsize::new(0);
    bencher.bench_local(|| {
        team.run(size, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        })
    });
}
