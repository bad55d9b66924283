//! Gain regressed on transfer type, resource direction and headroom, so that the three are
//! not confounded: the base model's accuracy on a test set bounds what fine-tuning can add
//! there, and the direction tables alone cannot tell the two apart.

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::cluster::TwoWayOls;
use crate::grid::{Direction, Grid, TransferType};

/// The fit of `gain ~ transfer type + direction + base accuracy`, with two-way clustered
/// standard errors (clusters: fine-tuned model, test set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadroomRegression {
    /// The fit.
    pub fit: TwoWayOls,
    /// The mean base accuracy (percentage points) the headroom regressor is centred on.
    pub base_accuracy_centre: f64,
    /// Instances left out because the resource map does not know a language.
    pub left_out: usize,
}

/// The fewest instances per regression term: with fewer, the residuals that the
/// cluster-robust variance rests on are nearly zero by construction (4 instances and 4 terms
/// gave `SE 0.00, CI [+7.1, +7.1]`).
pub const MIN_INSTANCES_PER_TERM: usize = 2;

/// The fewest training slices (a slice's seed replicates count once), and test sets, the
/// regression needs: its t reference has `min(clusters) - 1` degrees of freedom, and with
/// two clusters one.
pub const MIN_REGRESSION_CLUSTERS: usize = 3;

/// The regressors, in column order: intercept (in-domain cells at the mean base accuracy);
/// `cross-lingual`, `cross-domain`, `cross-both` (each against in-domain); `downward` and
/// `upward` (1 on cross-language cells only, against lateral cross-language cells, so
/// same-language cells never count as a direction); the base model's accuracy on the test
/// set in percentage points, centred on its mean. A regressor that is zero on every instance
/// (a grid without cross-domain cells, say) is dropped.
///
/// # Errors
/// [`StatsError::Model`] when the fit is impossible (see [`TwoWayOls::fit`]), or "too few
/// instances": fewer than [`MIN_INSTANCES_PER_TERM`] per term, fewer than
/// [`MIN_REGRESSION_CLUSTERS`] training slices or test sets, or a standard error of zero.
pub fn headroom_regression(grid: &Grid) -> Result<HeadroomRegression, StatsError> {
    let (model, test) = grid.cluster_ids();
    let keep: Vec<usize> = (0..grid.rows.len())
        .filter(|&i| grid.rows[i].direction.is_some())
        .collect();
    let left_out = grid.rows.len() - keep.len();
    if keep.is_empty() {
        return Err(StatsError::Model(
            "no instance with known resource levels".to_owned(),
        ));
    }
    let centre = keep
        .iter()
        .map(|&i| grid.rows[i].base_accuracy)
        .sum::<f64>()
        / keep.len() as f64
        * 100.0;
    let names = [
        "intercept (in-domain, mean base accuracy)",
        "cross-lingual",
        "cross-domain",
        "cross-both",
        "downward (cross-language cells)",
        "upward (cross-language cells)",
        "base accuracy (per pp)",
    ];
    let full: Vec<[f64; 7]> = keep
        .iter()
        .map(|&i| {
            let r = &grid.rows[i];
            let cross_language = !r.same_language();
            let is = |b: bool| f64::from(u8::from(b));
            [
                1.0,
                is(r.transfer == TransferType::CrossLingual),
                is(r.transfer == TransferType::CrossDomain),
                is(r.transfer == TransferType::CrossBoth),
                is(cross_language && r.direction == Some(Direction::Downward)),
                is(cross_language && r.direction == Some(Direction::Upward)),
                r.base_accuracy * 100.0 - centre,
            ]
        })
        .collect();
    let used: Vec<usize> = (0..names.len())
        .filter(|&j| j == 0 || full.iter().any(|row| row[j] != 0.0))
        .collect();
    let x: Vec<Vec<f64>> = full
        .iter()
        .map(|row| used.iter().map(|&j| row[j]).collect())
        .collect();
    let names: Vec<String> = used.iter().map(|&j| names[j].to_owned()).collect();
    let y: Vec<f64> = keep.iter().map(|&i| grid.rows[i].gain).collect();
    let first: Vec<usize> = keep.iter().map(|&i| model[i]).collect();
    let second: Vec<usize> = keep.iter().map(|&i| test[i]).collect();
    let distinct = |v: &[usize]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    let (models, tests) = (distinct(&first), distinct(&second));
    let k = names.len();
    if keep.len() < MIN_INSTANCES_PER_TERM * k || models.min(tests) < MIN_REGRESSION_CLUSTERS {
        return Err(StatsError::Model(too_few(
            keep.len(),
            "training slices",
            models,
            tests,
            k,
        )));
    }
    let fit = TwoWayOls::fit(&x, &y, &names, &first, &second)?;
    if let Some(c) = fit
        .coefficients
        .iter()
        .find(|c| !(c.se.is_finite() && c.se > 0.0))
    {
        return Err(StatsError::Model(fits_exactly(&c.name, c.se, keep.len())));
    }
    Ok(HeadroomRegression {
        fit,
        base_accuracy_centre: centre,
        left_out,
    })
}

/// Why a regression with `k` terms cannot be fitted on `instances` instances from `first`
/// `units` (fine-tuned models, training slices) x `tests` test sets, in plain words: what it
/// has, what it needs ([`MIN_INSTANCES_PER_TERM`] instances per term,
/// [`MIN_REGRESSION_CLUSTERS`] of each cluster), and the smallest selection of
/// language-domain slices, each fine-tuned and tested, that gives enough (the grid's rows
/// per (slice, test set), seed replicates, counted as they are).
pub(crate) fn too_few(
    instances: usize,
    units: &str,
    first: usize,
    tests: usize,
    k: usize,
) -> String {
    let need = MIN_INSTANCES_PER_TERM * k;
    let per_cell = (instances as f64 / (first * tests).max(1) as f64).max(1.0);
    let slices = (MIN_REGRESSION_CLUSTERS..)
        .find(|&m| (m * m) as f64 * per_cell >= need as f64)
        .expect("a large enough selection");
    format!(
        "too few instances: its {k} {} at least {need} instances ({MIN_INSTANCES_PER_TERM} per term) from at least {MIN_REGRESSION_CLUSTERS} {units} and {MIN_REGRESSION_CLUSTERS} test sets, and it has {instances} instances from {first} {units} x {tests} test sets; a selection of at least {slices} language-domain slices, each fine-tuned and tested, gives enough (for example {slices} languages in one domain, or {} languages in two domains: --languages, --domains; with --train-slices, name at least {slices})",
        if k == 1 { "term needs" } else { "terms need" },
        slices.div_ceil(2)
    )
}

/// Why a fit whose standard error of `term` is `se` (zero: `instances` instances fit
/// exactly) gives no interval, in plain words.
pub(crate) fn fits_exactly(term: &str, se: f64, instances: usize) -> String {
    format!(
        "too few instances: the {instances} instances fit exactly (the standard error of `{term}` is {se}), so nothing is left to estimate an interval from; more languages or domains (more slices and test sets) give it residual variation"
    )
}

#[cfg(test)]
mod tests {
    use super::too_few;

    #[test]
    fn too_few_counts_terms_and_names_the_cluster_unit() {
        let one = too_few(1, "training slices", 1, 1, 1);
        assert!(
            one.starts_with("too few instances: its 1 term needs at least 2 instances"),
            "{one}"
        );
        let many = too_few(4, "training slices", 2, 2, 3);
        assert!(
            many.contains("its 3 terms need at least 6 instances"),
            "{many}"
        );
        assert!(
            many.contains("from 2 training slices x 2 test sets"),
            "{many}"
        );
    }
}
