//! `FLOPNET_SIMD` at the command line: a path the CPU runs is used and reported, anything else
//! is refused before any work, with the choices, exit code 2.

use std::process::Command;

fn flopnet(simd: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).env("FLOPNET_SIMD", simd).args(args).output().unwrap()
}

#[test]
fn an_unknown_path_is_refused_with_the_choices() {
    let out = flopnet("avx1024", &["count", "784-10"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("FLOPNET_SIMD=avx1024") && err.contains("scalar, avx2, avx512"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_reports_the_path_it_ran_and_its_ceiling() {
    for path in flopnet::engine::simd::Path::ALL {
        if !path.available() {
            let out = flopnet(path.name(), &["count", "784-10"]);
            assert_eq!(out.status.code(), Some(2), "{path}: {}", String::from_utf8_lossy(&out.stderr));
            eprintln!("kernel path {path}: refused, this CPU lacks it");
            continue;
        }
        let out = flopnet(
            path.name(),
            &[
                "bench",
                "20-10",
                "--batch",
                "4",
                "--runs",
                "1",
                "--steps",
                "3",
                "--json",
                "--threads",
                "1",
                "--forward-only",
            ],
        );
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["simd"], path.name());
        assert!(v["fma_ceiling_gflops"].as_f64().unwrap() > 0.0);
    }
}
