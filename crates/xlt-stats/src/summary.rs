//! Mean gains with t-based and bootstrap intervals, grouped every way the study groups them.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::grid::{Direction, Grid, TransferType};

/// Mean, count, spread and 95% interval of a group of gains (percentage points).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean gain.
    pub mean: f64,
    /// Number of instances.
    pub n: usize,
    /// Sample standard deviation (n - 1); `null` for n < 2.
    pub sd: Option<f64>,
    /// t-based 95% interval of the mean, `mean ± t(0.975, n-1) · sd / √n`; `null` for n < 2.
    pub ci95: Option<[f64; 2]>,
    /// Percentile bootstrap 95% interval over questions, when per-question outcomes exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap95: Option<[f64; 2]>,
}

/// Summarizes `values`.
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
        ci95,
        bootstrap95: None,
    }
}

/// A way of grouping grid rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// By transfer type.
    TransferType,
    /// By resource direction.
    Direction,
    /// By (source level, target level): `high->low`.
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
        Grouping::Direction => r.direction.map(|d| d.key().to_owned()),
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

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// Resamples.
    pub resamples: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            seed: 42,
        }
    }
}

/// Summaries of the grid's gains under `grouping`, keyed as in `summary.json`. With
/// per-question data, each summary also gets a bootstrap interval: questions are resampled
/// with replacement within each instance (the same draw for the model and the base, so the
/// pairing is kept), the group mean gain is recomputed, and the 2.5th and 97.5th percentiles
/// of `resamples` such means are the interval.
pub fn group(grid: &Grid, grouping: Grouping, boot: &BootstrapConfig) -> BTreeMap<String, Summary> {
    let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..grid.rows.len() {
        if let Some(k) = key(grid, i, grouping) {
            members.entry(k).or_default().push(i);
        }
    }
    members
        .into_iter()
        .map(|(k, idx)| {
            let gains: Vec<f64> = idx.iter().map(|&i| grid.rows[i].gain).collect();
            let mut s = summarize(&gains);
            if let Some(paired) = &grid.paired {
                s.bootstrap95 = Some(bootstrap(&idx, paired, boot, &k));
            }
            (k, s)
        })
        .collect()
}

fn bootstrap(
    idx: &[usize],
    paired: &[crate::grid::Paired],
    boot: &BootstrapConfig,
    key: &str,
) -> [f64; 2] {
    // Seed per group, so that adding a group does not change another's interval.
    let mut seed = boot.seed;
    for b in key.bytes() {
        seed = seed
            .wrapping_mul(0x100_0000_01b3)
            .wrapping_add(u64::from(b));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means = Vec::with_capacity(boot.resamples);
    for _ in 0..boot.resamples {
        let mut total = 0.0;
        for &i in idx {
            let p = &paired[i];
            let n = p.model.len();
            let (mut m, mut b) = (0usize, 0usize);
            for _ in 0..n {
                let j = rng.random_range(0..n);
                m += usize::from(p.model[j]);
                b += usize::from(p.base[j]);
            }
            total += (m as f64 - b as f64) / n as f64 * 100.0;
        }
        means.push(total / idx.len() as f64);
    }
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    [at(0.025), at(0.975)]
}

/// Every grouping the report uses, keyed as in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    /// By transfer type: `in_domain`, `cross_lingual`, `cross_domain`, `cross_both`.
    pub transfer_types: BTreeMap<String, Summary>,
    /// By direction: `downward`, `upward`, `lateral`.
    pub resource_directions: BTreeMap<String, Summary>,
    /// By level pair: `high->low`, ...
    pub resource_levels: BTreeMap<String, Summary>,
    /// By domain pair: `STEM->Medical`, ...
    pub domain_matrix: BTreeMap<String, Summary>,
    /// By language pair: `tr->ig`, ...
    pub language_matrix: BTreeMap<String, Summary>,
}

impl Groups {
    /// Computes every grouping.
    pub fn of(grid: &Grid, boot: &BootstrapConfig) -> Groups {
        Groups {
            transfer_types: group(grid, Grouping::TransferType, boot),
            resource_directions: group(grid, Grouping::Direction, boot),
            resource_levels: group(grid, Grouping::Levels, boot),
            domain_matrix: group(grid, Grouping::Domains, boot),
            language_matrix: group(grid, Grouping::Languages, boot),
        }
    }

    /// Transfer-type summaries in report order.
    pub fn transfer_types_ordered(&self) -> Vec<(&'static str, Option<&Summary>)> {
        TransferType::ALL
            .iter()
            .map(|t| (t.key(), self.transfer_types.get(t.key())))
            .collect()
    }

    /// Direction summaries in report order.
    pub fn directions_ordered(&self) -> Vec<(&'static str, Option<&Summary>)> {
        Direction::ALL
            .iter()
            .map(|d| (d.key(), self.resource_directions.get(d.key())))
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
        let [lo, hi] = s.ci95.unwrap();
        assert!((lo - (2.5 - 2.054_260)).abs() < 1e-5, "{lo}");
        assert!((hi - (2.5 + 2.054_260)).abs() < 1e-5, "{hi}");
        let one = summarize(&[3.0]);
        assert_eq!((one.n, one.sd, one.ci95), (1, None, None));
    }
}
