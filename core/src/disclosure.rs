//! Disclosure-control arithmetic for anonymised tables (HES rules, domain spec section 8): the
//! rounding of what is shown and the secondary suppression that keeps a suppressed cell from being
//! recovered through the margins. Pure: the node's `access::disclosure` applies it to query
//! results.
//!
//! **Margins.** A table grouped by `k` keys is a hypercube: the cells sharing every key but one
//! form a *line*, whose sum is a cell of the coarser query without that key (a subtotal anyone
//! may ask for). The grand total is a line too. A line holding exactly one suppressed cell would
//! give that cell away by subtraction, so the next smallest non-zero shown cell of that line is
//! suppressed as well, until no line holds exactly one. Cells are never chosen if they are the
//! only non-zero cell of one of their own lines (the margin of that line is the cell's value, so
//! suppressing it would hide nothing). Lines with two or more suppressed cells are also checked
//! against the rounding: if the margin and the shown cells' lowest possible values leave no room
//! for the suppressed cells above their least values (every one would be pinned to its least
//! value, e.g. 1), another cell is suppressed.

use std::collections::{HashMap, VecDeque};

/// Counts from 1 to this are suppressed.
pub const SMALL: i64 = 7;

/// A count rounded to the nearest 5 (counts are never negative; halves cannot occur).
pub fn round5(v: i128) -> i128 {
    (v + 2).div_euclid(5) * 5
}

/// A value rounded to 2 significant figures, halves away from zero (`125` → `130`,
/// `-125` → `-130`, `1_250` → `1_300`); values under 100 are already exact to 2 figures.
pub fn round_sig2(v: i128) -> i128 {
    let a = v.unsigned_abs();
    if a < 100 {
        return v;
    }
    let digits = a.ilog10() + 1;
    let p = 10u128.pow(digits - 2);
    let r = (a + p / 2) / p * p;
    // `r` <= 2 * |i128::MIN| only for values far beyond any sum of i64 cells.
    let r = i128::try_from(r).unwrap_or(i128::MAX);
    if v < 0 { -r } else { r }
}

/// A count as shown: `0`, `*` for 1 to 7, otherwise rounded to the nearest 5.
pub fn show_count(v: i128) -> String {
    match v {
        0 => "0".into(),
        v if (1..=i128::from(SMALL)).contains(&v) => "*".into(),
        v => round5(v).to_string(),
    }
}

/// The margin lines of a table of `keys` group-by keys whose rows have the key values `rows`: for
/// each key, the rows sharing every other key; and the grand total (all rows) when there are two
/// keys or more (with one key it is that key's line).
pub fn margin_lines(rows: &[Vec<Option<String>>], keys: usize) -> Vec<Vec<usize>> {
    let k = keys;
    let mut out = Vec::new();
    if k == 0 {
        return out;
    }
    for d in 0..k {
        let mut by: HashMap<Vec<&Option<String>>, usize> = HashMap::new();
        let mut these: Vec<Vec<usize>> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let rest: Vec<&Option<String>> = row
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != d)
                .map(|(_, v)| v)
                .collect();
            let at = *by.entry(rest).or_insert_with(|| {
                these.push(Vec::new());
                these.len() - 1
            });
            these[at].push(i);
        }
        out.extend(these);
    }
    if k >= 2 {
        out.push((0..rows.len()).collect());
    }
    out
}

/// The least value a shown count may hide behind its rounding: a shown non-zero count is at
/// least 8 and at least two below its rounded value.
pub fn shown_low(v: i64) -> i128 {
    if v == 0 {
        0
    } else {
        (round5(i128::from(v)) - 2).max(i128::from(SMALL) + 1)
    }
}

/// Secondary suppression of one count column: `suppressed` starts with the primary cells and
/// grows until no margin line would give a suppressed cell away (see the module documentation).
/// `least` is the least value an observer knows a suppressed cell has (1 for a non-zero count,
/// 0 where the cell is hidden only because its record count is).
pub fn close(
    values: &[i64],
    suppressed: &mut [bool],
    least: &[i128],
    lines: &[Vec<usize>],
    of_cell: &[Vec<usize>],
) {
    // Per line, kept up to date as cells are suppressed, so that a table of many groups costs
    // time linear in its lines (plus one sort each): the exact margin, the hidden cells, the
    // least the shown cells can hold together, the least the hidden ones hold together.
    let margin: Vec<i128> = lines
        .iter()
        .map(|l| l.iter().map(|&c| i128::from(values[c])).sum())
        .collect();
    let mut hidden = vec![0usize; lines.len()];
    let mut shown_least = vec![0i128; lines.len()];
    let mut hidden_least = vec![0i128; lines.len()];
    for (l, line) in lines.iter().enumerate() {
        for &c in line {
            if suppressed[c] {
                hidden[l] += 1;
                hidden_least[l] += least[c];
            } else {
                shown_least[l] += shown_low(values[c]);
            }
        }
    }
    // A cell that is the only non-zero cell of one of its lines is given away by that line's
    // margin: suppressing it would protect nothing.
    let non_zero: Vec<usize> = lines
        .iter()
        .map(|l| l.iter().filter(|&&c| values[c] != 0).count())
        .collect();
    let exposed: Vec<bool> = (0..values.len())
        .map(|c| values[c] != 0 && of_cell[c].iter().any(|&l| non_zero[l] == 1))
        .collect();
    // Each line's candidates, smallest first (ties: the first in key order); `next` skips
    // those suppressed since (cells are only ever added).
    let candidates: Vec<Vec<usize>> = lines
        .iter()
        .map(|l| {
            let mut c: Vec<usize> = l
                .iter()
                .copied()
                .filter(|&c| values[c] != 0 && !exposed[c])
                .collect();
            c.sort_by_key(|&c| (values[c], c));
            c
        })
        .collect();
    let mut next = vec![0usize; lines.len()];
    // One hidden cell is given away by the margin; several are when the margin less the least
    // the shown cells hold leaves each no more than its least value.
    let needs_more = |l: usize, hidden: &[usize], shown_least: &[i128], hidden_least: &[i128]| {
        hidden[l] == 1 || (hidden[l] > 1 && margin[l] - shown_least[l] <= hidden_least[l])
    };
    let mut queue: VecDeque<usize> = (0..lines.len()).collect();
    let mut queued = vec![true; lines.len()];
    while let Some(l) = queue.pop_front() {
        queued[l] = false;
        if !needs_more(l, &hidden, &shown_least, &hidden_least) {
            continue;
        }
        while next[l] < candidates[l].len() && suppressed[candidates[l][next[l]]] {
            next[l] += 1;
        }
        let Some(&c) = candidates[l].get(next[l]) else {
            continue;
        };
        suppressed[c] = true;
        for &l2 in &of_cell[c] {
            hidden[l2] += 1;
            hidden_least[l2] += least[c];
            shown_least[l2] -= shown_low(values[c]);
            if !queued[l2] {
                queued[l2] = true;
                queue.push_back(l2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_of_what_is_shown() {
        assert_eq!([0, 2, 3, 12, 13].map(round5), [0, 0, 5, 10, 15]);
        assert_eq!(
            [99, 125, -125, 1_250, 123_456].map(round_sig2),
            [99, 130, -130, 1_300, 120_000]
        );
        assert_eq!(show_count(0), "0");
        assert_eq!(show_count(7), "*");
        assert_eq!(show_count(8), "10");
    }

    #[test]
    fn a_suppressed_cell_takes_a_partner_on_each_of_its_lines() {
        // 2 × 2 table: rows (a,x) (a,y) (b,x) (b,y); lines: by the first key's rest, by the
        // second's, and the grand total.
        let key = |a: &str, b: &str| vec![Some(a.to_string()), Some(b.to_string())];
        let rows = vec![key("a", "x"), key("a", "y"), key("b", "x"), key("b", "y")];
        let lines = margin_lines(&rows, 2);
        assert_eq!(lines.len(), 5);
        let mut of_cell = vec![Vec::new(); rows.len()];
        for (l, line) in lines.iter().enumerate() {
            for &c in line {
                of_cell[c].push(l);
            }
        }
        let values = [3, 40, 50, 60];
        let mut suppressed = [true, false, false, false];
        close(&values, &mut suppressed, &[1; 4], &lines, &of_cell);
        // (a,x) alone on its row and column lines would be recovered by subtraction: (a,y) and
        // (b,x), the smallest partners, go too, and then (b,y) closes the square.
        assert_eq!(suppressed, [true, true, true, true]);
    }
}
