//! What a report must say about the answers themselves: accuracy per model and test set
//! with its question count, whether it can be told from chance (an exact binomial test), the
//! share of answers an LLM judge graded, and the letters chosen beside the answer key's.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, Discrete};
use xlt_data::{AnswerLetter, Domain, Language};
use xlt_grade::OutcomeRecord;

use crate::grid::Slice;

/// The accuracy of guessing: one of the [`AnswerLetter::ALL`] options, uniformly (0.25 for
/// Global-MMLU's four options).
pub const CHANCE: f64 = 1.0 / AnswerLetter::ALL.len() as f64;

/// The `method` an outcome carries when an LLM judge read its letter (see
/// `xlt_grade::judge`).
pub const JUDGE_METHOD: &str = "llm";

/// The fewest questions a per-question quantity needs before a report colours it in a
/// heatmap or gives it an interval: below 30, one question moves an accuracy by more than
/// 3.3 points and the normal approximation of a paired difference is poor.
pub const MIN_QUESTIONS: usize = 30;

/// The excess, in share of answers, of the most over-chosen letter over its share of the
/// answer key from which a model's letters count as lopsided (20 points: a model that picks
/// `A` on 20 of 28 questions whose key has `A` twice is 64 points over).
pub const LOPSIDED_EXCESS: f64 = 0.20;

/// Exact two-sided binomial test of `k` successes in `n` trials against success
/// probability `p`: the total probability of every count no more likely than `k` (the
/// "minimum likelihood" p-value of R's `binom.test` and scipy's `binomtest`). Returns 1 for
/// `n = 0`.
///
/// # Panics
/// If `k > n` or `p` is outside [0, 1].
pub fn binomial_test(k: usize, n: usize, p: f64) -> f64 {
    assert!(k <= n, "binomial_test: {k} successes in {n} trials");
    if n == 0 {
        return 1.0;
    }
    let dist = Binomial::new(p, n as u64).expect("p in [0, 1]");
    let observed = dist.pmf(k as u64);
    // The same relative tolerance as R and scipy, so ties in probability count as ties.
    let bound = observed * (1.0 + 1e-7);
    let total: f64 = (0..=n as u64)
        .map(|i| dist.pmf(i))
        .filter(|q| *q <= bound)
        .sum();
    total.min(1.0)
}

/// Correct answers out of the questions of one test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The test set.
    pub test_set: Slice,
    /// Questions answered.
    pub n: usize,
    /// Of which correct.
    pub correct: usize,
}

impl Tally {
    /// `correct / n`, a fraction.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }

    /// The two-sided exact binomial p-value against [`CHANCE`].
    pub fn p_chance(&self) -> f64 {
        binomial_test(self.correct, self.n, CHANCE)
    }
}

/// A model's mean probability of the correct letter on one test set (letter scoring,
/// `xlt_grade::LetterOutcome::p_correct`): per question the mean over its option
/// rotations, then the mean over questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PCorrectTally {
    /// The test set.
    pub test_set: Slice,
    /// Questions with a `p_correct`.
    pub n: usize,
    /// Their mean `p_correct`, a fraction in [0, 1] (chance is [`CHANCE`]).
    pub mean: f64,
}

/// How one model answered, over all its outcomes: by test set, who read the letters, and
/// which letters it chose beside the key's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnswers {
    /// The model's label.
    pub label: String,
    /// Its training slice; `None` for the base model.
    pub source: Option<Slice>,
    /// Per test set, by (language, domain).
    pub by_test_set: Vec<Tally>,
    /// Answers whose letter an LLM judge read (method [`JUDGE_METHOD`]).
    pub judged: usize,
    /// Answers with no letter.
    pub unparsed: usize,
    /// Letters chosen, indexed by [`AnswerLetter::index`].
    pub chosen: [usize; 4],
    /// The answer key's letters over the same questions, indexed likewise.
    pub key: [usize; 4],
    /// Letter scoring under option rotations (issue #22): (correct, answered) per rotation,
    /// indexed by rotation (0: the options as in the data). One entry without rotations.
    pub by_rotation: Vec<(usize, usize)>,
    /// Letter scoring: the mean `p_correct` per test set, ordered as `by_test_set`; empty
    /// for generated answers.
    pub p_correct: Vec<PCorrectTally>,
}

impl ModelAnswers {
    /// Tallies `outcomes` of the model `label`.
    pub fn of(label: &str, source: Option<Slice>, outcomes: &[OutcomeRecord]) -> ModelAnswers {
        let mut by: std::collections::BTreeMap<(&str, Domain, Language), Tally> =
            std::collections::BTreeMap::new();
        let mut a = ModelAnswers {
            label: label.to_owned(),
            source,
            by_test_set: Vec::new(),
            judged: 0,
            unparsed: 0,
            chosen: [0; 4],
            key: [0; 4],
            by_rotation: Vec::new(),
            p_correct: Vec::new(),
        };
        // (test set key) -> sample id -> (sum of p_correct over rotations, count).
        type PSums<'a> = std::collections::BTreeMap<&'a str, (f64, usize)>;
        let mut p_by: std::collections::BTreeMap<(&str, Domain, Language), PSums<'_>> =
            std::collections::BTreeMap::new();
        for o in outcomes {
            if let Some(p) = o.p_correct() {
                let e = p_by
                    .entry((o.language.code(), o.domain, o.language))
                    .or_default()
                    .entry(o.sample_id.as_str())
                    .or_insert((0.0, 0));
                e.0 += p;
                e.1 += 1;
            }
            let r = usize::from(o.letters.map_or(0, |l| l.rotation));
            if a.by_rotation.len() <= r {
                a.by_rotation.resize(r + 1, (0, 0));
            }
            a.by_rotation[r].0 += usize::from(o.correct);
            a.by_rotation[r].1 += 1;
            // Under option rotations, a question counts once, as shown in the data
            // (rotation 0), as in the grid; the rotations are tallied in `by_rotation`.
            if r != 0 {
                continue;
            }
            let test_set = Slice {
                domain: o.domain,
                language: o.language,
            };
            let t = by
                .entry((o.language.code(), o.domain, o.language))
                .or_insert(Tally {
                    test_set,
                    n: 0,
                    correct: 0,
                });
            t.n += 1;
            t.correct += usize::from(o.correct);
            a.judged += usize::from(o.method == JUDGE_METHOD);
            match o.letter {
                Some(l) => a.chosen[l.index()] += 1,
                None => a.unparsed += 1,
            }
            a.key[o.answer.index()] += 1;
        }
        a.by_test_set = by.into_values().collect();
        a.p_correct = p_by
            .into_iter()
            .map(|((_, domain, language), questions)| PCorrectTally {
                test_set: Slice { domain, language },
                n: questions.len(),
                mean: questions.values().map(|(s, n)| s / *n as f64).sum::<f64>()
                    / questions.len() as f64,
            })
            .collect();
        a
    }

    /// Accuracy with the options as in the data (rotation 0) and over every rotation
    /// scored, as fractions; `None` without rotations.
    pub fn rotation_accuracies(&self) -> Option<(f64, f64)> {
        if self.by_rotation.len() < 2 {
            return None;
        }
        let frac = |(c, n): (usize, usize)| if n == 0 { 0.0 } else { c as f64 / n as f64 };
        let all = self
            .by_rotation
            .iter()
            .fold((0, 0), |(c, n), (c2, n2)| (c + c2, n + n2));
        Some((frac(self.by_rotation[0]), frac(all)))
    }

    /// Every answer over all test sets: (correct, answered).
    pub fn total(&self) -> (usize, usize) {
        (
            self.by_test_set.iter().map(|t| t.correct).sum(),
            self.by_test_set.iter().map(|t| t.n).sum(),
        )
    }

    /// Whether the chosen letters are lopsided: some letter's share of the answers with a
    /// letter exceeds its share of the key by at least [`LOPSIDED_EXCESS`].
    pub fn lopsided(&self) -> bool {
        let chosen: usize = self.chosen.iter().sum();
        let key: usize = self.key.iter().sum();
        if chosen == 0 || key == 0 {
            return false;
        }
        (0..4).any(|i| {
            self.chosen[i] as f64 / chosen as f64 - self.key[i] as f64 / key as f64
                >= LOPSIDED_EXCESS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference p-values computed exactly in rational arithmetic by the definition R's
    /// `binom.test` and scipy's `binomtest` use (sum of the probabilities no larger than the
    /// observed one, relative tolerance 1e-7):
    /// `sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7))` with `pmf[i] = comb(n, i) p^i
    /// (1-p)^(n-i)` over `fractions.Fraction`. Tolerance 1e-12: statrs's pmf goes through
    /// logarithms, accurate to about 1e-14 relative here.
    #[test]
    fn binomial_test_matches_exact_arithmetic() {
        let cases: [(usize, usize, f64, f64); 5] = [
            // The local SmolLM2 study's base model: 5 of 28 (17.9%).
            (5, 28, 0.25, 0.513_649_192_674_978_8),
            (7, 28, 0.25, 1.0),
            (14, 28, 0.25, 0.004_098_856_463_197_811),
            (0, 10, 0.25, 0.076_041_221_618_652_34),
            (30, 60, 0.5, 1.0),
        ];
        for (k, n, p, want) in cases {
            let got = binomial_test(k, n, p);
            assert!(
                (got - want).abs() < 1e-12,
                "binomial test of {k} in {n} against {p}: got {got}, exact {want}"
            );
        }
        assert_eq!(binomial_test(0, 0, 0.25), 1.0);
    }
}
