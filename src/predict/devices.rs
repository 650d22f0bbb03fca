//! Named machines for what-if estimates, from their vendors' published peak figures.
//!
//! These are peaks: dense (no sparsity) throughput and memory bandwidth as specified. A
//! prediction from them is a roofline — the slower of arithmetic at peak and memory traffic at
//! full bandwidth, per phase — and says so: real runs of small networks fall far short of peaks.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Device {
    pub name: &'static str,
    pub description: &'static str,
    /// Peak GFLOP/s for plain f32 arithmetic (vector units / CUDA cores).
    pub fp32_gflops: f64,
    /// Peak GFLOP/s for matrix products in reduced precision on tensor units, if any.
    pub tf32_gflops: Option<f64>,
    pub bf16_gflops: Option<f64>,
    /// Memory bandwidth, GB/s.
    pub bandwidth_gbs: f64,
}

pub const DEVICES: &[Device] = &[
    Device {
        name: "h100",
        description: "NVIDIA H100 SXM5 80 GB (HBM3)",
        fp32_gflops: 67_000.0,
        tf32_gflops: Some(494_700.0),
        bf16_gflops: Some(989_400.0),
        bandwidth_gbs: 3_350.0,
    },
    Device {
        name: "h200",
        description: "NVIDIA H200 SXM 141 GB (HBM3e)",
        fp32_gflops: 67_000.0,
        tf32_gflops: Some(494_700.0),
        bf16_gflops: Some(989_400.0),
        bandwidth_gbs: 4_800.0,
    },
    Device {
        name: "a100",
        description: "NVIDIA A100 SXM4 80 GB (HBM2e)",
        fp32_gflops: 19_500.0,
        tf32_gflops: Some(156_000.0),
        bf16_gflops: Some(312_000.0),
        bandwidth_gbs: 2_039.0,
    },
    Device {
        name: "epyc-9654",
        description: "AMD EPYC 9654, 96 Zen 4 cores at 2.4 GHz base, 12 channels DDR5-4800",
        fp32_gflops: 96.0 * 2.4 * 32.0,
        tf32_gflops: None,
        bf16_gflops: None,
        bandwidth_gbs: 460.8,
    },
    Device {
        name: "xeon-8480",
        description: "Intel Xeon Platinum 8480+, 56 cores at 2.0 GHz base, two AVX-512 FMA units, 8 channels DDR5-4800",
        fp32_gflops: 56.0 * 2.0 * 64.0,
        tf32_gflops: None,
        bf16_gflops: None,
        bandwidth_gbs: 307.2,
    },
];

pub fn find(name: &str) -> Option<&'static Device> {
    let n = name.to_ascii_lowercase();
    DEVICES.iter().find(|d| d.name == n)
}

pub fn names() -> String {
    DEVICES.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}
