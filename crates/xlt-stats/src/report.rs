//! The analysis of a grid and its outputs: Markdown report, JSON summary, heatmaps.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;
use xlt_data::ResourceMap;

use crate::answers::{CHANCE, LOPSIDED_EXCESS, MIN_QUESTIONS, ModelAnswers, binomial_test};
use crate::bootstrap::BootstrapConfig;
use crate::context::ReportContext;
use crate::coverage::{IntervalMethod, PRIMARY_INTERVAL, PRIMARY_WHY};
use crate::grid::{Grid, RAGGED_POLICY, Slice};
use crate::heatmap::{ColorScale, Heatmap};
use crate::pcorrect::PCorrectAnalysis;
use crate::power::{PowerRow, power_table};
use crate::published::PublishedFigure;
use crate::regression::{HeadroomRegression, headroom_regression};
use crate::signif::{RowTest, Significance, significance};
use crate::summary::{Groups, Summary};
use crate::transfer::{TransferRegression, pair_distances, transfer_regression};

/// The order of slices in tables and heatmaps: by language code, then domain.
fn slice_order(s: Slice) -> (&'static str, xlt_data::Domain) {
    (s.language.code(), s.domain)
}

/// Settings of an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// Resource levels of the languages and who classified them (by default
    /// [`ResourceMap::classified`]: the study's map for its nine languages, Joshi et al.
    /// 2020 for the others).
    pub resource_map: ResourceMap,
    /// Bootstrap resamples and seed.
    pub bootstrap: BootstrapConfig,
    /// Significance level.
    pub alpha: f64,
    /// Published figures to set beside ours (the study's, [`crate::STUDY_FIGURES`], when
    /// the input is its table; see [`crate::AccuracyMatrix::is_study_table`]).
    pub published: Option<Vec<PublishedFigure>>,
    /// What produced the outcomes (provider, base model, data, scoring, grader, date), for
    /// the report's head; `None` and the report says it was not given.
    pub context: Option<ReportContext>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            resource_map: ResourceMap::classified(),
            bootstrap: BootstrapConfig::default(),
            alpha: 0.05,
            published: None,
            context: None,
        }
    }
}

/// A grid with every summary computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The instances.
    pub grid: Grid,
    /// Their summaries by every grouping.
    pub groups: Groups,
    /// Gain regressed on transfer type, direction and headroom, or why it could not be
    /// fitted.
    pub regression: Result<HeadroomRegression, String>,
    /// Paired tests, when the grid has per-question data.
    pub significance: Option<Significance>,
    /// The smallest detectable gain per test-set size, when the grid has per-question data.
    pub power: Option<Vec<PowerRow>>,
    /// The settings it was computed with.
    pub config: AnalysisConfig,
    /// Statistics on the probability of the correct letter, when outcomes were scored by
    /// letters (issue #22); `None` for generated answers and published tables.
    pub p_correct: Option<PCorrectAnalysis>,
    /// WALS and Glottolog distances of each instance's (training language, test language),
    /// aligned with the grid's rows; `None` where the embedded tables lack a language.
    pub distances: Vec<Option<xlt_data::PairDistance>>,
    /// Gain regressed on direction, typological distance, genealogical relatedness, domain
    /// match and headroom, or why it could not be fitted.
    pub transfer_regression: Result<TransferRegression, String>,
}

/// A group's JSON: its [`Summary`], with `primary` (the primary interval and its method's
/// key) and `secondary` (the keys of the other intervals, kept for comparison).
fn summary_json(s: &Summary) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("summary serializes");
    v["primary"] = json!({
        "method": PRIMARY_INTERVAL.key(),
        "ci95": s.ci95(PRIMARY_INTERVAL),
        // What the report prints as "too few": the interval is kept, but rests on too
        // little to be read (see `primary_enough`).
        "too_few": !primary_enough(s),
    });
    v["secondary"] = json!(
        IntervalMethod::ALL
            .iter()
            .filter(|m| **m != PRIMARY_INTERVAL)
            .map(|m| m.key())
            .collect::<Vec<_>>()
    );
    v
}

fn map_json(m: &BTreeMap<String, Summary>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), summary_json(v)))
            .collect(),
    )
}

fn fmt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map_or_else(|| "n/a".to_owned(), |[a, b]| format!("[{a:+.1}, {b:+.1}]"))
}

/// The fewest models, and test sets, a group needs for the report to print its two-way
/// cluster-robust interval: with two, its t reference has one degree of freedom and the
/// variance rests on two cluster sums. `summary.json` keeps the interval regardless.
pub const MIN_INTERVAL_CLUSTERS: usize = 3;

/// The fewest instances a cell of the domain and language heatmaps needs to be coloured.
pub const MIN_HEATMAP_INSTANCES: usize = 3;

/// An interval as the report prints it: `too few` when what it rests on is not enough (or
/// it has no width, which only an exact fit gives), `n/a` when it could not be computed.
fn fmt_interval(ci: Option<[f64; 2]>, enough: bool) -> String {
    match ci {
        _ if !enough => "too few".to_owned(),
        Some([a, b]) if (b - a).abs() < 1e-9 => "too few".to_owned(),
        ci => fmt_ci(ci),
    }
}

/// Whether the report prints a group's primary interval: [`MIN_INTERVAL_CLUSTERS`] models
/// and test sets for the cluster-based methods, a bootstrap interval for the pigeonhole one,
/// and [`MIN_QUESTIONS`] questions for all.
fn primary_enough(s: &Summary) -> bool {
    let clusters = s.models.min(s.test_sets) >= MIN_INTERVAL_CLUSTERS;
    enough_questions(s)
        && match PRIMARY_INTERVAL {
            IntervalMethod::Pigeonhole => s.ci95_bootstrap.is_some(),
            _ => clusters,
        }
}

/// `p = 0.123` or `p < 0.001`.
fn p_is(p: f64) -> String {
    let f = fmt_p(p);
    if f.starts_with('<') {
        format!("p {f}")
    } else {
        format!("p = {f}")
    }
}

/// Whether a group rests on at least [`MIN_QUESTIONS`] questions (always, for a published
/// table, which gives none).
fn enough_questions(s: &Summary) -> bool {
    s.questions.is_none_or(|q| q >= MIN_QUESTIONS)
}

/// A p-value as the report prints it.
fn fmt_p(p: f64) -> String {
    if p.is_nan() {
        "n/a".to_owned()
    } else if p < 0.001 {
        "< 0.001".to_owned()
    } else {
        format!("{p:.3}")
    }
}

/// A 95% interval (percentage points) of a paired gain on `n` questions of which the base
/// alone got `base_only` right and the model alone `model_only`: the Wald interval of a
/// difference of paired proportions, `d ± 1.96 · √((b + c) − (c − b)²/n) / n`; `None` below
/// [`MIN_QUESTIONS`] questions or without a discordant question.
fn paired_interval(n: usize, base_only: u64, model_only: u64) -> Option<[f64; 2]> {
    if n < MIN_QUESTIONS || base_only + model_only == 0 {
        return None;
    }
    let (n, b, c) = (n as f64, base_only as f64, model_only as f64);
    let d = (c - b) / n;
    let half = 1.96 * ((b + c) - (c - b).powi(2) / n).max(0.0).sqrt() / n;
    Some([100.0 * (d - half), 100.0 * (d + half)])
}

fn owned<'a>(v: Vec<(&'static str, Option<&'a Summary>)>) -> Vec<(String, Option<&'a Summary>)> {
    v.into_iter()
        .map(|(k, s)| (k.replace('_', "-"), s))
        .collect()
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

/// How the report names each interval, one sentence each; `summary.json` carries the same
/// under `interval_methods`.
const CLUSTER_METHOD: &str = "the two-way cluster-robust interval of Cameron, Gelbach and Miller (2011): instances are clustered by training slice (a slice's seed replicates together; with one fine-tune per slice, its model) and by test set (variance V_slice + V_test_set - V_both, each CR1), with t on (the smaller cluster count - 1) degrees of freedom";
const INDEPENDENT_METHOD: &str = "mean ± t(0.975, n-1) · sd / √n, which treats the instances of a group as independent although they share models, test sets and questions; too narrow, kept for comparison only";

const WILD_METHOD: &str = "the wild cluster bootstrap (Cameron, Gelbach and Miller 2008; MacKinnon, Nielsen and Webb 2021): one Webb six-point weight per cluster of the dimension with fewer clusters (training slices, replicates of a slice together, or test sets), the unrestricted residuals flipped by it, and the symmetric percentile-t interval mean ± q · se with se the two-way CR1 standard error and q the 95th percentile of |t*|";

/// The typology tables' sources, as the report and `summary.json` cite them.
const TYPOLOGY_SOURCES: &str = "WALS (Dryer, Matthew S. & Haspelmath, Martin (eds.) 2013. The World Atlas of Language Structures Online. Leipzig: Max Planck Institute for Evolutionary Anthropology; https://wals.info; cldf-datasets/wals v2020.4) and Glottolog 5.1 (Hammarström, Harald & Forkel, Robert & Haspelmath, Martin & Bank, Sebastian. 2024. Glottolog 5.1. Leipzig: Max Planck Institute for Evolutionary Anthropology; https://glottolog.org), both CC BY 4.0.";

/// Why our means differ from the published ones on the published table.
const PUBLISHED_DIFFERENCES: &str = "The table is published with accuracies rounded to two decimals, and three of its rows are ragged (`Med he` has 26 values for 27 test sets, `Hum en` and `STEM en` have 28); the paper does not say how it read them. We align cells from the left (see the reading policy); none of the four ways of aligning the short and the long rows (left or right each) reproduces every published figure, so the published means were computed from data, or a reading, we do not have. Rounding moves one cell's gain by at most one point and a group's mean by much less, as the errors of its cells average out";

impl Analysis {
    /// Computes every summary of `grid`.
    pub fn new(grid: Grid, config: &AnalysisConfig) -> Analysis {
        let groups = Groups::of(&grid, &config.bootstrap);
        let significance = significance(&grid, config.alpha);
        // A fit that cannot be made says why in words, without the error's `model:` prefix.
        let reason = |e: crate::StatsError| match e {
            crate::StatsError::Model(why) => why,
            e => e.to_string(),
        };
        let regression = headroom_regression(&grid).map_err(reason);
        let power = significance.as_ref().map(|s| {
            let pairs: Vec<(usize, usize)> = s
                .rows
                .iter()
                .map(|r| (r.n, (r.base_only + r.model_only) as usize))
                .collect();
            power_table(&pairs, config.alpha)
        });
        let p_correct = PCorrectAnalysis::new(&grid, &config.bootstrap, config.alpha);
        let distances = pair_distances(&grid);
        let transfer_regression = transfer_regression(&grid, &distances).map_err(reason);
        Analysis {
            grid,
            groups,
            regression,
            significance,
            power,
            config: config.clone(),
            p_correct,
            distances,
            transfer_regression,
        }
    }

    /// The model labels with their training slices, ordered by training slice as
    /// [`Analysis::test_sets`] orders test sets.
    fn models(&self) -> Vec<(String, Slice)> {
        let mut seen = Vec::<(String, Slice)>::new();
        for r in &self.grid.rows {
            if !seen.iter().any(|(m, _)| *m == r.model) {
                seen.push((r.model.clone(), r.source));
            }
        }
        seen.sort_by_key(|(m, s)| (slice_order(*s), m.clone()));
        seen
    }

    /// The test sets, by (language, domain): the same order as the models, so that a
    /// model's in-domain cell lies on the diagonal of a square grid.
    fn test_sets(&self) -> Vec<Slice> {
        let mut sets: Vec<Slice> = self.grid.base.iter().map(|(t, _)| *t).collect();
        for r in &self.grid.rows {
            if !sets.contains(&r.target) {
                sets.push(r.target);
            }
        }
        sets.sort_by_key(|s| slice_order(*s));
        sets
    }

    /// Questions per test set (the most any pair on it has), when built from outcomes.
    fn test_set_sizes(&self) -> Option<BTreeMap<Slice, usize>> {
        let counts = self.grid.question_counts()?;
        let mut sizes = BTreeMap::new();
        for (r, n) in self.grid.rows.iter().zip(counts) {
            let e = sizes.entry(r.target).or_insert(0);
            *e = n.max(*e);
        }
        Some(sizes)
    }

    fn bootstrap_method(&self) -> String {
        let b = &self.config.bootstrap;
        if self.grid.paired.is_some() {
            format!(
                "the pigeonhole bootstrap ({} resamples, seed {}): training slices (with their seed replicates drawn again within each drawn slice) and test sets are resampled with replacement, independently, and questions once per sample id, the same draw for every model, the base model and every language; percentile interval",
                b.resamples, b.seed
            )
        } else {
            format!(
                "the pigeonhole bootstrap ({} resamples, seed {}): fine-tuned models and test sets are resampled with replacement, independently (a published table has no questions to resample); percentile interval",
                b.resamples, b.seed
            )
        }
    }

    /// `summary.json`: instance count, warnings, the reading policy (published tables),
    /// test-set sizes (outcomes), the interval methods, every grouping (each a [`Summary`],
    /// percentage points), the headroom regression, the published figures beside ours
    /// (when configured), and with per-question data the significance counts, every pair's
    /// test and the power table.
    pub fn summary_json(&self) -> serde_json::Value {
        let mut v = json!({
            "n_instances": self.grid.rows.len(),
            "warnings": self.grid.warnings,
            "interval_methods": {
                "ci95_cluster": CLUSTER_METHOD,
                "ci95_bootstrap": self.bootstrap_method(),
                "ci95_independent_t": INDEPENDENT_METHOD,
                "ci95_wild_cluster": WILD_METHOD,
                "primary": PRIMARY_INTERVAL.key(),
                "secondary": IntervalMethod::ALL
                    .iter()
                    .filter(|m| **m != PRIMARY_INTERVAL)
                    .map(|m| m.key())
                    .collect::<Vec<_>>(),
                "why_primary": PRIMARY_WHY,
            },
            "transfer_types": map_json(&self.groups.transfer_types),
            "resource_directions": map_json(&self.groups.resource_directions),
            "resource_levels": map_json(&self.groups.resource_levels),
            "domain_matrix": map_json(&self.groups.domain_matrix),
            "language_matrix": map_json(&self.groups.language_matrix),
        });
        if self.grid.paired.is_none() {
            v["policy"] = json!(RAGGED_POLICY);
        }
        if let Some(sizes) = self.test_set_sizes() {
            v["test_set_sizes"] = serde_json::Value::Object(
                sizes
                    .iter()
                    .map(|(t, n)| (t.to_string(), json!(n)))
                    .collect(),
            );
        }
        v["regression"] = match &self.regression {
            Ok(r) => json!({
                "model": "gain ~ transfer type + direction (cross-language cells) + base accuracy, OLS",
                "clusters": ["fine-tuned model", "test set"],
                "fit": r.fit,
                "base_accuracy_centre": r.base_accuracy_centre,
                "left_out": r.left_out,
            }),
            Err(e) => json!({ "error": e }),
        };
        v["typology"] = self.typology_json();
        v["transfer_regression"] = match &self.transfer_regression {
            Ok(r) => json!({
                "model": "gain ~ direction (cross-language cells) + WALS distance + genealogical relatedness + domain match + base accuracy, OLS",
                "clusters": ["training slice", "test set"],
                "fit": r.fit,
                "base_accuracy_centre": r.base_accuracy_centre,
                "left_out_direction": r.left_out_direction,
                "left_out_distance": r.left_out_distance,
                "aliased": r.aliased,
            }),
            Err(e) => json!({ "error": e }),
        };
        if let Some(rows) = self.published_rows() {
            v["published_comparison"] = json!(
                rows.iter()
                    .map(|(f, ours)| json!({
                        "grouping": f.grouping,
                        "group": f.key,
                        "published": f.gain,
                        "ours": ours,
                        "difference": ours.map(|o| o - f.gain),
                    }))
                    .collect::<Vec<_>>()
            );
        }
        // The base model's accuracy on each test set (the whole result of a base-only run).
        v["base_accuracy"] = self
            .grid
            .base
            .iter()
            .map(|(t, a)| (t.to_string(), json!(a)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        // Answers cut off by the output-token limit, per model (only models that had any).
        v["truncated_answers"] = self
            .grid
            .truncated
            .iter()
            .map(|(label, n)| (label.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        if let Some(s) = &self.significance {
            v["significance"] = json!({
                "test": "exact McNemar, each fine-tuned model vs the base on each test set",
                "alpha": s.alpha,
                "tests": s.tests,
                "gains_significant_raw": s.gains_significant_raw,
                "gains_surviving_holm": s.gains_surviving_holm,
                "gains_surviving_bh": s.gains_surviving_bh,
                "losses_significant_raw": s.losses_significant_raw,
                "losses_surviving_holm": s.losses_surviving_holm,
                "losses_surviving_bh": s.losses_surviving_bh,
            });
            v["pairs"] = json!(s.rows);
        }
        if let Some(c) = &self.config.context {
            v["context"] = json!(c);
        }
        if !self.grid.answers.is_empty() {
            v["chance"] = json!({
                "accuracy": CHANCE,
                "test": "exact two-sided binomial (minimum likelihood), alpha as in significance",
            });
            v["models"] = serde_json::Value::Array(
                self.answers_ordered()
                    .into_iter()
                    .map(|a| {
                        let (correct, n) = a.total();
                        let mut m = json!({
                            "label": a.label,
                            "n": n,
                            "correct": correct,
                            "p_chance": binomial_test(correct, n, CHANCE),
                            "judged": a.judged,
                            "unparsed": a.unparsed,
                            "chosen": a.chosen,
                            "key": a.key,
                            "lopsided": a.lopsided(),
                            "test_sets": a.by_test_set.iter().map(|t| json!({
                                "test_set": t.test_set.to_string(),
                                "n": t.n,
                                "correct": t.correct,
                                "p_chance": t.p_chance(),
                            })).collect::<Vec<_>>(),
                        });
                        // Letter scoring: the mean p(correct) per test set (a baseline
                        // study's continuous outcome; with fine-tuned models their gains
                        // are under `p_correct`).
                        if !a.p_correct.is_empty() {
                            m["p_correct"] = a
                                .p_correct
                                .iter()
                                .map(|t| {
                                    json!({
                                        "test_set": t.test_set.to_string(),
                                        "n": t.n,
                                        "mean": t.mean,
                                    })
                                })
                                .collect();
                        }
                        m
                    })
                    .collect(),
            );
            if let Some(c) = &self.config.context {
                v["judge_is_model_under_test"] = json!(c.judge_is_model_under_test());
            }
        }
        v["closing_summary"] = json!(self.closing_summary());
        if let Some(p) = &self.power {
            v["power"] = json!({
                "test": "exact McNemar, two-sided, alpha as in significance, power 0.8",
                "by_test_set_size": p,
            });
        }
        if let Some(p) = &self.p_correct {
            v["p_correct"] = Self::p_correct_json(p);
        }
        v["replicates"] = self.replicates().to_json();
        v
    }

    /// The seed-replicate statistics of the grid (issue #24): spread per slice, variance
    /// decomposition, and the replicate noise of each transfer-type and direction gain.
    pub fn replicates(&self) -> crate::ReplicateAnalysis {
        crate::ReplicateAnalysis::of(&self.grid, self.p_correct.as_ref().map(|p| &p.grid))
    }

    fn section_replicates(&self, out: &mut String) {
        // A baseline fine-tuned nothing: no replicate to estimate or to advise.
        if self.base_only() {
            return;
        }
        self.replicates().section(out);
    }

    /// The published figures with our mean for the same group, when configured.
    fn published_rows(&self) -> Option<Vec<(PublishedFigure, Option<f64>)>> {
        let figures = self.config.published.as_ref()?;
        Some(
            figures
                .iter()
                .map(|f| {
                    let map = match f.grouping {
                        "transfer_types" => &self.groups.transfer_types,
                        "domain_matrix" => &self.groups.domain_matrix,
                        "resource_levels" => &self.groups.resource_levels,
                        "resource_directions" => &self.groups.resource_directions,
                        _ => &self.groups.language_matrix,
                    };
                    (*f, map.get(f.key).map(|s| s.mean))
                })
                .collect(),
        )
    }

    fn summary_table(
        out: &mut String,
        title: &str,
        note: &str,
        rows: &[(String, Option<&Summary>)],
    ) {
        let _ = writeln!(out, "### {title}\n");
        if !note.is_empty() {
            let _ = writeln!(out, "{note}\n");
        }
        let _ = writeln!(
            out,
            "| group | mean gain (pp) | n | models x test sets | sd | 95% CI ({}) |\n|---|---:|---:|---:|---:|---|",
            PRIMARY_INTERVAL.label()
        );
        for (k, s) in rows {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "| {k} | {:+.1} | {} | {} x {} | {} | {} |",
                        s.mean,
                        s.n,
                        s.models,
                        s.test_sets,
                        fmt_opt(s.sd),
                        fmt_interval(s.ci95(PRIMARY_INTERVAL), primary_enough(s)),
                    );
                }
                None => {
                    let _ = writeln!(out, "| {k} | n/a | 0 | 0 x 0 | n/a | n/a |");
                }
            }
        }
        let _ = writeln!(out);
    }

    /// The Markdown report, one section after another: header (the [`ReportContext`]),
    /// input, accuracy per model and test set against chance, grading (the judge's share),
    /// chosen letters (when lopsided), intervals, gains, fine-tuning noise (seed replicates,
    /// [`crate::ReplicateAnalysis`]; one line without them), headroom regression, published
    /// figures (when configured), significance, power, and the closing summary
    /// ([`Analysis::closing_summary`]).
    pub fn report_markdown(&self) -> String {
        let mut out = String::new();
        let sections: [fn(&Analysis, &mut String); 16] = [
            Analysis::section_header,
            Analysis::section_input,
            Analysis::section_accuracy,
            Analysis::section_grading,
            Analysis::section_letters,
            Analysis::section_rotations,
            Analysis::section_base_only,
            Analysis::section_intervals,
            Analysis::section_gains,
            Analysis::section_replicates,
            Analysis::section_regression,
            Analysis::section_typology,
            Analysis::section_published,
            Analysis::section_significance,
            Analysis::section_power,
            Analysis::section_closing,
        ];
        for section in sections {
            section(self, &mut out);
        }
        self.section_p_correct(&mut out);
        out
    }

    /// `summary.json`'s `p_correct`: what it measures, warnings, the base model's mean
    /// `p_correct` per test set, every grouping (each a [`Summary`] of gains in mean
    /// `p_correct`, percentage points, with the accuracy gains' intervals), and the paired
    /// tests and power table.
    fn p_correct_json(p: &PCorrectAnalysis) -> serde_json::Value {
        let mut v = json!({
            "measure": "mean probability of the correct letter, renormalized over A-D; gains in percentage points",
            "n_instances": p.grid.rows.len(),
            "warnings": p.grid.warnings,
            "base_p_correct": p.grid.base.iter().map(|(t, a)| (t.to_string(), json!(a))).collect::<serde_json::Map<_, _>>(),
            "transfer_types": map_json(&p.groups.transfer_types),
            "resource_directions": map_json(&p.groups.resource_directions),
            "resource_levels": map_json(&p.groups.resource_levels),
            "domain_matrix": map_json(&p.groups.domain_matrix),
            "language_matrix": map_json(&p.groups.language_matrix),
        });
        if let (Some(obj), serde_json::Value::Object(tests)) = (v.as_object_mut(), p.tests_json()) {
            obj.extend(tests);
        }
        v
    }

    /// The report's section on letter scoring's continuous outcome (after everything
    /// else): the gain tables of the accuracy section in mean `p_correct`, the Wilcoxon
    /// tests and the power table. Nothing for generated answers or a published table.
    fn section_p_correct(&self, out: &mut String) {
        let Some(p) = &self.p_correct else {
            return;
        };
        let _ = writeln!(
            out,
            "## Probability of the correct letter
"
        );
        let _ = writeln!(
            out,
            "Letter scoring gives every question a continuous outcome, p(correct): the probability of the correct letter renormalized over A-D (the mean over option rotations when there were several). A model that only moves its letter prior changes accuracy more than p(correct). The tables below are those of the gains section with the gain in mean p(correct), in percentage points, over {} instances; the intervals are those of the intervals section, the bootstrap resampling per-question differences in p(correct).\n",
            p.grid.rows.len()
        );
        for w in &p.grid.warnings {
            let _ = writeln!(out, "Warning: {w}.\n");
        }
        let g = &p.groups;
        fn all(m: &BTreeMap<String, Summary>) -> Vec<(String, Option<&Summary>)> {
            m.iter().map(|(k, s)| (k.clone(), Some(s))).collect()
        }
        let levels: Vec<(String, Option<&Summary>)> = all(&g.resource_levels)
            .into_iter()
            .filter(|(k, _)| k.contains("->"))
            .chain(
                all(&g.resource_levels)
                    .into_iter()
                    .filter(|(k, _)| !k.contains("->")),
            )
            .collect();
        Self::summary_table(
            out,
            "p(correct) by transfer type",
            "",
            &owned(g.transfer_types_ordered()),
        );
        Self::summary_table(
            out,
            "p(correct) by resource direction",
            "",
            &owned(g.directions_ordered()),
        );
        Self::summary_table(
            out,
            "p(correct) by resource levels (source->target)",
            "",
            &levels,
        );
        Self::summary_table(
            out,
            "p(correct) by domain (source->target)",
            "",
            &all(&g.domain_matrix),
        );
        Self::summary_table(
            out,
            "p(correct) by language (source->target)",
            "",
            &all(&g.language_matrix),
        );
        p.tests_markdown(out);
    }

    fn section_header(&self, out: &mut String) {
        let _ = writeln!(out, "# Cross-lingual transfer report\n");
        match &self.config.context {
            Some(c) => {
                let list = |v: Vec<String>| {
                    if v.is_empty() {
                        "not given".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                let or_not_given = |s: &str| {
                    if s.trim().is_empty() {
                        "not given".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                let _ = writeln!(out, "| | |\n|---|---|");
                let _ = writeln!(out, "| provider | {} |", or_not_given(&c.provider));
                let _ = writeln!(
                    out,
                    "| base model | {}{} |",
                    or_not_given(&c.base_model),
                    c.base_model_version.as_deref().map_or_else(
                        || " (no revision or digest)".to_owned(),
                        |v| format!(" ({v})")
                    )
                );
                let _ = writeln!(out, "| benchmark | {} |", or_not_given(&c.benchmark));
                let _ = writeln!(
                    out,
                    "| languages | {} |",
                    list(c.languages.iter().map(|l| l.code().to_owned()).collect())
                );
                let _ = writeln!(
                    out,
                    "| domains | {} |",
                    list(c.domains.iter().map(|d| d.name().to_owned()).collect())
                );
                let _ = writeln!(out, "| scoring | {} |", or_not_given(&c.scoring));
                let _ = writeln!(
                    out,
                    "| grader | {}{} |",
                    or_not_given(&c.grader),
                    c.judge_model
                        .as_deref()
                        .map_or_else(String::new, |j| format!(" (judge: {j})"))
                );
                let _ = writeln!(out, "| date | {} |\n", or_not_given(&c.date));
                for note in &c.notes {
                    let _ = writeln!(out, "**Note:** {note}\n");
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "The caller gave no context: the provider, base model, data, scoring, grader and date are not recorded in this report.\n"
                );
            }
        }
        let _ = writeln!(out, "{}.\n", self.what_was_analysed());
    }

    /// What the analysis rests on, in one sentence without a full stop, for the report's
    /// head and a program's last line: `4 evaluation instances: 2 fine-tuned models x 2 test
    /// sets, gains over the base model in percentage points`, or for a baseline study
    /// `A baseline: no model was fine-tuned, the base model on 2 test sets (22 questions),
    /// so there are no gains`.
    pub fn what_was_analysed(&self) -> String {
        if self.base_only() {
            let questions = self
                .grid
                .answers
                .iter()
                .find(|a| a.source.is_none())
                .map(|a| a.total().1)
                .filter(|&n| n > 0)
                .map_or_else(String::new, |n| format!(" ({n} questions)"));
            return format!(
                "A baseline: no model was fine-tuned, the base model on {} test sets{questions}, so there are no gains",
                self.grid.base.len()
            );
        }
        format!(
            "{} evaluation instances: {} fine-tuned models x {} test sets, gains over the base model in percentage points",
            self.grid.rows.len(),
            self.models().len(),
            self.test_sets().len()
        )
    }

    /// Accuracy of every model on every test set, with question counts and the test
    /// against chance when the grid has outcomes.
    fn section_accuracy(&self, out: &mut String) {
        let sets = self.test_sets();
        if sets.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Accuracy\n");
        let header = |out: &mut String, extra: &str| {
            let _ = writeln!(
                out,
                "| model | {}{extra} |\n|---|{}{}",
                sets.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | "),
                "---:|".repeat(sets.len()),
                if extra.is_empty() { "" } else { "---:|" }
            );
        };
        if self.grid.answers.is_empty() {
            let _ = writeln!(
                out,
                "Accuracy (%) of each model on each test set. A published table gives no test-set sizes, so no accuracy can be tested against chance ({:.1}%).\n",
                100.0 * CHANCE
            );
            header(out, "");
            let mut rows: Vec<(String, Vec<Option<f64>>)> = vec![(
                "Base".to_owned(),
                sets.iter()
                    .map(|t| self.grid.base.iter().find(|(s, _)| s == t).map(|(_, a)| *a))
                    .collect(),
            )];
            for (m, _) in self.models() {
                rows.push((
                    m.clone(),
                    sets.iter()
                        .map(|t| {
                            self.grid
                                .rows
                                .iter()
                                .find(|r| r.model == m && r.target == *t)
                                .map(|r| r.accuracy)
                        })
                        .collect(),
                ));
            }
            for (m, cells) in rows {
                let cells: Vec<String> = cells
                    .iter()
                    .map(|a| a.map_or_else(|| "n/a".to_owned(), |a| format!("{:.1}", 100.0 * a)))
                    .collect();
                let _ = writeln!(out, "| {m} | {} |", cells.join(" | "));
            }
            let _ = writeln!(out);
            return;
        }
        let alpha = self.config.alpha;
        let _ = writeln!(
            out,
            "Accuracy (%) of each model on each test set, with the number of questions; \"all\" pools the model's test sets. Chance is {:.1}% (one of {} options); **†** marks an accuracy that an exact two-sided binomial test at alpha {alpha} cannot tell from chance.\n",
            100.0 * CHANCE,
            xlt_data::AnswerLetter::ALL.len()
        );
        header(out, " | all");
        let mut at_chance = Vec::new();
        for a in self.answers_ordered() {
            let cell = |correct: usize, n: usize| {
                if n == 0 {
                    return "n/a".to_owned();
                }
                let mark = if binomial_test(correct, n, CHANCE) >= alpha {
                    " †"
                } else {
                    ""
                };
                format!("{:.1} ({n}){mark}", 100.0 * correct as f64 / n as f64)
            };
            let cells: Vec<String> = sets
                .iter()
                .map(|t| {
                    a.by_test_set
                        .iter()
                        .find(|x| x.test_set == *t)
                        .map_or_else(|| "n/a".to_owned(), |x| cell(x.correct, x.n))
                })
                .collect();
            let (correct, n) = a.total();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                a.label,
                cells.join(" | "),
                cell(correct, n)
            );
            if n > 0 && binomial_test(correct, n, CHANCE) >= alpha {
                at_chance.push(format!(
                    "{} ({:.1}% of {n}, {})",
                    a.label,
                    100.0 * correct as f64 / n as f64,
                    p_is(binomial_test(correct, n, CHANCE))
                ));
            }
        }
        let _ = writeln!(out);
        if !at_chance.is_empty() {
            let _ = writeln!(
                out,
                "**Not distinguishable from chance** over all its test sets: {}.\n",
                at_chance.join("; ")
            );
        }
    }

    /// The models' answers, the base model first, then the fine-tuned ones in the order of
    /// [`Analysis::models`].
    fn answers_ordered(&self) -> Vec<&ModelAnswers> {
        let mut v: Vec<&ModelAnswers> = self
            .grid
            .answers
            .iter()
            .filter(|a| a.source.is_none())
            .collect();
        for (m, _) in self.models() {
            v.extend(self.grid.answers.iter().filter(|a| a.label == m));
        }
        v
    }

    /// Who read the letters: the share the judge graded, and whether the judge is the model
    /// under test.
    fn section_grading(&self, out: &mut String) {
        if self.grid.answers.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Grading\n");
        let judged: usize = self.grid.answers.iter().map(|a| a.judged).sum();
        let total: usize = self.grid.answers.iter().map(|a| a.total().1).sum();
        let judge = self
            .config
            .context
            .as_ref()
            .and_then(|c| c.judge_model.clone());
        let _ = writeln!(
            out,
            "{judged} of {total} answers ({:.1}%) were graded by the LLM judge{}; the rest by the extraction rules (or log-probabilities).\n",
            100.0 * judged as f64 / total.max(1) as f64,
            judge
                .as_deref()
                .map_or_else(String::new, |j| format!(" ({j})"))
        );
        if judged > 0 {
            let _ = writeln!(
                out,
                "| model | answers | graded by the judge | no letter |\n|---|---:|---:|---:|"
            );
            for a in self.answers_ordered() {
                let n = a.total().1;
                let _ = writeln!(
                    out,
                    "| {} | {n} | {} ({:.1}%) | {} |",
                    a.label,
                    a.judged,
                    100.0 * a.judged as f64 / n.max(1) as f64,
                    a.unparsed
                );
            }
            let _ = writeln!(out);
        }
        if judged > 0
            && self
                .config
                .context
                .as_ref()
                .is_some_and(ReportContext::judge_is_model_under_test)
        {
            let _ = writeln!(
                out,
                "**Warning:** the judge is the model under test (or the base model it was fine-tuned from): the {judged} answers it graded are graded by the model that gave them.\n"
            );
        }
    }

    /// Letter scoring under option rotations: each model's accuracy with the options as in
    /// the data and over every rotation, and its gain over the base model by both. A gain
    /// that shrinks under rotations came from moving the model's letter prior toward the
    /// key's most frequent letter, not from knowing more.
    fn section_rotations(&self, out: &mut String) {
        let ordered = self.answers_ordered();
        let Some(base) = ordered
            .iter()
            .find(|a| a.source.is_none())
            .and_then(|a| a.rotation_accuracies())
        else {
            return;
        };
        let rotations = ordered
            .iter()
            .map(|a| a.by_rotation.len())
            .max()
            .unwrap_or(1);
        let _ = writeln!(
            out,
            "## Option-order control ({rotations} rotations)
"
        );
        let _ = writeln!(
            out,
            "Every question was scored with its options in {rotations} cyclic rotations, so that the correct option stood under {} letters. Accuracy is shown with the options as in the data (the gain tables below use these) and over every rotation (rotation-controlled); a gain that shrinks under rotations is a shift of the model's letter prior, not transfer.
",
            rotations
        );
        let _ = writeln!(
            out,
            "| model | accuracy, options as in the data | accuracy over rotations | gain over base, as in the data (pp) | gain over base, over rotations (pp) |
|---|---:|---:|---:|---:|"
        );
        for a in ordered {
            let Some((first, all)) = a.rotation_accuracies() else {
                continue;
            };
            let gains = if a.source.is_none() {
                "| — | — |".to_owned()
            } else {
                format!(
                    "| {:+.1} | {:+.1} |",
                    100.0 * (first - base.0),
                    100.0 * (all - base.1)
                )
            };
            let _ = writeln!(
                out,
                "| {} | {:.1}% | {:.1}% {gains}",
                a.label,
                100.0 * first,
                100.0 * all
            );
        }
        let _ = writeln!(out);
    }

    /// The letters chosen beside the key's: for every model when letters were scored (a
    /// letter prior is what letter scoring must be read against), else for every model
    /// whose letters are lopsided; lopsided models are named in a warning.
    fn section_letters(&self, out: &mut String) {
        if self.grid.answers.is_empty() {
            return;
        }
        if self.grid.answers.iter().any(|a| !a.p_correct.is_empty()) {
            self.section_letters_scored(out);
            return;
        }
        let lopsided: Vec<&ModelAnswers> = self
            .answers_ordered()
            .into_iter()
            .filter(|a| a.lopsided())
            .collect();
        if lopsided.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Chosen letters\n");
        let _ = writeln!(
            out,
            "Models whose most over-chosen letter exceeds its share of the answer key by {:.0} points or more: each cell is chosen / key, over the questions the model answered. An accuracy near its share of one letter may be a model that always answers that letter.\n",
            100.0 * LOPSIDED_EXCESS
        );
        let _ = writeln!(
            out,
            "| model | A | B | C | D | no letter |\n|---|---:|---:|---:|---:|---:|"
        );
        for a in lopsided {
            let cells: Vec<String> = (0..4)
                .map(|i| format!("{} / {}", a.chosen[i], a.key[i]))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                a.label,
                cells.join(" | "),
                a.unparsed
            );
        }
        let _ = writeln!(out);
    }

    /// [`Analysis::section_letters`] for letter-scored outcomes: every model's chosen
    /// letters (the argmax) beside the key's, in percent of its questions, and a warning
    /// naming the lopsided ones.
    fn section_letters_scored(&self, out: &mut String) {
        let _ = writeln!(out, "## Chosen letters\n");
        let _ = writeln!(
            out,
            "With letter scoring the chosen letter is the most probable of A-D. Each cell is chosen / key: how often the model chose the letter and how often the answer key has it, over the same questions (the options as in the data), in percent; n is the number of questions. A model that chooses one letter far more often than the key has it earns the key's share of that letter whatever it knows.\n"
        );
        let _ = writeln!(
            out,
            "| model | n | A | B | C | D |\n|---|---:|---:|---:|---:|---:|"
        );
        let ordered = self.answers_ordered();
        for a in &ordered {
            let n = a.total().1;
            let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
            let cells: Vec<String> = (0..4)
                .map(|i| format!("{:.0} / {:.0}", pct(a.chosen[i]), pct(a.key[i])))
                .collect();
            let _ = writeln!(out, "| {} | {n} | {} |", a.label, cells.join(" | "));
        }
        let _ = writeln!(out);
        let lopsided: Vec<&str> = ordered
            .iter()
            .filter(|a| a.lopsided())
            .map(|a| a.label.as_str())
            .collect();
        if !lopsided.is_empty() {
            let _ = writeln!(
                out,
                "**Warning:** lopsided letters (the most over-chosen letter exceeds its share of the key by {:.0} points or more): {}. An accuracy near the key's share of that letter may be a model that always answers it; see p(correct) and, with `--rotations 4`, the option-order control.\n",
                100.0 * LOPSIDED_EXCESS,
                lopsided.join(", ")
            );
        }
    }

    fn section_closing(&self, out: &mut String) {
        let _ = writeln!(out, "## Summary\n");
        for line in self.closing_summary().lines() {
            let _ = writeln!(out, "- {line}");
        }
        let _ = writeln!(out);
    }

    /// The run's findings in a few lines, for a caller to print at the end of every run (the
    /// report ends with the same lines): the base model's accuracy and how it compares with
    /// chance, the mean gain by transfer type with its primary interval (method named), the largest gains
    /// with their intervals, and whether any gain survives correction for multiple tests.
    pub fn closing_summary(&self) -> String {
        let mut out = String::new();
        let alpha = self.config.alpha;
        if let Some(base) = self.grid.answers.iter().find(|a| a.source.is_none()) {
            let (correct, n) = base.total();
            let p = binomial_test(correct, n, CHANCE);
            let _ = writeln!(
                out,
                "Base model: {:.1}% correct on {n} questions (chance {:.1}%; {}, exact binomial {}).",
                100.0 * correct as f64 / n.max(1) as f64,
                100.0 * CHANCE,
                if p >= alpha {
                    "not distinguishable from chance"
                } else if (correct as f64) < CHANCE * n as f64 {
                    "below chance"
                } else {
                    "above chance"
                },
                p_is(p)
            );
        } else if !self.grid.base.is_empty() {
            let mean =
                self.grid.base.iter().map(|(_, a)| a).sum::<f64>() / self.grid.base.len() as f64;
            let _ = writeln!(
                out,
                "Base model: {:.1}% correct on average over {} test sets (chance {:.1}%; no question counts to test it).",
                100.0 * mean,
                self.grid.base.len(),
                100.0 * CHANCE
            );
        }
        if let Some(p) = self
            .grid
            .answers
            .iter()
            .find(|a| a.source.is_none())
            .map(|a| a.p_correct.as_slice())
            .filter(|p| !p.is_empty())
        {
            let n: usize = p.iter().map(|t| t.n).sum();
            let mean = p.iter().map(|t| t.mean * t.n as f64).sum::<f64>() / n.max(1) as f64;
            let _ = writeln!(
                out,
                "Base model's mean p(correct): {:.1}% on {n} questions (chance {:.1}%).",
                100.0 * mean,
                100.0 * CHANCE
            );
        }
        if self.grid.rows.is_empty() {
            let _ = writeln!(
                out,
                "No model was fine-tuned (a baseline): no gain to report."
            );
            return out;
        }
        let types: Vec<String> = self
            .groups
            .transfer_types_ordered()
            .into_iter()
            .filter_map(|(k, s)| {
                s.map(|s| {
                    format!(
                        "{} {:+.1} (95% CI {}, {})",
                        k.replace('_', "-"),
                        s.mean,
                        fmt_interval(s.ci95(PRIMARY_INTERVAL), primary_enough(s)),
                        PRIMARY_INTERVAL.label()
                    )
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "Mean gain (pp) by transfer type: {}.",
            types.join("; ")
        );
        match &self.significance {
            Some(sig) => {
                let mut rows: Vec<&RowTest> = sig.rows.iter().collect();
                rows.sort_by(|a, b| b.gain.total_cmp(&a.gain));
                let top: Vec<String> = rows
                    .iter()
                    .take(3)
                    .map(|r| {
                        let ci = paired_interval(r.n, r.base_only, r.model_only).map_or_else(
                            || format!("too few questions for an interval, n = {}", r.n),
                            |ci| format!("95% CI {}, n = {}", fmt_ci(Some(ci)), r.n),
                        );
                        format!("{} on {} {:+.1} ({ci})", r.model, r.test_set, r.gain)
                    })
                    .collect();
                let _ = writeln!(out, "Largest gains (pp): {}.", top.join("; "));
                let survivors = sig.gains_surviving_holm.max(sig.gains_surviving_bh);
                let _ = writeln!(
                    out,
                    "{}",
                    if survivors == 0 {
                        format!(
                            "No gain survives correction for {} tests (Holm, Benjamini-Hochberg, alpha {alpha}); {} losses do.",
                            sig.tests,
                            sig.losses_surviving_bh.max(sig.losses_surviving_holm)
                        )
                    } else {
                        format!(
                            "{} gains survive Holm and {} Benjamini-Hochberg correction for {} tests (alpha {alpha}); {} and {} losses do.",
                            sig.gains_surviving_holm,
                            sig.gains_surviving_bh,
                            sig.tests,
                            sig.losses_surviving_holm,
                            sig.losses_surviving_bh
                        )
                    }
                );
            }
            None => {
                let mut rows: Vec<&crate::grid::GridRow> = self.grid.rows.iter().collect();
                rows.sort_by(|a, b| b.gain.total_cmp(&a.gain));
                let top: Vec<String> = rows
                    .iter()
                    .take(3)
                    .map(|r| format!("{} on {} {:+.1}", r.model, r.target, r.gain))
                    .collect();
                let _ = writeln!(
                    out,
                    "Largest gains (pp): {} (a published table has no questions: no interval or test per pair).",
                    top.join("; ")
                );
            }
        }
        if let Some(c) = &self.config.context
            && c.judge_is_model_under_test()
        {
            let judged: usize = self.grid.answers.iter().map(|a| a.judged).sum();
            if judged > 0 {
                let _ = writeln!(
                    out,
                    "Warning: {judged} answers were graded by a judge that is the model under test."
                );
            }
        }
        out
    }

    fn section_input(&self, out: &mut String) {
        let _ = writeln!(out, "## Input\n");
        if let Some(data) = self.config.context.as_ref().and_then(|c| c.data.as_ref()) {
            let sources = if data.sources.is_empty() {
                "files given by path, read as Global-MMLU".to_owned()
            } else {
                data.sources.join("; ")
            };
            let _ = writeln!(
                out,
                "Data: {sources}. Domain scheme: {}.\n",
                data.domain_scheme
            );
            if data.excluded.is_empty() {
                let _ = writeln!(out, "The data audits excluded no row.\n");
            } else {
                let _ = writeln!(out, "Rows the data audits excluded (see manifest.json):\n");
                for e in &data.excluded {
                    let _ = writeln!(out, "- {e}");
                }
                let _ = writeln!(out);
            }
        }
        match self.test_set_sizes() {
            // A baseline pairs nothing: its test sets' sizes are in `## Base model only`.
            Some(_) if self.base_only() => {}
            Some(sizes) => {
                let mut by: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for (t, n) in &sizes {
                    by.entry(*n).or_default().push(t.to_string());
                }
                let _ = writeln!(
                    out,
                    "Test-set sizes (questions paired with the base model):\n"
                );
                for (n, sets) in &by {
                    let _ = writeln!(out, "- {n}: {}", sets.join(", "));
                }
                let _ = writeln!(out);
            }
            None => {
                let _ = writeln!(
                    out,
                    "A published accuracy table: test-set sizes are not given, so no paired test and no power can be computed.\n"
                );
                let _ = writeln!(out, "Reading policy: {RAGGED_POLICY}\n");
            }
        }
        if self.grid.warnings.is_empty() {
            let _ = writeln!(out, "No warnings.\n");
        } else {
            let _ = writeln!(out, "Warnings:\n");
            for w in &self.grid.warnings {
                let _ = writeln!(out, "- {w}");
            }
            let _ = writeln!(out);
        }
        let unmapped: std::collections::BTreeSet<&str> = self
            .grid
            .rows
            .iter()
            .filter(|r| r.levels.is_none())
            .flat_map(|r| [r.source.language, r.target.language])
            .filter(|l| {
                !self.grid.rows.iter().any(|r| {
                    r.levels.is_some() && (r.source.language == *l || r.target.language == *l)
                })
            })
            .map(|l| l.code())
            .collect();
        let n_unmapped = self.grid.rows.iter().filter(|r| r.levels.is_none()).count();
        if n_unmapped > 0 {
            let _ = writeln!(
                out,
                "{n_unmapped} instances involve a language the resource map does not classify ({}); they count in every table but the direction and level ones and the regression.\n",
                unmapped.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        self.section_resource_levels(out);
    }

    /// Each language of the grid with its resource level and the source that classified
    /// it (the study's map, Joshi et al. 2020's class, a file, or given).
    fn section_resource_levels(&self, out: &mut String) {
        let mut languages: Vec<xlt_data::Language> = self
            .grid
            .rows
            .iter()
            .flat_map(|r| [r.source.language, r.target.language])
            .chain(self.grid.base.iter().map(|(s, _)| s.language))
            .collect();
        languages.sort_by_key(|l| l.code());
        languages.dedup();
        if languages.is_empty() {
            return;
        }
        let map = &self.config.resource_map;
        let _ = writeln!(
            out,
            "Resource levels, and which source classified each language (the study's map for its nine languages, else the class of Joshi et al. 2020, ACL, doi:10.18653/v1/2020.acl-main.560: 0-2 low, 3 mid, 4-5 high, unless a `--resource-map` file says otherwise):\n"
        );
        let _ = writeln!(out, "| language | level | classified by |\n|---|---|---|");
        for l in languages {
            let (level, source) = match (map.level(l), map.source(l)) {
                (Some(r), Some(src)) => (r.as_str().to_owned(), src.to_string()),
                (Some(r), None) => (r.as_str().to_owned(), "given".to_owned()),
                (None, _) => ("-".to_owned(), "no source classifies it".to_owned()),
            };
            let _ = writeln!(out, "| {} ({}) | {level} | {source} |", l.code(), l.name());
        }
        let _ = writeln!(out);
    }

    /// Whether the grid holds the base model's outcomes alone (a baseline study): no
    /// instance, so no gain to tabulate.
    fn base_only(&self) -> bool {
        self.grid.rows.is_empty() && !self.grid.base.is_empty()
    }

    /// Outcomes of the base model alone (a baseline study, `--train-slices none`): no model
    /// was fine-tuned, so there is no gain; the base model's accuracy on each test set and
    /// pooled over them, with the number of questions (and its mean `p_correct` where
    /// letters were scored), is the whole result.
    fn section_base_only(&self, out: &mut String) {
        if !self.base_only() {
            return;
        }
        let base = self.grid.answers.iter().find(|a| a.source.is_none());
        let p_correct = base
            .map(|a| a.p_correct.as_slice())
            .filter(|p| !p.is_empty());
        let _ = writeln!(
            out,
            "## Baseline: no model was fine-tuned\n\nOnly the base model was evaluated, so there are no gains: the sections on gains, intervals, replicates, regressions, significance and power are left out. The base model's accuracy on each test set and pooled over them (\"all\"){}:\n",
            if p_correct.is_some() {
                ", with its mean p(correct) (the correct letter's probability renormalized over A-D, averaged over option rotations when there were several; chance is 25%)"
            } else {
                ""
            }
        );
        let tally = |t: &Slice| base.and_then(|a| a.by_test_set.iter().find(|x| x.test_set == *t));
        let mean_p = |t: &Slice| p_correct.and_then(|p| p.iter().find(|x| x.test_set == *t));
        let _ = writeln!(
            out,
            "| test set | n | accuracy (%) |{}\n|---|---:|---:|{}",
            if p_correct.is_some() {
                " mean p(correct) (%) |"
            } else {
                ""
            },
            if p_correct.is_some() { "---:|" } else { "" }
        );
        let pct =
            |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{:.1}", 100.0 * x));
        for (t, accuracy) in &self.grid.base {
            let n = tally(t).map_or_else(|| "n/a".to_owned(), |x| x.n.to_string());
            let p = if p_correct.is_some() {
                format!(" {} |", pct(mean_p(t).map(|x| x.mean)))
            } else {
                String::new()
            };
            let _ = writeln!(out, "| {t} | {n} | {:.1} |{p}", 100.0 * accuracy);
        }
        // Pooled over questions where they are counted, else the mean over test sets.
        let (n, accuracy) = match base.map(ModelAnswers::total) {
            Some((correct, n)) if n > 0 => (n.to_string(), correct as f64 / n as f64),
            _ => (
                "n/a".to_owned(),
                self.grid.base.iter().map(|(_, a)| a).sum::<f64>()
                    / self.grid.base.len().max(1) as f64,
            ),
        };
        let p = match p_correct {
            Some(p) => {
                let n: usize = p.iter().map(|x| x.n).sum();
                let pooled = p.iter().map(|x| x.mean * x.n as f64).sum::<f64>() / n.max(1) as f64;
                format!(" {:.1} |", 100.0 * pooled)
            }
            None => String::new(),
        };
        let _ = writeln!(out, "| all | {n} | {:.1} |{p}\n", 100.0 * accuracy);
    }

    fn section_intervals(&self, out: &mut String) {
        if self.base_only() {
            return;
        }
        let _ = writeln!(out, "## Intervals\n");
        let _ = writeln!(
            out,
            "Instances are not independent: those on one test set share its questions and the base model's answers, those of one fine-tuned model share that model, and test sets of one domain are translations of the same questions.\n"
        );
        let method = |m: IntervalMethod| match m {
            IntervalMethod::Cluster => CLUSTER_METHOD.to_owned(),
            IntervalMethod::Pigeonhole => self.bootstrap_method(),
            IntervalMethod::WildCluster => WILD_METHOD.to_owned(),
            IntervalMethod::IndependentT => INDEPENDENT_METHOD.to_owned(),
        };
        let _ = writeln!(
            out,
            "Each gain has one interval, the **{}**: {}. {PRIMARY_WHY} \"too few\" with fewer than {MIN_INTERVAL_CLUSTERS} training slices or {MIN_INTERVAL_CLUSTERS} test sets, or fewer than {MIN_QUESTIONS} questions; n/a when it could not be computed.\n",
            PRIMARY_INTERVAL.label(),
            method(PRIMARY_INTERVAL)
        );
        let _ = writeln!(
            out,
            "`summary.json` keeps the secondary intervals beside it, for comparison:"
        );
        for m in IntervalMethod::ALL
            .into_iter()
            .filter(|m| *m != PRIMARY_INTERVAL)
        {
            let _ = writeln!(out, "- `{}`: {}.", m.key(), method(m));
        }
        let _ = writeln!(out);
    }

    fn section_gains(&self, out: &mut String) {
        if self.base_only() {
            return;
        }
        let _ = writeln!(out, "## Gains\n");
        Self::summary_table(
            out,
            "By transfer type",
            "",
            &owned(self.groups.transfer_types_ordered()),
        );
        Self::summary_table(
            out,
            "By resource direction",
            "Between different languages only: same-language cells (in-domain and cross-domain) have no direction and are the last row, `same-language`.",
            &owned(self.groups.directions_ordered()),
        );
        let levels: Vec<(String, Option<&Summary>)> = self
            .groups
            .resource_levels
            .iter()
            .filter(|(k, _)| k.contains("->"))
            .chain(
                self.groups
                    .resource_levels
                    .iter()
                    .filter(|(k, _)| !k.contains("->")),
            )
            .map(|(k, s)| (k.clone(), Some(s)))
            .collect();
        Self::summary_table(
            out,
            "By resource levels (source->target)",
            "Between different languages only; same-language cells are the rows `<level> (same language)`.",
            &levels,
        );
        let domains: Vec<(String, Option<&Summary>)> = self
            .groups
            .domain_matrix
            .iter()
            .map(|(k, s)| (k.clone(), Some(s)))
            .collect();
        Self::summary_table(out, "By domain (source->target)", "", &domains);
        let langs: Vec<(String, Option<&Summary>)> = self
            .groups
            .language_matrix
            .iter()
            .map(|(k, s)| (k.clone(), Some(s)))
            .collect();
        Self::summary_table(out, "By language (source->target)", "", &langs);
    }

    fn section_regression(&self, out: &mut String) {
        if self.base_only() {
            return;
        }
        let _ = writeln!(out, "## Transfer type, direction and headroom together\n");
        match &self.regression {
            Ok(r) => {
                let f = &r.fit;
                let _ = writeln!(
                    out,
                    "Least squares of the gain on transfer type (against in-domain), direction (on cross-language cells, against lateral) and the base model's accuracy on the test set (centred on {:.1}%), over {} instances; two-way cluster-robust standard errors ({} training slices, {} test sets, t on {} degrees of freedom){}.\n",
                    r.base_accuracy_centre,
                    f.n,
                    f.clusters[0],
                    f.clusters[1],
                    f.df,
                    if r.left_out > 0 {
                        format!(
                            "; {} instances with an unclassified language left out",
                            r.left_out
                        )
                    } else {
                        String::new()
                    }
                );
                let _ = writeln!(
                    out,
                    "| term | estimate (pp) | SE | 95% CI | p |\n|---|---:|---:|---|---:|"
                );
                for c in &f.coefficients {
                    let _ = writeln!(
                        out,
                        "| {} | {:+.2} | {:.2} | {} | {} |",
                        c.name,
                        c.estimate,
                        c.se,
                        fmt_ci(Some(c.ci95)),
                        fmt_p(c.p)
                    );
                }
                if f.psd_adjusted {
                    let _ = writeln!(
                        out,
                        "\nThe two-way covariance had a negative eigenvalue, set to zero (Cameron, Gelbach and Miller, 2011, section 2.3)."
                    );
                }
                let _ = writeln!(out);
            }
            Err(e) => {
                let _ = writeln!(out, "Not fitted: {e}.\n");
            }
        }
    }

    /// `summary.json`'s `typology`: the sources, the minimum of shared WALS features, every
    /// instance's distances, and the language pairs left out for too few shared features.
    fn typology_json(&self) -> serde_json::Value {
        let instances: Vec<serde_json::Value> = self
            .grid
            .rows
            .iter()
            .zip(&self.distances)
            .map(|(r, d)| {
                json!({
                    "model": r.model,
                    "source": r.source.to_string(),
                    "target": r.target.to_string(),
                    "wals_distance": d.map(|d| d.wals.distance).filter(|x| x.is_finite()),
                    "wals_shared_features": d.map(|d| d.wals.shared),
                    "wals_usable": d.map(|d| d.wals_usable),
                    "genealogical_distance": d.map(|d| d.genealogical.distance),
                    "same_family": d.map(|d| d.genealogical.same_family),
                })
            })
            .collect();
        json!({
            "sources": TYPOLOGY_SOURCES,
            "min_shared_features": xlt_data::MIN_SHARED_FEATURES,
            "genealogical_distance": "1 - shared / max(len_a, len_b) over Glottolog paths (ancestors from the top-level family, then the language)",
            "instances": instances,
            "pairs_left_out": self.pairs_left_out(),
            "languages_unknown": self.languages_without_typology(),
        })
    }

    /// Language pairs whose WALS distance rests on fewer than the minimum of shared
    /// features: `(source, target, shared)`, once each.
    fn pairs_left_out(&self) -> Vec<(String, String, usize)> {
        let mut out: Vec<(String, String, usize)> = self
            .grid
            .rows
            .iter()
            .zip(&self.distances)
            .filter_map(|(r, d)| {
                let d = d.as_ref()?;
                (!d.wals_usable).then(|| {
                    (
                        r.source.language.code().to_owned(),
                        r.target.language.code().to_owned(),
                        d.wals.shared,
                    )
                })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Languages of the grid the embedded typology tables do not cover.
    fn languages_without_typology(&self) -> Vec<String> {
        let known: Vec<xlt_data::Language> = xlt_data::Typology::embedded().languages().collect();
        let mut out: Vec<String> = self
            .grid
            .rows
            .iter()
            .flat_map(|r| [r.source.language, r.target.language])
            .filter(|l| !known.contains(l))
            .map(|l| l.code().to_owned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `grid.csv`: [`Grid::to_csv`] with four columns more per instance: the WALS distance
    /// and its shared features, the genealogical distance, and whether the two languages
    /// are of one family (empty where the typology tables lack a language).
    pub fn grid_csv(&self) -> String {
        let csv = self.grid.to_csv();
        let mut lines = csv.lines();
        let mut out = String::new();
        if let Some(header) = lines.next() {
            let _ = writeln!(
                out,
                "{header},wals_distance,wals_shared_features,genealogical_distance,same_family"
            );
        }
        for (line, d) in lines.zip(&self.distances) {
            match d {
                Some(d) => {
                    let wals = if d.wals.distance.is_finite() {
                        format!("{:.4}", d.wals.distance)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "{line},{wals},{},{:.4},{}",
                        d.wals.shared, d.genealogical.distance, d.genealogical.same_family
                    );
                }
                None => {
                    let _ = writeln!(out, "{line},,,,");
                }
            }
        }
        out
    }

    fn section_typology(&self, out: &mut String) {
        if self.grid.rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Typology and transfer\n");
        let _ = writeln!(
            out,
            "Each instance has two distances between its training language and its test language (`grid.csv`, `summary.json` under `typology`): the share of differing values over the WALS features both languages have coded (a pair sharing fewer than {} features is left out), and a genealogical distance over Glottolog's classification, 1 - shared / max(len_a, len_b) over the two paths from the top-level family down to the language (0: the same language; 1: different families). Sources: {TYPOLOGY_SOURCES}\n",
            xlt_data::MIN_SHARED_FEATURES
        );
        let left = self.pairs_left_out();
        if !left.is_empty() {
            let list: Vec<String> = left
                .iter()
                .map(|(a, b, n)| format!("{a}->{b} ({n})"))
                .collect();
            let _ = writeln!(
                out,
                "Left out for too few shared WALS features: {}.\n",
                list.join(", ")
            );
        }
        let unknown = self.languages_without_typology();
        if !unknown.is_empty() {
            let _ = writeln!(out, "Not in the typology tables: {}.\n", unknown.join(", "));
        }
        match &self.transfer_regression {
            Ok(r) => {
                let f = &r.fit;
                let _ = writeln!(
                    out,
                    "Least squares of the gain on resource direction (cross-language cells, against lateral), WALS distance (per 0.1), genealogical relatedness (1 - distance), domain match and the base model's accuracy on the test set (centred on {:.1}%), over {} instances ({} left out without a usable distance, {} without resource levels); two-way cluster-robust standard errors ({} training slices, {} test sets, t on {} degrees of freedom).\n",
                    r.base_accuracy_centre,
                    f.n,
                    r.left_out_distance,
                    r.left_out_direction,
                    f.clusters[0],
                    f.clusters[1],
                    f.df
                );
                let _ = writeln!(
                    out,
                    "| term | estimate (pp) | SE | 95% CI | p |\n|---|---:|---:|---|---:|"
                );
                for c in &f.coefficients {
                    let _ = writeln!(
                        out,
                        "| {} | {:+.2} | {:.2} | {} | {} |",
                        c.name,
                        c.estimate,
                        c.se,
                        fmt_ci(Some(c.ci95)),
                        fmt_p(c.p)
                    );
                }
                if !r.aliased.is_empty() {
                    let _ = writeln!(
                        out,
                        "\nDropped, being zero or (nearly: R² above 0.99) a linear combination of the terms above on these instances: {}.",
                        r.aliased.join("; ")
                    );
                }
                if f.psd_adjusted {
                    let _ = writeln!(
                        out,
                        "\nThe two-way covariance had a negative eigenvalue, set to zero (Cameron, Gelbach and Miller, 2011, section 2.3)."
                    );
                }
                let _ = writeln!(out);
            }
            Err(e) => {
                let _ = writeln!(out, "The transfer regression was not fitted: {e}.\n");
            }
        }
    }

    fn section_published(&self, out: &mut String) {
        let Some(rows) = self.published_rows() else {
            return;
        };
        let _ = writeln!(out, "## The published figures beside ours\n");
        let _ = writeln!(
            out,
            "| grouping | group | published (pp) | ours (pp) | difference |\n|---|---|---:|---:|---:|"
        );
        for (f, ours) in &rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:+.2} | {} | {} |",
                f.grouping.replace('_', " "),
                f.key,
                f.gain,
                ours.map_or_else(|| "n/a".to_owned(), |o| format!("{o:+.2}")),
                ours.map_or_else(|| "n/a".to_owned(), |o| format!("{:+.2}", o - f.gain))
            );
        }
        let large: Vec<&str> = rows
            .iter()
            .filter(|(f, ours)| ours.is_some_and(|o| (o - f.gain).abs() > 0.5))
            .map(|(f, _)| f.key)
            .collect();
        if large.is_empty() {
            let _ = writeln!(out, "\n{PUBLISHED_DIFFERENCES}.\n");
        } else {
            let _ = writeln!(
                out,
                "\n{PUBLISHED_DIFFERENCES}: the differences over half a point ({}) are not rounding.\n",
                large.join(", ")
            );
        }
    }

    fn section_significance(&self, out: &mut String) {
        if self.base_only() {
            return;
        }
        let _ = writeln!(out, "## Significance\n");
        match &self.significance {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "Exact McNemar test of each fine-tuned model against the base on each test set ({} tests, alpha {}); every pair's gain, discordant counts and p-values are in `summary.json` under `pairs`.\n",
                    s.tests, s.alpha
                );
                let _ = writeln!(
                    out,
                    "| | gains | losses |\n|---|---:|---:|\n| p < alpha, unadjusted | {} | {} |\n| surviving Holm | {} | {} |\n| surviving Benjamini-Hochberg | {} | {} |\n",
                    s.gains_significant_raw,
                    s.losses_significant_raw,
                    s.gains_surviving_holm,
                    s.losses_surviving_holm,
                    s.gains_surviving_bh,
                    s.losses_surviving_bh
                );
                let kept: Vec<&RowTest> = s.rows.iter().filter(|r| r.p_bh < s.alpha).collect();
                if !kept.is_empty() {
                    let _ = writeln!(
                        out,
                        "Pairs surviving Benjamini-Hochberg:\n\n| model | test set | gain (pp) | n | base only | model only | p | p (Holm) | p (BH) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
                    );
                    for r in kept {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {:+.1} | {} | {} | {} | {:.2e} | {:.2e} | {:.2e} |",
                            r.model,
                            r.test_set,
                            r.gain,
                            r.n,
                            r.base_only,
                            r.model_only,
                            r.p,
                            r.p_holm,
                            r.p_bh
                        );
                    }
                    let _ = writeln!(out);
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "Not available: a published accuracy matrix has no per-question outcomes, so no paired test can be made. Run the study with `--outcomes` data for McNemar tests with Holm and Benjamini-Hochberg corrections.\n"
                );
            }
        }
    }

    fn section_power(&self, out: &mut String) {
        if self.base_only() {
            return;
        }
        let Some(rows) = &self.power else {
            return;
        };
        let _ = writeln!(out, "## Power\n");
        let _ = writeln!(
            out,
            "The smallest gain the exact McNemar test (alpha {}) detects with 80% power, for each test-set size: at the share of discordant questions (answered right by exactly one of the two models) seen in this run, and when no question is lost (every discordant question goes the fine-tuned model's way), below which no test of that size can find a gain. \"none\": no gain, up to every question, reaches 80% power at that discordant share.\n",
            self.config.alpha
        );
        let _ = writeln!(
            out,
            "| questions | pairs | discordant share | smallest detectable gain (pp) | if no question is lost (pp) |\n|---:|---:|---:|---:|---:|"
        );
        let fmt = |g: Option<f64>| g.map_or_else(|| "none".to_owned(), |g| format!("{g:.1}"));
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {} | {} |",
                r.n,
                r.pairs,
                r.discordant_share,
                fmt(r.min_gain_at_observed),
                fmt(r.min_gain_floor)
            );
        }
        let _ = writeln!(out);
    }

    /// The heatmaps, as (file name, SVG): `accuracy.svg`, `gain.svg`, `domain_transfer.svg`,
    /// `language_transfer.svg`. Rows (models, by training slice) and columns (test sets) are
    /// in the same (language, domain) order, so that with a model for every test set the
    /// diagonal is in-domain. A slice's seed replicates are one row, each cell their mean.
    /// Each cell is annotated with what it rests on: questions (outcomes: the test set's,
    /// not replicates x questions) in the first two, (slice, test set) instances in the last
    /// two, each slice's replicates counted once; a cell resting on fewer than
    /// [`MIN_QUESTIONS`] questions, or [`MIN_HEATMAP_INSTANCES`] instances, is grey and says
    /// `too few`, and the colour scale covers only the other cells.
    pub fn heatmaps(&self) -> Vec<(String, String)> {
        // One row per training slice: the seed replicates of a slice (`<slice>#k`) are one
        // row, each cell the mean of their accuracies (gains) on the test set and resting on
        // the test set's questions, not on replicates x questions.
        let mut models: Vec<(String, Slice, usize)> = Vec::new();
        for (m, source) in self.models() {
            let slice = crate::split_label(&m)
                .map_or(m.as_str(), |(s, _)| s)
                .to_owned();
            match models
                .iter_mut()
                .find(|(l, s, _)| *l == slice && *s == source)
            {
                Some(row) => row.2 += 1,
                None => models.push((slice, source, 1)),
            }
        }
        let sets = self.test_sets();
        let counts = self.grid.question_counts();
        // The rows of (slice, test set): every replicate's.
        let lookup = |m: &str, source: Slice, t: Slice| -> Option<Vec<usize>> {
            let idx: Vec<usize> = (0..self.grid.rows.len())
                .filter(|&i| {
                    let r = &self.grid.rows[i];
                    r.source == source
                        && r.target == t
                        && crate::split_label(&r.model).map_or(r.model.as_str(), |(s, _)| s) == m
                })
                .collect();
            (!idx.is_empty()).then_some(idx)
        };
        let mean = |idx: &[usize], f: fn(&crate::grid::GridRow) -> f64| {
            idx.iter().map(|&i| f(&self.grid.rows[i])).sum::<f64>() / idx.len() as f64
        };
        let label = |slice: &str, replicates: usize| {
            if replicates > 1 {
                format!("{slice} (mean of {replicates})")
            } else {
                slice.to_owned()
            }
        };
        let sizes = self.test_set_sizes();
        let mut acc_rows = vec!["Base".to_owned()];
        let mut acc_vals = vec![
            sets.iter()
                .map(|t| self.grid.base.iter().find(|(s, _)| s == t).map(|(_, a)| *a))
                .collect::<Vec<_>>(),
        ];
        let mut n_vals = vec![
            sets.iter()
                .map(|t| sizes.as_ref().and_then(|s| s.get(t).copied()))
                .collect::<Vec<_>>(),
        ];
        let mut gain_vals = Vec::new();
        for (m, source, replicates) in &models {
            let idx: Vec<Option<Vec<usize>>> =
                sets.iter().map(|t| lookup(m, *source, *t)).collect();
            acc_rows.push(label(m, *replicates));
            acc_vals.push(
                idx.iter()
                    .map(|i| i.as_ref().map(|i| mean(i, |r| r.accuracy)))
                    .collect(),
            );
            gain_vals.push(
                idx.iter()
                    .map(|i| i.as_ref().map(|i| mean(i, |r| r.gain)))
                    .collect::<Vec<_>>(),
            );
            // The questions of the test set: every replicate answered the same ones.
            n_vals.push(
                idx.iter()
                    .map(|i| {
                        let c = counts.as_ref()?;
                        i.as_ref()?.iter().map(|&i| c[i]).max()
                    })
                    .collect(),
            );
        }
        let with_counts = counts.is_some();
        let cols: Vec<String> = sets.iter().map(ToString::to_string).collect();
        let accuracy = Heatmap {
            title: "Accuracy".to_owned(),
            row_axis: "model (fine-tuning slice)".to_owned(),
            col_axis: "test set".to_owned(),
            rows: acc_rows,
            cols: cols.clone(),
            values: acc_vals,
            scale: ColorScale::Sequential { min: 0.0, max: 1.0 },
            decimals: 2,
            signed: false,
            counts: with_counts.then(|| n_vals.clone()),
            min_count: MIN_QUESTIONS,
        };
        let mut gain = Heatmap {
            title: "Gain over the base model (percentage points)".to_owned(),
            row_axis: "model (fine-tuning slice)".to_owned(),
            col_axis: "test set".to_owned(),
            rows: models.iter().map(|(m, _, k)| label(m, *k)).collect(),
            cols,
            scale: ColorScale::diverging_for(&gain_vals),
            values: gain_vals,
            decimals: 0,
            signed: true,
            counts: with_counts.then(|| n_vals[1..].to_vec()),
            min_count: MIN_QUESTIONS,
        };
        // The scale covers only the cells that are coloured, so that a cell resting on too
        // few questions cannot saturate it.
        gain.scale = ColorScale::diverging_for(&gain.shown_values());
        // What a pair cell rests on: its (training slice, test set) instances, the replicates
        // of a slice counted once (its mean weighs them equally when every slice has as
        // many).
        let (slice_ids, test_ids) = crate::transfer::slice_and_test_ids(&self.grid);
        let instances = |grouping: crate::Grouping| -> BTreeMap<String, usize> {
            crate::summary::members(&self.grid, grouping)
                .into_iter()
                .map(|(k, idx)| {
                    let cells: std::collections::BTreeSet<(usize, usize)> =
                        idx.iter().map(|&i| (slice_ids[i], test_ids[i])).collect();
                    (k, cells.len())
                })
                .collect()
        };
        let pair_map = |groups: &BTreeMap<String, Summary>,
                        instances: BTreeMap<String, usize>,
                        title: &str,
                        axis: &str| {
            let mut src: Vec<String> = Vec::new();
            let mut dst: Vec<String> = Vec::new();
            for k in groups.keys() {
                let (a, b) = k.split_once("->").expect("pair keys");
                if !src.contains(&a.to_owned()) {
                    src.push(a.to_owned());
                }
                if !dst.contains(&b.to_owned()) {
                    dst.push(b.to_owned());
                }
            }
            // One order for both axes, so that the diagonal is the same domain or language.
            let mut all: Vec<String> = src.iter().chain(&dst).cloned().collect();
            all.sort();
            all.dedup();
            src = all.iter().filter(|a| src.contains(a)).cloned().collect();
            dst = all.iter().filter(|b| dst.contains(b)).cloned().collect();
            let cell = |a: &str, b: &str| groups.get(&format!("{a}->{b}"));
            let values: Vec<Vec<Option<f64>>> = src
                .iter()
                .map(|a| dst.iter().map(|b| cell(a, b).map(|s| s.mean)).collect())
                .collect();
            let counts: Vec<Vec<Option<usize>>> = src
                .iter()
                .map(|a| {
                    dst.iter()
                        .map(|b| instances.get(&format!("{a}->{b}")).copied())
                        .collect()
                })
                .collect();
            let mut map = Heatmap {
                title: title.to_owned(),
                row_axis: format!("source {axis}"),
                col_axis: format!("target {axis}"),
                rows: src,
                cols: dst,
                scale: ColorScale::diverging_for(&values),
                values,
                decimals: 1,
                signed: true,
                counts: Some(counts),
                min_count: MIN_HEATMAP_INSTANCES,
            };
            map.scale = ColorScale::diverging_for(&map.shown_values());
            map
        };
        let domain = pair_map(
            &self.groups.domain_matrix,
            instances(crate::Grouping::Domains),
            "Mean gain by domain (pp; n instances)",
            "domain",
        );
        let language = pair_map(
            &self.groups.language_matrix,
            instances(crate::Grouping::Languages),
            "Mean gain by language (pp; n instances)",
            "language",
        );
        vec![
            ("accuracy.svg".to_owned(), accuracy.to_svg()),
            ("gain.svg".to_owned(), gain.to_svg()),
            ("domain_transfer.svg".to_owned(), domain.to_svg()),
            ("language_transfer.svg".to_owned(), language.to_svg()),
        ]
    }
}
