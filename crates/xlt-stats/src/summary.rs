//! Mean gains with two-way clustered and bootstrap intervals, grouped every way the study
//! groups them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::bootstrap::{BootstrapConfig, Pigeonhole};
use crate::cluster::TwoWayOls;
use crate::coverage::IntervalMethod;
use crate::grid::{Direction, Grid, TransferType};
use crate::transfer::slice_and_test_ids;
use crate::wild::wild_cluster_interval;

/// Mean, count, spread and 95% intervals of a group of gains (percentage points).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean gain.
    pub mean: f64,
    /// Number of instances.
    pub n: usize,
    /// Sample standard deviation (n - 1); `null` for n < 2.
    pub sd: Option<f64>,
    /// Distinct fine-tuned models among the instances, counting the seed replicates of one
    /// slice as one (they share the slice's cluster; issue #24).
    pub models: usize,
    /// Distinct test sets among the instances.
    pub test_sets: usize,
    /// Two-way cluster-robust 95% interval (clusters: training slice, test set; see
    /// [`TwoWayOls::mean`]); `null` with fewer than two models or two test sets, or when
    /// the two-way variance is negative.
    pub ci95_cluster: Option<[f64; 2]>,
    /// Pigeonhole bootstrap 95% interval over models, test sets and (with outcomes)
    /// questions; `null` when the group is empty in more than half the resamples, or when
    /// (without questions) it has a single model or test set.
    pub ci95_bootstrap: Option<[f64; 2]>,
    /// `mean ± t(0.975, n-1) · sd / √n`: treats instances as independent, which they are
    /// not; kept in `summary.json` for comparison only. `null` for n < 2.
    pub ci95_independent_t: Option<[f64; 2]>,
    /// The wild cluster bootstrap's 95% interval (Webb weights by the dimension with fewer
    /// clusters of training slice and test set, symmetric percentile-t on the two-way CR1
    /// standard error; see [`crate::IntervalMethod::WildCluster`]); `null` with fewer than
    /// two slices or test sets or a variance that is not positive.
    #[serde(default)]
    pub ci95_wild_cluster: Option<[f64; 2]>,
    /// Questions behind the group's instances, summed (with outcomes; `null` for a
    /// published table): a report prints no interval resting on fewer than
    /// [`crate::MIN_QUESTIONS`].
    #[serde(default)]
    pub questions: Option<usize>,
}

impl Summary {
    /// The interval of `method`.
    pub fn ci95(&self, method: IntervalMethod) -> Option<[f64; 2]> {
        match method {
            IntervalMethod::Cluster => self.ci95_cluster,
            IntervalMethod::Pigeonhole => self.ci95_bootstrap,
            IntervalMethod::WildCluster => self.ci95_wild_cluster,
            IntervalMethod::IndependentT => self.ci95_independent_t,
        }
    }
}

/// Summarizes `values` as independent observations: mean, sd and the independent t
/// interval; the clustered intervals are left empty.
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    let mean = if n == 0 {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / n as f64
    };
    let (sd, ci95) = if n >= 2 {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .expect("n - 1 >= 1 degrees of freedom")
            .inverse_cdf(0.975);
        let half = t * sd / (n as f64).sqrt();
        (Some(sd), Some([mean - half, mean + half]))
    } else {
        (None, None)
    };
    Summary {
        mean,
        n,
        sd,
        models: 0,
        test_sets: 0,
        ci95_cluster: None,
        ci95_bootstrap: None,
        ci95_independent_t: ci95,
        ci95_wild_cluster: None,
        questions: None,
    }
}

/// A way of grouping grid rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// By transfer type.
    TransferType,
    /// By resource direction between different languages; same-language cells are the
    /// group `same_language`.
    Direction,
    /// By (source level, target level) between different languages, `high->low`;
    /// same-language cells are `high (same language)` and so on.
    Levels,
    /// By (source domain, target domain): `STEM->Medical`.
    Domains,
    /// By (source language, target language): `tr->ig`.
    Languages,
}

/// The key of row `i` under `grouping`, or `None` if the row has no such key (a language the
/// resource map does not know).
fn key(grid: &Grid, i: usize, grouping: Grouping) -> Option<String> {
    let r = &grid.rows[i];
    match grouping {
        Grouping::TransferType => Some(r.transfer.key().to_owned()),
        Grouping::Direction if r.same_language() => r.direction.map(|_| SAME_LANGUAGE.to_owned()),
        Grouping::Direction => r.direction.map(|d| d.key().to_owned()),
        Grouping::Levels if r.same_language() => {
            r.levels.map(|(s, _)| format!("{s} (same language)"))
        }
        Grouping::Levels => r.levels.map(|(s, t)| format!("{s}->{t}")),
        Grouping::Domains => Some(format!(
            "{}->{}",
            r.source.domain.name(),
            r.target.domain.name()
        )),
        Grouping::Languages => Some(format!(
            "{}->{}",
            r.source.language.code(),
            r.target.language.code()
        )),
    }
}

/// The direction group of same-language cells.
pub const SAME_LANGUAGE: &str = "same_language";

/// Row indices of every group of `grouping`, by key.
pub(crate) fn members(grid: &Grid, grouping: Grouping) -> BTreeMap<String, Vec<usize>> {
    let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..grid.rows.len() {
        if let Some(k) = key(grid, i, grouping) {
            members.entry(k).or_default().push(i);
        }
    }
    members
}

/// The summary of the rows `idx` without its bootstrap interval: mean, sd, the independent
/// t interval, and the two-way cluster-robust interval.
fn describe(grid: &Grid, idx: &[usize], model: &[usize], test: &[usize]) -> Summary {
    let gains: Vec<f64> = idx.iter().map(|&i| grid.rows[i].gain).collect();
    let mut s = summarize(&gains);
    let m: Vec<usize> = idx.iter().map(|&i| model[i]).collect();
    let t: Vec<usize> = idx.iter().map(|&i| test[i]).collect();
    let count = |v: &[usize]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    s.models = count(&m);
    s.test_sets = count(&t);
    s.questions = grid
        .question_counts()
        .map(|c| idx.iter().map(|&i| c[i]).sum());
    // A negative two-way variance (the model and test-set terms smaller than their
    // intersection's) gives no interval rather than a zero-width one.
    s.ci95_cluster = TwoWayOls::mean(&gains, &m, &t)
        .ok()
        .filter(|fit| !fit.psd_adjusted)
        .map(|fit| fit.coefficients[0].ci95);
    s
}

/// The wild cluster bootstrap interval of the rows `idx`, clustered by training slice and
/// test set.
fn wild(
    grid: &Grid,
    idx: &[usize],
    slices: &[usize],
    test: &[usize],
    boot: &BootstrapConfig,
) -> Option<[f64; 2]> {
    let gains: Vec<f64> = idx.iter().map(|&i| grid.rows[i].gain).collect();
    let s: Vec<usize> = idx.iter().map(|&i| slices[i]).collect();
    let t: Vec<usize> = idx.iter().map(|&i| test[i]).collect();
    wild_cluster_interval(&gains, &s, &t, boot)
}

/// Summaries of the grid's gains under `grouping`, keyed as in `summary.json`, with every
/// interval (see [`Summary`]).
pub fn group(grid: &Grid, grouping: Grouping, boot: &BootstrapConfig) -> BTreeMap<String, Summary> {
    let groups = members(grid, grouping);
    let lists: Vec<Vec<usize>> = groups.values().cloned().collect();
    let intervals = Pigeonhole::new(grid).intervals(&lists, boot);
    let (model, test) = grid.cluster_ids();
    let slices = slice_and_test_ids(grid).0;
    groups
        .into_iter()
        .zip(intervals)
        .map(|((k, idx), ci)| {
            let mut s = describe(grid, &idx, &model, &test);
            s.ci95_wild_cluster = wild(grid, &idx, &slices, &test, boot);
            s.ci95_bootstrap =
                ci.filter(|_| grid.paired.is_some() || s.models.min(s.test_sets) >= 2);
            (k, s)
        })
        .collect()
}

/// Every grouping the report uses, keyed as in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    /// By transfer type: `in_domain`, `cross_lingual`, `cross_domain`, `cross_both`.
    pub transfer_types: BTreeMap<String, Summary>,
    /// By direction between different languages: `downward`, `upward`, `lateral`; and
    /// `same_language`.
    pub resource_directions: BTreeMap<String, Summary>,
    /// By level pair between different languages: `high->low`, ...; and `low (same
    /// language)`, ...
    pub resource_levels: BTreeMap<String, Summary>,
    /// By domain pair: `STEM->Medical`, ...
    pub domain_matrix: BTreeMap<String, Summary>,
    /// By language pair: `tr->ig`, ...
    pub language_matrix: BTreeMap<String, Summary>,
}

impl Groups {
    /// Computes every grouping; the bootstrap resamples are shared by all groups.
    pub fn of(grid: &Grid, boot: &BootstrapConfig) -> Groups {
        let kinds = [
            Grouping::TransferType,
            Grouping::Direction,
            Grouping::Levels,
            Grouping::Domains,
            Grouping::Languages,
        ];
        let all: Vec<BTreeMap<String, Vec<usize>>> =
            kinds.iter().map(|g| members(grid, *g)).collect();
        let lists: Vec<Vec<usize>> = all.iter().flat_map(|m| m.values().cloned()).collect();
        let mut intervals = Pigeonhole::new(grid).intervals(&lists, boot).into_iter();
        let (model, test) = grid.cluster_ids();
        let slices = slice_and_test_ids(grid).0;
        let mut maps = all.into_iter().map(|m| {
            m.into_iter()
                .map(|(k, idx)| {
                    let mut s = describe(grid, &idx, &model, &test);
                    s.ci95_wild_cluster = wild(grid, &idx, &slices, &test, boot);
                    s.ci95_bootstrap = intervals.next().expect("one interval per group");
                    if grid.paired.is_none() && s.models.min(s.test_sets) < 2 {
                        // Nothing to resample but the one model or test set.
                        s.ci95_bootstrap = None;
                    }
                    (k, s)
                })
                .collect::<BTreeMap<String, Summary>>()
        });
        let mut next = || maps.next().expect("five groupings");
        Groups {
            transfer_types: next(),
            resource_directions: next(),
            resource_levels: next(),
            domain_matrix: next(),
            language_matrix: next(),
        }
    }

    /// Transfer-type summaries in report order.
    pub fn transfer_types_ordered(&self) -> Vec<(&'static str, Option<&Summary>)> {
        TransferType::ALL
            .iter()
            .map(|t| (t.key(), self.transfer_types.get(t.key())))
            .collect()
    }

    /// Direction summaries in report order, same-language cells last.
    pub fn directions_ordered(&self) -> Vec<(&'static str, Option<&Summary>)> {
        Direction::ALL
            .iter()
            .map(|d| d.key())
            .chain([SAME_LANGUAGE])
            .map(|k| (k, self.resource_directions.get(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_hand_computation() {
        // Gains 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.290994; t(0.975, 3) = 3.182446;
        // half-width 3.182446 * 1.290994 / 2 = 2.054260.
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.n, 4);
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert!((s.sd.unwrap() - 1.290_994_448_7).abs() < 1e-9);
        let [lo, hi] = s.ci95_independent_t.unwrap();
        assert!((lo - (2.5 - 2.054_260)).abs() < 1e-5, "{lo}");
        assert!((hi - (2.5 + 2.054_260)).abs() < 1e-5, "{hi}");
        let one = summarize(&[3.0]);
        assert_eq!((one.n, one.sd, one.ci95_independent_t), (1, None, None));
    }
}
