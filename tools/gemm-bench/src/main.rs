//! gemm-bench: time single-precision C = op(A)·op(B) at flopnet's shapes for several kernel
//! crates, 1 and 2 threads. Standalone tool (own `[workspace]`), see README.md.
//!
//! Shapes are given per dense layer as (M, K, N) = (batch, in, out), all matrices row-major,
//! same conventions as tools/gemm-bench/sgemm_shapes.py:
//!   NN  forward      Y[M,N]  = X[M,K]  · W[K,N]
//!   NT  input grad   dX[M,K] = dY[M,N] · W[K,N]ᵀ      (W read transposed via strides)
//!   TN  weight grad  dW[K,N] = X[M,K]ᵀ · dY[M,N]      (inner dimension = batch)
//! FLOPs are 2·M·K·N in all three cases.
//!
//! Output: one CSV line per (method, op, shape) on stdout (and --csv FILE), human summary on stderr.

use std::hint::black_box;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// A strided GEMM problem: dst[m×n] = lhs[m×k] · rhs[k×n]   (element (i,j) at i*rs + j*cs)
// ---------------------------------------------------------------------------------------------
#[derive(Clone, Copy)]
struct Gemm {
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
}
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

impl Gemm {
    /// Sub-problem on output columns [j0, j1).
    fn cols(self, j0: usize, j1: usize) -> Gemm {
        unsafe {
            Gemm {
                n: j1 - j0,
                b: self.b.offset(j0 as isize * self.csb),
                c: self.c.offset(j0 as isize * self.csc),
                ..self
            }
        }
    }
    /// Sub-problem on output rows [i0, i1).
    fn rows(self, i0: usize, i1: usize) -> Gemm {
        unsafe {
            Gemm {
                m: i1 - i0,
                a: self.a.offset(i0 as isize * self.rsa),
                c: self.c.offset(i0 as isize * self.rsc),
                ..self
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// matrixmultiply 0.3: sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
/// computes C ← alpha·A·B + beta·C; beta = 0 means C is not read.
#[inline]
fn mm(g: Gemm) {
    unsafe {
        matrixmultiply::sgemm(
            g.m, g.k, g.n, 1.0, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, 0.0, g.c, g.rsc, g.csc,
        )
    }
}

/// gemm 0.19: gemm(m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs,
/// rhs_rs, alpha, beta, conj_dst, conj_lhs, conj_rhs, parallelism)
/// computes dst ← alpha·dst + beta·lhs·rhs (alpha ignored when read_dst = false).
/// NOTE the argument order: (m, n, k) and COLUMN stride before row stride.
#[inline]
fn gemm_crate(g: Gemm, par: gemm::Parallelism) {
    unsafe {
        gemm::gemm(
            g.m, g.n, g.k, g.c, g.csc, g.rsc, false, g.a, g.csa, g.rsa, g.b, g.csb, g.rsb, 0.0f32,
            1.0f32, false, false, false, par,
        )
    }
}

/// faer 0.24: linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, alpha, par)
/// with views from MatRef::from_raw_parts(ptr, nrows, ncols, row_stride, col_stride).
#[inline]
fn faer_mm(g: Gemm, par: faer::Par) {
    unsafe {
        let a = faer::MatRef::<f32>::from_raw_parts(g.a, g.m, g.k, g.rsa, g.csa);
        let b = faer::MatRef::<f32>::from_raw_parts(g.b, g.k, g.n, g.rsb, g.csb);
        let c = faer::MatMut::<f32>::from_raw_parts_mut(g.c, g.m, g.n, g.rsc, g.csc);
        faer::linalg::matmul::matmul(c, faer::Accum::Replace, a, b, 1.0f32, par);
    }
}

/// "Manual 2-thread split": single-threaded matrixmultiply on two halves of the OUTPUT, run with
/// rayon::join. Splits the larger output dimension (columns if n >= m, else rows), at a multiple
/// of 8. Each output element is computed by exactly the same single-threaded code path and
/// K-order as the unsplit call, so the result is bitwise identical to `mm` (checked by --check).
#[inline]
fn split2(g: Gemm) {
    if g.n >= g.m {
        let h = ((g.n / 2 + 7) / 8 * 8).min(g.n);
        if h == 0 || h == g.n {
            return mm(g);
        }
        rayon::join(|| mm(g.cols(0, h)), || mm(g.cols(h, g.n)));
    } else {
        let h = ((g.m / 2 + 7) / 8 * 8).min(g.m);
        if h == 0 || h == g.m {
            return mm(g);
        }
        rayon::join(|| mm(g.rows(0, h)), || mm(g.rows(h, g.m)));
    }
}

/// Naive-but-vectorisable loops, runtime-dispatched to an AVX2+FMA copy when the CPU has it
/// (the crate is compiled for baseline x86-64, i.e. SSE2 only, like the real build).
fn naive(g: Gemm) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return unsafe { naive_avx2(g) };
        }
    }
    unsafe { naive_body::<false>(g) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn naive_avx2(g: Gemm) {
    unsafe { naive_body::<true>(g) }
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
unsafe fn naive_body<const FMA: bool>(g: Gemm) {
    unsafe {
        if g.csb == 1 && g.csc == 1 {
            // "axpy" form: C[i,:] = Σ_p A[i,p] · B[p,:]   (NN and TN; contiguous rows)
            for i in 0..g.m {
                let crow = std::slice::from_raw_parts_mut(g.c.offset(i as isize * g.rsc), g.n);
                crow.fill(0.0);
                for p in 0..g.k {
                    let a = *g.a.offset(i as isize * g.rsa + p as isize * g.csa);
                    let brow = std::slice::from_raw_parts(g.b.offset(p as isize * g.rsb), g.n);
                    for (c, &b) in crow.iter_mut().zip(brow) {
                        *c = fmadd::<FMA>(a, b, *c);
                    }
                }
            }
        } else if g.csa == 1 && g.rsb == 1 {
            // "dot" form (NT): C[i,j] = <A[i,:], B[:,j]>, both contiguous; 32 lanes of partial sums
            // (fixed order, so deterministic) to let LLVM vectorise the reduction.
            for i in 0..g.m {
                let arow = std::slice::from_raw_parts(g.a.offset(i as isize * g.rsa), g.k);
                for j in 0..g.n {
                    let bcol = std::slice::from_raw_parts(g.b.offset(j as isize * g.csb), g.k);
                    // 32 lanes = 4 independent AVX accumulators (hides FMA latency)
                    let mut acc = [0.0f32; 32];
                    let (ac, ar) = (arow.chunks_exact(32), arow.chunks_exact(32).remainder());
                    let br = bcol.chunks_exact(32).remainder();
                    for (x, y) in ac.zip(bcol.chunks_exact(32)) {
                        let x: &[f32; 32] = x.try_into().unwrap();
                        let y: &[f32; 32] = y.try_into().unwrap();
                        for l in 0..32 {
                            acc[l] = fmadd::<FMA>(x[l], y[l], acc[l]);
                        }
                    }
                    let mut s = 0.0f32;
                    for (x, y) in ar.iter().zip(br) {
                        s = fmadd::<FMA>(*x, *y, s);
                    }
                    let mut w = 16;
                    while w > 0 {
                        for l in 0..w {
                            acc[l] += acc[l + w];
                        }
                        w /= 2;
                    }
                    let s = s + acc[0];
                    *g.c.offset(i as isize * g.rsc + j as isize * g.csc) = s;
                }
            }
        } else {
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut s = 0.0f32;
                    for p in 0..g.k {
                        s = fmadd::<FMA>(
                            *g.a.offset(i as isize * g.rsa + p as isize * g.csa),
                            *g.b.offset(p as isize * g.rsb + j as isize * g.csb),
                            s,
                        );
                    }
                    *g.c.offset(i as isize * g.rsc + j as isize * g.csc) = s;
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Method {
    Naive,
    Mm1,
    Split2,
    MmT, // matrixmultiply built with feature "threading"; thread count from MATMUL_NUM_THREADS
    Gemm1,
    Gemm2,
    Faer1,
    Faer2,
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "naive" => Method::Naive,
            "mm1" => Method::Mm1,
            "split2" => Method::Split2,
            "mmT" | "mmt" => Method::MmT,
            "gemm1" => Method::Gemm1,
            "gemm2" => Method::Gemm2,
            "faer1" => Method::Faer1,
            "faer2" => Method::Faer2,
            _ => panic!("unknown method {s}"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Method::Naive => "naive",
            Method::Mm1 => "mm1",
            Method::Split2 => "split2",
            Method::MmT => "mmT",
            Method::Gemm1 => "gemm1",
            Method::Gemm2 => "gemm2",
            Method::Faer1 => "faer1",
            Method::Faer2 => "faer2",
        }
    }
    fn threads(self) -> usize {
        match self {
            Method::Naive | Method::Mm1 | Method::Gemm1 | Method::Faer1 => 1,
            Method::Split2 | Method::Gemm2 | Method::Faer2 => 2,
            Method::MmT => mm_threads(),
        }
    }
    fn run(self, g: Gemm) {
        match self {
            Method::Naive => naive(g),
            Method::Mm1 | Method::MmT => mm(g),
            Method::Split2 => split2(g),
            Method::Gemm1 => gemm_crate(g, gemm::Parallelism::None),
            Method::Gemm2 => gemm_crate(g, gemm::Parallelism::Rayon(2)),
            Method::Faer1 => faer_mm(g, faer::Par::Seq),
            Method::Faer2 => faer_mm(g, faer::Par::rayon(2)),
        }
    }
}

fn mm_threads() -> usize {
    if cfg!(feature = "mm-threading") {
        std::env::var("MATMUL_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map(|x| x.get()).unwrap_or(1))
            .clamp(1, 4)
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Op {
    NN,
    NT,
    TN,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::NN => "NN",
            Op::NT => "NT",
            Op::TN => "TN",
        }
    }
}

/// Forward layer shapes (batch M, in K, out N) of the flopnet suite, then square references.
const LAYERS: &[(usize, usize, usize)] = &[
    (1, 30, 30),
    (32, 30, 30),
    (1, 784, 30),
    (32, 784, 30),
    (128, 784, 30),
    (32, 1024, 30),
    (128, 128, 100),
    (128, 800, 10),
    (128, 256, 128),
    (1, 784, 800),
    (128, 784, 256),
    (32, 784, 800),
    (128, 784, 800),
    (256, 784, 800),
];
const SQUARES: &[usize] = &[1024, 2048];

struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn rand_vec(len: usize, seed: &mut u64) -> Vec<f32> {
    (0..len)
        .map(|_| {
            // xorshift64*, uniform in [-1, 1)
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            let r = seed.wrapping_mul(0x2545F4914F6CDD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Builds the strided GEMM for layer (M,K,N) and op; see module doc for layouts.
fn problem(op: Op, (m, k, n): (usize, usize, usize), seed: &mut u64) -> (Buffers, Gemm) {
    let (la, lb, lc) = match op {
        Op::NN => (m * k, k * n, m * n), // X[m,k], W[k,n], Y[m,n]
        Op::NT => (m * n, k * n, m * k), // dY[m,n], W[k,n], dX[m,k]
        Op::TN => (m * k, m * n, k * n), // X[m,k], dY[m,n], dW[k,n]
    };
    let mut buf = Buffers { a: rand_vec(la, seed), b: rand_vec(lb, seed), c: vec![0.0; lc] };
    let (a, b, c) = (buf.a.as_ptr(), buf.b.as_ptr(), buf.c.as_mut_ptr());
    let (k_, n_) = (k as isize, n as isize);
    let g = match op {
        // Y = X·W: lhs X [m×k] (rs k, cs 1); rhs W [k×n] (rs n, cs 1); dst [m×n] (rs n, cs 1)
        Op::NN => Gemm { m, k, n, a, rsa: k_, csa: 1, b, rsb: n_, csb: 1, c, rsc: n_, csc: 1 },
        // dX = dY·Wᵀ: lhs dY [m×n] (rs n, cs 1); rhs Wᵀ [n×k] (rs 1, cs n); dst [m×k] (rs k, cs 1)
        Op::NT => Gemm { m, k: n, n: k, a, rsa: n_, csa: 1, b, rsb: 1, csb: n_, c, rsc: k_, csc: 1 },
        // dW = Xᵀ·dY: lhs Xᵀ [k×m] (rs 1, cs k); rhs dY [m×n] (rs n, cs 1); dst [k×n] (rs n, cs 1)
        Op::TN => Gemm { m: k, k: m, n, a, rsa: 1, csa: k_, b, rsb: n_, csb: 1, c, rsc: n_, csc: 1 },
    };
    (buf, g)
}

/// f64 reference for correctness checks.
fn reference(g: Gemm) -> Vec<f64> {
    let mut out = vec![0.0f64; g.m * g.n];
    unsafe {
        for i in 0..g.m {
            for p in 0..g.k {
                let a = *g.a.offset(i as isize * g.rsa + p as isize * g.csa) as f64;
                for j in 0..g.n {
                    out[i * g.n + j] += a * *g.b.offset(p as isize * g.rsb + j as isize * g.csb) as f64;
                }
            }
        }
    }
    out
}

fn read_c(g: Gemm) -> Vec<f32> {
    let mut v = Vec::with_capacity(g.m * g.n);
    for i in 0..g.m {
        for j in 0..g.n {
            v.push(unsafe { *g.c.offset(i as isize * g.rsc + j as isize * g.csc) });
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone());
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--help") || has("-h") {
        eprintln!(
            "gemm-bench [--methods naive,mm1,split2,gemm1,gemm2,faer1,faer2|mmT] [--ops NN,NT,TN]\n\
             \x20          [--reps 11] [--batch-ms 20] [--label run1] [--csv out.csv] [--check] [--quick]\n\
             mmT needs the binary built with --features mm-threading; set MATMUL_NUM_THREADS=1|2."
        );
        return;
    }
    let methods: Vec<Method> = get("--methods")
        .unwrap_or("naive,mm1,split2,gemm1,gemm2,faer1,faer2".into())
        .split(',')
        .map(Method::parse)
        .collect();
    if methods.contains(&Method::MmT) && !cfg!(feature = "mm-threading") {
        panic!("method mmT needs --features mm-threading");
    }
    if cfg!(feature = "mm-threading") && methods.iter().any(|m| *m == Method::Split2) && mm_threads() > 1 {
        panic!("split2 in a threading build needs MATMUL_NUM_THREADS=1 (else nested threading)");
    }
    let ops: Vec<Op> = get("--ops")
        .unwrap_or("NN,NT,TN".into())
        .split(',')
        .map(|s| match s {
            "NN" => Op::NN,
            "NT" => Op::NT,
            "TN" => Op::TN,
            _ => panic!("unknown op {s}"),
        })
        .collect();
    let reps: usize = get("--reps").map(|s| s.parse().unwrap()).unwrap_or(11);
    let batch_ms: f64 = get("--batch-ms").map(|s| s.parse().unwrap()).unwrap_or(20.0);
    let label = get("--label").unwrap_or("run".into());
    let check = has("--check");
    let quick = has("--quick");
    let mut csv = String::new();

    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();

    let mut jobs: Vec<(Op, (usize, usize, usize))> = Vec::new();
    for &op in &ops {
        if op == Op::NN {
            for &s in SQUARES {
                if !quick {
                    jobs.push((op, (s, s, s)));
                }
            }
        }
        for &l in LAYERS {
            jobs.push((op, l));
        }
    }

    let header = "label,method,threads,op,M,K,N,us_per_call,gflops_median,gflops_p10,gflops_p90,inner";
    println!("{header}");
    eprintln!(
        "gemm-bench: label={label} reps={reps} batch_ms={batch_ms} mm-threading={} MATMUL_NUM_THREADS={:?}",
        cfg!(feature = "mm-threading"),
        std::env::var("MATMUL_NUM_THREADS").ok()
    );
    let mut seed = 0x9E3779B97F4A7C15u64;
    for (op, (m, k, n)) in jobs {
        let (_buf, g) = problem(op, (m, k, n), &mut seed);
        let flops = 2.0 * (m * k * n) as f64;
        // naive is only meant for small shapes; skip it where it would take seconds
        let ms: Vec<Method> = methods
            .iter()
            .copied()
            .filter(|&me| !(me == Method::Naive && m * k * n > 256 * 784 * 800))
            .collect();

        if check {
            let small = m * k * n <= 256 * 784 * 800;
            let refv = if small { Some(reference(g)) } else { None };
            Method::Mm1.run(g);
            let mm_out = read_c(g);
            let mut outs: Vec<(Method, Vec<f32>)> = Vec::new();
            for &me in &ms {
                unsafe { std::ptr::write_bytes(g.c, 0xff, g.m * g.n) }; // NaN-fill
                me.run(g);
                let out = read_c(g);
                let err = match &refv {
                    Some(r) => out
                        .iter()
                        .zip(r)
                        .map(|(&x, &y)| ((x as f64 - y).abs() / (1.0 + y.abs())) as f32)
                        .fold(0.0f32, |a, b| if b.is_nan() || a.is_nan() { f32::NAN } else { a.max(b) }),
                    None => out
                        .iter()
                        .zip(&mm_out)
                        .map(|(&x, &y)| (x - y).abs() / (1.0 + y.abs()))
                        .fold(0.0f32, |a, b| if b.is_nan() || a.is_nan() { f32::NAN } else { a.max(b) }),
                };
                let bitwise = out.iter().zip(&mm_out).all(|(x, y)| x.to_bits() == y.to_bits());
                eprintln!(
                    "check {} {m}x{k}x{n} {:7}: max rel err {:.2e} vs {}  bitwise==mm1: {bitwise}",
                    op.name(),
                    me.name(),
                    err,
                    if small { "f64 ref" } else { "mm1" }
                );
                assert!(err < 1e-3, "wrong result");
                outs.push((me, out));
            }
            // are the crates' own 2-thread paths bitwise equal to their 1-thread paths?
            for (two, one) in [(Method::Gemm2, Method::Gemm1), (Method::Faer2, Method::Faer1)] {
                let a = outs.iter().find(|o| o.0 == two);
                let b = outs.iter().find(|o| o.0 == one);
                if let (Some(a), Some(b)) = (a, b) {
                    let same = a.1.iter().zip(&b.1).all(|(x, y)| x.to_bits() == y.to_bits());
                    eprintln!("check {} {m}x{k}x{n} {} bitwise=={}: {same}", op.name(), two.name(), one.name());
                }
            }
            continue;
        }

        // calibrate each method: warm-up, then inner calls so a batch lasts >= batch_ms
        let mut inner = Vec::new();
        for &me in &ms {
            me.run(g);
            me.run(g);
            let t = Instant::now();
            me.run(g);
            let one = t.elapsed().as_secs_f64().max(1e-8);
            let it = ((batch_ms * 1e-3 / one).ceil() as usize).max(1);
            for _ in 0..it.min(50) {
                me.run(g);
            }
            inner.push(it);
        }
        // timed batches, interleaved round-robin over methods so slow drifts hit all alike
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); ms.len()];
        for _ in 0..reps {
            for (mi, &me) in ms.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..inner[mi] {
                    me.run(black_box(g));
                }
                times[mi].push(t.elapsed().as_secs_f64() / inner[mi] as f64);
            }
        }
        let mut line = format!("{} {m:4}x{k:4}x{n:4}", op.name());
        for (mi, &me) in ms.iter().enumerate() {
            let t = &mut times[mi];
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = t[t.len() / 2];
            let p10 = t[t.len() / 10];
            let p90 = t[(t.len() * 9) / 10];
            let row = format!(
                "{label},{},{},{},{m},{k},{n},{:.3},{:.3},{:.3},{:.3},{}",
                me.name(),
                me.threads(),
                op.name(),
                med * 1e6,
                flops / med / 1e9,
                flops / p90 / 1e9,
                flops / p10 / 1e9,
                inner[mi]
            );
            println!("{row}");
            csv.push_str(&row);
            csv.push('\n');
            line.push_str(&format!("  {}={:.1}", me.name(), flops / med / 1e9));
        }
        eprintln!("{line}");
    }
    if let Some(path) = get("--csv") {
        std::fs::write(path, format!("{header}\n{csv}")).unwrap();
    }
}
