//! Every interval method against values computed independently, by
//! `fixtures/stats/reference.py` (statsmodels and numpy) into `fixtures/stats/reference.json`:
//! on the published table and on the small outcomes fixture in `fixtures/stats/outcomes/`.

use std::path::PathBuf;

use serde_json::Value;
use xlt_data::{AnswerLetter, Domain, Language, ResourceMap};
use xlt_grade::OutcomeRecord;
use xlt_stats::{
    AccuracyMatrix, Analysis, AnalysisConfig, BootstrapConfig, Grid, ModelOutcomes, Slice,
    headroom_regression,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("stats/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn table_grid() -> Grid {
    let text = std::fs::read_to_string(fixtures().join("paper/table1.tsv")).unwrap();
    AccuracyMatrix::parse_tsv(&text)
        .unwrap()
        .grid(&ResourceMap::study())
}

fn outcomes_grid() -> Grid {
    let dir = fixtures().join("stats/outcomes");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let models: Vec<ModelOutcomes> = names
        .iter()
        .map(|name| {
            let stem = name.trim_end_matches(".jsonl");
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let source = (stem != "base").then(|| Slice::from_file_stem(stem).unwrap());
            ModelOutcomes {
                label: source.map_or_else(|| "Base".to_owned(), |s| s.to_string()),
                source,
                outcomes: xlt_grade::read_jsonl(text.as_bytes(), name).unwrap(),
            }
        })
        .collect();
    Grid::from_outcomes(&models, &ResourceMap::study()).unwrap()
}

fn interval(v: &Value) -> Option<[f64; 2]> {
    v.as_array()
        .map(|a| [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()])
}

/// Compares every group of every grouping the reference has with our summary: the mean and
/// the two-way cluster-robust interval to 1e-8 (both are closed-form; the difference is
/// floating-point order), the pigeonhole bootstrap within the tolerance the reference
/// measured (four Monte Carlo standard deviations of an endpoint at our resample count).
fn check(grid: Grid, reference: &Value) {
    let resamples = reference_resamples();
    let config = AnalysisConfig {
        bootstrap: BootstrapConfig {
            resamples,
            seed: 42,
        },
        ..AnalysisConfig::default()
    };
    let summary = Analysis::new(grid, &config).summary_json();
    let mut checked = 0;
    for grouping in [
        "transfer_types",
        "resource_directions",
        "resource_levels",
        "domain_matrix",
    ] {
        for (key, want) in reference[grouping].as_object().unwrap() {
            let got = &summary[grouping][key];
            let what = format!("{grouping}.{key}");
            assert!(
                (got["mean"].as_f64().unwrap() - want["mean"].as_f64().unwrap()).abs() < 1e-8,
                "{what}: mean"
            );
            assert_eq!(got["n"], want["n"], "{what}: n");
            match (
                interval(&got["ci95_cluster"]),
                interval(&want["ci95_cluster"]),
            ) {
                (Some(g), Some(w)) => {
                    assert!(
                        (g[0] - w[0]).abs() < 1e-8 && (g[1] - w[1]).abs() < 1e-8,
                        "{what}: cluster {g:?} vs statsmodels {w:?}"
                    );
                }
                (None, None) => {}
                (g, w) => panic!("{what}: cluster {g:?} vs statsmodels {w:?}"),
            }
            if let Some(tol) = want["bootstrap_tolerance"].as_f64() {
                let g = interval(&got["ci95_bootstrap"]).unwrap();
                let w = interval(&want["ci95_bootstrap"]).unwrap();
                assert!(
                    (g[0] - w[0]).abs() <= tol && (g[1] - w[1]).abs() <= tol,
                    "{what}: bootstrap {g:?} vs numpy {w:?} (tolerance {tol})"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} groups checked");
}

fn reference_resamples() -> usize {
    reference()["resamples"].as_u64().unwrap() as usize
}

/// The regression's estimates, standard errors and intervals against statsmodels (with the
/// covariance's negative eigenvalues set to zero by numpy, as Cameron, Gelbach and Miller
/// propose), to 1e-8.
fn check_regression(grid: &Grid, want: &Value) {
    let fit = headroom_regression(grid).unwrap().fit;
    let names: Vec<&str> = want["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let got_names: Vec<&str> = fit.coefficients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(got_names, names);
    assert_eq!(fit.df as u64, want["df"].as_u64().unwrap());
    assert_eq!(fit.psd_adjusted, want["psd_adjusted"].as_bool().unwrap());
    for (j, c) in fit.coefficients.iter().enumerate() {
        let close = |a: f64, b: &Value| (a - b.as_f64().unwrap()).abs() < 1e-8;
        assert!(
            close(c.estimate, &want["estimate"][j]),
            "{}: estimate",
            c.name
        );
        assert!(close(c.se, &want["se"][j]), "{}: se {}", c.name, c.se);
        assert!(close(c.ci95[0], &want["ci95"][j][0]), "{}: ci", c.name);
        assert!(close(c.ci95[1], &want["ci95"][j][1]), "{}: ci", c.name);
    }
}

#[test]
fn published_table_matches_statsmodels_and_numpy() {
    let reference = reference();
    check_regression(&table_grid(), &reference["table"]["regression"]);
    check(table_grid(), &reference["table"]);
}

#[test]
fn outcomes_fixture_matches_statsmodels_and_numpy() {
    let reference = reference();
    check_regression(&outcomes_grid(), &reference["outcomes"]["regression"]);
    check(outcomes_grid(), &reference["outcomes"]);
}

fn record(id: usize, correct: bool) -> OutcomeRecord {
    OutcomeRecord {
        sample_id: format!("anatomy/test/{id}"),
        language: Language::English,
        domain: Domain::Stem,
        model: "m".to_owned(),
        response: "A".to_owned(),
        letter: Some(AnswerLetter::A),
        method: "bare".to_owned(),
        answer: if correct {
            AnswerLetter::A
        } else {
            AnswerLetter::B
        },
        correct,
        finish_reason: Some("stop".to_owned()),
        letters: None,
    }
}

/// The reproduction: one test set of 40 questions (8 only the base gets right, 16
/// only the model, 8 both, 8 neither) and two fine-tuned models answering identically. The
/// group of the two has the same mean as either, and so must have the same interval; a
/// bootstrap that draws questions independently per instance made it about 1/√2 as wide.
#[test]
fn identical_models_have_the_single_models_interval() {
    let base = ModelOutcomes {
        label: "Base".into(),
        source: None,
        outcomes: (0..40)
            .map(|i| record(i, i < 8 || (24..32).contains(&i)))
            .collect(),
    };
    let tuned = |label: &str| ModelOutcomes {
        label: label.into(),
        source: Some(Slice::parse("STEM en").unwrap()),
        outcomes: (0..40).map(|i| record(i, (8..32).contains(&i))).collect(),
    };
    let map = ResourceMap::study();
    let config = AnalysisConfig {
        bootstrap: BootstrapConfig {
            resamples: 20_000,
            seed: 7,
        },
        ..AnalysisConfig::default()
    };
    let one = Grid::from_outcomes(&[base.clone(), tuned("STEM en #1")], &map).unwrap();
    let two = Grid::from_outcomes(&[base, tuned("STEM en #1"), tuned("STEM en #2")], &map).unwrap();
    let one = Analysis::new(one, &config).summary_json();
    let two = Analysis::new(two, &config).summary_json();
    let single = interval(&one["transfer_types"]["in_domain"]["ci95_bootstrap"]).unwrap();
    let group = interval(&two["transfer_types"]["in_domain"]["ci95_bootstrap"]).unwrap();
    assert!(
        (single[0] - group[0]).abs() < 1e-9 && (single[1] - group[1]).abs() < 1e-9,
        "single {single:?} vs group {group:?}"
    );
    // Against the exact bootstrap distribution of (C - B) / 40 with (B, C) trinomial (40;
    // 0.2, 0.4), enumerated by reference.py. Tolerance: one question (2.5 points), the
    // distribution's step; at 20,000 resamples the Monte Carlo error of an endpoint is
    // about 0.3 points.
    let exact = interval(&reference()["identical_models"]["exact_quantiles"]).unwrap();
    assert!(
        (single[0] - exact[0]).abs() <= 2.5 && (single[1] - exact[1]).abs() <= 2.5,
        "bootstrap {single:?} vs exact {exact:?}"
    );
    // One test set is one cluster: no two-way clustered interval exists.
    assert!(two["transfer_types"]["in_domain"]["ci95_cluster"].is_null());
}

/// The smallest detectable gain against scipy's exact binomial test summed over the
/// trinomial by brute force (reference.py). Tolerance 1e-3 (0.1 point): our bisection stops
/// at 1e-4, and power steps with the discrete test's critical counts.
#[test]
fn min_detectable_gain_matches_brute_force() {
    let reference = reference();
    let cases = reference["power"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let n = case["n"].as_u64().unwrap();
        let psi = case["discordant"].as_f64();
        let want = case["min_gain"].as_f64().unwrap();
        let got = xlt_stats::min_detectable_gain(n, psi, 0.05, 0.8).unwrap();
        assert!(
            (got - want).abs() < 1e-3,
            "n {n}, discordant {psi:?}: {got} vs {want}"
        );
    }
    // A gain larger than the discordant share is impossible, so none is detectable.
    assert_eq!(
        xlt_stats::min_detectable_gain(10, Some(0.4), 0.05, 0.8),
        None
    );
}
