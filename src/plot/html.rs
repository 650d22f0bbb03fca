//! `flopnet report`: one self-contained HTML page (inline SVG and CSS, no scripts, nothing
//! fetched) with the count table, the explanation, the charts, the diagram and, given a metrics
//! file, the training curves.

use super::{CostChart, Curves, Diagram, Metrics, Picture, Scale, svg, write_atomic};
use crate::cost::{Config, Ledger};
use crate::error::{Error, Result};
use crate::report::format::{bytes, thousands as t};
use crate::report::{count_text, explain_decayed};
use crate::spec::Spec;
use std::fmt::Write;
use std::path::Path;

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Verdana, sans-serif; color: #222; margin: 0 auto; max-width: 1200px; padding: 16px 24px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.6em; }
p.lead { color: #555; margin-top: 0; }
figure { margin: 1em 0; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; border: 1px solid #eee; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; }
.pair figure { flex: 1 1 520px; min-width: 0; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.8em 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td.l, th.l { text-align: left; }
tr.total td { font-weight: bold; border-top: 2px solid #bbb; }
pre { background: #f8f8f8; border: 1px solid #e4e4e4; padding: 10px; overflow-x: auto; font-size: 0.82em; line-height: 1.35; }
details summary { cursor: pointer; color: #246; margin: 0.6em 0; }
";

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// An SVG document as an element to inline: without an XML declaration, if it had one.
fn inline(p: &impl Picture, label: &str) -> Result<String> {
    let doc = svg(p)?;
    let body = match doc.find("<svg") {
        Some(i) => &doc[i..],
        None => &doc[..],
    };
    Ok(body.replacen("<svg", &format!("<svg role=\"img\" aria-label=\"{}\"", esc(label)), 1))
}

fn figure(o: &mut String, svg: &str, caption: &str) {
    let _ = write!(o, "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n", esc(caption));
}

fn row(o: &mut String, class: &str, cells: &[String], left: usize) {
    let _ = write!(o, "<tr{}>", if class.is_empty() { String::new() } else { format!(" class=\"{class}\"") });
    for (i, c) in cells.iter().enumerate() {
        let _ = write!(o, "<td{}>{}</td>", if i < left { " class=\"l\"" } else { "" }, esc(c));
    }
    o.push_str("</tr>\n");
}

fn header(o: &mut String, cells: &[&str], left: usize) {
    o.push_str("<tr>");
    for (i, c) in cells.iter().enumerate() {
        let _ = write!(o, "<th{}>{}</th>", if i < left { " class=\"l\"" } else { "" }, esc(c));
    }
    o.push_str("</tr>\n");
}

fn layer_table(o: &mut String, l: &Ledger) {
    let _ = writeln!(o, "<table>");
    header(
        o,
        &[
            "layer",
            "kind",
            "shape",
            "activation",
            "params",
            "forward",
            "δ",
            "dW",
            "db",
            "dX",
            "backward",
            "update",
            "total FLOPs",
        ],
        4,
    );
    for (i, (c, layer)) in l.layers.iter().zip(crate::report::ledger_layers(l)).enumerate() {
        let b = &c.backward;
        row(
            o,
            "",
            &[
                (i + 1).to_string(),
                crate::report::kind_label(&layer),
                crate::report::shapes_label(&layer),
                crate::report::activation_label(&layer),
                t(c.params),
                t(c.forward.flop()),
                t(b.delta.flop()),
                t(b.weight_grad.flop()),
                t(b.bias_grad.flop()),
                t(b.input_grad.flop()),
                t(b.total.flop()),
                t(c.update.flop()),
                t(c.forward.flop() + b.total.flop() + c.update.flop()),
            ],
            4,
        );
    }
    let e = String::new;
    let lf = l.per_batch.loss.flop();
    row(o, "", &[e(), "loss".into(), e(), l.loss.to_string(), e(), e(), e(), e(), e(), e(), e(), e(), t(lf)], 4);
    if !l.optimizer_step.is_zero() {
        let of = l.optimizer_step.flop();
        row(o, "", &[e(), "optimizer step".into(), e(), e(), e(), e(), e(), e(), e(), e(), e(), t(of), t(of)], 4);
    }
    let p = &l.per_batch;
    let sum = |f: fn(&crate::cost::Backward) -> u128| t(l.layers.iter().map(|c| f(&c.backward)).sum());
    row(
        o,
        "total",
        &[
            "total".into(),
            e(),
            e(),
            e(),
            t(l.params),
            t(p.forward.flop()),
            sum(|b| b.delta.flop()),
            sum(|b| b.weight_grad.flop()),
            sum(|b| b.bias_grad.flop()),
            sum(|b| b.input_grad.flop()),
            t(p.backward.flop()),
            t(p.update.flop()),
            t(p.total.flop()),
        ],
        4,
    );
    let _ = writeln!(o, "</table>");
}

fn training(o: &mut String, m: &Metrics) -> Result<()> {
    let _ = writeln!(o, "<h2 id=\"training\">Training</h2>");
    let curves = Curves::new("Training", m.epochs.clone());
    figure(
        o,
        &inline(&curves, "training curves")?,
        "Loss and accuracy per epoch (train and validation) and the achieved GFLOP/s: the ledger's FLOPs \
         for the epoch divided by its measured training time.",
    );
    let predicted = m.epochs.iter().any(|r| r.predicted_seconds.is_some());
    let _ = writeln!(o, "<table>");
    let mut cols = vec!["epoch", "train loss", "train acc", "val loss", "val acc", "seconds", "GFLOP/s"];
    if predicted {
        cols.extend(["predicted s", "measured / predicted"]);
    }
    header(o, &cols, 0);
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
    for r in &m.epochs {
        let mut cells = vec![
            r.epoch.to_string(),
            format!("{:.4}", r.train_loss),
            format!("{:.2}%", 100.0 * r.train_acc),
            opt(r.val_loss, |v| format!("{v:.4}")),
            opt(r.val_acc, |v| format!("{:.2}%", 100.0 * v)),
            format!("{:.3}", r.seconds),
            format!("{:.2}", r.gflops),
        ];
        if predicted {
            cells.push(opt(r.predicted_seconds, |v| format!("{v:.3}")));
            cells.push(opt(r.predicted_seconds.map(|p| r.seconds / p), |v| format!("{v:.2}×")));
        }
        row(o, "", &cells, 0);
    }
    let _ = writeln!(o, "</table>");
    if let Some(test) = &m.test {
        let _ = writeln!(
            o,
            "<p>Test: loss {:.4}, accuracy {:.2}% over {} examples.</p>",
            test.test_loss,
            100.0 * test.test_acc,
            t(test.test_examples as u128)
        );
    }
    if !predicted {
        let _ = writeln!(
            o,
            "<p class=\"lead\">The metrics rows carry no <code>predicted_seconds</code>, so predicted against \
             measured time is not charted.</p>"
        );
    }
    Ok(())
}

/// The whole page for `spec` trained as `cfg` says with weight decay `weight_decay` (0: none),
/// with training curves if `metrics` is given.
pub fn report_html(spec: &Spec, cfg: &Config, weight_decay: f64, metrics: Option<&Metrics>) -> Result<String> {
    let l = Ledger::decayed(spec, cfg, weight_decay);
    let mut o = String::new();
    let title = format!("flopnet report: {spec}");
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = writeln!(o, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        o,
        "<p class=\"lead\">{} parameters; loss {}, optimizer {}, batch {}; {} examples per epoch, {} epoch{}. \
         Training FLOPs: {} per step of {} examples ({} per example at that batch), {} per epoch, {} for the run. Memory (f32): about {} at peak.</p>",
        t(l.params),
        l.loss,
        l.optimizer,
        l.batch,
        t(l.examples as u128),
        l.epochs,
        if l.epochs == 1 { "" } else { "s" },
        t(l.per_batch.total.flop()),
        l.batch,
        crate::report::format::short(l.per_batch.total.flop() as f64 / l.batch as f64),
        t(l.per_epoch.total.flop()),
        t(l.training.total.flop()),
        bytes(l.memory.peak)
    );
    let mut toc = vec![("network", "Network"), ("cost", "Cost per layer")];
    if metrics.is_some() {
        toc.push(("training", "Training"));
    }
    toc.extend([("count", "Count"), ("explain", "Explanation")]);
    let links: Vec<String> = toc.iter().map(|(id, name)| format!("<a href=\"#{id}\">{name}</a>")).collect();
    let _ = writeln!(o, "<p>{}</p>", links.join(" · "));

    let _ = writeln!(o, "<h2 id=\"network\">Network</h2>");
    figure(
        &mut o,
        &inline(&Diagram::new(spec), "network diagram")?,
        if spec.is_convolutional() {
            "One box per volume of values (channels × height × width); a convolution's kernels slide over the \
             maps below it, pooling shrinks them, dense layers take every value. The weights are exact."
        } else {
            "Each neuron takes every value of the layer below it, each through its own weight; wide layers are \
             sampled, the counts on each bundle are exact."
        },
    );

    let _ = writeln!(o, "<h2 id=\"cost\">Cost per layer</h2>");
    let _ = writeln!(o, "<p>FLOPs of one training step on a batch of {}, each operation counted once.</p>", l.batch);
    layer_table(&mut o, &l);
    o.push_str("<div class=\"pair\">\n");
    figure(&mut o, &inline(&CostChart::new(&l, Scale::Linear), "cost per layer")?, "Per layer, linear scale.");
    figure(
        &mut o,
        &inline(&CostChart::new(&l, Scale::Log), "cost per layer, log scale")?,
        "The same on a log scale, where small layers and the loss stay visible.",
    );
    o.push_str("</div>\n");

    if let Some(m) = metrics {
        training(&mut o, m)?;
    }
    let _ = writeln!(o, "<h2 id=\"count\">Count</h2>\n<pre>{}</pre>", esc(&count_text(&l)));
    let _ = writeln!(
        o,
        "<h2 id=\"explain\">Explanation</h2>\n<pre>{}</pre>",
        esc(&explain_decayed(spec, cfg, weight_decay))
    );
    let _ = writeln!(
        o,
        "<p class=\"lead\">Made by flopnet {} (<code>flopnet report</code>); the page needs no network access.</p>\n\
         </body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(o)
}

/// Writes a report page to `path` (which must end in .html or .htm), atomically.
pub fn save_html(path: &Path, html: &str) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("html" | "htm")) {
        return Err(Error::Usage(format!("{}: the report is an HTML page; name it .html or .htm", path.display())));
    }
    write_atomic(path, html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
