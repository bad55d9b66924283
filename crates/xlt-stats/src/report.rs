//! The analysis of a grid and its outputs: Markdown report, JSON summary, heatmaps.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;
use xlt_data::ResourceMap;

use crate::grid::{Grid, RAGGED_POLICY, Slice};
use crate::heatmap::{ColorScale, Heatmap};
use crate::signif::{Significance, significance};
use crate::summary::{BootstrapConfig, Groups, Summary};

/// Settings of an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// Resource levels of the languages (the study's by default).
    pub resource_map: ResourceMap,
    /// Bootstrap resamples and seed.
    pub bootstrap: BootstrapConfig,
    /// Significance level.
    pub alpha: f64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            resource_map: ResourceMap::study(),
            bootstrap: BootstrapConfig::default(),
            alpha: 0.05,
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
    /// Paired tests, when the grid has per-question data.
    pub significance: Option<Significance>,
}

fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::to_value(s).expect("summary serializes")
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

fn owned<'a>(v: Vec<(&'static str, Option<&'a Summary>)>) -> Vec<(String, Option<&'a Summary>)> {
    v.into_iter()
        .map(|(k, s)| (k.replace('_', "-"), s))
        .collect()
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

impl Analysis {
    /// Computes every summary of `grid`.
    pub fn new(grid: Grid, config: &AnalysisConfig) -> Analysis {
        let groups = Groups::of(&grid, &config.bootstrap);
        let significance = significance(&grid, config.alpha);
        Analysis {
            grid,
            groups,
            significance,
        }
    }

    /// The model labels with their training slices, in order of first appearance.
    fn models(&self) -> Vec<(String, Slice)> {
        let mut seen = Vec::<(String, Slice)>::new();
        for r in &self.grid.rows {
            if !seen.iter().any(|(m, _)| *m == r.model) {
                seen.push((r.model.clone(), r.source));
            }
        }
        seen
    }

    /// The test sets, in the input's column order.
    fn test_sets(&self) -> Vec<Slice> {
        let mut sets: Vec<Slice> = self.grid.base.iter().map(|(t, _)| *t).collect();
        for r in &self.grid.rows {
            if !sets.contains(&r.target) {
                sets.push(r.target);
            }
        }
        sets
    }

    /// `summary.json`: instance count, warnings, the reading policy, every grouping (each
    /// summary `{"mean", "n", "sd", "ci95"}` in percentage points, plus `bootstrap95` with
    /// per-question data) and, with per-question data, the significance counts.
    pub fn summary_json(&self) -> serde_json::Value {
        let mut v = json!({
            "n_instances": self.grid.rows.len(),
            "warnings": self.grid.warnings,
            "policy": RAGGED_POLICY,
            "transfer_types": map_json(&self.groups.transfer_types),
            "resource_directions": map_json(&self.groups.resource_directions),
            "resource_levels": map_json(&self.groups.resource_levels),
            "domain_matrix": map_json(&self.groups.domain_matrix),
            "language_matrix": map_json(&self.groups.language_matrix),
        });
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
                "losses_surviving_bh": s.losses_surviving_bh,
            });
        }
        v
    }

    fn summary_table(
        out: &mut String,
        title: &str,
        rows: &[(String, Option<&Summary>)],
        bootstrap: bool,
    ) {
        let _ = writeln!(out, "### {title}\n");
        if bootstrap {
            let _ = writeln!(
                out,
                "| group | mean gain (pp) | n | sd | 95% CI (t) | 95% CI (bootstrap) |\n|---|---:|---:|---:|---|---|"
            );
        } else {
            let _ = writeln!(
                out,
                "| group | mean gain (pp) | n | sd | 95% CI (t) |\n|---|---:|---:|---:|---|"
            );
        }
        for (k, s) in rows {
            match s {
                Some(s) => {
                    let _ = write!(
                        out,
                        "| {k} | {:+.1} | {} | {} | {} |",
                        s.mean,
                        s.n,
                        fmt_opt(s.sd),
                        fmt_ci(s.ci95)
                    );
                    if bootstrap {
                        let _ = write!(out, " {} |", fmt_ci(s.bootstrap95));
                    }
                    let _ = writeln!(out);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| {k} | n/a | 0 | n/a | n/a |{}",
                        if bootstrap { " n/a |" } else { "" }
                    );
                }
            }
        }
        let _ = writeln!(out);
    }

    /// The Markdown report: inputs, warnings and the reading policy, then tables of mean gain
    /// with n, standard deviation and intervals by transfer type, direction, level pair,
    /// domain pair and language pair, and the significance counts.
    pub fn report_markdown(&self) -> String {
        let boot = self.grid.paired.is_some();
        let mut out = String::new();
        let models = self.models();
        let sets = self.test_sets();
        let _ = writeln!(out, "# Cross-lingual transfer report\n");
        let _ = writeln!(
            out,
            "{} evaluation instances: {} fine-tuned models x {} test sets, gains over the base model in percentage points.\n",
            self.grid.rows.len(),
            models.len(),
            sets.len()
        );
        let _ = writeln!(out, "## Input\n");
        let _ = writeln!(out, "Reading policy: {RAGGED_POLICY}\n");
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
                "{n_unmapped} instances involve a language the resource map does not classify ({}); they count in every table but the direction and level ones.\n",
                unmapped.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let _ = writeln!(out, "## Gains\n");

        Self::summary_table(
            &mut out,
            "By transfer type",
            &owned(self.groups.transfer_types_ordered()),
            boot,
        );
        Self::summary_table(
            &mut out,
            "By resource direction",
            &owned(self.groups.directions_ordered()),
            boot,
        );
        let levels: Vec<(String, Option<&Summary>)> = self
            .groups
            .resource_levels
            .iter()
            .map(|(k, s)| (k.clone(), Some(s)))
            .collect();
        Self::summary_table(
            &mut out,
            "By resource levels (source->target)",
            &levels,
            boot,
        );
        let domains: Vec<(String, Option<&Summary>)> = self
            .groups
            .domain_matrix
            .iter()
            .map(|(k, s)| (k.clone(), Some(s)))
            .collect();
        Self::summary_table(&mut out, "By domain (source->target)", &domains, boot);
        let langs: Vec<(String, Option<&Summary>)> = self
            .groups
            .language_matrix
            .iter()
            .map(|(k, s)| (k.clone(), Some(s)))
            .collect();
        Self::summary_table(&mut out, "By language (source->target)", &langs, boot);
        let _ = writeln!(out, "## Significance\n");
        match &self.significance {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "Exact McNemar test of each fine-tuned model against the base on each test set ({} tests, alpha {}).\n",
                    s.tests, s.alpha
                );
                let _ = writeln!(
                    out,
                    "| | count |\n|---|---:|\n| gains with p < alpha, unadjusted | {} |\n| gains surviving Holm | {} |\n| gains surviving Benjamini-Hochberg | {} |\n| losses surviving Benjamini-Hochberg | {} |\n",
                    s.gains_significant_raw,
                    s.gains_surviving_holm,
                    s.gains_surviving_bh,
                    s.losses_surviving_bh
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "Not available: a published accuracy matrix has no per-question outcomes, so no paired test can be made. Run the study with `--outcomes` data for McNemar tests with Holm and Benjamini-Hochberg corrections.\n"
                );
            }
        }
        out
    }

    /// The heatmaps, as (file name, SVG): `accuracy.svg`, `gain.svg`, `domain_transfer.svg`,
    /// `language_transfer.svg`.
    pub fn heatmaps(&self) -> Vec<(String, String)> {
        let models = self.models();
        let sets = self.test_sets();
        let lookup = |m: &str, t: Slice| {
            self.grid
                .rows
                .iter()
                .find(|r| r.model == m && r.target == t)
        };
        let mut acc_rows = vec!["Base".to_owned()];
        let mut acc_vals = vec![
            sets.iter()
                .map(|t| self.grid.base.iter().find(|(s, _)| s == t).map(|(_, a)| *a))
                .collect::<Vec<_>>(),
        ];
        let mut gain_vals = Vec::new();
        for (m, _) in &models {
            acc_rows.push(m.clone());
            acc_vals.push(
                sets.iter()
                    .map(|t| lookup(m, *t).map(|r| r.accuracy))
                    .collect(),
            );
            gain_vals.push(
                sets.iter()
                    .map(|t| lookup(m, *t).map(|r| r.gain))
                    .collect::<Vec<_>>(),
            );
        }
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
        };
        let gain = Heatmap {
            title: "Gain over the base model (percentage points)".to_owned(),
            row_axis: "model (fine-tuning slice)".to_owned(),
            col_axis: "test set".to_owned(),
            rows: models.iter().map(|(m, _)| m.clone()).collect(),
            cols,
            scale: ColorScale::diverging_for(&gain_vals),
            values: gain_vals,
            decimals: 0,
            signed: true,
        };
        let pair_map = |groups: &BTreeMap<String, Summary>, title: &str, axis: &str| {
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
            let values: Vec<Vec<Option<f64>>> = src
                .iter()
                .map(|a| {
                    dst.iter()
                        .map(|b| groups.get(&format!("{a}->{b}")).map(|s| s.mean))
                        .collect()
                })
                .collect();
            Heatmap {
                title: title.to_owned(),
                row_axis: format!("source {axis}"),
                col_axis: format!("target {axis}"),
                rows: src,
                cols: dst,
                scale: ColorScale::diverging_for(&values),
                values,
                decimals: 1,
                signed: true,
            }
        };
        let domain = pair_map(
            &self.groups.domain_matrix,
            "Mean gain by domain (pp)",
            "domain",
        );
        let language = pair_map(
            &self.groups.language_matrix,
            "Mean gain by language (pp)",
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
