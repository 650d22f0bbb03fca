//! Data-parallel training over several processes (`mpirun -n P flopnet train ...`): each global
//! batch is split over the P ranks, each rank forms the gradient of its share, one all-reduce
//! (sum) over the flat gradient arena gives every rank the same gradient, and every rank applies
//! the same update, so the weights stay the same on every rank.
//!
//! The communicator is a [`Comm`]: [`Single`] for one process (the default build), the MPI world
//! with the `mpi` cargo feature ([`connect`] picks). What the all-reduce costs on the wire is
//! [`traffic`], which needs no MPI library.

pub mod traffic;
pub mod watchdog;
#[cfg(feature = "mpi")]
mod world;

use crate::data::Dataset;
use crate::engine::{Engine, Score};
use crate::error::{Error, Result};
use std::ops::Range;

/// The processes training together.
pub trait Comm {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// How many ranks train together.
    fn size(&self) -> usize;
    /// Replaces `buf` by its sum over every rank; every rank gets the same bits.
    fn sum_f32(&mut self, buf: &mut [f32]);
    /// Replaces `buf` by its sum over every rank.
    fn sum_f64(&mut self, buf: &mut [f64]);
    /// Every rank's `mine`, rank by rank (each rank gives as many values).
    fn gather_u32(&mut self, mine: &[u32]) -> Vec<u32>;
    /// Ends the job on every rank with `code`.
    fn abort(&self, code: i32) -> !;
    /// How long a rank waits for the others at a collective, on top of its own work
    /// ([`watchdog::Watch::limit`]); past it the job ends on every rank, naming the ranks that
    /// did not come.
    fn set_rank_timeout(&mut self, _timeout: std::time::Duration) {}
    /// This rank begins training step `step` (from 1): the limits of its collectives count from
    /// here.
    fn step_begins(&mut self, _step: u64) {}
}

/// One process: sums are the values themselves.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&mut self, _buf: &mut [f32]) {}
    fn sum_f64(&mut self, _buf: &mut [f64]) {}
    fn gather_u32(&mut self, mine: &[u32]) -> Vec<u32> {
        mine.to_vec()
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The ranks an MPI launcher (`mpirun`, `srun`) started this process among, from the
/// environment it sets; `None` when no launcher started it.
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.trim().parse().ok()))
}

/// The communicator of this process: the MPI world when a launcher started it (with the `mpi`
/// feature), else [`Single`]. A process launched as one of several ranks by a flopnet built
/// without MPI is refused: each rank would train alone and write the same files.
/// On every rank but 0, standard output is sent to /dev/null: rank 0 alone prints.
pub fn connect() -> Result<Box<dyn Comm>> {
    let ranks = launched_ranks().unwrap_or(1);
    #[cfg(feature = "mpi")]
    if ranks > 1 {
        let w = world::World::start()?;
        if w.rank() != 0 {
            silence_stdout();
        }
        return Ok(Box::new(w));
    }
    if ranks > 1 {
        return Err(Error::Usage(format!(
            "started as one of {ranks} MPI ranks, but this flopnet was built without MPI; build it with `cargo build --release --features mpi`"
        )));
    }
    Ok(Box::new(Single))
}

#[cfg(feature = "mpi")]
fn silence_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto standard output of a descriptor that stays open until it returns.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// The examples of a global batch of `len` that rank `rank` of `size` takes: contiguous, the
/// shares differing by at most one example, in rank order.
pub fn share(len: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    let at = |r: usize| r * len / size;
    at(rank)..at(rank + 1)
}

/// Refuses ranks that would not train the same run: every rank gives a CRC-32 of each named
/// part (spec, data, flags, starting weights), and any that differs from rank 0's is named.
pub fn agree(comm: &mut dyn Comm, parts: &[(&str, u32)]) -> Result<()> {
    let mine: Vec<u32> = parts.iter().map(|p| p.1).collect();
    let all = comm.gather_u32(&mine);
    let k = parts.len();
    for (r, theirs) in all.chunks_exact(k.max(1)).enumerate().skip(1) {
        let differ: Vec<&str> =
            parts.iter().zip(theirs.iter().zip(&all[..k])).filter(|(_, (a, b))| a != b).map(|(p, _)| p.0).collect();
        if !differ.is_empty() {
            return Err(Error::Usage(format!(
                "rank {r} of {} has another {} than rank 0; start every rank with the same command, data and files",
                comm.size(),
                differ.join(" and ")
            )));
        }
    }
    Ok(())
}

/// What [`agree`] compares for `train`: the spec, the data, every other setting of the run
/// (its checkpoint metadata, the threads per rank among them, and where it starts) and the
/// starting weights.
pub fn fingerprint(
    meta: &crate::checkpoint::Meta,
    start: &crate::checkpoint::Position,
    params: &[f32],
) -> Vec<(&'static str, u32)> {
    let mut flags = meta.clone();
    flags.spec.clear();
    flags.data_crc = 0;
    flags.examples = 0;
    let flags = serde_json::to_string(&flags).unwrap_or_default() + &format!("{start:?}");
    vec![
        ("spec", crc(meta.spec.as_bytes())),
        ("data", meta.data_crc ^ crc(&meta.examples.to_le_bytes())),
        ("flags", crc(flags.as_bytes())),
        ("starting weights", crate::checkpoint::data_crc(params, &[])),
    ]
}

/// CRC-32 of some bytes, for [`agree`].
pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// SIGINT and SIGTERM noted on a rank that keeps no checkpoint (every rank but 0), so that when
/// mpirun passes a signal on, every rank stops at the same step (the ranks agree on it in
/// [`step`]) and rank 0 saves its checkpoint there.
pub struct Signals(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Signals {
    pub fn register() -> Result<Signals> {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_usize(sig, std::sync::Arc::clone(&flag), sig as usize)
                .map_err(|e| Error::Usage(format!("cannot install a handler for signal {sig}: {e}")))?;
        }
        Ok(Signals(flag))
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }
}

/// Whether every rank meets `e` at the same point (it was decided from values all ranks share:
/// the summed loss, the same weights, a signal they agreed on), so none is left waiting.
pub fn shared_error(e: &Error) -> bool {
    matches!(e, Error::Interrupted { .. } | Error::Diverged(_))
}

/// The link between the ranks as their all-reduce sees it (`calibrate --mpi`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub ranks: usize,
    /// Seconds of one message: a one-value all-reduce's time over its 2·(P−1) messages.
    pub latency_us: f64,
    /// Bytes a rank sends in a large all-reduce, over its time less the latencies, in Gbit/s.
    pub gbps: f64,
}

impl Link {
    pub fn text(&self) -> String {
        format!(
            "all-reduce between {} ranks: {:.2} µs a message, {:.2} Gbit/s; predict with `flopnet count SPEC --predict --ranks P --link-gbps {:.2} --link-latency-us {:.2}`",
            self.ranks, self.latency_us, self.gbps, self.gbps, self.latency_us
        )
    }
}

/// Times all-reduces of one value (latency) and of 4 Mi values (bandwidth) on `comm`, the
/// median of several; every rank gets rank 0's figures.
pub fn measure_link(comm: &mut dyn Comm) -> Result<Link> {
    let p = comm.size();
    if p < 2 {
        return Err(Error::Usage(
            "calibrate --mpi measures the link between ranks; start it under `mpirun -n 2` or more (a flopnet built with --features mpi)".into(),
        ));
    }
    let mut time = |n: usize, reps: usize| {
        let mut buf = vec![1.0f32; n];
        comm.sum_f32(&mut buf); // warm up
        let mut t: Vec<f64> = (0..reps)
            .map(|_| {
                let s = std::time::Instant::now();
                comm.sum_f32(&mut buf);
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let messages = 2.0 * (p as f64 - 1.0);
    let small = time(1, 201);
    let n = 4 << 20;
    let big = time(n, 9);
    let bytes = traffic::all_reduce(n as u64, p).bytes_sent_per_rank;
    let mut figures = [small / messages * 1e6, bytes * 8.0 / (big - small).max(1e-9) / 1e9];
    // Rank 0's figures for all: sum with zeros elsewhere.
    let mut both = if comm.rank() == 0 { [figures[0], figures[1]] } else { [0.0; 2] };
    comm.sum_f64(&mut both);
    figures = both;
    Ok(Link { ranks: p, latency_us: figures[0], gbps: figures[1] })
}

/// Scratch for [`step`]: this rank's share of a batch.
pub struct Shares {
    x: Vec<f32>,
    y: Vec<u8>,
    /// `--sync-bn`: batch norm's statistics summed over the ranks.
    pub sync_bn: bool,
}

impl Shares {
    pub fn new(batch: usize, features: usize) -> Shares {
        Shares { x: vec![0.0; batch * features], y: vec![0; batch], sync_bn: false }
    }
}

/// Copies examples `idx` into rows and labels, given the offset of the first in the global batch.
pub type Gather<'a> = dyn Fn(&[usize], &mut [f32], &mut [u8], usize) + 'a;

/// `--sync-bn` needs every rank to hold examples of every global batch (each takes part in the
/// statistics' sums): refused, naming the fix, when a batch of `batch` or the epoch's last one of
/// `examples` has fewer examples than the `ranks`.
pub fn check_sync_bn(batch: usize, examples: usize, ranks: usize) -> Result<()> {
    let last = examples % batch.max(1);
    if ranks > 1 && (batch < ranks || (last > 0 && last < ranks)) {
        return Err(Error::Usage(format!(
            "--sync-bn on {ranks} ranks needs at least {ranks} examples in every batch (one a rank), but --batch {batch} over {examples} examples makes a batch of {}; choose another --batch",
            if batch < ranks { batch } else { last }
        )));
    }
    Ok(())
}

/// One data-parallel step over the global batch `idx` of `data`: this rank's share forward and
/// backward (its gradient of the mean over the whole batch), the gradients summed over the ranks
/// (one all-reduce of the arena), then the same update on every rank. Returns the whole batch's
/// score and the signal any rank was stopped by (`stop` is this rank's), both summed with the
/// ranks' scores in one small all-reduce, so every rank decides alike. `gather` copies this
/// rank's examples into its rows, given the offset of the first in the global batch (where
/// `--augment` draws from).
pub fn step(
    engine: &mut Engine,
    comm: &mut dyn Comm,
    data: &Dataset,
    idx: &[usize],
    s: &mut Shares,
    stop: Option<i32>,
    gather: &Gather,
) -> Result<(Score, Option<i32>)> {
    let f = data.feature_len();
    let part = share(idx.len(), comm.rank(), comm.size());
    let offset = part.start;
    let mine = &idx[part];
    let b = mine.len();
    let score = if b == 0 {
        engine.grads_mut().fill(0.0);
        Score::default()
    } else {
        gather(mine, &mut s.x[..b * f], &mut s.y[..b], offset);
        let mut over_ranks = |v: &mut [f64]| comm.sum_f64(v);
        let sync: Option<crate::engine::RankSum> = if s.sync_bn { Some(&mut over_ranks) } else { None };
        engine.compute_gradients_synced(&s.x[..b * f], &s.y[..b], idx.len(), sync)?
    };
    comm.sum_f32(engine.grads_mut());
    let mut small = [score.loss_sum, score.correct as f64, stop.map_or(0.0, |_| 1.0), stop.unwrap_or(0) as f64];
    comm.sum_f64(&mut small);
    engine.apply_update();
    let signal = (small[2] > 0.0).then(|| stop.unwrap_or((small[3] / small[2]).round() as i32));
    Ok((Score { loss_sum: small[0], correct: small[1].round() as usize }, signal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for len in 0..40 {
            for size in 1..9 {
                let parts: Vec<Range<usize>> = (0..size).map(|r| share(len, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, len);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (lo, hi) = (parts.iter().map(|p| p.len()).min(), parts.iter().map(|p| p.len()).max());
                assert!(hi.unwrap() - lo.unwrap() <= 1, "{len} over {size}");
            }
        }
    }

    /// Two ranks simulated in one process: gather gives both ranks' values.
    struct Fake {
        rank: usize,
        others: Vec<u32>,
    }

    impl Comm for Fake {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f32(&mut self, _: &mut [f32]) {}
        fn sum_f64(&mut self, _: &mut [f64]) {}
        fn gather_u32(&mut self, mine: &[u32]) -> Vec<u32> {
            let mut v = mine.to_vec();
            v.extend(&self.others);
            v
        }
        fn abort(&self, _: i32) -> ! {
            panic!("abort")
        }
    }

    #[test]
    fn sync_bn_is_refused_where_a_batch_would_leave_a_rank_without_examples() {
        assert!(check_sync_bn(64, 5400, 2).is_ok() && check_sync_bn(1, 5, 1).is_ok());
        let e = check_sync_bn(1, 100, 2).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("--batch 1 over 100 examples makes a batch of 1; choose another --batch"),
            "{e}"
        );
        // The last batch of 129 in batches of 64 holds one example.
        assert!(check_sync_bn(64, 129, 2).unwrap_err().to_string().contains("makes a batch of 1"));
        assert!(check_sync_bn(64, 130, 2).is_ok());
    }

    #[test]
    fn ranks_that_differ_are_refused_naming_what_differs() {
        let mut same = Fake { rank: 0, others: vec![1, 2, 3] };
        assert!(agree(&mut same, &[("spec", 1), ("data", 2), ("flags", 3)]).is_ok());
        let mut other = Fake { rank: 0, others: vec![1, 9, 3] };
        let e = agree(&mut other, &[("spec", 1), ("data", 2), ("flags", 3)]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("rank 1 of 2 has another data than rank 0"), "{e}");
    }
}
