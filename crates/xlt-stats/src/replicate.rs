//! Seed replicates of a fine-tune (issue #24): the label of a replicate model, the
//! between-replicate spread of each test set's accuracy, a variance decomposition of the
//! gains, and the replicate noise of every transfer-type and direction gain.
//!
//! A slice fine-tuned `N > 1` times gives `N` models labelled `<slice>#<k>`, `k = 1..N`; with
//! `N = 1` the label is the slice alone, as before replicates existed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::grid::{Grid, Slice};
use crate::summary::{Grouping, members};

/// What separates a slice from its replicate number in a model label (`en-stem#2`).
pub const REPLICATE_SEPARATOR: char = '#';

/// A fine-tuned model's label: the slice it was trained on and, when the slice was
/// fine-tuned more than once, which replicate (1-based). Displays as `<slice>#<k>`, or as the
/// slice alone without a replicate number. The slice is kept as text, so the same type
/// serves file stems (`en-stem#2`) and report labels (`STEM en#2`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicateLabel {
    /// The training slice, as written (`en-stem`, `STEM en`).
    pub slice: String,
    /// The replicate number, 1 to N; `None` for a slice fine-tuned once.
    pub replicate: Option<u32>,
}

impl ReplicateLabel {
    /// The label of replicate `k` (1-based) of `slice` in a study with `replicates`
    /// fine-tunes per slice: `slice` alone when `replicates` is 1 (the label every study
    /// without replicates has), else `slice#k`.
    pub fn new(slice: &str, k: u32, replicates: u32) -> ReplicateLabel {
        ReplicateLabel {
            slice: slice.to_owned(),
            replicate: (replicates > 1).then_some(k),
        }
    }

    /// Parses `slice` or `slice#k` (see [`split_label`]).
    ///
    /// # Errors
    /// As [`split_label`].
    pub fn parse(label: &str) -> Result<ReplicateLabel, StatsError> {
        let (slice, replicate) = split_label(label)?;
        Ok(ReplicateLabel {
            slice: slice.to_owned(),
            replicate,
        })
    }
}

impl fmt::Display for ReplicateLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.replicate {
            Some(k) => write!(f, "{}{REPLICATE_SEPARATOR}{k}", self.slice),
            None => f.write_str(&self.slice),
        }
    }
}

/// Splits a model label into its slice and replicate number: `en-stem#2` is
/// `("en-stem", Some(2))`, `en-stem` is `("en-stem", None)`.
///
/// # Errors
/// [`StatsError::Input`] naming the label when the part after `#` is not a whole number
/// from 1, or the slice before it is empty.
pub fn split_label(label: &str) -> Result<(&str, Option<u32>), StatsError> {
    match label.rsplit_once(REPLICATE_SEPARATOR) {
        None => Ok((label, None)),
        Some((slice, k)) => {
            let bad = |why: &str| {
                StatsError::Input(format!(
                    "model label `{label}`: {why} (expected `<slice>` or `<slice>#<k>`, k from 1)"
                ))
            };
            if slice.is_empty() {
                return Err(bad("no slice before `#`"));
            }
            match k.parse::<u32>() {
                Ok(k) if k >= 1 => Ok((slice, Some(k))),
                _ => Err(bad(&format!(
                    "replicate `{k}` is not a whole number from 1"
                ))),
            }
        }
    }
}

/// The replicate number of a grid row's model label; 1 for a label without one.
fn replicate_of(label: &str) -> u32 {
    split_label(label).ok().and_then(|(_, k)| k).unwrap_or(1)
}

/// Sample standard deviation (n - 1); `None` below two values.
fn sd(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    Some((values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt())
}

/// The spread between the replicates of one slice on one test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicateSpread {
    /// The training slice (`STEM en`).
    pub slice: String,
    /// The test set (`Med ig`).
    pub test_set: String,
    /// Replicates with an accuracy on this test set.
    pub replicates: usize,
    /// Sample standard deviation (n - 1) of the replicates' accuracies, percentage points.
    pub sd_accuracy: Option<f64>,
    /// The same of their mean `p_correct` (letter scoring), percentage points; `null`
    /// without letter probabilities.
    pub sd_p_correct: Option<f64>,
}

/// One component of [`VarianceDecomposition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarianceComponent {
    /// `slice`, `test_set`, `slice_x_test_set`, `replicate`, `residual` (replicate x test
    /// set, with the binomial noise of each model's own answers); and, with per-question
    /// data, `question_sampling`: a reference, not a sixth additive part (see
    /// [`DECOMPOSITION_METHOD`]).
    pub name: String,
    /// Degrees of freedom of its mean square (`null` for `question_sampling`).
    pub df: Option<usize>,
    /// Its mean square, pp² (`null` for `question_sampling`).
    pub mean_square: Option<f64>,
    /// The method-of-moments estimate of the variance, pp², as computed (it can be
    /// negative when the component is small; the report prints negative ones as 0).
    pub variance: f64,
}

/// The variance of the gains split into slice, test set, their interaction, replicate
/// (within slice) and residual (replicate x test set and binomial answer noise), by the method
/// of moments on the expected mean squares of the balanced crossed-nested random-effects
/// ANOVA `y_str = μ + a_s + b_t + (ab)_st + c_r(s) + e_str` (Searle, Casella and McCulloch,
/// *Variance Components*, 1992, ch. 4; the expected mean squares are those of the
/// two-factor mixed nested design, e.g. Montgomery, *Design and Analysis of Experiments*,
/// ch. 14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarianceDecomposition {
    /// Slices `S`.
    pub slices: usize,
    /// Test sets `T`.
    pub test_sets: usize,
    /// Replicates per slice `R`.
    pub replicates: usize,
    /// The grand mean gain, pp.
    pub mean: f64,
    /// The components, in the order above.
    pub components: Vec<VarianceComponent>,
}

/// The replicate noise of one group's mean gain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GainNoise {
    /// The grouping (`transfer_types`, `resource_directions`).
    pub grouping: String,
    /// The group (`cross_lingual`, `downward`).
    pub group: String,
    /// The group's mean gain, pp (the mean over all its instances).
    pub mean: f64,
    /// The group's mean gain computed from replicate k of every slice alone, k = 1..R.
    pub by_replicate: Vec<f64>,
    /// Replicate standard error of the mean gain: sd(by_replicate) / √R, pp.
    pub replicate_se: f64,
    /// `|mean| > 2 · replicate_se` ([`EXCEEDS_RULE`]).
    pub exceeds_noise: bool,
}

/// The rule by which a gain exceeds replicate noise, as the report states it.
pub const EXCEEDS_RULE: &str = "a gain exceeds replicate noise when its replicate SE is above 0 and |gain| > 2 x that SE (an SE of 0, replicates that agree exactly, cannot tell), where the replicate SE is sd(m_1..m_R) / sqrt(R) and m_k is the group's mean gain computed from replicate k of every slice alone: how much the gain would move if every slice were fine-tuned again with other seeds (data order, LoRA initialization, dropout), on the same test questions";

/// How the variance decomposition is computed, as the report and `summary.json` name it.
pub const DECOMPOSITION_METHOD: &str = "method of moments (ANOVA) on the balanced crossed-nested random-effects design: slice and test set crossed, replicate nested in slice; each component from the expected mean squares, negative estimates printed as 0; the residual is replicate x test set together with the binomial noise of each model's own answers on the same questions. `question sampling` is a reference, not a sixth additive part: the mean over cells of var(d)/n (d the per-question differences, n the questions), the variance a cell's gain has from which questions its test set holds; every model answers the same questions, so it sits inside the test set, slice x test set and residual components rather than beside them";

/// Everything the replicates tell, for the report and `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicateAnalysis {
    /// Replicates per slice (the largest replicate number seen), by slice.
    pub per_slice: BTreeMap<String, usize>,
    /// The most replicates any slice has; below 2 nothing else can be estimated.
    pub max_replicates: usize,
    /// Per slice and test set, the spread of the replicates (slices with two or more).
    pub spread: Vec<ReplicateSpread>,
    /// The decomposition, or why it could not be made.
    pub decomposition: Result<VarianceDecomposition, String>,
    /// The replicate noise of each transfer-type and direction gain (groups where every
    /// slice has every replicate).
    pub noise: Vec<GainNoise>,
}

impl ReplicateAnalysis {
    /// Computes the replicate statistics of `grid` (gains in pp); `p_correct` is the same
    /// grid in mean `p_correct` ([`Grid::p_correct_grid`]) when outcomes were scored by
    /// letters.
    pub fn of(grid: &Grid, p_correct: Option<&Grid>) -> ReplicateAnalysis {
        let mut reps: BTreeMap<Slice, BTreeSet<u32>> = BTreeMap::new();
        for r in &grid.rows {
            reps.entry(r.source)
                .or_default()
                .insert(replicate_of(&r.model));
        }
        let per_slice: BTreeMap<String, usize> =
            reps.iter().map(|(s, k)| (s.to_string(), k.len())).collect();
        let max_replicates = per_slice.values().copied().max().unwrap_or(0);
        let values = |g: &Grid| {
            let mut m: BTreeMap<(Slice, Slice), Vec<f64>> = BTreeMap::new();
            for r in &g.rows {
                m.entry((r.source, r.target))
                    .or_default()
                    .push(r.accuracy * 100.0);
            }
            m
        };
        let acc = values(grid);
        let pc = p_correct.map(values);
        let spread = if max_replicates < 2 {
            Vec::new()
        } else {
            acc.iter()
                .filter(|(_, v)| v.len() >= 2)
                .map(|((s, t), v)| ReplicateSpread {
                    slice: s.to_string(),
                    test_set: t.to_string(),
                    replicates: v.len(),
                    sd_accuracy: sd(v),
                    sd_p_correct: pc
                        .as_ref()
                        .and_then(|m| m.get(&(*s, *t)))
                        .and_then(|v| sd(v)),
                })
                .collect()
        };
        let decomposition = if max_replicates < 2 {
            Err("one fine-tune per slice".to_owned())
        } else {
            decompose(grid)
        };
        let noise = if max_replicates < 2 {
            Vec::new()
        } else {
            gain_noise(grid, max_replicates)
        };
        ReplicateAnalysis {
            per_slice,
            max_replicates,
            spread,
            decomposition,
            noise,
        }
    }

    /// Whether replicate noise can be estimated (some slice has two or more replicates).
    pub fn estimable(&self) -> bool {
        self.max_replicates >= 2
    }
}

/// The noise of every transfer-type and direction group whose slices all have replicates
/// 1..=`r`.
fn gain_noise(grid: &Grid, r: usize) -> Vec<GainNoise> {
    let mut out = Vec::new();
    for (grouping, name) in [
        (Grouping::TransferType, "transfer_types"),
        (Grouping::Direction, "resource_directions"),
    ] {
        for (group, idx) in members(grid, grouping) {
            let mut sums = vec![(0.0, 0usize); r];
            let mut complete = true;
            let mut by_slice: BTreeMap<Slice, BTreeSet<u32>> = BTreeMap::new();
            for &i in &idx {
                let row = &grid.rows[i];
                let k = replicate_of(&row.model) as usize;
                by_slice.entry(row.source).or_default().insert(k as u32);
                if k == 0 || k > r {
                    complete = false;
                    continue;
                }
                sums[k - 1].0 += row.gain;
                sums[k - 1].1 += 1;
            }
            complete &= by_slice.values().all(|k| k.len() == r);
            if !complete || sums.iter().any(|s| s.1 == 0) {
                continue;
            }
            let by_replicate: Vec<f64> = sums.iter().map(|(s, n)| s / *n as f64).collect();
            let mean = idx.iter().map(|&i| grid.rows[i].gain).sum::<f64>() / idx.len() as f64;
            let replicate_se = sd(&by_replicate).unwrap_or(f64::NAN) / (r as f64).sqrt();
            out.push(GainNoise {
                grouping: name.to_owned(),
                group,
                mean,
                by_replicate,
                replicate_se,
                // An SE of 0 (every replicate gave the same mean) is no evidence of a
                // noise-free gain, only of too few questions to tell the seeds apart.
                exceeds_noise: replicate_se > 0.0 && mean.abs() > 2.0 * replicate_se,
            });
        }
    }
    out
}

/// The balanced ANOVA decomposition; an error says why the grid is not balanced.
fn decompose(grid: &Grid) -> Result<VarianceDecomposition, String> {
    let slices: Vec<Slice> = grid
        .rows
        .iter()
        .map(|r| r.source)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tests: Vec<Slice> = grid
        .rows
        .iter()
        .map(|r| r.target)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (s_n, t_n) = (slices.len(), tests.len());
    let r_n = grid
        .rows
        .iter()
        .map(|r| replicate_of(&r.model) as usize)
        .max()
        .unwrap_or(0);
    if s_n < 2 || t_n < 2 {
        return Err(format!(
            "{s_n} slice(s) and {t_n} test set(s): the decomposition needs two of each"
        ));
    }
    // y[s][r][t], with the question variance of each cell when there are outcomes.
    let mut y = vec![vec![vec![None; t_n]; r_n]; s_n];
    let mut qvar = Vec::new();
    for (i, row) in grid.rows.iter().enumerate() {
        let s = slices.binary_search(&row.source).expect("listed");
        let t = tests.binary_search(&row.target).expect("listed");
        let k = replicate_of(&row.model) as usize - 1;
        if y[s][k][t].replace(row.gain).is_some() {
            return Err(format!(
                "model `{}` has two instances on test set {}",
                row.model, row.target
            ));
        }
        if let Some(p) = grid.paired.as_ref().map(|p| &p[i])
            && let Some(d) = p.differences(grid.measure)
            && d.len() >= 2
        {
            // The binomial (sampling) variance of a paired mean difference, pp².
            qvar.push(sd(&d).expect("two or more").powi(2) / d.len() as f64 * 1e4);
        }
    }
    let missing = y.iter().flatten().flatten().filter(|v| v.is_none()).count();
    if missing > 0 {
        return Err(format!(
            "unbalanced: {missing} of {} (slice, replicate, test set) cells are missing, and the method of moments here needs every slice with {r_n} replicates on every test set",
            s_n * r_n * t_n
        ));
    }
    let y: Vec<Vec<Vec<f64>>> = y
        .into_iter()
        .map(|a| {
            a.into_iter()
                .map(|b| b.into_iter().map(|v| v.expect("checked")).collect())
                .collect()
        })
        .collect();
    let (s, t, r) = (s_n as f64, t_n as f64, r_n as f64);
    let grand = y.iter().flatten().flatten().sum::<f64>() / (s * t * r);
    let m_s: Vec<f64> = y
        .iter()
        .map(|a| a.iter().flatten().sum::<f64>() / (r * t))
        .collect();
    let m_t: Vec<f64> = (0..t_n)
        .map(|j| y.iter().flatten().map(|b| b[j]).sum::<f64>() / (s * r))
        .collect();
    let m_st: Vec<Vec<f64>> = y
        .iter()
        .map(|a| {
            (0..t_n)
                .map(|j| a.iter().map(|b| b[j]).sum::<f64>() / r)
                .collect()
        })
        .collect();
    let m_sr: Vec<Vec<f64>> = y
        .iter()
        .map(|a| a.iter().map(|b| b.iter().sum::<f64>() / t).collect())
        .collect();
    let ss_s = r * t * m_s.iter().map(|m| (m - grand).powi(2)).sum::<f64>();
    let ss_t = s * r * m_t.iter().map(|m| (m - grand).powi(2)).sum::<f64>();
    let mut ss_st = 0.0;
    let mut ss_r = 0.0;
    let mut ss_e = 0.0;
    for i in 0..s_n {
        for j in 0..t_n {
            ss_st += r * (m_st[i][j] - m_s[i] - m_t[j] + grand).powi(2);
        }
        for k in 0..r_n {
            ss_r += t * (m_sr[i][k] - m_s[i]).powi(2);
            for j in 0..t_n {
                ss_e += (y[i][k][j] - m_sr[i][k] - m_st[i][j] + m_s[i]).powi(2);
            }
        }
    }
    let df_s = s_n - 1;
    let df_t = t_n - 1;
    let df_st = df_s * df_t;
    let df_r = s_n * (r_n - 1);
    let df_e = df_r * df_t;
    let ms = |ss: f64, df: usize| ss / df as f64;
    let (ms_s, ms_t, ms_st, ms_r, ms_e) = (
        ms(ss_s, df_s),
        ms(ss_t, df_t),
        ms(ss_st, df_st),
        ms(ss_r, df_r),
        ms(ss_e, df_e),
    );
    // Expected mean squares: E[MS_S] = σe² + T σr² + R σst² + RT σs²;
    // E[MS_T] = σe² + R σst² + SR σt²; E[MS_ST] = σe² + R σst²; E[MS_R(S)] = σe² + T σr²;
    // E[MS_E] = σe².
    let v_e = ms_e;
    let v_r = (ms_r - ms_e) / t;
    let v_st = (ms_st - ms_e) / r;
    let v_t = (ms_t - ms_st) / (s * r);
    let v_s = (ms_s - ms_st - ms_r + ms_e) / (r * t);
    let comp = |name: &str, df: usize, ms: f64, v: f64| VarianceComponent {
        name: name.to_owned(),
        df: Some(df),
        mean_square: Some(ms),
        variance: v,
    };
    let mut components = vec![
        comp("slice", df_s, ms_s, v_s),
        comp("test_set", df_t, ms_t, v_t),
        comp("slice_x_test_set", df_st, ms_st, v_st),
        comp("replicate", df_r, ms_r, v_r),
        comp("residual", df_e, ms_e, v_e),
    ];
    if qvar.len() == grid.rows.len() {
        let q = qvar.iter().sum::<f64>() / qvar.len() as f64;
        components.push(VarianceComponent {
            name: "question_sampling".to_owned(),
            df: None,
            mean_square: None,
            variance: q,
        });
    }
    Ok(VarianceDecomposition {
        slices: s_n,
        test_sets: t_n,
        replicates: r_n,
        mean: grand,
        components,
    })
}

impl ReplicateAnalysis {
    /// `summary.json`'s `replicates`: the counts, and with replicates the spread, the
    /// decomposition (with its method) and the noise of each gain (with the rule); without,
    /// `estimable: false` and why.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "per_slice": self.per_slice,
            "max_replicates": self.max_replicates,
            "estimable": self.estimable(),
        });
        if !self.estimable() {
            v["note"] = serde_json::json!(NOT_ESTIMABLE);
            return v;
        }
        v["spread"] = serde_json::json!(self.spread);
        v["decomposition"] = match &self.decomposition {
            Ok(d) => serde_json::json!({"method": DECOMPOSITION_METHOD, "result": d}),
            Err(e) => serde_json::json!({"method": DECOMPOSITION_METHOD, "error": e}),
        };
        v["gain_noise"] = serde_json::json!({"rule": EXCEEDS_RULE, "groups": self.noise});
        v
    }

    /// The report's section on replicates: one line without them; else the spread per
    /// slice, the decomposition and each gain beside its replicate noise.
    pub(crate) fn section(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "## Fine-tuning noise (seed replicates)
"
        );
        if !self.estimable() {
            let _ = writeln!(
                out,
                "{NOT_ESTIMABLE}
"
            );
            return;
        }
        let _ = writeln!(
            out,
            "Each slice was fine-tuned up to {} times with seeds derived from the run's seed (models `<slice>#<k>`). The intervals of the gain tables cluster (cluster) and resample (bootstrap) by training slice, drawing replicates within their slice, so that replicates do not count as independent models.\n",
            self.max_replicates
        );
        let _ = writeln!(
            out,
            "### Between-replicate spread per slice
"
        );
        let _ = writeln!(
            out,
            "The sample standard deviation (pp) of a test set's accuracy across the slice's replicates, summarized over test sets (every value in `summary.json`, `replicates.spread`).\n"
        );
        let has_p = self.spread.iter().any(|s| s.sd_p_correct.is_some());
        let _ = writeln!(
            out,
            "| slice | replicates | median sd (pp) | max sd (pp) |{}\n|---|---:|---:|---:|{}",
            if has_p {
                " median sd p_correct (pp) |"
            } else {
                ""
            },
            if has_p { "---:|" } else { "" }
        );
        let median = |mut v: Vec<f64>| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let n = v.len();
            Some(if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            })
        };
        let f = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        for (slice, n) in &self.per_slice {
            let of: Vec<&ReplicateSpread> =
                self.spread.iter().filter(|s| s.slice == *slice).collect();
            let acc: Vec<f64> = of.iter().filter_map(|s| s.sd_accuracy).collect();
            let max = acc.iter().copied().reduce(f64::max);
            let pc = if has_p {
                format!(
                    " {} |",
                    f(median(of.iter().filter_map(|s| s.sd_p_correct).collect()))
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {slice} | {n} | {} | {} |{pc}",
                f(median(acc)),
                f(max)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "### Variance decomposition of the gains
"
        );
        match &self.decomposition {
            Ok(d) => {
                let _ = writeln!(
                    out,
                    "{} slices x {} test sets x {} replicates; mean gain {:+.2} pp. Method: {DECOMPOSITION_METHOD}.\n",
                    d.slices, d.test_sets, d.replicates, d.mean
                );
                let total: f64 = d
                    .components
                    .iter()
                    .filter(|c| c.df.is_some())
                    .map(|c| c.variance.max(0.0))
                    .sum();
                let _ = writeln!(
                    out,
                    "| component | df | mean square | variance (pp²) | sd (pp) | share |\n|---|---:|---:|---:|---:|---:|"
                );
                for c in &d.components {
                    let v = c.variance.max(0.0);
                    let share = if c.df.is_some() && total > 0.0 {
                        format!("{:.0}%", 100.0 * v / total)
                    } else {
                        "(reference)".to_owned()
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {v:.3} | {:.2} | {share} |",
                        c.name.replace('_', " "),
                        c.df.map_or_else(|| "".to_owned(), |d| d.to_string()),
                        c.mean_square
                            .map_or_else(|| "".to_owned(), |m| format!("{m:.3}")),
                        v.sqrt(),
                    );
                }
                let _ = writeln!(out);
            }
            Err(e) => {
                let _ = writeln!(out, "Not computed: {e}.\n");
            }
        }
        let _ = writeln!(
            out,
            "### Gains beside the replicate noise
"
        );
        let _ = writeln!(out, "Rule: {EXCEEDS_RULE}.\n");
        if self.noise.is_empty() {
            let _ = writeln!(
                out,
                "No group has every replicate of every slice, so no replicate noise per gain.\n"
            );
            return;
        }
        let _ = writeln!(
            out,
            "| grouping | group | mean gain (pp) | per replicate (pp) | replicate SE (pp) | exceeds noise |\n|---|---|---:|---|---:|---|"
        );
        for g in &self.noise {
            let per: Vec<String> = g.by_replicate.iter().map(|m| format!("{m:+.2}")).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {:+.2} | {} | {:.2} | {} |",
                g.grouping.replace('_', " "),
                g.group.replace('_', "-"),
                g.mean,
                per.join(", "),
                g.replicate_se,
                match (g.exceeds_noise, g.replicate_se > 0.0) {
                    (true, _) => "yes",
                    (false, true) => "no",
                    (false, false) => "cannot tell (the replicates agree exactly: SE 0)",
                }
            );
        }
        let _ = writeln!(out);
    }
}

/// What the report says with one fine-tune per slice.
pub const NOT_ESTIMABLE: &str = "One fine-tune per slice: replicate (fine-tuning seed) noise cannot be estimated; rerun with `--replicates N` (N >= 2) to see whether the gains exceed it.";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(label: &str, expected: Option<(&str, Option<u32>)>) {
        let got = split_label(label).ok();
        assert_eq!(got, expected, "label {label:?}");
        if let Some((slice, k)) = expected {
            let l = ReplicateLabel {
                slice: slice.to_owned(),
                replicate: k,
            };
            assert_eq!(l.to_string(), label, "round trip of {label:?}");
        }
    }

    #[test]
    fn labels_split_and_round_trip() {
        check("en-stem", Some(("en-stem", None)));
        check("en-stem#1", Some(("en-stem", Some(1))));
        check("STEM en#12", Some(("STEM en", Some(12))));
        check("en-stem#0", None);
        check("en-stem#x", None);
        check("en-stem#", None);
        check("#2", None);
        assert_eq!(ReplicateLabel::new("en-stem", 1, 1).to_string(), "en-stem");
        assert_eq!(
            ReplicateLabel::new("en-stem", 3, 3).to_string(),
            "en-stem#3"
        );
    }
}
