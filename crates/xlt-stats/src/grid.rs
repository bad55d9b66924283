//! The evaluation grid: one row per (fine-tuned model, test set), with its gain over the base
//! model, transfer type and resource direction; built from a published accuracy matrix or
//! from per-question outcomes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use xlt_data::{Domain, Language, ResourceLevel, ResourceMap};
use xlt_grade::OutcomeRecord;

use crate::StatsError;
use crate::answers::ModelAnswers;

/// A language-domain slice: what a model was fine-tuned on, or a test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slice {
    /// Domain.
    pub domain: Domain,
    /// Language.
    pub language: Language,
}

impl Slice {
    /// Parses the published layout: `<Domain> <lang>`, domain as `Hum`, `STEM`, `Med` (or any
    /// spelling [`Domain`] accepts), e.g. `Hum ig`.
    ///
    /// # Errors
    /// [`StatsError::Table`] naming the label.
    pub fn parse(label: &str) -> Result<Slice, StatsError> {
        let bad = |why: String| StatsError::Table(format!("label `{label}`: {why}"));
        let (d, l) = label
            .trim()
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `<Domain> <lang>`".to_owned()))?;
        Ok(Slice {
            domain: d
                .parse()
                .map_err(|e: xlt_data::DataError| bad(e.to_string()))?,
            language: l
                .parse()
                .map_err(|e: xlt_data::DataError| bad(e.to_string()))?,
        })
    }
}

impl Slice {
    /// Parses the file-name form `<lang>-<domain slug>` (`ig-humanities`), as the outcome and
    /// fine-tuning files are named.
    ///
    /// # Errors
    /// [`StatsError::Input`] naming the stem.
    pub fn from_file_stem(stem: &str) -> Result<Slice, StatsError> {
        let bad = |why: String| StatsError::Input(format!("`{stem}`: {why}"));
        let (l, d) = stem
            .split_once('-')
            .ok_or_else(|| bad("expected `<lang>-<domain>`".to_owned()))?;
        Ok(Slice {
            domain: d
                .parse()
                .map_err(|e: xlt_data::DataError| bad(e.to_string()))?,
            language: l
                .parse()
                .map_err(|e: xlt_data::DataError| bad(e.to_string()))?,
        })
    }

    /// The file-name form, `<lang>-<domain slug>`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.language.code(), self.domain.slug())
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.domain.abbreviation(), self.language.code())
    }
}

/// How a test set relates to the slice a model was fine-tuned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferType {
    /// Same domain, same language.
    InDomain,
    /// Same domain, other language.
    CrossLingual,
    /// Other domain, same language.
    CrossDomain,
    /// Other domain and other language.
    CrossBoth,
}

impl TransferType {
    /// Every type, in report order.
    pub const ALL: [TransferType; 4] = [
        TransferType::InDomain,
        TransferType::CrossLingual,
        TransferType::CrossDomain,
        TransferType::CrossBoth,
    ];

    /// The type of (source, target).
    pub fn of(source: Slice, target: Slice) -> TransferType {
        match (
            source.domain == target.domain,
            source.language == target.language,
        ) {
            (true, true) => TransferType::InDomain,
            (true, false) => TransferType::CrossLingual,
            (false, true) => TransferType::CrossDomain,
            (false, false) => TransferType::CrossBoth,
        }
    }

    /// Snake-case key: `in_domain`, `cross_lingual`, `cross_domain`, `cross_both`.
    pub fn key(self) -> &'static str {
        match self {
            TransferType::InDomain => "in_domain",
            TransferType::CrossLingual => "cross_lingual",
            TransferType::CrossDomain => "cross_domain",
            TransferType::CrossBoth => "cross_both",
        }
    }
}

/// Whether transfer goes from a better- to a worse-resourced language or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From a higher level to a lower one.
    Downward,
    /// From a lower level to a higher one.
    Upward,
    /// Between languages of the same level. A language and itself is lateral too in
    /// [`GridRow::direction`], but the direction and level tables of the report group
    /// same-language cells apart (see [`GridRow::same_language`]).
    Lateral,
}

impl Direction {
    /// Every direction, in report order.
    pub const ALL: [Direction; 3] = [Direction::Downward, Direction::Upward, Direction::Lateral];

    /// The direction from level `source` to level `target`.
    pub fn of(source: ResourceLevel, target: ResourceLevel) -> Direction {
        match source.cmp(&target) {
            std::cmp::Ordering::Greater => Direction::Downward,
            std::cmp::Ordering::Less => Direction::Upward,
            std::cmp::Ordering::Equal => Direction::Lateral,
        }
    }

    /// Lower-case key.
    pub fn key(self) -> &'static str {
        match self {
            Direction::Downward => "downward",
            Direction::Upward => "upward",
            Direction::Lateral => "lateral",
        }
    }
}

/// One evaluation instance: a fine-tuned model on a test set, compared with the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridRow {
    /// The model's label (`Hum ig`, or a provider's model id).
    pub model: String,
    /// The slice the model was fine-tuned on.
    pub source: Slice,
    /// The test set.
    pub target: Slice,
    /// The model's accuracy on the test set, as a fraction.
    pub accuracy: f64,
    /// The base model's accuracy on the test set.
    pub base_accuracy: f64,
    /// `accuracy - base_accuracy`, in percentage points.
    pub gain: f64,
    /// Transfer type.
    pub transfer: TransferType,
    /// Resource direction, if the map knows both languages.
    pub direction: Option<Direction>,
    /// (source level, target level), if the map knows both languages.
    pub levels: Option<(ResourceLevel, ResourceLevel)>,
}

impl GridRow {
    /// Whether the model was fine-tuned in the test set's language (in-domain and
    /// cross-domain cells): such a cell has no transfer direction between languages.
    pub fn same_language(&self) -> bool {
        self.source.language == self.target.language
    }
}

/// Per-question correctness of one model on one test set, for paired statistics. Index `i`
/// of a model's vector and of the base's vector is the same question.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// Sample ids, by question: the same id in every language is the same question.
    pub ids: Vec<String>,
    /// Base model correct, by question.
    pub base: Vec<bool>,
    /// Fine-tuned model correct, by question.
    pub model: Vec<bool>,
    /// The base model's probability of the correct letter (renormalized over A-D, a
    /// fraction), by question, when every question of the pair was scored by letters on
    /// both sides; empty otherwise. A question scored under several option rotations has the
    /// mean over its rotations.
    pub p_base: Vec<f64>,
    /// The fine-tuned model's probability of the correct letter, as `p_base`.
    pub p_model: Vec<f64>,
}

impl Paired {
    /// Whether the pair has the continuous outcome (`p_base` and `p_model` filled).
    pub fn has_p_correct(&self) -> bool {
        !self.p_model.is_empty() && self.p_model.len() == self.ids.len()
    }

    /// Per-question differences of the grid's outcome, model minus base: correctness
    /// (-1, 0, 1) for [`Measure::Accuracy`], the probability of the correct letter (a
    /// fraction in [-1, 1]) for [`Measure::PCorrect`]; `None` when the pair lacks that
    /// outcome.
    pub fn differences(&self, measure: Measure) -> Option<Vec<f64>> {
        match measure {
            Measure::Accuracy => Some(
                self.model
                    .iter()
                    .zip(&self.base)
                    .map(|(m, b)| f64::from(i8::from(*m) - i8::from(*b)))
                    .collect(),
            ),
            Measure::PCorrect => self.has_p_correct().then(|| {
                self.p_model
                    .iter()
                    .zip(&self.p_base)
                    .map(|(m, b)| m - b)
                    .collect()
            }),
        }
    }
}

/// What a grid's accuracies and gains measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Share of questions answered correctly (0/1 per question).
    #[default]
    Accuracy,
    /// Mean probability of the correct letter, renormalized over A-D (letter scoring,
    /// [`xlt_grade::LetterOutcome::p_correct`]): a continuous outcome per question.
    PCorrect,
}

/// The grid, with per-question data when it was built from outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Every instance, by model then test set, in input order.
    pub rows: Vec<GridRow>,
    /// Per-question pairs, aligned with `rows`, when built from outcomes.
    pub paired: Option<Vec<Paired>>,
    /// Problems met while building, each naming where.
    pub warnings: Vec<String>,
    /// The base model's accuracy on every test set, in column order.
    pub base: Vec<(Slice, f64)>,
    /// Per model label, answers cut off by the output-token limit (`finish_reason`
    /// `length`), for models that had any; empty for a published matrix.
    pub truncated: Vec<(String, usize)>,
    /// How each model answered (the base model first, then in input order): tallies per
    /// test set, judge share, letters; empty for a published matrix.
    pub answers: Vec<ModelAnswers>,
    /// What `accuracy`, `base_accuracy` and `gain` of the rows measure.
    pub measure: Measure,
}

fn row(
    model: &str,
    source: Slice,
    target: Slice,
    accuracy: f64,
    base_accuracy: f64,
    map: &ResourceMap,
) -> GridRow {
    let levels = match (map.level(source.language), map.level(target.language)) {
        (Some(s), Some(t)) => Some((s, t)),
        _ => None,
    };
    GridRow {
        model: model.to_owned(),
        source,
        target,
        accuracy,
        base_accuracy,
        gain: (accuracy - base_accuracy) * 100.0,
        transfer: TransferType::of(source, target),
        direction: levels.map(|(s, t)| Direction::of(s, t)),
        levels,
    }
}

/// The reading policy for published tables with ragged rows, as the report prints it.
pub const RAGGED_POLICY: &str = "Cells align with the header from the left. A row with fewer \
values than the header lacks its trailing cells, which are absent from every aggregate; a row \
with more values has its extra trailing cells ignored. Nothing is imputed.";

/// An accuracy matrix in the published layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyMatrix {
    /// The test sets, in column order.
    pub test_sets: Vec<Slice>,
    /// The base model's row.
    pub base: Vec<Option<f64>>,
    /// Fine-tuned models: label, source slice, row.
    pub models: Vec<(String, Slice, Vec<Option<f64>>)>,
    /// Ragged rows and other problems, each naming the row.
    pub warnings: Vec<String>,
}

impl AccuracyMatrix {
    /// Reads a tab-separated matrix: a header `Model<TAB><test set>...`, a `Base` row, and a
    /// row per fine-tuned model named by its training slice (`Hum ig`). Values are fractions.
    /// Ragged rows follow [`RAGGED_POLICY`] and each gives a warning naming the row and its
    /// count.
    ///
    /// # Errors
    /// [`StatsError::Table`] naming the line for a missing header or `Base` row, a label
    /// that is not `<Domain> <lang>`, or a value that is not a number in [0, 1].
    pub fn parse_tsv(text: &str) -> Result<AccuracyMatrix, StatsError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| StatsError::Table("empty table".to_owned()))?;
        let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
        let test_sets = cols[1..]
            .iter()
            .map(|c| Slice::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        let width = test_sets.len();
        let mut base = None;
        let mut models = Vec::new();
        let mut warnings = Vec::new();
        for (i, line) in lines {
            let cells: Vec<&str> = line.split('\t').map(str::trim).collect();
            let label = cells[0];
            let values = &cells[1..];
            if values.len() != width {
                warnings.push(format!(
                    "line {}: row `{label}` has {} values for {width} test sets; {}",
                    i + 1,
                    values.len(),
                    if values.len() < width {
                        format!(
                            "the last {} test set(s) ({}) are treated as missing",
                            width - values.len(),
                            test_sets[values.len()..]
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else {
                        format!(
                            "the {} extra trailing value(s) are ignored",
                            values.len() - width
                        )
                    }
                ));
            }
            let parsed = (0..width)
                .map(|k| match values.get(k) {
                    None => Ok(None),
                    Some(v) => {
                        let x: f64 = v.parse().map_err(|_| {
                            StatsError::Table(format!(
                                "line {}: row `{label}`, column `{}`: `{v}` is not a number",
                                i + 1,
                                test_sets[k]
                            ))
                        })?;
                        if !(0.0..=1.0).contains(&x) {
                            return Err(StatsError::Table(format!(
                                "line {}: row `{label}`, column `{}`: accuracy {x} is outside [0, 1]",
                                i + 1,
                                test_sets[k]
                            )));
                        }
                        Ok(Some(x))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            if label.eq_ignore_ascii_case("base") {
                base = Some(parsed);
            } else {
                let source = Slice::parse(label)
                    .map_err(|e| StatsError::Table(format!("line {}: {e}", i + 1)))?;
                models.push((label.to_owned(), source, parsed));
            }
        }
        let base = base.ok_or_else(|| StatsError::Table("no `Base` row".to_owned()))?;
        Ok(AccuracyMatrix {
            test_sets,
            base,
            models,
            warnings,
        })
    }

    /// Whether this is the study's table: its 12 models (Humanities, STEM, Medical in Igbo,
    /// Hebrew, Turkish, English) and 27 test sets (the three domains in Amharic, Arabic,
    /// German, English, Hebrew, Igbo, Kyrgyz, Turkish, Yoruba), so that its published
    /// figures ([`crate::STUDY_FIGURES`]) apply.
    pub fn is_study_table(&self) -> bool {
        use std::collections::BTreeSet;
        let slices = |langs: &[&str]| -> BTreeSet<Slice> {
            langs
                .iter()
                .flat_map(|l| {
                    ["Hum", "STEM", "Med"]
                        .map(|d| Slice::parse(&format!("{d} {l}")).expect("known labels"))
                })
                .collect()
        };
        let models: BTreeSet<Slice> = self.models.iter().map(|m| m.1).collect();
        let tests: BTreeSet<Slice> = self.test_sets.iter().copied().collect();
        self.models.len() == 12
            && models == slices(&["ig", "he", "tr", "en"])
            && self.test_sets.len() == 27
            && tests == slices(&["am", "ar", "de", "en", "he", "ig", "ky", "tr", "yo"])
    }

    /// The grid of every (model, test set) cell where both the model and the base have a
    /// value.
    pub fn grid(&self, map: &ResourceMap) -> Grid {
        let mut rows = Vec::new();
        for (label, source, values) in &self.models {
            for (k, target) in self.test_sets.iter().enumerate() {
                if let (Some(a), Some(b)) = (values[k], self.base[k]) {
                    rows.push(row(label, *source, *target, a, b, map));
                }
            }
        }
        Grid {
            rows,
            paired: None,
            truncated: Vec::new(),
            answers: Vec::new(),
            measure: Measure::Accuracy,
            warnings: self.warnings.clone(),
            base: self
                .test_sets
                .iter()
                .zip(&self.base)
                .filter_map(|(t, b)| b.map(|b| (*t, b)))
                .collect(),
        }
    }
}

/// One model's graded answers, with what it was fine-tuned on (`None` for the base model).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutcomes {
    /// The model's label.
    pub label: String,
    /// Its training slice; `None` for the base model.
    pub source: Option<Slice>,
    /// Its graded answers.
    pub outcomes: Vec<OutcomeRecord>,
}

impl Grid {
    /// Builds the grid from per-question outcomes: exactly one entry must be the base model.
    /// Accuracy is the share of correct answers; questions are paired by sample id, and a
    /// question only one of the two models answered is left out of that pair (with a
    /// warning).
    ///
    /// Letter-scored outcomes also give each pair's `p_correct` ([`Paired::p_base`]).
    ///
    /// # Errors
    /// [`StatsError::Input`] if there is not exactly one base model, a model has no
    /// outcome at all, or a `p_correct` is not in [0, 1] (naming the model, test set and
    /// sample id).
    pub fn from_outcomes(models: &[ModelOutcomes], map: &ResourceMap) -> Result<Grid, StatsError> {
        let bases: Vec<&ModelOutcomes> = models.iter().filter(|m| m.source.is_none()).collect();
        let [base] = bases.as_slice() else {
            return Err(StatsError::Input(format!(
                "expected exactly one base model among the outcomes, found {}",
                bases.len()
            )));
        };
        let index = |m: &ModelOutcomes| -> BTreeMap<Slice, BTreeMap<String, bool>> {
            let mut by: BTreeMap<Slice, BTreeMap<String, bool>> = BTreeMap::new();
            // Under option rotations (letter scoring), the 0/1 outcome of a question is
            // its answer with the options as in the data (rotation 0); the rotations enter
            // through p_correct's mean and the report's rotation-controlled accuracy.
            for o in m
                .outcomes
                .iter()
                .filter(|o| o.letters.is_none_or(|l| l.rotation == 0))
            {
                by.entry(Slice {
                    domain: o.domain,
                    language: o.language,
                })
                .or_default()
                .insert(o.sample_id.clone(), o.correct);
            }
            by
        };
        let base_idx = index(base);
        let base_p = p_index(base)?;
        let mut warnings = Vec::new();
        let mut rows = Vec::new();
        let mut paired = Vec::new();
        for m in models.iter().filter(|m| m.source.is_some()) {
            if m.outcomes.is_empty() {
                return Err(StatsError::Input(format!(
                    "model `{}` has no outcome",
                    m.label
                )));
            }
            let source = m.source.expect("filtered");
            let model_p = p_index(m)?;
            for (target, answers) in index(m) {
                let Some(base_answers) = base_idx.get(&target) else {
                    warnings.push(format!(
                        "model `{}`: test set {target} has no base-model outcome; left out",
                        m.label
                    ));
                    continue;
                };
                let mut p = Paired {
                    ids: Vec::new(),
                    base: Vec::new(),
                    model: Vec::new(),
                    p_base: Vec::new(),
                    p_model: Vec::new(),
                };
                let mut unpaired = 0;
                for (id, correct) in &answers {
                    match base_answers.get(id) {
                        Some(b) => {
                            p.ids.push(id.clone());
                            p.base.push(*b);
                            p.model.push(*correct);
                        }
                        None => unpaired += 1,
                    }
                }
                if unpaired > 0 {
                    warnings.push(format!(
                        "model `{}`, test set {target}: {unpaired} question(s) have no base-model outcome; left out",
                        m.label
                    ));
                }
                if p.model.is_empty() {
                    continue;
                }
                let lookup = |idx: &PIndex| -> Option<Vec<f64>> {
                    p.ids
                        .iter()
                        .map(|id| {
                            idx.get(&(target, id.clone()))
                                .map(|(sum, n)| sum / *n as f64)
                        })
                        .collect()
                };
                if let (Some(pb), Some(pm)) = (lookup(&base_p), lookup(&model_p)) {
                    p.p_base = pb;
                    p.p_model = pm;
                }
                let acc = mean_bool(&p.model);
                let base_acc = mean_bool(&p.base);
                rows.push(row(&m.label, source, target, acc, base_acc, map));
                paired.push(p);
            }
        }
        let truncated: Vec<(String, usize)> = models
            .iter()
            .map(|m| {
                let n = m
                    .outcomes
                    .iter()
                    .filter(|o| o.finish_reason.as_deref() == Some("length"))
                    .count();
                (m.label.clone(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        for (label, n) in &truncated {
            let total = models
                .iter()
                .find(|m| &m.label == label)
                .map_or(0, |m| m.outcomes.len());
            warnings.push(format!(
                "model `{label}`: {n} of {total} answers were cut off by the output-token limit (finish_reason `length`) and are graded as given; rerun with a larger --max-tokens"
            ));
        }
        let answers = std::iter::once(*base)
            .chain(models.iter().filter(|m| m.source.is_some()))
            .map(|m| ModelAnswers::of(&m.label, m.source, &m.outcomes))
            .collect();
        Ok(Grid {
            rows,
            paired: Some(paired),
            truncated,
            answers,
            measure: Measure::Accuracy,
            warnings,
            base: base_idx
                .iter()
                .map(|(t, a)| {
                    (
                        *t,
                        a.values().filter(|c| **c).count() as f64 / a.len() as f64,
                    )
                })
                .collect(),
        })
    }

    /// The grid of the continuous outcome ([`Measure::PCorrect`]): the rows whose pair has
    /// `p_correct` on both sides ([`Paired::has_p_correct`]), with `accuracy` and
    /// `base_accuracy` the mean probability of the correct letter over the pair's questions
    /// and `gain` their difference in percentage points. The pairs are kept, so that
    /// [`crate::Groups::of`] gives the same two-way clustered intervals and the pigeonhole
    /// bootstrap resamples the per-question differences of `p_correct`. `base` is the base
    /// model's mean `p_correct` on the test sets the rows cover. Rows without letters are
    /// left out, each counted in one warning.
    ///
    /// `None` for a published matrix, a [`Measure::PCorrect`] grid, or when no pair has
    /// `p_correct`.
    pub fn p_correct_grid(&self) -> Option<Grid> {
        if self.measure != Measure::Accuracy {
            return None;
        }
        let paired = self.paired.as_ref()?;
        let mut rows = Vec::new();
        let mut pairs = Vec::new();
        // Per test set, the base's mean over the largest pair on it (that with the most of
        // the questions the base answered there): (questions, mean).
        let mut base: BTreeMap<Slice, (usize, f64)> = BTreeMap::new();
        for (r, p) in self.rows.iter().zip(paired) {
            if !p.has_p_correct() {
                continue;
            }
            let (pm, pb) = (mean(&p.p_model), mean(&p.p_base));
            let mut row = r.clone();
            row.accuracy = pm;
            row.base_accuracy = pb;
            row.gain = (pm - pb) * 100.0;
            rows.push(row);
            pairs.push(p.clone());
            let e = base.entry(r.target).or_insert((0, pb));
            if p.p_base.len() > e.0 {
                *e = (p.p_base.len(), pb);
            }
        }
        if rows.is_empty() {
            return None;
        }
        let left_out = self.rows.len() - rows.len();
        let warnings = if left_out > 0 {
            vec![format!(
                "{left_out} of {} (model, test set) pairs have outcomes without letter probabilities on one side; left out of the p(correct) tables",
                self.rows.len()
            )]
        } else {
            Vec::new()
        };
        Some(Grid {
            rows,
            paired: Some(pairs),
            warnings,
            base: base.into_iter().map(|(t, (_, b))| (t, b)).collect(),
            truncated: Vec::new(),
            answers: Vec::new(),
            measure: Measure::PCorrect,
        })
    }

    /// Each row's cluster in the two dimensions of the design: `(training slice, test set)`,
    /// each numbered from 0 in order of first appearance. The seed replicates of a slice
    /// (`<slice>#<k>`, issue #24) share its cluster, so that adding replicates does not add
    /// clusters; with one model per slice this is the model.
    pub fn cluster_ids(&self) -> (Vec<usize>, Vec<usize>) {
        let mut models: BTreeMap<Slice, usize> = BTreeMap::new();
        let mut tests: BTreeMap<Slice, usize> = BTreeMap::new();
        self.rows
            .iter()
            .map(|r| {
                let m = models.len();
                let m = *models.entry(r.source).or_insert(m);
                let t = tests.len();
                let t = *tests.entry(r.target).or_insert(t);
                (m, t)
            })
            .unzip()
    }

    /// Questions behind each row (`None` for a published matrix), aligned with `rows`.
    pub fn question_counts(&self) -> Option<Vec<usize>> {
        self.paired
            .as_ref()
            .map(|p| p.iter().map(|p| p.model.len()).collect())
    }

    /// The long-format grid as CSV: model, source domain, source language, test domain, test
    /// language, accuracy, base accuracy, gain, transfer type, direction.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "model,source_domain,source_language,test_domain,test_language,accuracy,base_accuracy,gain,transfer_type,direction\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{},{},{},{},{},{:.4},{:.4},{:.2},{},{}\n",
                csv_field(&r.model),
                r.source.domain.name(),
                r.source.language.code(),
                r.target.domain.name(),
                r.target.language.code(),
                r.accuracy,
                r.base_accuracy,
                r.gain,
                r.transfer.key(),
                r.direction.map(Direction::key).unwrap_or("")
            ));
        }
        s
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// (test set, sample id) -> (sum of `p_correct`, outcomes summed).
type PIndex = BTreeMap<(Slice, String), (f64, usize)>;

/// Per (test set, sample id), the sum and count of `p_correct` over a model's letter-scored
/// outcomes (several when the question was scored under several option rotations).
///
/// # Errors
/// [`StatsError::Input`] naming the model, test set and sample id of a `p_correct` that is
/// not a probability.
fn p_index(m: &ModelOutcomes) -> Result<PIndex, StatsError> {
    let mut by = PIndex::new();
    for o in &m.outcomes {
        if let Some(p) = o.p_correct() {
            let slice = Slice {
                domain: o.domain,
                language: o.language,
            };
            if !(0.0..=1.0).contains(&p) {
                return Err(StatsError::Input(format!(
                    "model `{}`, test set {slice}, sample `{}`: p_correct {p} is not a probability in [0, 1]",
                    m.label, o.sample_id
                )));
            }
            let e = by.entry((slice, o.sample_id.clone())).or_insert((0.0, 0));
            e.0 += p;
            e.1 += 1;
        }
    }
    Ok(by)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub(crate) fn mean_bool(v: &[bool]) -> f64 {
    v.iter().filter(|b| **b).count() as f64 / v.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "Model\tHum en\tSTEM en\tHum ig\n\
Base\t0.50\t0.60\t0.40\n\
Hum en\t0.70\t0.55\t0.50\n\
STEM ig\t0.40\t0.80\n\
Hum ig\t0.45\t0.60\t0.60\t0.99\n";

    #[test]
    fn transfer_types_and_directions() {
        let s = |t: &str| Slice::parse(t).unwrap();
        assert_eq!(
            TransferType::of(s("Hum en"), s("Hum en")),
            TransferType::InDomain
        );
        assert_eq!(
            TransferType::of(s("Hum en"), s("Hum ig")),
            TransferType::CrossLingual
        );
        assert_eq!(
            TransferType::of(s("Hum en"), s("STEM en")),
            TransferType::CrossDomain
        );
        assert_eq!(
            TransferType::of(s("Hum en"), s("Med ig")),
            TransferType::CrossBoth
        );
        use ResourceLevel::*;
        assert_eq!(Direction::of(High, Low), Direction::Downward);
        assert_eq!(Direction::of(Mid, High), Direction::Upward);
        assert_eq!(Direction::of(Low, Low), Direction::Lateral);
        assert!(Slice::parse("Hum").is_err());
        assert!(Slice::parse("Law en").is_err());
        assert!(Slice::parse("Hum xx").is_err());
    }

    #[test]
    fn ragged_rows_follow_the_policy() {
        let m = AccuracyMatrix::parse_tsv(SMALL).unwrap();
        assert_eq!(m.models.len(), 3);
        assert_eq!(m.warnings.len(), 2);
        assert!(m.warnings[0].contains("`STEM ig` has 2 values for 3 test sets"));
        assert!(m.warnings[0].contains("(Hum ig) are treated as missing"));
        assert!(m.warnings[1].contains("`Hum ig` has 4 values"));
        assert!(m.warnings[1].contains("1 extra trailing value(s) are ignored"));
        let g = m.grid(&ResourceMap::study());
        // 3 + 2 + 3 cells.
        assert_eq!(g.rows.len(), 8);
        // Hum en on Hum en: 0.70 - 0.50 = 20 points, in-domain, high -> high.
        let r = &g.rows[0];
        assert!((r.gain - 20.0).abs() < 1e-9);
        assert_eq!(r.transfer, TransferType::InDomain);
        assert_eq!(r.direction, Some(Direction::Lateral));
        // Hum en on Hum ig: +10, cross-lingual, downward.
        let r = &g.rows[2];
        assert!((r.gain - 10.0).abs() < 1e-9);
        assert_eq!(r.transfer, TransferType::CrossLingual);
        assert_eq!(r.direction, Some(Direction::Downward));
        // STEM ig on Hum en: -10, cross-both, upward.
        let r = &g.rows[3];
        assert!((r.gain + 10.0).abs() < 1e-9);
        assert_eq!(r.transfer, TransferType::CrossBoth);
        assert_eq!(r.direction, Some(Direction::Upward));
        assert!(g.to_csv().lines().nth(1).unwrap().starts_with(
            "Hum en,Humanities,en,Humanities,en,0.7000,0.5000,20.00,in_domain,lateral"
        ));
    }

    #[test]
    fn bad_tables_are_errors_naming_the_line() {
        let e = AccuracyMatrix::parse_tsv("Model\tHum en\nBase\tx\n").unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("`x`"),
            "{e}"
        );
        let e = AccuracyMatrix::parse_tsv("Model\tHum en\nBase\t1.5\n").unwrap_err();
        assert!(e.to_string().contains("outside [0, 1]"), "{e}");
        let e = AccuracyMatrix::parse_tsv("Model\tHum en\nHum en\t0.5\n").unwrap_err();
        assert!(e.to_string().contains("no `Base` row"), "{e}");
        assert!(AccuracyMatrix::parse_tsv("").is_err());
    }
}
