//! Least squares with two-way cluster-robust standard errors (Cameron, Gelbach and Miller,
//! "Robust Inference With Multiway Clustering", JBES 29(2), 2011), the variance the report's
//! intervals rest on: instances that share a fine-tuned model, or a test set, are not
//! independent.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::StatsError;

/// One coefficient of a [`TwoWayOls`] fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coefficient {
    /// What the regressor is.
    pub name: String,
    /// Estimate (for a gain regression: percentage points per unit of the regressor).
    pub estimate: f64,
    /// Two-way cluster-robust standard error.
    pub se: f64,
    /// `estimate / se`.
    pub t: f64,
    /// Two-sided p-value on `df` degrees of freedom.
    pub p: f64,
    /// 95% interval, `estimate ± t(0.975, df) · se`.
    pub ci95: [f64; 2],
}

/// An ordinary least-squares fit with two-way cluster-robust (CR1) covariance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoWayOls {
    /// The coefficients, in the order of the design's columns.
    pub coefficients: Vec<Coefficient>,
    /// Observations.
    pub n: usize,
    /// Distinct clusters in the first and second dimension.
    pub clusters: [usize; 2],
    /// Degrees of freedom of the t reference, `min(clusters) - 1`.
    pub df: usize,
    /// Whether the covariance had a negative eigenvalue, set to zero as Cameron, Gelbach
    /// and Miller (2011, section 2.3) propose.
    pub psd_adjusted: bool,
}

/// Relabels arbitrary cluster ids as `0..G`; returns the labels and `G`.
pub(crate) fn dense(ids: &[usize]) -> (Vec<usize>, usize) {
    let mut seen = std::collections::BTreeMap::new();
    let labels = ids
        .iter()
        .map(|id| {
            let next = seen.len();
            *seen.entry(*id).or_insert(next)
        })
        .collect();
    (labels, seen.len())
}

/// The one-way CR1 covariance `c · B (Σ_g u_g u_gᵀ) B`, with `u_g = X_gᵀ e_g`,
/// `B = (XᵀX)⁻¹` and `c = G/(G-1) · (N-1)/(N-K)` (Stata's and statsmodels' small-sample
/// factor; R's `sandwich::vcovCL(type = "HC1")`).
fn one_way(
    x: &DMatrix<f64>,
    e: &DVector<f64>,
    bread: &DMatrix<f64>,
    ids: &[usize],
) -> DMatrix<f64> {
    let (labels, g) = dense(ids);
    let (n, k) = x.shape();
    let mut scores = DMatrix::<f64>::zeros(g, k);
    for i in 0..n {
        for j in 0..k {
            scores[(labels[i], j)] += x[(i, j)] * e[i];
        }
    }
    let meat = scores.transpose() * &scores;
    let c = g as f64 / (g as f64 - 1.0) * ((n as f64 - 1.0) / (n as f64 - k as f64));
    bread * meat * bread * c
}

impl TwoWayOls {
    /// Fits `y = X β + e` by least squares and estimates `Var(β)` as
    /// `V₁ + V₂ − V₁₂`, each a one-way CR1 covariance clustered by `first`, by `second` and
    /// by their intersection. Inference uses t on `min(G₁, G₂) − 1` degrees of freedom, as
    /// statsmodels does for `cov_type="cluster"` with two groups.
    ///
    /// `x` is `(n, k)` row-major: `x[i]` the regressors of observation `i`; `names` has `k`
    /// entries; `y`, `first` and `second` have `n`.
    ///
    /// # Errors
    /// [`StatsError::Model`] when the shapes disagree, there are no more observations than
    /// regressors, either dimension has fewer than two clusters, or `XᵀX` is singular.
    pub fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        names: &[String],
        first: &[usize],
        second: &[usize],
    ) -> Result<TwoWayOls, StatsError> {
        let n = y.len();
        let k = names.len();
        if x.len() != n || first.len() != n || second.len() != n || x.iter().any(|r| r.len() != k) {
            return Err(StatsError::Model(format!(
                "shapes disagree: {} rows of regressors, {n} responses, {k} names",
                x.len()
            )));
        }
        if n <= k {
            return Err(StatsError::Model(format!(
                "{n} observations for {k} coefficients"
            )));
        }
        let (_, g1) = dense(first);
        let (_, g2) = dense(second);
        if g1.min(g2) < 2 {
            return Err(StatsError::Model(format!(
                "two-way clustering needs at least two clusters in each dimension, found {g1} and {g2}"
            )));
        }
        let xm = DMatrix::from_fn(n, k, |i, j| x[i][j]);
        let yv = DVector::from_column_slice(y);
        let xtx = xm.transpose() * &xm;
        let bread = xtx.clone().try_inverse().ok_or_else(|| {
            StatsError::Model(format!(
                "the regressors ({}) are collinear",
                names.join(", ")
            ))
        })?;
        // A numerically singular XᵀX can still invert; check the product.
        let check = &bread * &xtx - DMatrix::<f64>::identity(k, k);
        if check.amax() > 1e-6 {
            return Err(StatsError::Model(format!(
                "the regressors ({}) are collinear",
                names.join(", ")
            )));
        }
        let beta = &bread * xm.transpose() * &yv;
        let e = &yv - &xm * &beta;
        let pairs: Vec<usize> = {
            let mut map = std::collections::BTreeMap::new();
            first
                .iter()
                .zip(second)
                .map(|p| {
                    let next = map.len();
                    *map.entry((*p.0, *p.1)).or_insert(next)
                })
                .collect()
        };
        let mut v = one_way(&xm, &e, &bread, first) + one_way(&xm, &e, &bread, second)
            - one_way(&xm, &e, &bread, &pairs);
        v = (&v + v.transpose()) * 0.5;
        let eigen = SymmetricEigen::new(v.clone());
        let psd_adjusted = eigen.eigenvalues.iter().any(|l| *l < 0.0);
        if psd_adjusted {
            let clipped = eigen.eigenvalues.map(|l| l.max(0.0));
            v = &eigen.eigenvectors
                * DMatrix::from_diagonal(&clipped)
                * eigen.eigenvectors.transpose();
        }
        let df = g1.min(g2) - 1;
        let dist = StudentsT::new(0.0, 1.0, df as f64).expect("df >= 1");
        let q = dist.inverse_cdf(0.975);
        let coefficients = names
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let se = v[(j, j)].max(0.0).sqrt();
                let t = beta[j] / se;
                Coefficient {
                    name: name.clone(),
                    estimate: beta[j],
                    se,
                    t,
                    p: if se > 0.0 {
                        2.0 * (1.0 - dist.cdf(t.abs()))
                    } else {
                        f64::NAN
                    },
                    ci95: [beta[j] - q * se, beta[j] + q * se],
                }
            })
            .collect();
        Ok(TwoWayOls {
            coefficients,
            n,
            clusters: [g1, g2],
            df,
            psd_adjusted,
        })
    }

    /// The mean of `y` with its two-way cluster-robust interval: the fit on an intercept
    /// alone.
    ///
    /// # Errors
    /// As [`TwoWayOls::fit`].
    pub fn mean(y: &[f64], first: &[usize], second: &[usize]) -> Result<TwoWayOls, StatsError> {
        let x = vec![vec![1.0]; y.len()];
        TwoWayOls::fit(&x, y, &["mean".to_owned()], first, second)
    }
}
