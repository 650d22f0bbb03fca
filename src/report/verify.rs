//! The printout of `flopnet verify`: each ledger row, analytic against measured.

use super::format::{columns, thousands as t};
use crate::verify::Verification;

pub fn verify_text(v: &Verification) -> String {
    let mut rows = vec![vec!["".to_string(), "row".into(), "field".into(), "analytic".into(), "measured".into()]];
    for r in &v.rows {
        let fields: Vec<_> = r
            .analytic
            .fields()
            .into_iter()
            .zip(r.measured.fields())
            .filter(|((_, a), (_, m))| *a != 0 || *m != 0)
            .collect();
        let mark = if r.matches() { "ok" } else { "DIFF" };
        if fields.is_empty() {
            rows.push(vec![mark.into(), r.name.clone(), "(none)".into(), "0".into(), "0".into()]);
        }
        for (k, ((name, a), (_, m))) in fields.into_iter().enumerate() {
            let label = if k == 0 { r.name.clone() } else { String::new() };
            let mark = if a == m { if k == 0 { mark } else { "" } } else { "DIFF" };
            rows.push(vec![mark.into(), label, name.into(), t(a), t(m)]);
        }
    }
    let bad = v.mismatches().count();
    let verdict = if bad == 0 {
        format!("all {} rows match: measured == analytic, field by field\n", v.rows.len())
    } else {
        format!("{bad} of {} rows differ\n", v.rows.len())
    };
    format!("verify: {}\n\n{}\n{verdict}", v.what, columns(&rows, 3))
}
