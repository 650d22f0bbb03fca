//! The MPI world as a [`Comm`] (the `mpi` feature, on the `mpi` crate over the system's MPI).
//!
//! Every collective is started non-blocking and polled against the [`Watch`]'s limit: a rank
//! that stops without dying ends the job within the limit instead of leaving the others waiting
//! (see [`super::watchdog`]).

use super::Comm;
use super::watchdog::{self, Op, Point, Watch};
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::request::{Request, Scope, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::time::{Duration, Instant};

/// The tag of the messages a rank whose limit passed sends the others.
const HANG_TAG: mpi::Tag = 0x6c6f;
/// How often a waiting rank looks for such a message.
const LISTEN_EVERY: Duration = Duration::from_millis(1);

pub struct World {
    // Dropped last: finalizes MPI.
    world: SimpleCommunicator,
    scratch: Vec<f32>,
    scratch64: Vec<f64>,
    watch: Watch,
    _universe: mpi::environment::Universe,
}

impl World {
    pub fn start() -> Result<World> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Usage("MPI could not be started (it was started before in this process)".into()))?;
        let world = universe.world();
        let watch = Watch::new(Duration::from_secs_f64(watchdog::DEFAULT_TIMEOUT_S));
        Ok(World { world, scratch: Vec::new(), scratch64: Vec::new(), watch, _universe: universe })
    }
}

/// Polls `req` until it completes; past `limit`, or when another rank says its limit passed,
/// ends the job ([`give_up`]).
fn wait<'a, D: ?Sized, S: Scope<'a>>(
    world: &SimpleCommunicator,
    watch: &Watch,
    mut req: Request<'a, D, S>,
    here: Point,
    limit: Duration,
) {
    let start = Instant::now();
    let mut listen_at = LISTEN_EVERY;
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        let waited = start.elapsed();
        if waited >= listen_at {
            listen_at = waited + LISTEN_EVERY;
            if waited > limit || world.any_process().immediate_probe_with_tag(HANG_TAG).is_some() {
                // The request stays pending: the job ends here.
                std::mem::forget(req);
                give_up(world, watch, here, waited);
            }
        }
        if waited > watchdog::DOZE {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Tells every other rank where this one waits, hears for [`watchdog::GRACE`] where they do,
/// and ends the job; the lowest rank that answered says why.
fn give_up(world: &SimpleCommunicator, watch: &Watch, here: Point, waited: Duration) -> ! {
    let (me, p) = (world.rank() as usize, world.size() as usize);
    let mine: &'static [u64; 4] = Box::leak(Box::new(here.encode()));
    for r in (0..p).filter(|&r| r != me) {
        let sent = world.process_at_rank(r as i32).immediate_send_with_tag(StaticScope, &mine[..], HANG_TAG);
        // Small enough to go at once; nobody waits for it to complete.
        std::mem::forget(sent);
    }
    let mut heard: Vec<Option<Point>> = vec![None; p];
    heard[me] = Some(here);
    let start = Instant::now();
    while heard.iter().any(Option::is_none) && start.elapsed() < watchdog::GRACE {
        while let Some((msg, status)) = world.any_process().immediate_matched_probe_with_tag(HANG_TAG) {
            let mut v = [0u64; 4];
            msg.matched_receive_into(&mut v[..]);
            if let Some(h) = heard.get_mut(status.source_rank() as usize) {
                *h = Some(Point::decode(v));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(m) = watchdog::report(me, &heard, waited, watch.timeout()) {
        eprintln!("flopnet: {m}");
    }
    world.abort(watchdog::EXIT_CODE)
}

impl Comm for World {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn sum_f32(&mut self, buf: &mut [f32]) {
        let (here, limit) = self.watch.enter(Op::SumF32, buf.len(), Instant::now());
        let World { world, scratch, watch, .. } = self;
        scratch.resize(buf.len(), 0.0);
        mpi::request::scope(|scope| {
            let req = world.immediate_all_reduce_into(scope, &buf[..], &mut scratch[..], SystemOperation::sum());
            wait(world, watch, req, here, limit);
        });
        watch.left(Instant::now());
        buf.copy_from_slice(scratch);
    }
    fn sum_f64(&mut self, buf: &mut [f64]) {
        let (here, limit) = self.watch.enter(Op::SumF64, buf.len(), Instant::now());
        let World { world, scratch64, watch, .. } = self;
        scratch64.resize(buf.len(), 0.0);
        mpi::request::scope(|scope| {
            let req = world.immediate_all_reduce_into(scope, &buf[..], &mut scratch64[..], SystemOperation::sum());
            wait(world, watch, req, here, limit);
        });
        watch.left(Instant::now());
        buf.copy_from_slice(scratch64);
    }
    fn gather_u32(&mut self, mine: &[u32]) -> Vec<u32> {
        let (here, limit) = self.watch.enter(Op::Gather, mine.len(), Instant::now());
        let mut all = vec![0u32; mine.len() * self.size()];
        let World { world, watch, .. } = self;
        mpi::request::scope(|scope| {
            let req = world.immediate_all_gather_into(scope, mine, &mut all[..]);
            wait(world, watch, req, here, limit);
        });
        watch.left(Instant::now());
        all
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
    fn set_rank_timeout(&mut self, timeout: Duration) {
        self.watch.set_timeout(timeout);
    }
    fn step_begins(&mut self, step: u64) {
        self.watch.step_begins(step, Instant::now());
    }
}

impl Drop for World {
    /// Every rank meets at a barrier, polled as every collective is, before MPI ends.
    fn drop(&mut self) {
        let (here, limit) = self.watch.enter(Op::Close, 0, Instant::now());
        wait(&self.world, &self.watch, self.world.immediate_barrier(), here, limit);
    }
}
