//! `count` shows the inference cost of a network with batch normalization beside that of the
//! same network with the normalizations folded into the convolution before them.

use std::process::Command;

fn count_json(spec: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .args(["count", spec, "--batch", "2", "--json"])
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{spec}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn count_prices_inference_with_batch_norm_folded_as_the_folded_network() {
    // Two normalizations fold (after a convolution without an activation, read by nothing
    // else); the one after the residual join stays. Written out folded, the network is the
    // second spec: the convolutions take a bias and the normalization's activation.
    let given = "4x6x6-conv3x3x4p1b0-bn:relu-[conv3x3x4p1b0-bn]-bn-5";
    let folded = "4x6x6-conv3x3x4p1:relu-[conv3x3x4p1:identity]-bn-5";
    let (a, b) = (count_json(given), count_json(folded));
    let inf = &a["inference"];
    assert_eq!((inf["batch"].as_u64(), inf["folded"].as_u64(), inf["kept"].as_u64()), (Some(2), Some(2), Some(1)));
    assert_eq!(inf["folded_flops"], b["inference"]["flops"], "{inf} vs {}", b["inference"]);
    assert_eq!(b["inference"]["folded_flops"], b["inference"]["flops"], "nothing left to fold");
    assert!(inf["flops"].as_u64() > inf["folded_flops"].as_u64());
    // The text report says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet")).args(["count", given, "--batch", "2"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("Inference")).expect("an inference line");
    let num = |v: &serde_json::Value| {
        let s = v.as_u64().unwrap().to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    };
    assert!(line.contains(&num(&inf["flops"])) && line.contains(&num(&inf["folded_flops"])), "{line}");
    assert!(line.contains("2 batch normalizations folded") && line.contains("1 stays"), "{line}");
    // A network without batch normalization has no such line or key.
    assert!(count_json("4x6x6-conv3x3x4-5").get("inference").is_none());
}
