//! Pictures: training curves, per-layer cost charts, a network diagram and a self-contained HTML
//! report that holds them all.
//!
//! Everything is drawn with `plotters` onto either its SVG backend (text stays text, so the
//! browser renders it) or its bitmap backend, encoded as PNG. Text is measured and rasterized
//! with `ab_glyph` and a subset of DejaVu Sans compiled into the crate (`assets/fonts`), so no
//! system font library is needed to build or run.
//!
//! ```
//! use flopnet::cost::{Config, Ledger};
//! use flopnet::plot::{self, Format, Scale};
//! use flopnet::spec::{self, Defaults, Loss, Optimizer};
//!
//! let net = spec::parse("30-30-30", Defaults::default())?;
//! let cfg = Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: 1, examples: 1, epochs: 1 };
//! let svg = plot::render(&plot::CostChart::new(&Ledger::new(&net, &cfg), Scale::Linear), Format::Svg)?;
//! assert!(String::from_utf8(svg).unwrap().contains("forward"));
//! let diagram = plot::svg(&plot::Diagram::new(&net))?;
//! assert!(diagram.contains("30 × 30 = 900 weights"));
//! # Ok::<(), flopnet::Error>(())
//! ```

mod bars;
mod curves;
mod diagram;
mod html;
mod metrics;

pub use bars::{CostChart, Scale};
pub use curves::{Curves, TrainingPlot};
pub use diagram::Diagram;
pub use html::{report_html, save_html};
pub use metrics::{EpochRow, Metrics, TestRow};

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::Once;

/// The font every picture's text is measured (and, in PNGs, drawn) with.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// What drawing onto a plotters area can fail with.
pub type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something that can be drawn onto any plotters backend.
pub trait Picture {
    /// Width and height in pixels (SVG user units).
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// The file formats pictures are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// The format a file name asks for, by its extension.
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            other => Err(Error::Usage(format!(
                "{}: {}; pictures are written as .svg or .png",
                path.display(),
                match other {
                    Some(e) => format!("unsupported picture format .{e}"),
                    None => "no file extension to tell the picture format by".to_string(),
                }
            ))),
        }
    }
}

/// Registers the embedded font as the `sans-serif` family, once per process.
fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse (the tests draw with it).
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::Plot(format!("drawing failed: {e}"))
}

/// The picture as an SVG document.
pub fn svg(p: &impl Picture) -> Result<String> {
    fonts();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, p.size()).into_drawing_area();
        p.draw(&root).map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

/// The picture as a PNG file's bytes (8-bit RGB).
pub fn png(p: &impl Picture) -> Result<Vec<u8>> {
    fonts();
    let (w, h) = p.size();
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        p.draw(&root).map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut writer = enc.write_header().map_err(draw_error)?;
    writer.write_image_data(&rgb).map_err(draw_error)?;
    writer.finish().map_err(draw_error)?;
    Ok(out)
}

/// The picture in the given format.
pub fn render(p: &impl Picture, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Svg => svg(p).map(String::into_bytes),
        Format::Png => png(p),
    }
}

/// Writes the picture to `path`, in the format its extension names, atomically.
pub fn save(p: &impl Picture, path: &Path) -> Result<()> {
    let format = Format::from_path(path)?;
    write_atomic(path, &render(p, format)?)
}

/// Writes to a temporary file next to `path` and renames it over `path`, so that a reader (a
/// browser refreshing a training plot) sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Colours shared by the charts (Tableau 10).
pub(crate) mod palette {
    use plotters::style::RGBColor;
    pub const BLUE: RGBColor = RGBColor(31, 119, 180);
    pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
    pub const GREEN: RGBColor = RGBColor(44, 160, 44);
    pub const RED: RGBColor = RGBColor(214, 39, 40);
    pub const PURPLE: RGBColor = RGBColor(148, 103, 189);
    pub const BROWN: RGBColor = RGBColor(140, 86, 75);
    pub const PINK: RGBColor = RGBColor(227, 119, 194);
    pub const GREY: RGBColor = RGBColor(127, 127, 127);
    pub const TEXT: RGBColor = RGBColor(34, 34, 34);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.SVG")).unwrap(), Format::Svg);
        assert_eq!(Format::from_path(Path::new("b.png")).unwrap(), Format::Png);
        let e = Format::from_path(Path::new("b.jpg")).unwrap_err().to_string();
        assert!(e.contains(".jpg") && e.contains(".svg or .png"), "{e}");
        let e = Format::from_path(Path::new("plot")).unwrap_err().to_string();
        assert!(e.contains("no file extension"), "{e}");
    }

    #[test]
    fn embedded_font_parses() {
        assert!(ab_glyph_ok());
    }

    fn ab_glyph_ok() -> bool {
        plotters::style::register_font("flopnet-test", FontStyle::Normal, FONT).is_ok()
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.svg");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let e = write_atomic(&dir.path().join("missing/x.svg"), b"").unwrap_err().to_string();
        assert!(e.contains("missing/x.svg"), "{e}");
    }
}
