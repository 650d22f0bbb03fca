//! A spec written out as a TOML network file that [`super::from_toml`] reads back as the same
//! network: every node named and its inputs listed, so any graph round-trips (model files store
//! a graph this way, since the compact line it came from, or a zoo name, may not be at hand).

use super::{Kind, Padding, Source, Spec};
use std::fmt::Write;

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Spec {
    /// The network as a TOML file (see [`super::from_toml`]).
    pub fn to_toml(&self) -> String {
        let s = self.input_shape;
        let mut out =
            if s.is_image() { format!("input = [{}, {}, {}]\n", s.c, s.h, s.w) } else { format!("input = {}\n", s.c) };
        for (l, layer) in self.layers.iter().enumerate() {
            let reads: Vec<String> = self.sources[l]
                .iter()
                .map(|src| {
                    quoted(match src {
                        Source::Input => "input",
                        Source::Node(j) => &self.names[*j],
                    })
                })
                .collect();
            let _ = write!(
                out,
                "[[layers]]\nname = {}\ninputs = [{}]\nkind = \"{}\"\n",
                quoted(&self.names[l]),
                reads.join(", "),
                layer.kind.name()
            );
            let fields = match layer.kind {
                Kind::Dense => format!("units = {}\n", layer.outputs),
                Kind::Conv2d(c) => {
                    let padding = match c.padding {
                        Padding::Fixed(p) => p.to_string(),
                        Padding::Same => "\"same\"".to_string(),
                    };
                    format!(
                        "kernel = [{}, {}]\nfilters = {}\nstride = {}\npadding = {padding}\ngroups = {}\nbias = {}\n",
                        c.kh, c.kw, c.filters, c.stride, c.groups, c.bias
                    )
                }
                Kind::MaxPool(p) => {
                    format!("size = {}\nstride = {}\npadding = {}\nceil = {}\n", p.k, p.stride, p.pad, p.ceil)
                }
                Kind::AvgPool(p) => format!("size = {}\nstride = {}\n", p.k, p.stride),
                Kind::AdaptiveAvgPool(h, w) => format!("size = [{h}, {w}]\n"),
                Kind::Dropout(r) => format!("rate = {:?}\n", r.value()),
                Kind::ZeroPad { channels, stride } => format!("channels = {channels}\nstride = {stride}\n"),
                Kind::BatchNorm | Kind::Add(_) | Kind::Concat | Kind::GlobalAvgPool => String::new(),
            };
            out += &fields;
            if layer.kind.takes_activation() {
                let _ = writeln!(out, "activation = \"{}\"", layer.activation.name());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Defaults, from_toml, parse};

    #[test]
    fn graphs_round_trip_through_toml() {
        for text in [
            "784-30:tanh-10:softmax",
            "3x12x12-conv3x3x8s2p1b0-bn:relu-maxpool3s2p1-[conv3x3x8p1g2b0-bn:relu6|conv1x1x8b0-bn]:relu\
             -(conv1x1x4:relu|conv3x3x4psame:relu)-adaptavg2x2-drop0.25-zpad20s2-bn:tanh-gap:identity-12:relu-5",
            "2x6x6-maxpool3s2c-avgpool2s1-5x3",
        ] {
            let Ok(spec) = parse(text, Defaults::default()) else { continue };
            let back = from_toml(&spec.to_toml(), "t", Defaults::default()).unwrap();
            assert_eq!(back, spec, "{}", spec.to_toml());
        }
    }
}
