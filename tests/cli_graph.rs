//! Graphs, the model zoo and the spec's resolution order as a user meets them on the command
//! line: bad graphs are one-line errors with exit 2, the fast engine refuses what it does not
//! run yet, zoo models pin torchvision's figures, and counts are exact integers at any size.

use std::process::{Command, Output};

fn flopnet_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).current_dir(dir).args(args).output().expect("the binary runs")
}

fn flopnet(args: &[&str]) -> Output {
    flopnet_in(std::path::Path::new("."), args)
}

fn stdout(args: &[&str]) -> String {
    let out = flopnet(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The one-line message of a refused command, checked for exit code 2.
fn refused(dir: &std::path::Path, args: &[&str]) -> String {
    let out = flopnet_in(dir, args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

fn toml_file(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

const HEAD: &str = "input = [2, 6, 6]\n";

#[test]
fn bad_graphs_are_one_line_errors_that_say_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        |name: &str, kind: &str, inputs: &str| format!("[[layers]]\nname = \"{name}\"\nkind = \"{kind}\"\n{inputs}\n");
    let conv = |name: &str, inputs: &str, stride: usize| {
        format!(
            "[[layers]]\nname = \"{name}\"\nkind = \"conv2d\"\nkernel = 3\nfilters = 2\npadding = 1\nstride = {stride}\n{inputs}\n"
        )
    };
    let tail = "[[layers]]\nkind = \"global_avgpool\"\n[[layers]]\nunits = 3\n";
    let cases = [
        (
            "cycle.toml",
            format!(
                "{HEAD}{}{}{}{tail}",
                conv("a", "inputs = [\"b\"]", 1),
                conv("b", "inputs = [\"a\"]", 1),
                node("s", "add", "inputs = [\"a\", \"b\"]")
            ),
            "read each other in a cycle",
        ),
        (
            "dangling.toml",
            format!("{HEAD}{}{}{tail}", conv("a", "", 1), node("s", "add", "inputs = [\"a\", \"nope\"]")),
            "reads `nope`, which is no node's name",
        ),
        (
            "mismatch.toml",
            format!("{HEAD}{}{}{tail}", conv("a", "", 2), node("s", "add", "inputs = [\"a\", \"input\"]")),
            "adds 2x3x3 and 2x6x6",
        ),
        ("twice.toml", format!("{HEAD}{}{}{tail}", conv("a", "", 1), conv("a", "", 1)), "two nodes are named `a`"),
        (
            "unused.toml",
            format!("{HEAD}{}{}{tail}", conv("a", "", 1), conv("b", "inputs = [\"input\"]", 1)),
            "`a` is computed but nothing reads it",
        ),
    ];
    for (name, body, want) in cases {
        let path = toml_file(&dir, name, &body);
        let err = refused(dir.path(), &["count", &path]);
        assert!(err.contains(want), "{name}: got `{err}`, wanted `{want}`");
    }
    for (spec, want) in [
        ("2x6x6-[conv3x3x4s2p1]-3", "adds 4x3x3 and 2x6x6"),
        ("2x6x6-[conv3x3x2p1-3", "never closed"),
        ("2x6x6-conv3x3x2p1]-3", "closes no `[`"),
        ("2x6x6-[conv3x3x2p1]x-3", "only an activation may"),
        ("3x6x6-conv3x3x4g2-3", "2 groups do not divide its 3 input channels"),
    ] {
        let err = refused(std::path::Path::new("."), &["count", spec]);
        assert!(err.contains(want), "{spec}: got `{err}`, wanted `{want}`");
    }
}

#[test]
fn a_toml_graph_counts_as_its_compact_line() {
    let dir = tempfile::tempdir().unwrap();
    let body = "input = [2, 6, 6]\n\
        [[layers]]\nname = \"c\"\nkind = \"conv2d\"\nkernel = 3\nfilters = 2\npadding = 1\nbias = false\n\
        [[layers]]\nname = \"n\"\nkind = \"batchnorm\"\nactivation = \"relu\"\n\
        [[layers]]\nname = \"sum\"\nkind = \"add\"\ninputs = [\"n\", \"input\"]\nactivation = \"relu\"\n\
        [[layers]]\nkind = \"global_avgpool\"\n[[layers]]\nunits = 3\n";
    let path = toml_file(&dir, "res.toml", body);
    let file = stdout(&["count", &path, "--batch", "4", "--json"]);
    let line = stdout(&["count", "2x6x6-[conv3x3x2p1b0-bn:relu]:relu-gap-3", "--batch", "4", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let w: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["per_batch"], w["per_batch"]);
    assert_eq!(v["layers"][2]["kind"], "add");
    assert_eq!(v["layers"][2]["reads"], serde_json::json!(["n", "input"]));
    let out = stdout(&["verify", &path, "--batch", "3", "--examples", "7"]);
    assert!(out.contains("all 5 rows match"), "{out}");
}

#[test]
fn the_fast_engine_runs_graphs_and_the_new_kinds() {
    let quick = ["--steps", "1", "--runs", "1", "--batch", "2"];
    for args in [
        vec!["bench", "resnet20"],
        vec!["bench", "1x28x28-conv3x3x4p1b0-10"],
        vec!["bench", "1x28x28-maxpool3s2p1-conv3x3x4p1:relu6-conv3x3x4g2p1-drop0.5-10"],
        vec!["bench", "mobilenet_v2", "--input", "3x32x32", "--classes", "10", "--forward-only"],
    ] {
        let args: Vec<&str> = args.into_iter().chain(quick).collect();
        let out = stdout(&args);
        assert!(out.contains("samples/s"), "{args:?}: {out}");
    }
    let out = stdout(&["train", "1x28x28-bn-32:relu-bn:relu-drop0.2-10", "--epochs", "1"]);
    assert!(out.contains("test: loss"), "{out}");
}

/// torchvision's published parameters and figure (forward MACs of convolutions and matrix
/// products at 3×224×224), and He et al.'s CIFAR ResNets (Table 6: 0.27M ... 1.7M).
#[test]
fn zoo_models_match_the_published_figures() {
    let table = stdout(&["zoo"]);
    let row = |name: &str| -> (u128, u128) {
        let line =
            table.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name}"));
        let n: Vec<u128> =
            line.split_whitespace().skip(2).take(2).map(|s| s.replace(',', "").parse().unwrap()).collect();
        (n[0], n[1])
    };
    // Parameters exactly; MACs exactly as torch's FlopCounterMode measures them (tools/zoo_check.py).
    let pinned: [(&str, u128, u128); 24] = [
        ("alexnet", 61_100_840, 714_188_480),
        ("vgg11", 132_863_336, 7_609_090_048),
        ("vgg11_bn", 132_868_840, 7_609_090_048),
        ("vgg13", 133_047_848, 11_308_466_176),
        ("vgg13_bn", 133_053_736, 11_308_466_176),
        ("vgg16", 138_357_544, 15_470_264_320),
        ("vgg16_bn", 138_365_992, 15_470_264_320),
        ("vgg19", 143_667_240, 19_632_062_464),
        ("vgg19_bn", 143_678_248, 19_632_062_464),
        ("resnet18", 11_689_512, 1_814_073_344),
        ("resnet34", 21_797_672, 3_663_761_408),
        ("resnet50", 25_557_032, 4_089_184_256),
        ("resnet101", 44_549_160, 7_801_405_440),
        ("resnet152", 60_192_808, 11_513_626_624),
        ("squeezenet1_0", 1_248_424, 818_924_576),
        ("squeezenet1_1", 1_235_496, 349_151_936),
        ("densenet121", 7_978_856, 2_834_161_664),
        ("mobilenet_v2", 3_504_872, 300_774_272),
        ("lenet5", 61_706, 416_520),
        ("resnet20", 269_722, 40_551_040),
        ("resnet32", 464_154, 68_862_592),
        ("resnet44", 658_586, 97_174_144),
        ("resnet56", 853_018, 125_485_696),
        ("resnet110", 1_727_962, 252_887_680),
    ];
    for (name, params, macs) in pinned {
        assert_eq!(row(name), (params, macs), "{name}");
    }
    // The rounded figures, as published.
    for (name, g) in
        [("resnet18", 1.814), ("resnet50", 4.089), ("vgg16", 15.47), ("mobilenet_v2", 0.301), ("alexnet", 0.714)]
    {
        let got = row(name).1 as f64 / 1e9;
        assert!((got - g).abs() < 0.0006 * g.max(1.0), "{name}: {got} G");
    }
}

#[test]
fn zoo_models_take_an_input_and_a_class_count() {
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&["count", "resnet50", "--input", "3x64x64", "--classes", "10", "--json"]))
            .unwrap();
    let last = v["layers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outputs"], 10);
    assert_eq!(v["spec"], "resnet50 (3x64x64, 10 classes)");
    let err = refused(std::path::Path::new("."), &["count", "alexnet", "--input", "3x32x32"]);
    assert!(err.contains("alexnet cannot take the input 3x32x32"), "{err}");
    let err = refused(std::path::Path::new("."), &["count", "784-10", "--classes", "5"]);
    assert!(err.contains("not one"), "{err}");
}

/// A whole ImageNet run of ResNet-152 in exact integers, and a run past what a u128 holds is
/// a clear error, never a wrapped number (issue 18, item 9).
#[test]
fn count_json_is_exact_at_any_size() {
    let out =
        stdout(&["count", "784-800-10", "--batch", "256", "--examples", "1281167000", "--epochs", "90000", "--json"]);
    let total = out.split("\"training\"").nth(1).unwrap();
    let flop: u128 = total.split("\"flop\": ").nth(1).unwrap().split([',', '\n']).next().unwrap().parse().unwrap();
    assert!(flop > u64::MAX as u128, "{flop} needs more than 64 bits");
    // The same run, counted as one epoch and scaled: exact to the unit.
    let one = stdout(&["count", "784-800-10", "--batch", "256", "--examples", "1281167000", "--epochs", "1", "--json"]);
    let per_epoch: u128 = one
        .split("\"training\"")
        .nth(1)
        .unwrap()
        .split("\"flop\": ")
        .nth(1)
        .unwrap()
        .split([',', '\n'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(flop, per_epoch * 90_000);
    assert!(
        stdout(&["count", "resnet152", "--batch", "256", "--examples", "1281167", "--epochs", "90", "--json"])
            .contains("\"spec\": \"resnet152\"")
    );
    let err = refused(
        std::path::Path::new("."),
        &["count", "784-10", "--examples", "18446744073709551615", "--epochs", "18446744073709551615"],
    );
    assert!(err.contains("would pass 2^128"), "{err}");
}

/// A file named like a spec does not change what the spec means; a path or `./` reads it
/// (issue 18, item 16).
#[test]
fn a_file_named_like_a_spec_does_not_shadow_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("784-10"), "input = 784\n[[layers]]\nunits = 3\n").unwrap();
    let out = flopnet_in(dir.path(), &["count", "784-10", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 7850, "784-10 is the spec, not the file");
    let out = flopnet_in(dir.path(), &["count", "./784-10", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 2355, "./784-10 is the file");
    // A file that is not a spec is still read by its bare name.
    std::fs::write(dir.path().join("mynet"), "input = 784\n[[layers]]\nunits = 3\n").unwrap();
    assert!(flopnet_in(dir.path(), &["count", "mynet"]).status.success());
}

/// TOML errors name the field and what it should be, not serde's enum names (issue 18, item 16).
#[test]
fn toml_errors_do_not_leak_serde_internals() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        ("input = \"abc\"\n[[layers]]\nunits = 3\n", "`input` = \"abc\"; expected a feature count"),
        ("input = [1, 2]\n[[layers]]\nunits = 3\n", "expected a feature count"),
        (
            "input = [1, 8, 8]\n[[layers]]\nkind = \"conv2d\"\nkernel = \"big\"\nfilters = 2\n[[layers]]\nunits = 3\n",
            "`kernel` = \"big\"; expected a number or two",
        ),
        (
            "input = [1, 8, 8]\n[[layers]]\nkind = \"conv2d\"\nkernel = 3\nfilters = 2\npadding = [1]\n[[layers]]\nunits = 3\n",
            "padding = [1]; expected a number or \"same\"",
        ),
    ] {
        let path = toml_file(&dir, "net.toml", body);
        let err = refused(dir.path(), &["count", &path]);
        assert!(
            err.contains(want) && !err.contains("untagged") && !err.contains("Toml"),
            "got `{err}`, wanted `{want}`"
        );
    }
}

#[test]
fn verify_passes_on_zoo_graphs() {
    for args in [
        vec!["verify", "resnet20", "--batch", "2"],
        vec!["verify", "mobilenet_v2", "--input", "3x32x32", "--batch", "2"],
    ] {
        let out = stdout(&args);
        assert!(out.contains("rows match: measured == analytic"), "{args:?}: {out}");
    }
}

#[test]
fn explain_says_what_joins_batch_norm_and_depthwise_cost() {
    let out = stdout(&["explain", "mobilenet_v2", "--input", "3x32x32"]);
    for want in ["residual join", "batch normalization", "depthwise"] {
        assert!(out.contains(want), "explain lacks `{want}`");
    }
}

/// explain's words give a convolution's additions as the ledger counts them: with a bias, one per
/// product; without (`b0`), one fewer per output, and it says there is no bias.
#[test]
fn explain_gives_a_bias_free_convolution_its_own_additions() {
    for (spec, add, words) in [
        ("3x8x8-conv3x3x4b0-10", 3744, "3,888 multiplications, and 3,744 additions (26 to sum each window; no bias)"),
        (
            "3x8x8-conv3x3x4-10",
            3888,
            "3,888 multiplications, and as many additions (26 to sum each window, 1 for the bias)",
        ),
    ] {
        let json: serde_json::Value = serde_json::from_str(&stdout(&["count", spec, "--json"])).unwrap();
        assert_eq!(json["layers"][0]["forward"]["add"], add, "{spec}");
        let text = stdout(&["explain", spec]);
        assert!(text.contains(words), "{spec}:\n{text}");
    }
}
