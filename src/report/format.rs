//! Small text-layout helpers: thousands separators and aligned columns.

/// 1234567 -> "1,234,567".
pub fn thousands(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A large number in words-ish form: 3.2 M, 1.5 G, for summaries.
pub fn short(n: f64) -> String {
    let units = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        if n >= scale {
            return format!("{:.2} {unit}", n / scale);
        }
    }
    format!("{n:.0}")
}

/// Bytes with a binary unit.
pub fn bytes(n: u128) -> String {
    let units = [(1u128 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in units {
        if n >= scale {
            return format!("{:.1} {unit}", n as f64 / scale as f64);
        }
    }
    format!("{n} B")
}

/// Lays out rows as columns: the first `left` columns left-aligned, the rest right-aligned.
pub fn columns(rows: &[Vec<String>], left: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c > 0 {
                line.push_str("  ");
            }
            if c < left {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(636_010), "636,010");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn aligned() {
        let t = columns(&[vec!["a".into(), "1".into()], vec!["bbb".into(), "1,000".into()]], 1);
        assert_eq!(t, "a        1\nbbb  1,000\n");
    }
}
