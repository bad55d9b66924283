//! The power of the exact McNemar test, and the smallest gain a test set of a given size can
//! detect: so that a reader sees when a study could not have found anything.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, Discrete, DiscreteCDF};

use crate::signif::mcnemar_exact;

/// For `d` discordant questions, the fewest of them the model must win (`c`) for the exact
/// McNemar test to call a gain at `alpha`; `None` if no split of `d` is significant.
fn critical(d: u64, alpha: f64) -> Option<u64> {
    let mut lo = d.div_ceil(2);
    if mcnemar_exact(0, d) >= alpha {
        return None;
    }
    // mcnemar_exact(d - c, c) falls as c grows past d / 2: bisect for the first c below alpha.
    let mut hi = d;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if mcnemar_exact(d - mid, mid) < alpha {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The probability that the exact McNemar test at `alpha` finds a gain on `n` questions when
/// a share `discordant` of them are answered right by exactly one of the two models and the
/// true gain is `gain` (both fractions, `0 <= gain <= discordant <= 1`): the model wins a
/// discordant question with probability `(discordant + gain) / (2 · discordant)`.
///
/// Exact: `Σ_d P(D = d) · P(C ≥ c*(d) | d)`, `D ~ Binomial(n, discordant)`,
/// `C | d ~ Binomial(d, ·)`, `c*(d)` the critical count of the two-sided exact test.
pub fn mcnemar_power(n: u64, discordant: f64, gain: f64, alpha: f64) -> f64 {
    if discordant <= 0.0 || n == 0 {
        return 0.0;
    }
    let discordant = discordant.min(1.0);
    let win = ((discordant + gain) / (2.0 * discordant)).clamp(0.0, 1.0);
    let outer = Binomial::new(discordant, n).expect("probability in [0, 1]");
    (0..=n)
        .filter_map(|d| {
            let c = critical(d, alpha)?;
            let inner = Binomial::new(win, d).expect("probability in [0, 1]");
            let tail = if c == 0 { 1.0 } else { inner.sf(c - 1) };
            Some(outer.pmf(d) * tail)
        })
        .sum()
}

/// The smallest gain (fraction) the exact McNemar test at `alpha` detects with probability
/// `power` on `n` questions. With `discordant = Some(ψ)` the share of discordant questions is
/// held at ψ (so the gain is at most ψ); with `None` every discordant question goes the
/// model's way (no question lost), the most favourable case: no study of `n` questions can
/// detect less. `None` when even a gain of ψ (or 1) is not detected that often. Found by
/// bisection to 1e-4.
pub fn min_detectable_gain(n: u64, discordant: Option<f64>, alpha: f64, power: f64) -> Option<f64> {
    let at = |g: f64| match discordant {
        Some(psi) => mcnemar_power(n, psi, g, alpha),
        None => mcnemar_power(n, g, g, alpha),
    };
    let top = discordant.unwrap_or(1.0).min(1.0);
    if top <= 0.0 || at(top) < power {
        return None;
    }
    let (mut lo, mut hi) = (0.0, top);
    while hi - lo > 1e-4 {
        let mid = (lo + hi) / 2.0;
        if at(mid) >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The smallest detectable gain for one test-set size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerRow {
    /// Questions in the test set.
    pub n: usize,
    /// (Model, test set) pairs of this size in the run.
    pub pairs: usize,
    /// Share of discordant questions over those pairs.
    pub discordant_share: f64,
    /// Smallest gain (percentage points) detected with 80% power at that discordant share;
    /// `null` if none is.
    pub min_gain_at_observed: Option<f64>,
    /// Smallest gain (percentage points) detected with 80% power when no question is lost.
    pub min_gain_floor: Option<f64>,
}

/// For each test-set size among `pairs` (`(n, discordant)` per model and test set), the
/// smallest gain the exact McNemar test at `alpha` detects with 80% power.
pub fn power_table(pairs: &[(usize, usize)], alpha: f64) -> Vec<PowerRow> {
    let mut sizes: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .map(|n| {
            let of: Vec<&(usize, usize)> = pairs.iter().filter(|p| p.0 == n).collect();
            let share = of.iter().map(|p| p.1).sum::<usize>() as f64 / (n * of.len()) as f64;
            PowerRow {
                n,
                pairs: of.len(),
                discordant_share: share,
                min_gain_at_observed: min_detectable_gain(n as u64, Some(share), alpha, 0.8)
                    .map(|g| g * 100.0),
                min_gain_floor: min_detectable_gain(n as u64, None, alpha, 0.8).map(|g| g * 100.0),
            }
        })
        .collect()
}
