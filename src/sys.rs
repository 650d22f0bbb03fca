//! What the operating system says about this process and machine.

/// Reads a `kB` field of /proc/self/status or /proc/meminfo, in bytes.
fn proc_field(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// `v`, moved into memory the kernel backs with 2 MiB pages where it can (Linux with
/// transparent huge pages in `madvise` or `always` mode; elsewhere `v` itself).
///
/// Training copies each batch's examples out of the whole training set in shuffled order. On
/// 4 KiB pages nearly every example is a TLB miss, and on a virtual machine each miss walks two
/// sets of page tables: gathering a batch of 128 Fashion-MNIST images took ~120 µs here, as
/// long as the step of 784-30-30-10 itself. On 2 MiB pages the set spans ~90 pages instead of
/// ~46,000.
pub fn on_huge_pages(v: Vec<f32>) -> Vec<f32> {
    const HUGE: usize = 2 << 20;
    if v.len() * 4 < 4 * HUGE {
        return v;
    }
    #[cfg(target_os = "linux")]
    {
        // A fresh allocation this large is mapped but untouched: advise first, then fault the
        // pages in by copying.
        let mut out = Vec::<f32>::with_capacity(v.len());
        let start = out.as_ptr() as usize;
        let (a, b) = (start.next_multiple_of(HUGE), (start + v.len() * 4) / HUGE * HUGE);
        if b > a {
            // SAFETY: the range lies inside `out`'s allocation; the advice changes no contents.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
        out.extend_from_slice(&v);
        out
    }
    #[cfg(not(target_os = "linux"))]
    v
}

/// The most memory this process has held resident so far (Linux; None elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    proc_field("/proc/self/status", "VmHWM:")
}

/// The memory this process holds resident now.
pub fn rss_bytes() -> Option<u64> {
    proc_field("/proc/self/status", "VmRSS:")
}

/// Memory the kernel could give this process without swapping: /proc/meminfo's MemAvailable,
/// lowered to what is left under this process's cgroup limit where one is set (containers).
pub fn available_bytes() -> Option<u64> {
    let machine = proc_field("/proc/meminfo", "MemAvailable:");
    match (machine, cgroup_headroom()) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// The cgroup's memory limit less its current use (cgroup v2, then v1); None without a limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let pairs = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ];
    pairs.iter().find_map(|(limit, used)| {
        let limit = read(limit)?;
        // v1 reports "no limit" as a huge number.
        (limit < 1 << 60).then(|| limit.saturating_sub(read(used).unwrap_or(0)))
    })
}

/// The threads a run uses when `--threads` asks for `requested`: every core without it; more
/// than the cores is cut to the cores (extra threads only wait for each other, and a profile
/// measured for them would be one more file in the cache), with a warning that says so.
pub fn threads(requested: Option<usize>) -> (usize, Option<String>) {
    let cores = cores();
    match requested {
        None => (cores, None),
        Some(n) if n > cores => (
            cores,
            Some(format!(
                "--threads {n} is more than this machine's {cores} cores; using {cores} (more threads than cores only wait for each other)"
            )),
        ),
        Some(n) => (n.max(1), None),
    }
}

/// Cores to use by default.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resets the peak-resident figure to the current one, so [`peak_rss_bytes`] then measures from
/// here (Linux 4.0+; returns false where that is not possible).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
