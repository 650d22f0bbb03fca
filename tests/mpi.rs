//! Data-parallel training under `mpirun -n 2` (the `mpi` feature; the tests start mpirun
//! themselves, all on this machine): repeatable to the bit, the same weights as one process over
//! the same global batches, ranks that disagree refused. Without the feature, a flopnet started
//! as one of several ranks refuses to train.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flopnet");

/// The arguments of a short run saving its model to `model`.
#[allow(dead_code)]
fn run_args(model: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["train", "784-32-10", "--epochs", "2", "--batch", "64", "--threads", "1", "--seed", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(["--save".to_string(), model.display().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// One mpirun job at a time: the tests run on threads of one process, and jobs at once would
/// share the cores (and time each other out).
#[allow(dead_code)]
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[allow(dead_code)]
fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB.lock().unwrap_or_else(|e| e.into_inner())
}

/// mpirun with the options every test needs: more ranks than cores, no binding, and running as
/// root where the tests do.
#[allow(dead_code)]
fn mpirun_command() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--bind-to", "none"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        c.arg("--allow-run-as-root");
    }
    c
}

/// `mpirun -n 2 flopnet ARGS` started, its output piped, once `dir`'s checkpoint exists.
#[allow(dead_code)]
fn two_ranks_until_a_checkpoint(args: &[String], dir: &Path) -> std::process::Child {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut job = mpirun_command()
        .args(["-n", "2", BIN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let file = dir.join(flopnet::checkpoint::FILE);
    let waited = Instant::now();
    while !file.exists() {
        assert!(waited.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        if job.try_wait().unwrap().is_some() {
            let out = job.wait_with_output().unwrap();
            let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            panic!("the job ended before its first checkpoint:\n{o}\n{e}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    job
}

/// The pid of rank `rank` of the job whose command line names `dir`: the flopnet process whose
/// environment says so.
#[allow(dead_code)]
fn rank_pid(rank: usize, dir: &Path) -> i32 {
    find_rank(rank, dir).unwrap_or_else(|| panic!("rank {rank} is running"))
}

/// [`rank_pid`], `None` while the rank is not running.
#[allow(dead_code)]
fn find_rank(rank: usize, dir: &Path) -> Option<i32> {
    let tag = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).find(|pid| {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        exe.ends_with("flopnet")
            && env.split(|&b| b == 0).any(|v| v == tag.as_bytes())
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .windows(dir.as_os_str().len())
                .any(|w| w == dir.as_os_str().as_encoded_bytes())
    })
}

/// Process `pid`'s CPU time so far (user and system), in clock ticks; `None` once it ended.
#[allow(dead_code)]
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Whether process `pid` is gone (or a zombie: it runs no more).
#[allow(dead_code)]
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[allow(dead_code)]
fn mpirun(ranks: &[Vec<String>]) -> Output {
    let mut c = mpirun_command();
    for (i, args) in ranks.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(["-n", "1", BIN]).args(args);
    }
    c.output().expect("mpirun runs (install openmpi-bin)")
}

#[allow(dead_code)]
fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[allow(dead_code)]
fn weights(path: &Path) -> Vec<Vec<f64>> {
    let (_, layers, _) = flopnet::model::load_recorded(path).unwrap();
    layers.into_iter().flat_map(|l| [l.weight, l.bias]).collect()
}

#[cfg(feature = "mpi")]
#[test]
fn two_ranks_repeat_to_the_bit_and_match_one_process_to_1e_5() {
    let _job = one_job();
    // Momentum's step scales with the gradient (Adam's would hide one off by a constant factor);
    // Adam is the default.
    for opt in ["momentum", "adam"] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, one) = (dir.path().join("a.st"), dir.path().join("b.st"), dir.path().join("one.st"));
        let run_args = |m: &Path| run_args(m, &["--optimizer", opt]);
        let text = ok(mpirun(&[run_args(&a), run_args(&a)]));
        assert!(text.contains("training on 2 MPI ranks, 1 thread(s) each"), "{text}");
        assert_eq!(text.matches("epoch   1").count(), 1, "rank 0 alone prints:\n{text}");
        ok(mpirun(&[run_args(&b), run_args(&b)]));
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{opt}: two runs of mpirun -n 2 differ");
        ok(Command::new(BIN).args(run_args(&one)).output().unwrap());
        let (p, q) = (weights(&a), weights(&one));
        let mut moved = false;
        for (t, (x, y)) in p.iter().zip(&q).enumerate() {
            // Relative to the tensor's largest weight: only the order of summation differs.
            let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = x.iter().zip(y).fold(0.0f64, |m, (u, v)| m.max((u - v).abs()));
            assert!(worst <= 1e-5 * scale, "{opt}, tensor {t}: {worst} apart at scale {scale}");
            moved |= x != y;
        }
        // The split is real: two ranks sum in another order than one process.
        assert!(moved, "{opt}: bitwise equal to one process: were the batches split at all?");
    }
}

#[cfg(feature = "mpi")]
#[test]
fn ranks_that_disagree_are_refused_before_training() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.st");
    let out = mpirun(&[run_args(&m, &[]), run_args(&m, &["--lr", "0.01"])]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("rank 1 of 2 has another flags than rank 0"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("epoch   1"), "trained before refusing");
    assert!(!m.exists());
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_several_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(run_args(&dir.path().join("m.st"), &[]))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("built without MPI; build it with `cargo build --release --features mpi`"), "{err}");
}

/// Killing one rank mid-run ends the job on every rank within 10 s with a message naming the
/// rank; rank 0's last checkpoint stays intact and a resumed `mpirun -n 2` run finishes from it.
#[cfg(feature = "mpi")]
#[test]
fn a_killed_rank_ends_the_job_promptly_and_the_checkpoint_resumes() {
    let _job = one_job();
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let m = dir.path().join("m.st");
    // About 0.25 s an epoch here: the kill lands mid-run.
    let base = ["train", "784-400-10", "--epochs", "16", "--batch", "8", "--threads", "1", "--seed", "5"];
    let args = |extra: [&str; 2]| -> Vec<String> {
        base.iter().chain(&extra).chain(&["--save", m.to_str().unwrap()]).map(|s| s.to_string()).collect()
    };
    let first = args(["--checkpoint", ck.to_str().unwrap()]);
    let mut job = two_ranks_until_a_checkpoint(&first, &ck);
    let rank1 = rank_pid(1, &ck);
    // SAFETY: kill has no memory preconditions; the pid is our job's rank 1.
    unsafe { libc::kill(rank1, libc::SIGKILL) };
    let killed = Instant::now();
    let out = loop {
        if job.try_wait().unwrap().is_some() {
            break job.wait_with_output().unwrap();
        }
        if killed.elapsed() > Duration::from_secs(10) {
            let _ = job.kill();
            panic!("the job still ran 10 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("process rank 1") && err.contains("signal 9"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("saved "), "the run finished before the kill:\n{text}");
    let c = flopnet::checkpoint::Checkpoint::load(&ck).expect("the checkpoint is intact");
    drop(c);
    let resumed = ok(mpirun(&[args(["--resume", ck.to_str().unwrap()]), args(["--resume", ck.to_str().unwrap()])]));
    assert!(resumed.contains("resuming from") && resumed.contains("epoch   8"), "{resumed}");
    assert!(m.exists());
}

/// `calibrate --mpi` under `mpirun -n 2` prints the all-reduce's latency and bandwidth, once.
#[cfg(feature = "mpi")]
#[test]
fn calibrate_mpi_measures_the_link_between_two_ranks() {
    let _job = one_job();
    let args: Vec<String> = ["calibrate", "--mpi"].iter().map(|s| s.to_string()).collect();
    let text = ok(mpirun(&[args.clone(), args]));
    assert_eq!(text.matches("all-reduce between 2 ranks: ").count(), 1, "{text}");
    let figure = |after: &str| -> f64 {
        let s = &text[text.find(after).unwrap() + after.len()..];
        s.split_whitespace().next().unwrap().trim_end_matches('`').parse().unwrap()
    };
    assert!(figure("--link-gbps ") > 0.0 && figure("--link-latency-us ") > 0.0, "{text}");
}

/// Without mpirun there is no link to measure.
#[test]
fn calibrate_mpi_alone_says_to_start_it_under_mpirun() {
    let out = Command::new(BIN).args(["calibrate", "--mpi"]).env_remove("OMPI_COMM_WORLD_SIZE").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("start it under `mpirun -n 2` or more"), "{err}");
}

/// `eval` under `mpirun -n 2` scores the same on each rank and prints once.
#[cfg(feature = "mpi")]
#[test]
fn eval_under_mpirun_prints_once() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.st");
    ok(Command::new(BIN).args(run_args(&m, &[])).output().unwrap());
    let args: Vec<String> = ["eval", "--model", m.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
    let text = ok(mpirun(&[args.clone(), args]));
    assert_eq!(
        text.matches("accuracy").count(),
        ok(Command::new(BIN).args(["eval", "--model", m.to_str().unwrap()]).output().unwrap())
            .matches("accuracy")
            .count(),
        "{text}"
    );
}

/// SIGTERM to mpirun (which passes it to every rank) stops all ranks at the same step, rank 0
/// checkpoints there and says so, and the resumed run ends with the model of a run never stopped.
#[cfg(feature = "mpi")]
#[test]
fn a_stopped_job_checkpoints_mid_epoch_and_resumes_to_the_same_model() {
    use std::time::Duration;
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let (whole, resumed) = (dir.path().join("whole.st"), dir.path().join("resumed.st"));
    // About 0.25 s an epoch here: the signal lands mid-run.
    let base = ["train", "784-400-10", "--epochs", "10", "--batch", "8", "--threads", "1", "--seed", "5"];
    let args = |m: &Path, extra: [&str; 2]| -> Vec<String> {
        base.iter().chain(&extra).chain(&["--save", m.to_str().unwrap()]).map(|s| s.to_string()).collect()
    };
    let other = dir.path().join("other");
    ok(mpirun(&[
        args(&whole, ["--checkpoint", other.to_str().unwrap()]),
        args(&whole, ["--checkpoint", other.to_str().unwrap()]),
    ]));
    let job = two_ranks_until_a_checkpoint(&args(&resumed, ["--checkpoint", ck.to_str().unwrap()]), &ck);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill has no memory preconditions; the pid is our mpirun.
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    let out = job.wait_with_output().unwrap();
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && !resumed.exists(), "the run finished before the signal:\n{text}");
    assert_eq!(err.matches("interrupted by SIGTERM: stopped after step ").count(), 1, "{text}\n{err}");
    assert!(
        text.contains("checkpoint: epoch ") && text.contains(", batch "),
        "no mid-epoch checkpoint:\n{text}\n{err}"
    );
    let r = ["--resume", ck.to_str().unwrap()];
    let again = ok(mpirun(&[args(&resumed, r), args(&resumed, r)]));
    assert!(again.contains("resuming from"), "{again}");
    assert!(std::fs::read(&whole).unwrap() == std::fs::read(&resumed).unwrap(), "the resumed run ends elsewhere");
}

/// A rank stopped without dying (SIGSTOP) ends the job on every rank within 10 s at the default
/// --rank-timeout: the rank that waits for it names it, every process of the job is gone, and
/// rank 0's last checkpoint is intact and resumes. Rank 1 stopped, then rank 0 (rank 1 speaks).
#[cfg(feature = "mpi")]
#[test]
fn a_stopped_rank_ends_the_job_within_10_s_naming_it_and_the_checkpoint_resumes() {
    use std::time::{Duration, Instant};
    let _job = one_job();
    for stopped in [1usize, 0] {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        let m = dir.path().join("m.st");
        let args = |epochs: &str, extra: [&str; 2]| -> Vec<String> {
            ["train", "784-400-10", "--epochs", epochs, "--batch", "8", "--threads", "1", "--seed", "5"]
                .iter()
                .chain(&extra)
                .chain(&["--save", m.to_str().unwrap()])
                .map(|s| s.to_string())
                .collect()
        };
        let mut job = two_ranks_until_a_checkpoint(&args("16", ["--checkpoint", ck.to_str().unwrap()]), &ck);
        let pids = [rank_pid(0, &ck), rank_pid(1, &ck)];
        // Into the second epoch: the first one's checkpoint is written.
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: kill has no memory preconditions; the pid is one of our job's ranks.
        unsafe { libc::kill(pids[stopped], libc::SIGSTOP) };
        let at = Instant::now();
        let ended = loop {
            if job.try_wait().unwrap().is_some() && pids.iter().all(|&p| gone(p)) {
                break at.elapsed();
            }
            if at.elapsed() > Duration::from_secs(10) {
                for p in pids {
                    // SAFETY: as above; ends what the test started.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                let _ = job.kill();
                let out = job.wait_with_output().unwrap();
                panic!(
                    "rank {stopped} stopped: the job still ran 10 s later\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = job.wait_with_output().unwrap();
        let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("rank {stopped} stopped: the job ended {:.2} s later", ended.as_secs_f64());
        assert!(!out.status.success(), "{text}\n{err}");
        assert!(!text.contains("saved "), "the run finished before the stop:\n{text}");
        let speaker = 1 - stopped;
        let said = format!("flopnet: rank {speaker} of 2 waited ");
        assert_eq!(err.matches(&said).count(), 1, "{err}");
        assert!(err.contains(&format!(" for rank {stopped} at the all-reduce of ")), "{err}");
        assert!(err.contains(&format!("rank {stopped} is stopped, stuck or far slower")), "{err}");
        let c = flopnet::checkpoint::Checkpoint::load(&ck).expect("the checkpoint is intact");
        drop(c);
        if stopped == 0 {
            // The checkpoint rank 0 wrote resumes: a constant rate may stop after fewer epochs.
            let r = ["--resume", ck.to_str().unwrap()];
            let again = ok(mpirun(&[args("2", r), args("2", r)]));
            assert!(again.contains("resuming from") && again.contains("epoch   2"), "{again}");
            assert!(m.exists());
        }
    }
}

/// While rank 0 calibrates before training, rank 1 waits at the ranks' agreement check asleep,
/// not spinning: over a stretch of the calibration it takes under a quarter of rank 0's CPU time
/// (a spinning rank took as much as rank 0).
#[cfg(feature = "mpi")]
#[test]
fn rank_1_sleeps_while_rank_0_calibrates() {
    use std::time::{Duration, Instant};
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    let args: Vec<String> =
        ["train", "784-32-10", "--epochs", "1", "--threads", "1", "--profile", profile.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let job = mpirun_command()
        .args(["-n", "2", BIN])
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ranks = loop {
        if let (Some(a), Some(b)) = (find_rank(0, dir.path()), find_rank(1, dir.path())) {
            break [a, b];
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the ranks did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Rank 1 loads the data and reaches the check in well under a second, and sleeps after 1 s.
    std::thread::sleep(Duration::from_millis(1600));
    let sample = || ranks.map(cpu_ticks).iter().copied().collect::<Option<Vec<u64>>>();
    let before = sample().expect("both ranks run 1.6 s after starting");
    let from = Instant::now();
    // The last sample while rank 0 still calibrates (its profile not yet written), up to 2.5 s on.
    let mut after = before.clone();
    while from.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(100));
        match sample() {
            Some(now) if !profile.exists() => after = now,
            _ => break,
        }
    }
    let (r0, r1) = (after[0] - before[0], after[1] - before[1]);
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(r0 >= 20, "rank 0 calibrated for only {r0} ticks of CPU after 1.6 s: too short to judge");
    assert!(4 * r1 < r0, "rank 1 took {r1} ticks of CPU while rank 0 took {r0} calibrating");
}

/// `--sync-bn` under `mpirun -n 2`: batch norm's statistics over the whole global batch, so the
/// weights and running statistics equal a one-process run over the same global batches to 1e-5
/// of each tensor's largest value; by default each rank normalizes its own share and they differ.
#[cfg(feature = "mpi")]
#[test]
fn sync_bn_matches_one_process_and_the_default_keeps_per_rank_statistics() {
    let _job = one_job();
    let dir = tempfile::tempdir().unwrap();
    let args = |m: &Path, extra: &[&str]| -> Vec<String> {
        ["train", "1x28x28-conv3x3x4b0-bn:relu-maxpool2-10", "--epochs", "1", "--batch", "64", "--threads", "1"]
            .iter()
            .chain(&["--seed", "5", "--optimizer", "momentum", "--save", m.to_str().unwrap()])
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let (one, synced, own) = (dir.path().join("one.st"), dir.path().join("sync.st"), dir.path().join("own.st"));
    ok(Command::new(BIN).args(args(&one, &[])).output().unwrap());
    ok(mpirun(&[args(&synced, &["--sync-bn"]), args(&synced, &["--sync-bn"])]));
    ok(mpirun(&[args(&own, &[]), args(&own, &[])]));
    // Each tensor (weights, biases, running mean and variance) by its largest value.
    let tensors = |p: &Path| -> Vec<Vec<f64>> {
        let (_, layers, _, running) = flopnet::model::load_trained(p).unwrap();
        let mut v: Vec<Vec<f64>> = layers.into_iter().flat_map(|l| [l.weight, l.bias]).collect();
        v.push(running.values.iter().map(|&x| x as f64).collect());
        v.retain(|t| !t.is_empty());
        v
    };
    let apart = |a: &[Vec<f64>], b: &[Vec<f64>]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                x.iter().zip(y).fold(0.0f64, |m, (u, v)| m.max((u - v).abs())) / scale
            })
            .fold(0.0, f64::max)
    };
    let (reference, s, o) = (tensors(&one), tensors(&synced), tensors(&own));
    assert!(reference.len() >= 5, "weights and running statistics: {}", reference.len());
    let (sync_apart, own_apart) = (apart(&s, &reference), apart(&o, &reference));
    assert!(sync_apart <= 1e-5, "--sync-bn: {sync_apart} apart from one process");
    assert!(own_apart > 1e-3, "per-rank statistics: only {own_apart} apart from one process");
}
