//! A small team of threads that hand work across in nanoseconds (`cargo bench --bench team`).
//!
//! A training step of a small network is a few dozen microseconds of work split into products
//! of a few microseconds each. A general-purpose pool wakes sleeping workers through the kernel
//! (several microseconds a hand-off, measured at ~10 µs per `rayon::join` here), which eats the
//! gain. The team's helpers instead spin for a short while after each job, so the next job of the
//! same step finds them awake; they park when the work stops.
//!
//! Jobs are split into numbered tasks, each writing its own fixed part of the output, claimed by
//! whichever member is free first. The caller claims tasks too, so a helper that the OS has
//! descheduled (this VM's two vCPUs are shared with other work) costs a late start, not a stall
//! of the whole step; which thread runs a task never changes what it computes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A buffer the team's tasks write in disjoint parts: each task takes `part`s no other task
/// touches (its channels, planes, examples or scratch slot).
pub(crate) struct Parts<T>(*mut T);
// SAFETY: tasks only ever take disjoint parts (`part`'s contract).
unsafe impl<T> Sync for Parts<T> {}

impl<T> Parts<T> {
    pub(crate) fn of(buf: &mut [T]) -> Parts<T> {
        Parts(buf.as_mut_ptr())
    }

    /// Values `at..at + len` of the buffer.
    ///
    /// SAFETY: the caller's task owns that range alone and the buffer holds it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, at: usize, len: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// How long an idle helper spins before parking.
const SPIN: Duration = Duration::from_micros(200);

type Job = *const (dyn Fn(usize) + Sync);

/// `state` packs the job's generation (bits 16..), its task count (bits 8..16) and the next
/// unclaimed task (bits 0..8). Claiming a task is one compare-and-swap on it, which fails once a
/// newer job is published, so a helper that wakes late can never run a task of a finished job.
const GEN_SHIFT: u32 = 16;
const MAX_TASKS: usize = 255;

struct Shared {
    state: AtomicU64,
    /// The current job; written only while no task of the previous job is running, read after a
    /// successful claim.
    job: std::cell::UnsafeCell<Option<Job>>,
    /// Tasks of the current job finished.
    done: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
}

// SAFETY: `job` is written by the owner only when every claimed task of the previous job has
// finished (`done` reached its count) and no further claim of it can succeed; it is read by
// helpers only after a claim that acquired the state published after the write.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// Claims the next task of job `generation`, if that job is still current and has one left.
    fn claim(&self, generation: u64) -> Option<usize> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (g, tasks, next) = (s >> GEN_SHIFT, (s >> 8) & 0xff, s & 0xff);
            if g != generation || next >= tasks {
                return None;
            }
            match self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(next as usize),
                Err(now) => s = now,
            }
        }
    }
}

pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `size` members: the calling thread and `size - 1` helpers. `start` runs first
    /// on every helper (the engine flushes denormals there).
    pub fn new(size: usize, start: fn()) -> std::io::Result<Team> {
        let size = size.clamp(1, MAX_TASKS);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: std::cell::UnsafeCell::new(None),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut helpers = Vec::new();
        for member in 1..size {
            let sh = shared.clone();
            let h = std::thread::Builder::new().name(format!("flopnet-{member}")).spawn(move || {
                start();
                helper_loop(&sh);
            })?;
            helpers.push(h);
        }
        Ok(Team { shared, helpers })
    }

    /// Members, the calling thread included.
    pub fn size(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(0)`, …, `f(tasks - 1)` once each and returns when all are done. Tasks are claimed
    /// in order by whichever member is free — the caller included, so a helper that is asleep or
    /// descheduled delays nothing; which thread runs a task must not change its result (the
    /// engine's tasks write fixed, disjoint ranges). `tasks` must not exceed [`Team::size`].
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(tasks <= self.size(), "{tasks} tasks for a team of {}", self.size());
        if tasks <= 1 {
            if tasks == 1 {
                f(0);
            }
            return;
        }
        let sh = &*self.shared;
        // Only the owner publishes, so the state's generation is the last one it published.
        let generation = (sh.state.load(Ordering::Relaxed) >> GEN_SHIFT) + 1;
        // SAFETY: the previous job's tasks have all finished (`run` waited for them) and no claim
        // of it can succeed any more, so no helper reads `job` now. The lifetime is erased, but
        // this function does not return until every task of this job has finished with `f`.
        unsafe {
            let erased: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
            *sh.job.get() = Some(erased);
        }
        sh.done.store(0, Ordering::Relaxed);
        sh.state.store((generation << GEN_SHIFT) | ((tasks as u64) << 8), Ordering::Release);
        for h in &self.helpers {
            h.thread().unpark();
        }
        let mut mine = Ok(());
        while let Some(t) = sh.claim(generation) {
            let r = catch_unwind(AssertUnwindSafe(|| f(t)));
            if mine.is_ok() {
                mine = r;
            }
            sh.done.fetch_add(1, Ordering::Release);
        }
        while sh.done.load(Ordering::Acquire) != tasks {
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

fn helper_loop(sh: &Shared) {
    let mut seen = 0u64;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        let current = loop {
            let g = sh.state.load(Ordering::Acquire) >> GEN_SHIFT;
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
        while let Some(t) = sh.claim(current) {
            // SAFETY: published before the state this claim acquired; alive until the task is
            // counted done.
            let job = unsafe { (*sh.job.get()).expect("a published job") };
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(t))).is_err() {
                sh.panicked.store(true, Ordering::Relaxed);
            }
            sh.done.fetch_add(1, Ordering::Release);
        }
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
    fn every_task_runs_once() {
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

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_survives() {
        let team = Team::new(2, || {}).unwrap();
        for bad in 0..2 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                team.run(2, &|i| {
                    if i == bad {
                        panic!("task {i}");
                    }
                })
            }));
            assert!(r.is_err(), "task {bad} panicked");
            let hits = AtomicUsize::new(0);
            team.run(2, &|_| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 2);
        }
    }
}
