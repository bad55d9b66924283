//! How far two graders agree on the same responses.

use serde::{Deserialize, Serialize};
use xlt_data::AnswerLetter;

/// One response the two graders read differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disagreement {
    /// The response's id.
    pub id: String,
    /// The first grader's letter.
    pub first: Option<AnswerLetter>,
    /// The second grader's letter.
    pub second: Option<AnswerLetter>,
}

/// Agreement of two graders over the same responses. "Unparseable" is a category of its own,
/// so two graders that both give up agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementReport {
    /// Responses compared.
    pub n: usize,
    /// Responses both read the same way.
    pub agreed: usize,
    /// `agreed / n` (1 when `n` is 0).
    pub rate: f64,
    /// Cohen's kappa over the five categories A, B, C, D and unparseable; `None` when chance
    /// agreement is 1 (both graders always give one and the same category), where kappa is
    /// undefined.
    pub kappa: Option<f64>,
    /// Every disagreement, in input order.
    pub disagreements: Vec<Disagreement>,
}

fn category(l: Option<AnswerLetter>) -> usize {
    l.map_or(4, AnswerLetter::index)
}

/// Compares two graders' letters, given as `(id, first, second)`.
///
/// Cohen's kappa is `(p_o - p_e) / (1 - p_e)`, with `p_o` the observed agreement and `p_e`
/// the agreement expected from each grader's marginal frequencies.
pub fn agreement<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Option<AnswerLetter>, Option<AnswerLetter>)>,
) -> AgreementReport {
    let mut table = [[0usize; 5]; 5];
    let mut disagreements = Vec::new();
    let mut n = 0;
    for (id, a, b) in pairs {
        n += 1;
        table[category(a)][category(b)] += 1;
        if a != b {
            disagreements.push(Disagreement {
                id: id.to_owned(),
                first: a,
                second: b,
            });
        }
    }
    let agreed: usize = (0..5).map(|i| table[i][i]).sum();
    if n == 0 {
        return AgreementReport {
            n,
            agreed,
            rate: 1.0,
            kappa: None,
            disagreements,
        };
    }
    let nf = n as f64;
    let p_o = agreed as f64 / nf;
    let p_e: f64 = (0..5)
        .map(|k| {
            let row: usize = table[k].iter().sum();
            let col: usize = table.iter().map(|r| r[k]).sum();
            (row as f64 / nf) * (col as f64 / nf)
        })
        .sum();
    let kappa = if (1.0 - p_e).abs() < 1e-12 {
        None
    } else {
        Some((p_o - p_e) / (1.0 - p_e))
    };
    AgreementReport {
        n,
        agreed,
        rate: p_o,
        kappa,
        disagreements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnswerLetter::*;

    #[test]
    fn kappa_matches_a_worked_example() {
        // 10 items. First: A A A A A B B B B B; second: A A A A B B B B B A.
        // p_o = 8/10; marginals 5/5 and 5/5 over {A,B}: p_e = 0.25 + 0.25 = 0.5;
        // kappa = (0.8 - 0.5) / 0.5 = 0.6.
        let first = [A, A, A, A, A, B, B, B, B, B];
        let second = [A, A, A, A, B, B, B, B, B, A];
        let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let r = agreement(
            ids.iter()
                .zip(first.iter().zip(second.iter()))
                .map(|(id, (a, b))| (id.as_str(), Some(*a), Some(*b))),
        );
        assert_eq!((r.n, r.agreed), (10, 8));
        assert!((r.rate - 0.8).abs() < 1e-12);
        assert!((r.kappa.unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(r.disagreements.len(), 2);
        assert_eq!(r.disagreements[0].id, "4");
    }

    #[test]
    fn unparseable_is_a_category() {
        let r = agreement([
            ("x", None, None),
            ("y", Some(C), None),
            ("z", Some(C), Some(C)),
        ]);
        assert_eq!(r.agreed, 2);
        // p_o = 2/3; first: C 2/3, none 1/3; second: C 1/3, none 2/3; p_e = 2/9 + 2/9 = 4/9.
        let expected = (2.0 / 3.0 - 4.0 / 9.0) / (1.0 - 4.0 / 9.0);
        assert!((r.kappa.unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn kappa_undefined_when_one_category() {
        let r = agreement([("x", Some(A), Some(A)), ("y", Some(A), Some(A))]);
        assert_eq!(r.rate, 1.0);
        assert_eq!(r.kappa, None);
        assert_eq!(agreement(std::iter::empty()).n, 0);
    }
}
