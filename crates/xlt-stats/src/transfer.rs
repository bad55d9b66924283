//! Typological and genealogical distance per instance, and the transfer regression: gain on
//! resource direction, WALS distance, genealogical relatedness, domain match and headroom.
//!
//! Distances come from [`xlt_data::Typology`] (WALS, Dryer and Haspelmath 2013; Glottolog
//! 5.1, Hammarström et al. 2024; both CC BY 4.0).

use nalgebra::DVector;
use serde::{Deserialize, Serialize};
use xlt_data::{MIN_SHARED_FEATURES, PairDistance, Typology};

use crate::StatsError;
use crate::cluster::TwoWayOls;
use crate::grid::{Direction, Grid};
use crate::regression::{MIN_INSTANCES_PER_TERM, MIN_REGRESSION_CLUSTERS};

/// The distances of every instance's (training language, test language), aligned with the
/// grid's rows: `None` where the embedded tables do not cover a language.
pub fn pair_distances(grid: &Grid) -> Vec<Option<PairDistance>> {
    let typology = Typology::embedded();
    grid.rows
        .iter()
        .map(|r| {
            typology
                .pair(r.source.language, r.target.language, MIN_SHARED_FEATURES)
                .ok()
        })
        .collect()
}

/// The fit of `gain ~ direction + WALS distance + genealogical relatedness + domain match +
/// base accuracy`, with two-way clustered standard errors (clusters: training slice, test
/// set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRegression {
    /// The fit.
    pub fit: TwoWayOls,
    /// The mean base accuracy (percentage points) the headroom regressor is centred on.
    pub base_accuracy_centre: f64,
    /// Instances left out because the resource map does not know a language.
    pub left_out_direction: usize,
    /// Instances left out because a language is not in the typology tables or the pair
    /// shares fewer than [`MIN_SHARED_FEATURES`] WALS features.
    pub left_out_distance: usize,
    /// Regressors dropped because they are zero, or a linear combination of earlier ones in
    /// this grid or nearly one (R^2 on them above `1 - NEAR_ALIAS`; for example, with every
    /// language of its own family, relatedness is 1 exactly on same-language cells).
    pub aliased: Vec<String>,
}

/// A regressor is dropped as aliased when its residual on the earlier columns keeps less than
/// this share of its variation about its mean: R^2 on them above 0.99, a variance inflation
/// factor above 100 (the severe end of the usual 10-100 rules of thumb; Belsley, Kuh and
/// Welsch, *Regression Diagnostics*, 1980).
pub const NEAR_ALIAS: f64 = 0.01;

/// The regressors, in column order.
pub const TRANSFER_TERMS: [&str; 7] = [
    "intercept (every regressor at 0, base accuracy at its mean)",
    "downward (cross-language cells)",
    "upward (cross-language cells)",
    "WALS distance (per 0.1)",
    "genealogical relatedness (1 - distance)",
    "domain match",
    "base accuracy (per pp)",
];

/// Fits the transfer regression on the instances whose resource levels are known and whose
/// languages share at least [`MIN_SHARED_FEATURES`] WALS features. Columns are
/// [`TRANSFER_TERMS`]: direction as in the headroom regression (1 on cross-language cells
/// only, against lateral), the WALS distance times 10 (0 for a language and itself),
/// relatedness `1 - genealogical distance` (1 for a language and itself, 0 across families),
/// domain match 1 when the test set's domain is the training slice's, and the base accuracy
/// in pp centred on its mean. A column that is zero everywhere, or a linear combination of
/// earlier columns or nearly one ([`NEAR_ALIAS`]), is dropped and named in
/// [`TransferRegression::aliased`]. Clusters are the
/// training slice (so replicates of a slice are one cluster) and the test set.
///
/// # Errors
/// [`StatsError::Model`] as [`crate::headroom_regression`]: too few instances per term,
/// fewer than [`MIN_REGRESSION_CLUSTERS`] slices or test sets, a zero standard error, or an
/// impossible fit.
pub fn transfer_regression(
    grid: &Grid,
    distances: &[Option<PairDistance>],
) -> Result<TransferRegression, StatsError> {
    if distances.len() != grid.rows.len() {
        return Err(StatsError::Model(format!(
            "{} distances for {} instances",
            distances.len(),
            grid.rows.len()
        )));
    }
    let with_direction: Vec<usize> = (0..grid.rows.len())
        .filter(|&i| grid.rows[i].direction.is_some())
        .collect();
    let keep: Vec<usize> = with_direction
        .iter()
        .copied()
        .filter(|&i| distances[i].is_some_and(|d| d.wals_usable))
        .collect();
    let left_out_direction = grid.rows.len() - with_direction.len();
    let left_out_distance = with_direction.len() - keep.len();
    if keep.is_empty() {
        return Err(StatsError::Model(
            "no instance with known resource levels and a usable WALS distance".to_owned(),
        ));
    }
    let centre = keep
        .iter()
        .map(|&i| grid.rows[i].base_accuracy)
        .sum::<f64>()
        / keep.len() as f64
        * 100.0;
    let full: Vec<[f64; 7]> = keep
        .iter()
        .map(|&i| {
            let r = &grid.rows[i];
            let d = distances[i].expect("kept rows have distances");
            let cross = !r.same_language();
            let is = |b: bool| f64::from(u8::from(b));
            [
                1.0,
                is(cross && r.direction == Some(Direction::Downward)),
                is(cross && r.direction == Some(Direction::Upward)),
                10.0 * d.wals.distance,
                1.0 - d.genealogical.distance,
                is(r.source.domain == r.target.domain),
                r.base_accuracy * 100.0 - centre,
            ]
        })
        .collect();
    // Keep a column when it adds to the span of the kept ones (Gram-Schmidt residual) by
    // more than NEAR_ALIAS of its own variation: a column nearly a combination of earlier
    // ones (a variance inflation factor over 100) makes both coefficients huge and opposite
    // with intervals hundreds of points wide, as WALS distance and relatedness do on a
    // selection of three languages of three families (r = -0.9997).
    let mut basis: Vec<DVector<f64>> = Vec::new();
    let mut used = Vec::new();
    let mut aliased = Vec::new();
    for j in 0..TRANSFER_TERMS.len() {
        let col = DVector::from_iterator(full.len(), full.iter().map(|r| r[j]));
        let mut res = col.clone();
        for q in &basis {
            res -= q * q.dot(&res);
        }
        // The intercept's variation is its norm; any other column's is about its mean.
        let varied = if j == 0 {
            col.norm_squared()
        } else {
            col.add_scalar(-col.mean()).norm_squared()
        };
        if col.norm() > 0.0
            && varied > 1e-9 * col.norm_squared()
            && res.norm_squared() > NEAR_ALIAS * varied
        {
            basis.push(res.normalize());
            used.push(j);
        } else {
            aliased.push(TRANSFER_TERMS[j].to_owned());
        }
    }
    let x: Vec<Vec<f64>> = full
        .iter()
        .map(|row| used.iter().map(|&j| row[j]).collect())
        .collect();
    let names: Vec<String> = used.iter().map(|&j| TRANSFER_TERMS[j].to_owned()).collect();
    let y: Vec<f64> = keep.iter().map(|&i| grid.rows[i].gain).collect();
    let (slices, tests) = slice_and_test_ids(grid);
    let first: Vec<usize> = keep.iter().map(|&i| slices[i]).collect();
    let second: Vec<usize> = keep.iter().map(|&i| tests[i]).collect();
    let distinct = |v: &[usize]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    let (g1, g2) = (distinct(&first), distinct(&second));
    let k = names.len();
    if keep.len() < MIN_INSTANCES_PER_TERM * k || g1.min(g2) < MIN_REGRESSION_CLUSTERS {
        return Err(StatsError::Model(crate::regression::too_few(
            keep.len(),
            "training slices",
            g1,
            g2,
            k,
        )));
    }
    let fit = TwoWayOls::fit(&x, &y, &names, &first, &second)?;
    if let Some(c) = fit
        .coefficients
        .iter()
        .find(|c| !(c.se.is_finite() && c.se > 0.0))
    {
        return Err(StatsError::Model(crate::regression::fits_exactly(
            &c.name,
            c.se,
            keep.len(),
        )));
    }
    Ok(TransferRegression {
        fit,
        base_accuracy_centre: centre,
        left_out_direction,
        left_out_distance,
        aliased,
    })
}

/// Each row's (training slice, test set), numbered from 0 in order of first appearance: the
/// clusters of the transfer regression and of the wild cluster bootstrap. Replicates of one
/// slice (models labelled `<slice>#<k>`) share the slice's cluster, as their training slice
/// is the same.
pub(crate) fn slice_and_test_ids(grid: &Grid) -> (Vec<usize>, Vec<usize>) {
    let mut slices = std::collections::BTreeMap::new();
    let mut tests = std::collections::BTreeMap::new();
    grid.rows
        .iter()
        .map(|r| {
            let s = slices.len();
            let s = *slices.entry(r.source).or_insert(s);
            let t = tests.len();
            let t = *tests.entry(r.target).or_insert(t);
            (s, t)
        })
        .unzip()
}
