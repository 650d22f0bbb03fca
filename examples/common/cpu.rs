//! What the kernel-timing examples share (each includes this file with `#[path]`).

/// This thread's CPU time, in seconds: time spent descheduled (a neighbour on the shared cores)
/// does not count, so a one-thread timing is the code's own.
pub fn cpu_now() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the timespec only.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
