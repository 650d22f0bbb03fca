//! A small team of threads that hand work across in well under a microsecond.
//!
//! A training step of a small network is a few dozen microseconds of work split into products
//! of a few microseconds each. A general-purpose pool wakes sleeping workers through the kernel
//! (several microseconds a hand-off, measured at ~10 µs per `rayon::join` here), which eats the
//! gain. The team's helpers instead spin for a short while after each job, so the next job of the
//! same step finds them awake; they park when the work stops.
//!
//! Jobs are split into numbered tasks with a fixed assignment (task i runs on member i), so
//! which thread computes what never depends on timing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before parking.
const SPIN: Duration = Duration::from_micros(200);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped to publish a job; helpers run when they see a new value.
    generation: AtomicU64,
    /// The current job; written only while every helper is idle, read after `generation`.
    job: std::cell::UnsafeCell<Option<Job>>,
    /// How many tasks the current job has (tasks >= this are skipped).
    tasks: AtomicUsize,
    /// Helpers still running the current job.
    pending: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
}

// SAFETY: `job` is written by the owner only when `pending` is 0 (no helper reads it), and read
// by helpers only after they observe the generation bump that follows the write (Release/Acquire).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `size` members: the calling thread and `size - 1` helpers. `start` runs first
    /// on every helper (the engine flushes denormals there).
    pub fn new(size: usize, start: fn()) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: std::cell::UnsafeCell::new(None),
            tasks: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut helpers = Vec::new();
        for member in 1..size.max(1) {
            let sh = shared.clone();
            let h = std::thread::Builder::new().name(format!("flopnet-{member}")).spawn(move || {
                start();
                helper_loop(&sh, member);
            })?;
            helpers.push(h);
        }
        Ok(Team { shared, helpers })
    }

    /// Members, the calling thread included.
    pub fn size(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(0)`, …, `f(tasks - 1)`, task i on member i (the caller is member 0), and returns
    /// when all are done. `tasks` must not exceed [`Team::size`].
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(tasks <= self.size(), "{tasks} tasks for a team of {}", self.size());
        if tasks <= 1 {
            if tasks == 1 {
                f(0);
            }
            return;
        }
        let sh = &*self.shared;
        // SAFETY: the previous job finished (`pending` reached 0 before the last `run` returned),
        // so no helper reads `job` now. The lifetime is erased, but this function does not return
        // until every helper has finished with `f`.
        unsafe {
            let erased: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
            *sh.job.get() = Some(erased);
        }
        sh.tasks.store(tasks, Ordering::Relaxed);
        sh.pending.store(self.helpers.len(), Ordering::Relaxed);
        sh.generation.fetch_add(1, Ordering::Release);
        for h in &self.helpers {
            h.thread().unpark();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        while sh.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if sh.panicked.swap(false, Ordering::Relaxed) {
            panic!("a flopnet worker thread panicked");
        }
    }
}

fn helper_loop(sh: &Shared, member: usize) {
    let mut seen = 0u64;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        let current = loop {
            let g = sh.generation.load(Ordering::Acquire);
            if g != seen || sh.stop.load(Ordering::Relaxed) {
                break g;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && idle_since.elapsed() > SPIN {
                std::thread::park_timeout(Duration::from_millis(50));
            } else {
                std::hint::spin_loop();
            }
        };
        if sh.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = current;
        if member < sh.tasks.load(Ordering::Relaxed) {
            // SAFETY: published before the generation bump we acquired; alive until `pending` is 0.
            let job = unsafe { (*sh.job.get()).expect("a published job") };
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(member))).is_err() {
                sh.panicked.store(true, Ordering::Relaxed);
            }
        }
        sh.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in &self.helpers {
            h.thread().unpark();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_its_member() {
        let team = Team::new(3, || {}).unwrap();
        for round in 0..2000 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            let tasks = 1 + round % 3;
            team.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            for (i, h) in hits.iter().enumerate() {
                assert_eq!(h.load(Ordering::Relaxed), (i < tasks) as usize, "round {round} task {i}");
            }
        }
    }
}
