//! How long a rank waits for the others at a collective, and what it says when they do not come.
//!
//! A rank that dies ends the job through the launcher (mpirun notices the exit). A rank that stops
//! without dying (SIGSTOP, an endless loop, waiting in another collective) would leave the others
//! waiting for ever, so every collective is started non-blocking and polled against a limit
//! ([`Watch::limit`]): `--rank-timeout` plus twice the longest this rank has itself worked in a
//! step between two collectives, or, before the first step (loading the data, rank 0 calibrating, the ranks' check
//! that they agree) and for the closing barrier, at least [`STARTUP`]. A rank whose limit passes
//! tells the others ([`Point::encode`]), hears for [`GRACE`] which ranks answer and where they
//! wait, and the job ends on every rank with [`report`]'s message: the ranks that did not answer
//! are named. Nothing is written by the watchdog, so rank 0's last checkpoint stays as it was.
//!
//! This module holds the rules and the words; the MPI side is `world.rs` (the `mpi` feature).

use std::time::Duration;

/// `--rank-timeout`'s default, in seconds: a stopped rank ends the job within 10 s.
pub const DEFAULT_TIMEOUT_S: f64 = 5.0;
/// The least a rank waits before the first step and at the closing barrier: rank 0 may be
/// calibrating (about 10 s, longer on a busy machine), loading, or writing the model.
pub const STARTUP: Duration = Duration::from_secs(300);
/// How long a rank whose limit passed listens for the others' answers.
pub const GRACE: Duration = Duration::from_millis(500);
/// A rank waiting at one collective polls without pause this long, then sleeps 1 ms between
/// polls: it waits for a rank that is still working (rank 0 calibrating, say), and spinning would
/// take a core from it. Not sooner: on a busy machine a rank that sleeps or yields wakes late, the
/// other rank then waits long enough to sleep too, and every step's wait grows to the scheduler's
/// delay (`calibrate --mpi` measured 10 ms a message so, with 20 ms).
pub const DOZE: Duration = Duration::from_secs(1);
/// The exit code of a job ended by the watchdog.
pub const EXIT_CODE: i32 = 1;

/// The collectives a rank can wait at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// All-gather of u32s (the ranks' check that they agree).
    Gather,
    /// All-reduce (sum) of f32s: the gradients in a step.
    SumF32,
    /// All-reduce (sum) of f64s: a step's score and stop signal.
    SumF64,
    /// The barrier before MPI ends.
    Close,
}

impl Op {
    fn code(self) -> u64 {
        self as u64
    }

    fn from_code(c: u64) -> Op {
        match c {
            0 => Op::Gather,
            1 => Op::SumF32,
            2 => Op::SumF64,
            _ => Op::Close,
        }
    }
}

/// Where a rank waits: its how-manyth collective, in which step, which one and of how many values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// Collectives this rank entered, this one included.
    pub seq: u64,
    /// The training step under way (from 1); `None` before the first.
    pub step: Option<u64>,
    pub op: Op,
    pub values: u64,
}

impl Point {
    /// The four numbers a rank sends the others when its limit passes.
    pub fn encode(&self) -> [u64; 4] {
        [self.seq, self.step.map_or(0, |s| s + 1), self.op.code(), self.values]
    }

    pub fn decode(v: [u64; 4]) -> Point {
        Point { seq: v[0], step: v[1].checked_sub(1), op: Op::from_code(v[2]), values: v[3] }
    }

    /// "the all-reduce of 636,010 f32 values in step 57"
    pub fn text(&self) -> String {
        let n = crate::report::format::thousands(self.values as u128);
        let what = match self.op {
            Op::Gather => "the all-gather that checks the ranks agree".to_string(),
            Op::SumF32 => format!("the all-reduce of {n} f32 values"),
            Op::SumF64 => format!("the all-reduce of {n} f64 values"),
            Op::Close => "the closing barrier".to_string(),
        };
        match (self.step, self.op) {
            (_, Op::Close) => what,
            (Some(s), _) => format!("{what} in step {s}"),
            (None, _) => format!("{what} before the first step"),
        }
    }
}

/// One rank's state for the limits: the step under way and the longest it has worked in one
/// between two collectives.
#[derive(Clone, Debug)]
pub struct Watch {
    timeout: Duration,
    step: Option<u64>,
    /// Since when this rank works in the step under way (from its start or its last
    /// collective); `None` while it waits.
    working_since: Option<std::time::Instant>,
    longest: Duration,
    seq: u64,
}

impl Watch {
    pub fn new(timeout: Duration) -> Watch {
        Watch { timeout, step: None, working_since: None, longest: Duration::ZERO, seq: 0 }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// This rank begins step `step`'s work (from 1).
    pub fn step_begins(&mut self, step: u64, now: std::time::Instant) {
        self.step = Some(step);
        self.working_since = Some(now);
    }

    /// This rank left a collective at `now`: in a step, it works again from here.
    pub fn left(&mut self, now: std::time::Instant) {
        if self.step.is_some() {
            self.working_since = Some(now);
        }
    }

    /// This rank enters a collective at `now`: where it waits and how long it may.
    pub fn enter(&mut self, op: Op, values: usize, now: std::time::Instant) -> (Point, Duration) {
        self.seq += 1;
        if let Some(since) = self.working_since.take() {
            self.longest = self.longest.max(now.saturating_duration_since(since));
        }
        let point = Point { seq: self.seq, step: self.step, op, values: values as u64 };
        (point, self.limit(op))
    }

    /// How long a rank waits at `op`: the timeout plus twice its longest work so far, at
    /// least [`STARTUP`] before the first step and at the closing barrier.
    pub fn limit(&self, op: Op) -> Duration {
        let limit = self.timeout.saturating_add(self.longest.saturating_mul(2));
        if self.step.is_none() || op == Op::Close { limit.max(STARTUP) } else { limit }
    }
}

/// The message of a job the watchdog ends, as rank `me` of `heard.len()` saw it after waiting
/// `waited` at `heard[me]`: `heard[r]` is where rank r said it waits, `None` for the ranks that
/// did not answer. `None` when another rank says it: the lowest rank that answered speaks.
pub fn report(me: usize, heard: &[Option<Point>], waited: Duration, timeout: Duration) -> Option<String> {
    let p = heard.len();
    let speaker = heard.iter().position(Option::is_some)?;
    if speaker != me {
        return None;
    }
    let here = heard[me]?;
    let silent: Vec<usize> = (0..p).filter(|&r| heard[r].is_none()).collect();
    let fix = format!(
        "ending the job on every rank (the last checkpoint stays and resumes; if a rank can be this much slower, raise --rank-timeout, now {} s)",
        timeout.as_secs_f64()
    );
    let who = |v: &[usize]| {
        let names: Vec<String> = v.iter().map(usize::to_string).collect();
        match names.len() {
            1 => format!("rank {}", names[0]),
            _ => format!("ranks {}", names.join(", ")),
        }
    };
    if !silent.is_empty() {
        let verb = if silent.len() == 1 { "is" } else { "are" };
        return Some(format!(
            "rank {me} of {p} waited {:.1} s for {} at {}; {} {verb} stopped, stuck or far slower: {fix}",
            waited.as_secs_f64(),
            who(&silent),
            here.text(),
            who(&silent)
        ));
    }
    let places: Vec<String> =
        heard.iter().enumerate().filter_map(|(r, h)| Some(format!("rank {r}: {}", h.as_ref()?.text()))).collect();
    if heard.iter().flatten().all(|h| h.seq == here.seq && h.op == here.op) {
        // Every rank waits at the same collective: the transfer itself is stuck.
        return Some(format!(
            "rank {me} of {p}: every rank waited {:.1} s at {} and it did not complete: {fix}",
            waited.as_secs_f64(),
            here.text()
        ));
    }
    Some(format!("rank {me} of {p}: the ranks wait at different collectives ({}): {fix}", places.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn points_travel_as_four_numbers() {
        for p in [
            Point { seq: 9, step: Some(0), op: Op::SumF32, values: 636_010 },
            Point { seq: 1, step: None, op: Op::Gather, values: 4 },
            Point { seq: 3, step: Some(7), op: Op::Close, values: 0 },
            Point { seq: 4, step: Some(7), op: Op::SumF64, values: 4 },
        ] {
            assert_eq!(Point::decode(p.encode()), p);
        }
    }

    #[test]
    fn the_limit_is_long_before_the_first_step_then_the_timeout_plus_twice_the_longest_work_between_waits() {
        let t0 = Instant::now();
        let mut w = Watch::new(Duration::from_secs(5));
        assert_eq!(w.enter(Op::Gather, 4, t0).1, STARTUP);
        w.step_begins(1, t0);
        let (p, limit) = w.enter(Op::SumF32, 10, t0 + Duration::from_millis(300));
        assert_eq!((p.seq, p.step), (2, Some(1)));
        assert_eq!(limit, Duration::from_millis(5600));
        // The wait at the first collective does not count as work; what follows it does.
        w.left(t0 + Duration::from_millis(2900));
        assert_eq!(w.enter(Op::SumF64, 4, t0 + Duration::from_secs(3)).1, Duration::from_millis(5600));
        w.left(t0 + Duration::from_secs(3));
        assert_eq!(w.enter(Op::SumF64, 4, t0 + Duration::from_millis(3400)).1, Duration::from_millis(5800));
        w.step_begins(2, t0 + Duration::from_secs(4));
        assert_eq!(w.enter(Op::SumF32, 10, t0 + Duration::from_millis(4100)).1, Duration::from_millis(5800));
        assert_eq!(w.limit(Op::Close), STARTUP);
        w.set_timeout(Duration::from_secs(400));
        assert_eq!(w.limit(Op::Close), Duration::from_millis(400_800));
    }

    #[test]
    fn the_lowest_rank_that_answered_names_the_silent_ones() {
        let here = Point { seq: 20, step: Some(57), op: Op::SumF32, values: 636_010 };
        let t = Duration::from_secs(5);
        let w = Duration::from_millis(5012);
        let m = report(0, &[Some(here), None], w, t).unwrap();
        assert!(
            m.starts_with("rank 0 of 2 waited 5.0 s for rank 1 at the all-reduce of 636,010 f32 values in step 57; rank 1 is stopped, stuck or far slower: ending the job on every rank"),
            "{m}"
        );
        assert!(m.contains("raise --rank-timeout, now 5 s"), "{m}");
        // Rank 0 silent: rank 1 speaks; of three, two silent.
        assert!(report(1, &[None, Some(here)], w, t).unwrap().contains("for rank 0 at"));
        assert!(report(2, &[None, Some(here), Some(here)], w, t).is_none());
        let m = report(1, &[None, Some(here), None], w, t).unwrap();
        assert!(m.contains("for ranks 0, 2 at") && m.contains("ranks 0, 2 are stopped"), "{m}");
    }

    #[test]
    fn ranks_at_different_collectives_are_told_apart_from_a_stuck_transfer() {
        let t = Duration::from_secs(5);
        let a = Point { seq: 20, step: Some(57), op: Op::SumF32, values: 10 };
        let b = Point { seq: 21, step: Some(57), op: Op::SumF64, values: 4 };
        let m = report(0, &[Some(a), Some(b)], t, t).unwrap();
        assert!(m.contains("the ranks wait at different collectives (rank 0: the all-reduce of 10 f32 values in step 57; rank 1: the all-reduce of 4 f64 values in step 57)"), "{m}");
        let m = report(0, &[Some(a), Some(a)], t, t).unwrap();
        assert!(m.contains("every rank waited 5.0 s at the all-reduce of 10 f32 values in step 57"), "{m}");
        let s = Point { seq: 1, step: None, op: Op::Gather, values: 4 };
        assert_eq!(s.text(), "the all-gather that checks the ranks agree before the first step");
    }
}
