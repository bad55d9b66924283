//! The wild cluster bootstrap of a mean under two-way clustering, the small-cluster
//! correction of the report's primary interval.
//!
//! With 9 to 12 fine-tuned slices the two-way cluster-robust variance of Cameron, Gelbach and
//! Miller (2011) rests on few cluster sums and its t interval is too narrow. The wild cluster
//! bootstrap (Cameron, Gelbach and Miller, "Bootstrap-based improvements for inference with
//! clustered errors", REStat 90(3), 2008) keeps each cluster's residuals together and flips
//! them by one random weight per cluster; with two-way clustering the weights are drawn for
//! the dimension with fewer clusters (MacKinnon, Nielsen and Webb, "Wild bootstrap and
//! asymptotic inference with multiway clustering", JBES 39(2), 2021), and with fewer than
//! about 12 clusters Webb's six-point weights (Webb, "Reworking wild bootstrap-based
//! inference for clustered errors", Canadian Journal of Economics 56(3), 2023) replace
//! Rademacher's two points, which give only `2^G` distinct draws.
//!
//! The interval is the symmetric percentile-t one of the unrestricted (WCU) bootstrap:
//! `mean ± q · se`, `se` the two-way CR1 standard error of the mean and `q` the 95th
//! percentile of `|t*|`, `t* = (mean* - mean) / se*` over the draws.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bootstrap::{BootstrapConfig, percentile};
use crate::cluster::dense;

/// A mean's data in the cell layout the bootstrap needs: residual sums per intersection
/// cell of the two clusterings.
pub(crate) struct WildDesign {
    mean: f64,
    n: f64,
    /// Clusters in the dimension the weights are drawn for, and in the other.
    g_boot: usize,
    g_other: usize,
    /// Per intersection cell: (boot cluster, other cluster, residual sum, observations).
    cells: Vec<(usize, usize, f64, f64)>,
}

/// Webb's six-point weights: `±√(3/2), ±1, ±√(1/2)`, each with probability 1/6 (mean 0,
/// variance 1).
fn webb(rng: &mut ChaCha8Rng) -> f64 {
    const W: [f64; 6] = [
        -1.224_744_871_391_589,
        -1.0,
        -std::f64::consts::FRAC_1_SQRT_2,
        std::f64::consts::FRAC_1_SQRT_2,
        1.0,
        1.224_744_871_391_589,
    ];
    W[rng.random_range(0..6)]
}

impl WildDesign {
    /// `y` with its clusters in two dimensions; `None` with fewer than two clusters in
    /// either or fewer than two observations.
    pub(crate) fn new(y: &[f64], first: &[usize], second: &[usize]) -> Option<WildDesign> {
        let (a, g1) = dense(first);
        let (b, g2) = dense(second);
        if y.len() < 2 || g1 < 2 || g2 < 2 {
            return None;
        }
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        // Draw weights for the dimension with fewer clusters (the first on a tie).
        let swap = g2 < g1;
        let (g_boot, g_other) = if swap { (g2, g1) } else { (g1, g2) };
        let mut cells: std::collections::BTreeMap<(usize, usize), (f64, f64)> =
            std::collections::BTreeMap::new();
        for i in 0..y.len() {
            let key = if swap { (b[i], a[i]) } else { (a[i], b[i]) };
            let c = cells.entry(key).or_insert((0.0, 0.0));
            c.0 += y[i] - mean;
            c.1 += 1.0;
        }
        Some(WildDesign {
            mean,
            n: y.len() as f64,
            g_boot,
            g_other,
            cells: cells
                .into_iter()
                .map(|((p, q), (s, n))| (p, q, s, n))
                .collect(),
        })
    }

    /// The two-way CR1 standard error of the mean when the residual sum of cell `c` is
    /// `v[boot cluster] · sum - n_c · delta` (the bootstrap's residuals; `v = 1`, `delta =
    /// 0` for the data's own). `None` when the variance is not positive.
    fn se(&self, v: &[f64], delta: f64, s_boot: &mut [f64], s_other: &mut [f64]) -> Option<f64> {
        s_boot.iter_mut().for_each(|x| *x = 0.0);
        s_other.iter_mut().for_each(|x| *x = 0.0);
        let mut both = 0.0;
        for &(p, q, s, n) in &self.cells {
            let e = v[p] * s - n * delta;
            s_boot[p] += e;
            s_other[q] += e;
            both += e * e;
        }
        let c = |g: usize| g as f64 / (g as f64 - 1.0);
        let g12 = self.cells.len();
        let sq = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
        let both_term = if g12 > 1 { c(g12) * both } else { 0.0 };
        let var = (c(self.g_boot) * sq(s_boot) + c(self.g_other) * sq(s_other) - both_term)
            / (self.n * self.n);
        (var > 0.0).then(|| var.sqrt())
    }

    /// The 95% wild cluster bootstrap interval (`config.resamples` draws, `config.seed`);
    /// `None` when the data's two-way variance is not positive or most draws' is not.
    pub(crate) fn interval(&self, config: &BootstrapConfig) -> Option<[f64; 2]> {
        let mut s_boot = vec![0.0; self.g_boot];
        let mut s_other = vec![0.0; self.g_other];
        let ones = vec![1.0; self.g_boot];
        let se = self.se(&ones, 0.0, &mut s_boot, &mut s_other)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(4);
        let mut v = vec![0.0; self.g_boot];
        let mut ts = Vec::with_capacity(config.resamples);
        for _ in 0..config.resamples {
            v.iter_mut().for_each(|w| *w = webb(&mut rng));
            let delta = self.cells.iter().map(|&(p, _, s, _)| v[p] * s).sum::<f64>() / self.n;
            if let Some(se_star) = self.se(&v, delta, &mut s_boot, &mut s_other) {
                ts.push((delta / se_star).abs());
            }
        }
        if ts.len() * 2 < config.resamples || ts.is_empty() {
            return None;
        }
        ts.sort_by(f64::total_cmp);
        let q = percentile(&ts, 0.95);
        Some([self.mean - q * se, self.mean + q * se])
    }
}

/// The 95% wild cluster bootstrap interval of the mean of `y` clustered by `first` and
/// `second` (see the module's documentation).
pub(crate) fn wild_cluster_interval(
    y: &[f64],
    first: &[usize],
    second: &[usize],
    config: &BootstrapConfig,
) -> Option<[f64; 2]> {
    WildDesign::new(y, first, second)?.interval(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::TwoWayOls;

    #[test]
    fn its_standard_error_is_the_two_way_cr1_one() {
        // 4 models x 5 test sets, uneven values: the se from cell sums must equal
        // TwoWayOls::mean's.
        let (mut y, mut m, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..4 {
            for j in 0..5 {
                // Slice and test-set effects large enough that the two-way variance is
                // positive (with `((i*7 + j*3) % 11) - 4 + 0.3 i` it is -0.004: no standard
                // error, where TwoWayOls clips the negative eigenvalue to 0).
                y.push(((i * 7 + j * 3) % 11) as f64 * 0.2 - 1.0 + 0.8 * i as f64 + 0.5 * j as f64);
                m.push(i);
                t.push(j);
            }
        }
        let fit = TwoWayOls::mean(&y, &m, &t).unwrap();
        let d = WildDesign::new(&y, &m, &t).unwrap();
        let (mut a, mut b) = (vec![0.0; d.g_boot], vec![0.0; d.g_other]);
        let se = d.se(&vec![1.0; d.g_boot], 0.0, &mut a, &mut b).unwrap();
        let want = fit.coefficients[0].se;
        assert!((se - want).abs() < 1e-10, "wild {se} vs TwoWayOls {want}");
        let ci = wild_cluster_interval(&y, &m, &t, &BootstrapConfig::default()).unwrap();
        assert!(ci[0] < d.mean && d.mean < ci[1], "{ci:?} around {}", d.mean);
    }

    /// The one-way case against an outside implementation, `wildboottest` 0.3.2 (the Python
    /// port of fwildclusterboot/boottest), in `fixtures/stats/wild_reference.json` (written
    /// by `make_wild_reference.py` there): with every observation its own cluster in the
    /// second dimension, the two-way design is the one-way one (see the script). The mean and
    /// its CR1 standard error are deterministic and must agree to 1e-10. The 95th
    /// percentile of |t*| is a Monte Carlo figure on both sides (199,999 WCU draws with
    /// Webb's weights, each side its own random numbers): its relative Monte Carlo error is
    /// a few tenths of a percent per side, so the two must agree within 2%.
    #[test]
    fn its_one_way_case_agrees_with_wildboottest() {
        let text = include_str!("../../../fixtures/stats/wild_reference.json");
        let fixture: serde_json::Value = serde_json::from_str(text).unwrap();
        for d in fixture["designs"].as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            let num = |k: &str| d[k].as_f64().unwrap();
            let y: Vec<f64> = d["y"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let cluster: Vec<usize> = d["cluster"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let singles: Vec<usize> = (0..y.len()).collect();
            let design = WildDesign::new(&y, &cluster, &singles).unwrap();
            let (mut a, mut b) = (vec![0.0; design.g_boot], vec![0.0; design.g_other]);
            let se = design
                .se(&vec![1.0; design.g_boot], 0.0, &mut a, &mut b)
                .unwrap();
            println!(
                "{name}: mean {} vs {}, se {se} vs {}",
                design.mean,
                num("mean"),
                num("se")
            );
            assert!((design.mean - num("mean")).abs() < 1e-10, "{name}: mean");
            assert!(
                (se - num("se")).abs() < 1e-10,
                "{name}: se {se} vs {}",
                num("se")
            );
            let config = BootstrapConfig {
                resamples: 199_999,
                seed: 7,
            };
            let ci = design.interval(&config).unwrap();
            let q = (ci[1] - design.mean) / se;
            let want = num("q95");
            println!("{name}: q95 {q} vs wildboottest {want}");
            assert!(
                (q / want - 1.0).abs() < 0.02,
                "{name}: q95 {q} vs wildboottest {want}"
            );
        }
    }
}
