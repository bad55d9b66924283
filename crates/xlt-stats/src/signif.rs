//! Paired significance of each fine-tuned model against the base, with multiple-comparison
//! corrections across the whole grid.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::grid::Grid;

/// The exact (binomial) McNemar test for paired binary outcomes: `b` questions only the base
/// got right, `c` only the model got right. Two-sided p-value
/// `min(1, 2 · P(X ≤ min(b, c)))` with `X ~ Binomial(b + c, 1/2)`; 1 when `b + c = 0`.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    let dist = Binomial::new(0.5, n).expect("p = 0.5 is valid");
    (2.0 * dist.cdf(k)).min(1.0)
}

/// Holm's step-down adjustment (family-wise error), in the input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Benjamini-Hochberg's step-up adjustment (false discovery rate), in the input order.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 1.0;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min((m as f64 / (rank + 1) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// The test of one grid row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowTest {
    /// The model.
    pub model: String,
    /// The test set, `<Dom> <lang>`.
    pub test_set: String,
    /// Gain in points.
    pub gain: f64,
    /// Questions paired with the base model.
    pub n: usize,
    /// Questions only the base got right.
    pub base_only: u64,
    /// Questions only the model got right.
    pub model_only: u64,
    /// Exact McNemar p-value.
    pub p: f64,
    /// Holm-adjusted p-value over the whole grid.
    pub p_holm: f64,
    /// Benjamini-Hochberg-adjusted p-value over the whole grid.
    pub p_bh: f64,
}

/// Significance over the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Significance {
    /// Level.
    pub alpha: f64,
    /// Comparisons made.
    pub tests: usize,
    /// Positive gains with unadjusted p < alpha.
    pub gains_significant_raw: usize,
    /// Positive gains with Holm-adjusted p < alpha.
    pub gains_surviving_holm: usize,
    /// Positive gains with BH-adjusted p < alpha.
    pub gains_surviving_bh: usize,
    /// Negative gains (losses) with unadjusted p < alpha.
    pub losses_significant_raw: usize,
    /// Losses with Holm-adjusted p < alpha.
    pub losses_surviving_holm: usize,
    /// Losses with BH-adjusted p < alpha.
    pub losses_surviving_bh: usize,
    /// Every row's test, in grid order.
    pub rows: Vec<RowTest>,
}

/// Tests every row of a grid that has per-question data; `None` otherwise.
pub fn significance(grid: &Grid, alpha: f64) -> Option<Significance> {
    let paired = grid.paired.as_ref()?;
    let mut rows: Vec<RowTest> = grid
        .rows
        .iter()
        .zip(paired)
        .map(|(r, p)| {
            let b = p
                .base
                .iter()
                .zip(&p.model)
                .filter(|(b, m)| **b && !**m)
                .count() as u64;
            let c = p
                .base
                .iter()
                .zip(&p.model)
                .filter(|(b, m)| !**b && **m)
                .count() as u64;
            RowTest {
                model: r.model.clone(),
                test_set: r.target.to_string(),
                gain: r.gain,
                n: p.model.len(),
                base_only: b,
                model_only: c,
                p: mcnemar_exact(b, c),
                p_holm: 0.0,
                p_bh: 0.0,
            }
        })
        .collect();
    let ps: Vec<f64> = rows.iter().map(|r| r.p).collect();
    for ((r, h), bh) in rows.iter_mut().zip(holm(&ps)).zip(benjamini_hochberg(&ps)) {
        r.p_holm = h;
        r.p_bh = bh;
    }
    let count = |f: &dyn Fn(&RowTest) -> bool| rows.iter().filter(|r| f(r)).count();
    Some(Significance {
        alpha,
        tests: rows.len(),
        gains_significant_raw: count(&|r| r.gain > 0.0 && r.p < alpha),
        gains_surviving_holm: count(&|r| r.gain > 0.0 && r.p_holm < alpha),
        gains_surviving_bh: count(&|r| r.gain > 0.0 && r.p_bh < alpha),
        losses_significant_raw: count(&|r| r.gain < 0.0 && r.p < alpha),
        losses_surviving_holm: count(&|r| r.gain < 0.0 && r.p_holm < alpha),
        losses_surviving_bh: count(&|r| r.gain < 0.0 && r.p_bh < alpha),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn mcnemar_known_values() {
        // R: binom.test(5, 20)$p.value = 0.04138947; binom.test(0, 6) = 0.03125;
        // binom.test(2, 10) = 0.109375.
        assert!(close(mcnemar_exact(5, 15), 0.041_389_465_332_031_25));
        assert!(close(mcnemar_exact(15, 5), 0.041_389_465_332_031_25));
        assert!(close(mcnemar_exact(0, 6), 0.031_25));
        assert!(close(mcnemar_exact(2, 8), 0.109_375));
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
    }

    #[test]
    fn adjustments_match_r() {
        // R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") = 0.05 0.08 0.09 0.09 0.09
        //    p.adjust(..., "BH") = 0.05 0.05 0.05 0.05 0.05
        let p = [0.03, 0.01, 0.05, 0.02, 0.04];
        let h = holm(&p);
        for (got, want) in h.iter().zip([0.09, 0.05, 0.09, 0.08, 0.09]) {
            assert!(close(*got, want), "{h:?}");
        }
        assert!(benjamini_hochberg(&p).iter().all(|x| close(*x, 0.05)));
        // R: p.adjust(c(0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205), "BH")
        //  = 0.0080 0.0320 0.0672 0.0672 0.0672 0.0800 0.0846 0.2050
        let p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205];
        let want = [
            0.008,
            0.032,
            0.0672,
            0.0672,
            0.0672,
            0.08,
            0.084_571_428_571_428_57,
            0.205,
        ];
        for (got, want) in benjamini_hochberg(&p).iter().zip(want) {
            assert!(close(*got, want), "{got} vs {want}");
        }
    }
}
