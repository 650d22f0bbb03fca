//! The pictures: every SVG parses as XML and holds the series, labels and totals it promises,
//! every PNG decodes at its stated size, and the HTML report is one self-contained page.

use flopnet::cost::{Config, Ledger};
use flopnet::plot::{self, CostChart, Curves, Diagram, EpochRow, Format, Metrics, Picture, Scale, TrainingPlot};
use flopnet::report::format::thousands;
use flopnet::spec::{self, Activation, Defaults, Loss, Optimizer, Spec};
use flopnet::train::EpochReport;
use std::path::Path;
use std::process::{Command, Output};

fn net(s: &str) -> Spec {
    spec::parse(s, Defaults { hidden: Activation::Sigmoid, output: Activation::Softmax }).unwrap()
}

fn ledger(s: &str, batch: usize, optimizer: Optimizer) -> Ledger {
    Ledger::new(&net(s), &Config { loss: Loss::Ce, optimizer, batch, examples: 1000, epochs: 2 })
}

/// Every text node of an SVG document, trimmed; panics if it is not well-formed XML.
fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("SVG does not parse: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn count_tags(svg: &str, tag: &str) -> usize {
    roxmltree::Document::parse(svg).unwrap().descendants().filter(|n| n.has_tag_name(tag)).count()
}

fn has(texts: &[String], want: &str) -> bool {
    texts.iter().any(|t| t.contains(want))
}

fn assert_has(texts: &[String], wants: &[&str]) {
    for w in wants {
        assert!(has(texts, w), "missing text {w:?} in {texts:#?}");
    }
}

/// Checks the PNG signature and IHDR, decodes the pixels and returns (width, height).
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("PNG header decodes");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG pixels decode");
    assert_eq!((info.width, info.height), (w, h));
    let pixels = &buf[..info.buffer_size()];
    let ink = pixels.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count();
    assert!(ink > 1000, "the picture is drawn, not blank ({ink} dark pixels)");
    (w, h)
}

fn rows(n: usize, val: bool, predicted: bool) -> Vec<EpochRow> {
    (1..=n)
        .map(|e| EpochRow {
            epoch: e,
            train_loss: 1.0 / e as f64,
            train_acc: 0.5 + 0.04 * e as f64,
            val_loss: val.then_some(1.1 / e as f64),
            val_acc: val.then_some(0.45 + 0.04 * e as f64),
            seconds: 2.0,
            gflops: 3.0 + e as f64 * 0.1,
            predicted_seconds: predicted.then_some(1.8),
        })
        .collect()
}

#[test]
fn cost_chart_svg_has_every_segment_layer_and_the_totals() {
    let l = ledger("784-30-30-10", 32, Optimizer::Adam);
    let svg = plot::svg(&CostChart::new(&l, Scale::Linear)).unwrap();
    let texts = svg_texts(&svg);
    assert_has(&texts, &plot_categories());
    assert_has(&texts, &["layer 1 (784→30)", "layer 2 (30→30)", "layer 3 (30→10)", "loss (ce)", "FLOPs per batch"]);
    let total = thousands(l.per_batch.total.flop());
    assert_has(&texts, &[&format!("{} in all", total), &format!("forward {}", thousands(l.per_batch.forward.flop()))]);
    assert_has(&texts, &[&format!("backward {}", thousands(l.per_batch.backward.flop()))]);
    // Each layer's bar is labelled with its own total.
    let c = &l.layers[0];
    assert_has(&texts, &[&thousands(c.forward.flop() + c.backward.total.flop() + c.update.flop())]);
    assert!(!has(&texts, "log scale"));
    let log = svg_texts(&plot::svg(&CostChart::new(&l, Scale::Log)).unwrap());
    assert_has(&log, &["log scale", "forward", "loss (ce)", &format!("{} in all", total)]);
}

fn plot_categories() -> Vec<&'static str> {
    vec!["forward", "backward δ", "backward dW", "backward db", "backward dX", "update", "loss"]
}

#[test]
fn cost_chart_png_decodes_at_its_size() {
    let chart = CostChart::new(&ledger("30-30-30", 1, Optimizer::Sgd), Scale::Log);
    let bytes = plot::render(&chart, Format::Png).unwrap();
    assert_eq!(png_size(&bytes), chart.size());
}

#[test]
fn diagram_of_the_seed_network_shows_30_by_30() {
    let d = Diagram::new(&net("30-30-30"));
    let svg = plot::svg(&d).unwrap();
    let texts = svg_texts(&svg);
    assert_has(
        &texts,
        &[
            "30 × 30 = 900 weights",
            "+ 30 biases",
            "each neuron connects to every neuron of the next layer",
            "1,860 parameters = 1,800 weights + 60 biases",
            "input",
            "layer 1",
            "layer 2 (output)",
            "30 neurons, sigmoid",
            "30 neurons, softmax",
            "(9 of 30 drawn)",
        ],
    );
    assert_eq!(texts.iter().filter(|t| t.contains("30 × 30 = 900 weights")).count(), 2);
    // Two bundles of 9 × 9 drawn connections; 3 columns of 9 neurons (fill and outline) and 3 dots.
    assert_eq!(count_tags(&svg, "polyline") + count_tags(&svg, "line"), 2 * 81);
    assert_eq!(count_tags(&svg, "circle"), 3 * 9 * 2 + 3 * 3);
}

#[test]
fn narrow_layers_are_drawn_whole() {
    let svg = plot::svg(&Diagram::new(&net("4-3-2"))).unwrap();
    let texts = svg_texts(&svg);
    assert_has(&texts, &["4 × 3 = 12 weights", "3 × 2 = 6 weights", "+ 2 biases"]);
    assert!(!has(&texts, "drawn)"));
    assert_eq!(count_tags(&svg, "polyline") + count_tags(&svg, "line"), 12 + 6);
    assert_eq!(count_tags(&svg, "circle"), (4 + 3 + 2) * 2);
    let png = plot::png(&Diagram::new(&net("784-100-10"))).unwrap();
    png_size(&png);
}

#[test]
fn curves_have_train_and_val_series_and_gflops() {
    let c = Curves::new("run", rows(4, true, false));
    let texts = svg_texts(&plot::svg(&c).unwrap());
    assert_has(
        &texts,
        &[
            "run: 4 epochs",
            "Loss per epoch",
            "Accuracy per epoch",
            "train loss",
            "val loss",
            "train acc",
            "val acc",
            "GFLOP/s",
            "epoch",
        ],
    );
    assert!(!has(&texts, "predicted s"), "no prediction, no prediction chart");
    assert_eq!(png_size(&plot::png(&c).unwrap()), c.size());
}

#[test]
fn curves_chart_prediction_only_when_recorded() {
    let texts = svg_texts(&plot::svg(&Curves::new("run", rows(3, false, true))).unwrap());
    assert_has(&texts, &["predicted s", "measured s", "predicted against measured", "train loss", "train acc"]);
    assert!(!has(&texts, "val loss") && !has(&texts, "val acc"), "no validation split, no val series");
}

#[test]
fn training_plot_is_rewritten_after_every_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.svg");
    let mut p = TrainingPlot::create(&path, "flopnet train 4-3-2").unwrap();
    let first = std::fs::read_to_string(&path).unwrap();
    assert_has(&svg_texts(&first), &["waiting for the first epoch"]);
    for e in 1..=2 {
        let r = EpochReport {
            epoch: e,
            train_loss: 0.5,
            train_acc: 0.8,
            val_loss: Some(0.6),
            val_acc: Some(0.7),
            seconds: 1.0,
            gflops: 2.0,
            predicted_seconds: Some(1.1),
        };
        p.epoch(&r).unwrap();
        let texts = svg_texts(&std::fs::read_to_string(&path).unwrap());
        assert_has(&texts, &[&format!("flopnet train 4-3-2: {e} epoch"), "val acc"]);
    }
    assert_eq!(p.curves().rows.len(), 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary files left behind");
    let e = TrainingPlot::create(&dir.path().join("train.gif"), "x").err().unwrap().to_string();
    assert!(e.contains("unsupported picture format .gif") && e.contains(".svg or .png"), "{e}");
}

/// Every inline `<svg>…</svg>` of a page.
fn inline_svgs(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<svg") {
        let end = rest[i..].find("</svg>").expect("closed svg") + i + "</svg>".len();
        out.push(&rest[i..end]);
        rest = &rest[end..];
    }
    out
}

fn assert_self_contained(html: &str) {
    for banned in ["<script", " src=", "url(", "href=\"http", "@import", "<link rel=\"stylesheet\""] {
        assert!(!html.contains(banned), "the page must not load anything: found {banned:?}");
    }
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
}

#[test]
fn a_cnn_is_drawn_as_boxes_with_kinds_shapes_and_shared_weights() {
    let spec = net("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-avgpool2-1024-10");
    let d = Diagram::new(&spec);
    assert!(d.boxes);
    let svg = plot::svg(&d).unwrap();
    let texts = svg_texts(&svg);
    assert_has(
        &texts,
        &[
            "32 × 1 × 5 × 5 = 800 weights",
            "+ 32 biases, shared by every position",
            "64 × 32 × 5 × 5 = 51,200 weights",
            "max of 2×2 windows",
            "mean of 2×2 windows",
            "no weights",
            "3,136 × 1,024 = 3,211,264 weights",
            "conv5x5x32p2, relu",
            "32x28x28",
            "maxpool2",
            "64x7x7",
            "1x28x28",
            "3,274,634 parameters = 3,273,504 weights + 1,130 biases",
        ],
    );
    assert_eq!(count_tags(&svg, "circle"), 0, "no neurons: a convolution is not all-to-all");
    png_size(&plot::png(&d).unwrap());
    let cfg = Config { loss: Loss::Ce, optimizer: Optimizer::Adam, batch: 8, examples: 100, epochs: 1 };
    let l = Ledger::new(&spec, &cfg);
    let bars = svg_texts(&plot::svg(&CostChart::new(&l, Scale::Log)).unwrap());
    assert_has(&bars, &["layer 1 conv5x5x32p2", "layer 2 maxpool2", "layer 4 avgpool2", "layer 6 (1024→10)"]);
    let html = plot::report_html(&spec, &cfg, 0.0, None).unwrap();
    assert_self_contained(&html);
    for want in ["conv5x5x32p2", "1x28x28 → 32x28x28", "feature maps", "One box per volume"] {
        assert!(html.contains(want), "missing {want}");
    }
}

#[test]
fn report_is_one_self_contained_page() {
    let spec = net("30-30-30");
    let cfg = Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: 10, examples: 100, epochs: 3 };
    let html = plot::report_html(&spec, &cfg, 0.0, None).unwrap();
    assert_self_contained(&html);
    let svgs = inline_svgs(&html);
    assert_eq!(svgs.len(), 3, "diagram and two cost charts");
    let texts: Vec<String> = svgs.iter().flat_map(|s| svg_texts(s)).collect();
    assert_has(&texts, &["30 × 30 = 900 weights", "backward dW", "log scale"]);
    for want in ["Cost per layer", "Explanation", "<table>", "FLOPs by phase", "Backward pass, one example"] {
        assert!(html.contains(want), "missing {want}");
    }
    assert!(!html.contains("id=\"training\""));

    let mut m = Metrics { epochs: rows(3, true, true), test: None };
    m.test = Some(plot::TestRow { test_loss: 0.4, test_acc: 0.875, test_examples: 1000 });
    let html = plot::report_html(&spec, &cfg, 0.0, Some(&m)).unwrap();
    assert_self_contained(&html);
    let svgs = inline_svgs(&html);
    assert_eq!(svgs.len(), 4, "plus the training curves");
    let texts = svg_texts(svgs[3]);
    assert_has(&texts, &["train loss", "val acc", "GFLOP/s", "predicted s", "measured s"]);
    assert!(html.contains("id=\"training\"") && html.contains("87.50%") && html.contains("measured / predicted"));
}

fn flopnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).args(args).output().expect("the binary runs")
}

fn ok(args: &[&str]) -> Output {
    let out = flopnet(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn cli_count_plot_and_explain_diagram() {
    let dir = tempfile::tempdir().unwrap();
    let (svg, png, diagram) = (dir.path().join("c.svg"), dir.path().join("c.png"), dir.path().join("d.svg"));
    let out = ok(&["count", "784-30-30-10", "-b", "32", "--plot", p(&svg)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FLOPs by phase"), "the table is still printed");
    assert_has(&svg_texts(&std::fs::read_to_string(&svg).unwrap()), &["backward dX", "layer 3 (30→10)"]);
    ok(&["count", "784-30-30-10", "--plot", p(&png), "--scale", "log", "--json"]);
    png_size(&std::fs::read(&png).unwrap());
    ok(&["explain", "30-30-30", "--act", "sigmoid", "--diagram", p(&diagram)]);
    assert_has(&svg_texts(&std::fs::read_to_string(&diagram).unwrap()), &["30 × 30 = 900 weights"]);
}

#[test]
fn cli_bad_picture_paths_are_explained_before_any_output() {
    let out = flopnet(&["count", "30-30-30", "--plot", "chart.jpg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing printed before the error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chart.jpg") && err.contains(".svg or .png"), "{err}");
    // A directory that is not there is bad input, found before anything is printed.
    let out = flopnet(&["explain", "30-30-30", "--diagram", "/nonexistent-dir/d.svg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing printed before the error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/d.svg"));
    let out = flopnet(&["report", "30-30-30", "-o", "report.pdf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".html"));
}

#[test]
fn cli_train_plot_then_report_with_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (plot_path, metrics, report) =
        (dir.path().join("train.svg"), dir.path().join("m.jsonl"), dir.path().join("r.html"));
    let args = ["train", "784-16-10", "--epochs", "2", "--threads", "1", "--plot", p(&plot_path)];
    ok(&[&args[..], &["--metrics", p(&metrics)]].concat());
    let texts = svg_texts(&std::fs::read_to_string(&plot_path).unwrap());
    assert_has(&texts, &["784-16:relu-10:softmax: 2 epochs", "train loss", "val loss", "train acc", "val acc"]);
    assert_has(&texts, &["GFLOP/s"]);
    let out = flopnet(&["train", "784-16-10", "--epochs", "1", "--plot", "train.bmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".svg or .png"));

    ok(&["report", "784-16-10", "-b", "32", "--metrics", p(&metrics), "-o", p(&report)]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert_self_contained(&html);
    assert_eq!(inline_svgs(&html).len(), 4);
    assert!(html.contains("Test: loss"));
    let out = flopnet(&["report", "784-16-10", "--metrics", p(&plot_path), "-o", p(&report)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
