//! The pigeonhole (two-way) bootstrap of the study's design: fine-tuned models and test sets
//! are resampled with replacement, independently, and an instance enters a resample as often
//! as the product of its model's and its test set's draw counts (Owen, "The pigeonhole
//! bootstrap", Annals of Applied Statistics 1(2), 2007). With per-question outcomes, the
//! questions are resampled too, once per sample id: the same draw weights a question for
//! every model, for the base model and in every language, because the test sets of one domain
//! are translations of the same questions.
//!
//! Seed replicates (issue #24): the first factor is the training *slice*, and the
//! replicates of a slice (`<slice>#<k>`) are drawn within it: each drawn copy of a slice
//! brings as many draws, with replacement, from its own replicates as it has replicates. A
//! slice fine-tuned once draws nothing more, so results without replicates are unchanged.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::grid::Grid;

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Resamples.
    pub resamples: usize,
    /// Seed. Models, test sets and questions are drawn from three separate streams of it,
    /// so that (for example) adding a model does not change the question draws.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 2000,
            seed: 42,
        }
    }
}

/// Per-question differences of one instance: (sample-id index, model − base in the grid's
/// [`crate::Measure`]: correctness, or the probability of the correct letter).
type Questions = Vec<(usize, f64)>;

/// The grid's design, ready to resample.
pub(crate) struct Pigeonhole<'a> {
    grid: &'a Grid,
    /// Each row's fine-tuned model (a replicate of its slice).
    replicate: Vec<usize>,
    /// Per slice cluster, its models (ids as in `replicate`).
    replicates_of: Vec<Vec<usize>>,
    test: Vec<usize>,
    models: usize,
    tests: usize,
    /// With outcomes: each row's questions, and the sample ids by stratum (test domain).
    questions: Option<(Vec<Questions>, Vec<Vec<usize>>, usize)>,
}

impl<'a> Pigeonhole<'a> {
    pub(crate) fn new(grid: &'a Grid) -> Pigeonhole<'a> {
        let (model, test) = grid.cluster_ids();
        let models = model.iter().max().map_or(0, |m| m + 1);
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut replicates_of = vec![Vec::new(); models];
        let replicate = grid
            .rows
            .iter()
            .zip(&model)
            .map(|(r, &s)| {
                let next = ids.len();
                *ids.entry(r.model.as_str()).or_insert_with(|| {
                    replicates_of[s].push(next);
                    next
                })
            })
            .collect();
        let tests = test.iter().max().map_or(0, |t| t + 1);
        let questions = grid.paired.as_ref().map(|paired| {
            let mut ids: BTreeMap<(xlt_data::Domain, &str), usize> = BTreeMap::new();
            let mut strata: BTreeMap<xlt_data::Domain, Vec<usize>> = BTreeMap::new();
            let rows = grid
                .rows
                .iter()
                .zip(paired)
                .map(|(r, p)| {
                    let diffs = p
                        .differences(grid.measure)
                        .expect("a grid's pairs have its measure");
                    p.ids
                        .iter()
                        .zip(diffs)
                        .map(|(id, d)| {
                            let key = (r.target.domain, id.as_str());
                            let next = ids.len();
                            let k = *ids.entry(key).or_insert_with(|| {
                                strata.entry(r.target.domain).or_default().push(next);
                                next
                            });
                            (k, d)
                        })
                        .collect()
                })
                .collect();
            (rows, strata.into_values().collect(), ids.len())
        });
        Pigeonhole {
            grid,
            replicate,
            replicates_of,
            test,
            models,
            tests,
            questions,
        }
    }

    /// Runs the bootstrap for every group (each a list of row indices) and returns, per
    /// group, its percentile 95% interval and the number of resamples in which the group was
    /// not empty; `None` when fewer than half were.
    pub(crate) fn intervals(
        &self,
        groups: &[Vec<usize>],
        config: &BootstrapConfig,
    ) -> Vec<Option<[f64; 2]>> {
        let stream = |s: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            rng.set_stream(s);
            rng
        };
        let (mut rm, mut rt, mut rq, mut rr) = (stream(1), stream(2), stream(3), stream(4));
        let mut means: Vec<Vec<f64>> = vec![Vec::with_capacity(config.resamples); groups.len()];
        let n = self.grid.rows.len();
        let mut gains: Vec<Option<f64>> = vec![None; n];
        let mut w = vec![0u32; self.models];
        let mut wr = vec![0u32; self.replicate.iter().max().map_or(0, |m| m + 1)];
        let mut v = vec![0u32; self.tests];
        let mut u = vec![0u32; self.questions.as_ref().map_or(0, |q| q.2)];
        for _ in 0..config.resamples {
            draw(&mut rm, &mut w);
            draw_within(&mut rr, &w, &self.replicates_of, &mut wr);
            draw(&mut rt, &mut v);
            match &self.questions {
                Some((rows, strata, _)) => {
                    u.iter_mut().for_each(|x| *x = 0);
                    for pool in strata {
                        for _ in 0..pool.len() {
                            u[pool[rq.random_range(0..pool.len())]] += 1;
                        }
                    }
                    for (g, qs) in gains.iter_mut().zip(rows) {
                        // Sums of integers (accuracy) stay exact in f64 below 2^53.
                        let (mut num, mut den) = (0.0f64, 0u64);
                        for &(id, d) in qs {
                            num += f64::from(u[id]) * d;
                            den += u64::from(u[id]);
                        }
                        *g = (den > 0).then(|| num / den as f64 * 100.0);
                    }
                }
                None => {
                    for (g, r) in gains.iter_mut().zip(&self.grid.rows) {
                        *g = Some(r.gain);
                    }
                }
            }
            for (group, out) in groups.iter().zip(means.iter_mut()) {
                let (mut num, mut den) = (0.0, 0.0);
                for &i in group {
                    let weight = f64::from(wr[self.replicate[i]] * v[self.test[i]]);
                    if let (true, Some(g)) = (weight > 0.0, gains[i]) {
                        num += weight * g;
                        den += weight;
                    }
                }
                if den > 0.0 {
                    out.push(num / den);
                }
            }
        }
        means
            .into_iter()
            .map(|mut m| {
                if m.len() * 2 < config.resamples || m.is_empty() {
                    return None;
                }
                m.sort_by(f64::total_cmp);
                Some([percentile(&m, 0.025), percentile(&m, 0.975)])
            })
            .collect()
    }
}

/// Draws `counts.len()` items with replacement; `counts[i]` is how often item `i` was drawn.
fn draw(rng: &mut ChaCha8Rng, counts: &mut [u32]) {
    counts.iter_mut().for_each(|c| *c = 0);
    let g = counts.len();
    for _ in 0..g {
        counts[rng.random_range(0..g)] += 1;
    }
}

/// Draws the replicates within each drawn slice: a slice drawn `w[s]` times gets
/// `w[s] · R_s` draws with replacement from its `R_s` replicates (`replicates_of[s]`);
/// `counts[m]` is how often model `m` was drawn. A slice with one replicate takes its
/// slice's count without a random draw.
fn draw_within(rng: &mut ChaCha8Rng, w: &[u32], replicates_of: &[Vec<usize>], counts: &mut [u32]) {
    counts.iter_mut().for_each(|c| *c = 0);
    for (s, models) in replicates_of.iter().enumerate() {
        match models.as_slice() {
            [one] => counts[*one] = w[s],
            many => {
                for _ in 0..w[s] as usize * many.len() {
                    counts[many[rng.random_range(0..many.len())]] += 1;
                }
            }
        }
    }
}

/// The `q` quantile of sorted values, linear interpolation between order statistics
/// (R's type 7, numpy's default).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}
