//! File formats: XYZ (single and multi-frame) and SDF (V2000 molfile with the bonds EDM's rule infers),
//! plus an XYZ reader for evaluating samples.

use std::fmt::Write;

use crate::chemistry::bonds;
use crate::error::{Error, Result};
use crate::qm9::{type_index, ATOM_TYPES};

/// One molecule as XYZ text: count line, comment line, `Sym x y z` rows (Å).
pub fn to_xyz(pos: &[f32], types: &[u8], comment: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", types.len());
    let _ = writeln!(s, "{}", comment.replace('\n', " "));
    for (i, &t) in types.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<2} {:>12.6} {:>12.6} {:>12.6}",
            ATOM_TYPES[t as usize],
            pos[i * 3],
            pos[i * 3 + 1],
            pos[i * 3 + 2]
        );
    }
    s
}

/// One molecule as an SDF record (V2000), bonds inferred from distances, terminated by `$$$$`.
pub fn to_sdf(pos: &[f32], types: &[u8], name: &str) -> String {
    let bonds = bonds(pos, types);
    let mut s = String::new();
    let _ = writeln!(s, "{}", name.replace('\n', " "));
    let _ = writeln!(s, "  equivariant 3D");
    let _ = writeln!(s, "bonds inferred from distances (EDM rule)");
    let _ = writeln!(
        s,
        "{:>3}{:>3}  0  0  0  0  0  0  0  0999 V2000",
        types.len(),
        bonds.len()
    );
    for (i, &t) in types.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:>10.4}{:>10.4}{:>10.4} {:<3} 0  0  0  0  0  0  0  0  0  0  0  0",
            pos[i * 3],
            pos[i * 3 + 1],
            pos[i * 3 + 2],
            ATOM_TYPES[t as usize]
        );
    }
    for b in &bonds {
        let _ = writeln!(s, "{:>3}{:>3}{:>3}  0", b.i + 1, b.j + 1, b.order);
    }
    s.push_str("M  END\n$$$$\n");
    s
}

/// A molecule read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedMolecule {
    pub positions: Vec<f32>,
    pub types: Vec<u8>,
    pub comment: String,
}

/// Parses concatenated XYZ records. Errors name the line.
pub fn parse_xyz(text: &str) -> Result<Vec<ParsedMolecule>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        if lines[k].trim().is_empty() {
            k += 1;
            continue;
        }
        let n: usize = lines[k].trim().parse().map_err(|_| {
            Error::Input(format!(
                "XYZ line {}: expected an atom count, found `{}`",
                k + 1,
                lines[k].trim()
            ))
        })?;
        if k + 2 + n > lines.len() {
            return Err(Error::Input(format!(
                "XYZ line {}: {} atoms announced but the file ends first",
                k + 1,
                n
            )));
        }
        let comment = lines[k + 1].to_string();
        let mut positions = Vec::with_capacity(n * 3);
        let mut types = Vec::with_capacity(n);
        for a in 0..n {
            let line_no = k + 2 + a;
            let mut it = lines[line_no].split_whitespace();
            let sym = it.next().unwrap_or("");
            let t = type_index(sym).ok_or_else(|| {
                Error::Input(format!(
                    "XYZ line {}: element `{sym}` is not one of H, C, N, O, F",
                    line_no + 1
                ))
            })?;
            for _ in 0..3 {
                let v: f32 = it.next().and_then(|v| v.parse().ok()).ok_or_else(|| {
                    Error::Input(format!(
                        "XYZ line {}: expected three coordinates",
                        line_no + 1
                    ))
                })?;
                if !v.is_finite() {
                    return Err(Error::NonFinite(format!("XYZ line {}", line_no + 1)));
                }
                positions.push(v);
            }
            types.push(t);
        }
        out.push(ParsedMolecule {
            positions,
            types,
            comment,
        });
        k += 2 + n;
    }
    Ok(out)
}
