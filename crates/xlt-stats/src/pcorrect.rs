//! Statistics on letter scoring's continuous outcome, the probability of the correct letter
//! (`p_correct`, issue #22): its gains with the accuracy gains' intervals (through
//! [`Grid::p_correct_grid`]), a Wilcoxon signed-rank test per (model, test set) with Holm and
//! Benjamini-Hochberg corrections, and the power of a paired t-test at the observed spread.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
use statrs::function::gamma::ln_gamma;

use crate::bootstrap::BootstrapConfig;
use crate::grid::{Grid, Measure};
use crate::signif::{benjamini_hochberg, holm};
use crate::summary::Groups;

/// How [`wilcoxon_signed_rank`] computed its p-value; the choice is scipy's
/// `method="auto"` (scipy 1.17, `scipy.stats.wilcoxon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WilcoxonMethod {
    /// The exact null distribution of `R+` (at most 50 differences, no zero, no tie).
    Exact,
    /// Every one of the `2^m` sign flips of the `m` non-zero differences (at most 13
    /// differences, with a zero or a tie), scipy's `PermutationMethod` when it enumerates.
    Permutation,
    /// The normal approximation with the tie-corrected variance and no continuity
    /// correction (more than 50 differences, or 14 to 50 with a zero or a tie).
    Normal,
}

/// A two-sided Wilcoxon signed-rank test of paired differences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Wilcoxon {
    /// Differences given.
    pub n: usize,
    /// Non-zero differences, the ones ranked (zeros are dropped: `zero_method="wilcox"`).
    pub nonzero: usize,
    /// Sum of the (mid)ranks of the positive differences' absolute values.
    pub r_plus: f64,
    /// `min(R+, R-)`, scipy's reported statistic.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// How `p` was computed.
    pub method: WilcoxonMethod,
}

/// The two-sided Wilcoxon signed-rank test of `d` (model minus base, per question), as
/// `scipy.stats.wilcoxon(d)` computes it with its defaults (`zero_method="wilcox"`,
/// `correction=False`, `method="auto"`; scipy 1.17):
///
/// - zero differences are dropped; the absolute values of the others are ranked, ties
///   getting their mean rank;
/// - more than 50 differences (zeros counted): the normal approximation
///   `z = (R+ − m(m+1)/4) / sqrt((m(m+1)(2m+1) − Σ(t³ − t)/2) / 24)`, `p = 2 Φ(−|z|)`, over
///   the `m` non-zero differences and their tie groups of sizes `t`;
/// - otherwise, with no zero and no tie: the exact distribution of `R+`,
///   `p = min(1, 2 min(P(R+ ≥ r), P(R+ ≤ r)))`;
/// - otherwise, up to 13 differences: all `2^m` sign flips of the non-zero differences,
///   `p = min(1, 2 min(#(R+ ≥ r), #(R+ ≤ r)) / 2^m)`;
/// - otherwise the normal approximation.
///
/// One departure: when every difference is zero scipy returns NaN past 13 differences; this
/// returns `p = 1` (no evidence of a difference), as scipy does up to 13.
///
/// Source: Wilcoxon, "Individual comparisons by ranking methods", Biometrics Bulletin 1(6),
/// 1945; the tie correction as in Hollander, Wolfe and Chicken, *Nonparametric Statistical
/// Methods*, 3rd ed., section 3.1.
pub fn wilcoxon_signed_rank(d: &[f64]) -> Wilcoxon {
    let n = d.len();
    let mut nz: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    nz.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let m = nz.len();
    // Doubled midranks, integers: a tie group over sorted positions i..j (1-based ranks
    // i+1..=j) has rank (i + 1 + j) / 2.
    let mut rank2 = vec![0u64; m];
    let mut ties: Vec<u64> = Vec::new();
    let mut i = 0;
    while i < m {
        let mut j = i + 1;
        while j < m && nz[j].abs() == nz[i].abs() {
            j += 1;
        }
        for r in &mut rank2[i..j] {
            *r = (i + 1 + j) as u64;
        }
        ties.push((j - i) as u64);
        i = j;
    }
    let r_plus2: u64 = nz
        .iter()
        .zip(&rank2)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total2 = (m * (m + 1)) as u64;
    let r_plus = r_plus2 as f64 / 2.0;
    let statistic = r_plus2.min(total2 - r_plus2) as f64 / 2.0;
    let has_ties = ties.iter().any(|t| *t > 1);
    let zeros = n - m;
    let method = if n > 50 {
        WilcoxonMethod::Normal
    } else if !has_ties && zeros == 0 {
        WilcoxonMethod::Exact
    } else if n <= 13 {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Normal
    };
    let p = if m == 0 {
        1.0
    } else {
        match method {
            WilcoxonMethod::Exact => {
                // counts[k]: subsets of {1..m} summing to k; exact in f64 for m <= 50.
                let top = m * (m + 1) / 2;
                let mut counts = vec![0.0f64; top + 1];
                counts[0] = 1.0;
                for r in 1..=m {
                    for k in (r..=top).rev() {
                        counts[k] += counts[k - r];
                    }
                }
                let all = 2f64.powi(m as i32);
                let k = (r_plus2 / 2) as usize;
                let le: f64 = counts[..=k].iter().sum::<f64>() / all;
                let ge: f64 = counts[k..].iter().sum::<f64>() / all;
                (2.0 * le.min(ge)).min(1.0)
            }
            WilcoxonMethod::Permutation => {
                let (mut le, mut ge) = (0u64, 0u64);
                for mask in 0u64..(1 << m) {
                    let s: u64 = (0..m)
                        .filter(|b| mask >> b & 1 == 1)
                        .map(|b| rank2[b])
                        .sum();
                    le += u64::from(s <= r_plus2);
                    ge += u64::from(s >= r_plus2);
                }
                (2.0 * le.min(ge) as f64 / (1u64 << m) as f64).min(1.0)
            }
            WilcoxonMethod::Normal => {
                let mf = m as f64;
                let mean = mf * (mf + 1.0) / 4.0;
                let tie: f64 = ties.iter().map(|t| (t * t * t - t) as f64).sum();
                let sd = ((mf * (mf + 1.0) * (2.0 * mf + 1.0) - tie / 2.0) / 24.0).sqrt();
                let z = (r_plus - mean) / sd;
                let normal = Normal::standard();
                (2.0 * normal.cdf(-z.abs())).min(1.0)
            }
        }
    };
    Wilcoxon {
        n,
        nonzero: m,
        r_plus,
        statistic,
        p,
        method,
    }
}

/// Simpson's rule steps over `[0, 12]` for the scaled chi variable; see [`paired_t_power`].
const SIMPSON_STEPS: usize = 12_000;

/// The power of the two-sided one-sample (paired) t-test at `alpha` on `n` differences when
/// their true mean is `effect` standard deviations from zero (Cohen's `d_z`):
/// `P(T' > c) + P(T' < −c)`, `T'` noncentral t on `n − 1` degrees of freedom with
/// noncentrality `effect · √n`, `c = t(1 − alpha/2, n − 1)`; what statsmodels'
/// `TTestPower().power(effect, n, alpha)` computes. Evaluated as
/// `∫ [Φ(λ − c s) + Φ(−λ − c s)] f(s) ds` over `s = √(V/ν)`, `V ~ χ²(ν)`, by Simpson's rule
/// (12,000 steps on `[0, 12]`; error below 1e-9 for `n` up to a few thousand). 0 for
/// `n < 2`.
pub fn paired_t_power(n: usize, effect: f64, alpha: f64) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let nu = (n - 1) as f64;
    let c = StudentsT::new(0.0, 1.0, nu)
        .expect("nu >= 1")
        .inverse_cdf(1.0 - alpha / 2.0);
    let lambda = effect * (n as f64).sqrt();
    let normal = Normal::standard();
    // Density of s = sqrt(V / nu): 2 nu^(nu/2) s^(nu-1) exp(-nu s^2 / 2) / (2^(nu/2) Γ(nu/2)).
    let log_k = std::f64::consts::LN_2 + nu / 2.0 * nu.ln()
        - nu / 2.0 * std::f64::consts::LN_2
        - ln_gamma(nu / 2.0);
    let density = |s: f64| -> f64 {
        if s == 0.0 {
            return if n == 2 { log_k.exp() } else { 0.0 };
        }
        (log_k + (nu - 1.0) * s.ln() - nu * s * s / 2.0).exp()
    };
    let f = |s: f64| (normal.cdf(lambda - c * s) + normal.cdf(-lambda - c * s)) * density(s);
    let h = 12.0 / SIMPSON_STEPS as f64;
    let mut sum = f(0.0) + f(12.0);
    for k in 1..SIMPSON_STEPS {
        sum += f(k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 };
    }
    (sum * h / 3.0).clamp(0.0, 1.0)
}

/// The smallest effect (in standard deviations of the differences, Cohen's `d_z`) that the
/// two-sided paired t-test at `alpha` detects with probability `power` on `n` differences
/// ([`paired_t_power`]), by bisection to 1e-6; statsmodels'
/// `TTestPower().solve_power(nobs=n, alpha=alpha, power=power)`. `None` for `n < 2` or when
/// even 100 standard deviations are not detected that often.
pub fn min_detectable_effect(n: usize, alpha: f64, power: f64) -> Option<f64> {
    let (mut lo, mut hi) = (0.0, 100.0);
    if n < 2 || paired_t_power(n, hi, alpha) < power {
        return None;
    }
    while hi - lo > 1e-6 {
        let mid = (lo + hi) / 2.0;
        if paired_t_power(n, mid, alpha) >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The Wilcoxon test of one (model, test set) pair on `p_correct`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PCorrectTest {
    /// The model.
    pub model: String,
    /// The test set, `<Dom> <lang>`.
    pub test_set: String,
    /// Gain in mean `p_correct`, percentage points.
    pub gain: f64,
    /// Questions paired with the base model.
    pub n: usize,
    /// Sample standard deviation of the per-question differences, percentage points;
    /// `null` for fewer than two questions.
    pub sd: Option<f64>,
    /// The test ([`wilcoxon_signed_rank`]).
    pub wilcoxon: Wilcoxon,
    /// Holm-adjusted p-value over the grid's pairs.
    pub p_holm: f64,
    /// Benjamini-Hochberg-adjusted p-value over the grid's pairs.
    pub p_bh: f64,
}

/// The smallest detectable `p_correct` gain for one test-set size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PCorrectPowerRow {
    /// Questions in the test set.
    pub n: usize,
    /// (Model, test set) pairs of this size.
    pub pairs: usize,
    /// The pairs' standard deviation of per-question differences, pooled (root of the mean
    /// variance), percentage points.
    pub sd: Option<f64>,
    /// Smallest detectable effect in standard deviations ([`min_detectable_effect`], power
    /// 0.8).
    pub min_effect_sd: Option<f64>,
    /// `min_effect_sd · sd`: the smallest gain in mean `p_correct` (percentage points) a
    /// paired t-test detects with 80% power at that spread.
    pub min_gain: Option<f64>,
}

/// Everything the report and `summary.json` say about `p_correct`.
#[derive(Debug, Clone, PartialEq)]
pub struct PCorrectAnalysis {
    /// The grid of the continuous outcome ([`Grid::p_correct_grid`]).
    pub grid: Grid,
    /// Its gains by every grouping, with the accuracy gains' intervals.
    pub groups: Groups,
    /// Every pair's Wilcoxon test, in grid order.
    pub tests: Vec<PCorrectTest>,
    /// Significance level of the counts and of the power table.
    pub alpha: f64,
    /// The smallest detectable gain per test-set size.
    pub power: Vec<PCorrectPowerRow>,
}

impl PCorrectAnalysis {
    /// Computes the `p_correct` statistics of `grid` (an accuracy grid built from outcomes);
    /// `None` when no pair has `p_correct` on both sides (generated answers, a published
    /// table).
    pub fn new(grid: &Grid, boot: &BootstrapConfig, alpha: f64) -> Option<PCorrectAnalysis> {
        let grid = grid.p_correct_grid()?;
        let groups = Groups::of(&grid, boot);
        let paired = grid.paired.as_ref().expect("a p_correct grid has pairs");
        let mut tests: Vec<PCorrectTest> = grid
            .rows
            .iter()
            .zip(paired)
            .map(|(r, p)| {
                let d = p
                    .differences(Measure::PCorrect)
                    .expect("a p_correct grid's pairs have p_correct");
                PCorrectTest {
                    model: r.model.clone(),
                    test_set: r.target.to_string(),
                    gain: r.gain,
                    n: d.len(),
                    sd: sd(&d).map(|s| s * 100.0),
                    wilcoxon: wilcoxon_signed_rank(&d),
                    p_holm: 0.0,
                    p_bh: 0.0,
                }
            })
            .collect();
        let ps: Vec<f64> = tests.iter().map(|t| t.wilcoxon.p).collect();
        for ((t, h), bh) in tests.iter_mut().zip(holm(&ps)).zip(benjamini_hochberg(&ps)) {
            t.p_holm = h;
            t.p_bh = bh;
        }
        let mut sizes: Vec<usize> = tests.iter().map(|t| t.n).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let power = sizes
            .into_iter()
            .map(|n| {
                let of: Vec<f64> = tests
                    .iter()
                    .filter(|t| t.n == n)
                    .filter_map(|t| t.sd)
                    .collect();
                let pooled = (!of.is_empty())
                    .then(|| (of.iter().map(|s| s * s).sum::<f64>() / of.len() as f64).sqrt());
                let effect = min_detectable_effect(n, alpha, 0.8);
                PCorrectPowerRow {
                    n,
                    pairs: tests.iter().filter(|t| t.n == n).count(),
                    sd: pooled,
                    min_effect_sd: effect,
                    min_gain: effect.zip(pooled).map(|(e, s)| e * s),
                }
            })
            .collect();
        Some(PCorrectAnalysis {
            grid,
            groups,
            tests,
            alpha,
            power,
        })
    }

    /// Gains and losses significant at `alpha`: (raw, Holm, BH) for each.
    fn counts(&self) -> ([usize; 3], [usize; 3]) {
        let count = |f: &dyn Fn(&PCorrectTest) -> bool| self.tests.iter().filter(|t| f(t)).count();
        let a = self.alpha;
        (
            [
                count(&|t| t.gain > 0.0 && t.wilcoxon.p < a),
                count(&|t| t.gain > 0.0 && t.p_holm < a),
                count(&|t| t.gain > 0.0 && t.p_bh < a),
            ],
            [
                count(&|t| t.gain < 0.0 && t.wilcoxon.p < a),
                count(&|t| t.gain < 0.0 && t.p_holm < a),
                count(&|t| t.gain < 0.0 && t.p_bh < a),
            ],
        )
    }

    /// The paired tests and the power table, as JSON (the `summary.json` `p_correct` key
    /// adds the groupings).
    pub(crate) fn tests_json(&self) -> serde_json::Value {
        let (g, l) = self.counts();
        serde_json::json!({
            "significance": {
                "test": WILCOXON_DESCRIPTION,
                "alpha": self.alpha,
                "tests": self.tests.len(),
                "gains_significant_raw": g[0],
                "gains_surviving_holm": g[1],
                "gains_surviving_bh": g[2],
                "losses_significant_raw": l[0],
                "losses_surviving_holm": l[1],
                "losses_surviving_bh": l[2],
            },
            "pairs": self.tests,
            "power": {
                "test": POWER_DESCRIPTION,
                "by_test_set_size": self.power,
            },
        })
    }

    /// The paired tests and the power table, as Markdown subsections.
    pub(crate) fn tests_markdown(&self, out: &mut String) {
        let (g, l) = self.counts();
        let _ = writeln!(out, "### Paired tests on p(correct)\n");
        let _ = writeln!(
            out,
            "A {WILCOXON_DESCRIPTION} ({} tests, alpha {}); every pair's gain, statistic, method and p-values are in `summary.json` under `p_correct.pairs`.\n",
            self.tests.len(),
            self.alpha
        );
        let _ = writeln!(
            out,
            "| | gains | losses |\n|---|---:|---:|\n| p < alpha, unadjusted | {} | {} |\n| surviving Holm | {} | {} |\n| surviving Benjamini-Hochberg | {} | {} |\n",
            g[0], l[0], g[1], l[1], g[2], l[2]
        );
        let kept: Vec<&PCorrectTest> = self.tests.iter().filter(|t| t.p_bh < self.alpha).collect();
        if !kept.is_empty() {
            let _ = writeln!(
                out,
                "Pairs surviving Benjamini-Hochberg:\n\n| model | test set | gain (pp) | n | sd (pp) | p | p (Holm) | p (BH) |\n|---|---|---:|---:|---:|---:|---:|---:|"
            );
            for t in kept {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:+.1} | {} | {} | {:.2e} | {:.2e} | {:.2e} |",
                    t.model,
                    t.test_set,
                    t.gain,
                    t.n,
                    t.sd.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1}")),
                    t.wilcoxon.p,
                    t.p_holm,
                    t.p_bh
                );
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "### Power for p(correct)\n");
        let _ = writeln!(
            out,
            "{POWER_DESCRIPTION}. \"none\": fewer than two questions.\n"
        );
        let _ = writeln!(
            out,
            "| questions | pairs | sd of differences (pp) | smallest detectable effect (sd) | smallest detectable gain (pp) |\n|---:|---:|---:|---:|---:|"
        );
        let fmt =
            |x: Option<f64>, d: usize| x.map_or_else(|| "none".to_owned(), |x| format!("{x:.d$}"));
        for r in &self.power {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.n,
                r.pairs,
                fmt(r.sd, 1),
                fmt(r.min_effect_sd, 2),
                fmt(r.min_gain, 1)
            );
        }
        let _ = writeln!(out);
    }
}

const WILCOXON_DESCRIPTION: &str = "two-sided Wilcoxon signed-rank test of the per-question differences in p(correct), each fine-tuned model vs the base on each test set, as scipy.stats.wilcoxon's defaults (zeros dropped, tie-corrected, no continuity correction; exact up to 50 questions without zeros or ties, every sign flip up to 13 with them, the normal approximation otherwise); Holm and Benjamini-Hochberg over the grid's pairs";

const POWER_DESCRIPTION: &str = "The smallest gain in mean p(correct) a two-sided paired t-test at alpha as in the tests detects with 80% power, for each test-set size: the smallest effect in standard deviations of the per-question differences (noncentral t, as statsmodels' TTestPower), times the standard deviation seen in this run (pooled over the pairs of that size)";

/// Sample standard deviation (n − 1); `None` for fewer than two values.
fn sd(v: &[f64]) -> Option<f64> {
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    Some((v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilcoxon_hand_values() {
        // d = 1..=5 all positive: R+ = 15, exact P(R+ >= 15) = 1/32, two-sided 1/16.
        let w = wilcoxon_signed_rank(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        println!("{w:?}");
        assert_eq!(w.method, WilcoxonMethod::Exact);
        assert!((w.p - 0.0625).abs() < 1e-12, "{}", w.p);
        assert_eq!((w.r_plus, w.statistic), (15.0, 0.0));
        // All zeros: nothing to rank, p = 1.
        let w = wilcoxon_signed_rank(&[0.0; 20]);
        assert_eq!((w.nonzero, w.p), (0, 1.0), "{w:?}");
    }

    #[test]
    fn power_of_no_effect_is_alpha() {
        for n in [2, 5, 30, 400] {
            let p = paired_t_power(n, 0.0, 0.05);
            println!("n {n}: power at zero effect {p}");
            assert!((p - 0.05).abs() < 1e-7, "n {n}: {p}");
        }
    }
}
