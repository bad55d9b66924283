//! Statistics on letter scoring's continuous outcome, p_correct, against values computed
//! independently by `fixtures/stats/make_p_correct_reference.py` (numpy, scipy,
//! statsmodels) into `fixtures/stats/p_correct_reference.json`, on the letter-scored
//! outcomes fixture in `fixtures/stats/letters/`.

use std::path::PathBuf;

use serde_json::Value;
use xlt_data::ResourceMap;
use xlt_stats::{
    Analysis, AnalysisConfig, BootstrapConfig, Grid, Measure, ModelOutcomes, Slice,
    min_detectable_effect, paired_t_power, wilcoxon_signed_rank,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("stats/p_correct_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(dir: &str) -> Vec<ModelOutcomes> {
    let dir = fixtures().join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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
        .collect()
}

fn letters_grid() -> Grid {
    Grid::from_outcomes(&load("stats/letters"), &ResourceMap::study()).unwrap()
}

fn analysis(grid: Grid, resamples: usize) -> Analysis {
    let config = AnalysisConfig {
        bootstrap: BootstrapConfig {
            resamples,
            seed: 42,
        },
        ..AnalysisConfig::default()
    };
    Analysis::new(grid, &config)
}

fn interval(v: &Value) -> Option<[f64; 2]> {
    v.as_array()
        .map(|a| [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()])
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    println!("{what}: ours {got} vs reference {want} (tolerance {tol})");
    assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
}

/// Every group's mean p_correct gain and its two-way cluster-robust interval to 1e-8
/// (closed forms; the difference is floating-point order), and the pigeonhole bootstrap
/// within the tolerance the reference measured (four Monte Carlo standard deviations of an
/// endpoint at our resample count): the bootstrap resamples the continuous differences.
#[test]
fn p_correct_gains_match_statsmodels_and_numpy() {
    let reference = reference();
    let resamples = reference["resamples"].as_u64().unwrap() as usize;
    let summary = analysis(letters_grid(), resamples).summary_json();
    let p = &summary["p_correct"];
    assert_eq!(p["n_instances"], 32, "{}", p["n_instances"]);
    let mut checked = 0;
    for (grouping, groups) in reference["groups"].as_object().unwrap() {
        for (key, want) in groups.as_object().unwrap() {
            let got = &p[grouping.as_str()][key];
            let what = format!("p_correct.{grouping}.{key}");
            close(
                &format!("{what}: mean"),
                got["mean"].as_f64().unwrap(),
                want["mean"].as_f64().unwrap(),
                1e-8,
            );
            assert_eq!(got["n"], want["n"], "{what}: n");
            match (
                interval(&got["ci95_cluster"]),
                interval(&want["ci95_cluster"]),
            ) {
                (Some(g), Some(w)) => {
                    close(&format!("{what}: cluster low"), g[0], w[0], 1e-8);
                    close(&format!("{what}: cluster high"), g[1], w[1], 1e-8);
                }
                (None, None) => {}
                (g, w) => panic!("{what}: cluster {g:?} vs statsmodels {w:?}"),
            }
            if let Some(tol) = want["bootstrap_tolerance"].as_f64() {
                let g = interval(&got["ci95_bootstrap"]).unwrap();
                let w = interval(&want["ci95_bootstrap"]).unwrap();
                close(&format!("{what}: bootstrap low"), g[0], w[0], tol);
                close(&format!("{what}: bootstrap high"), g[1], w[1], tol);
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} groups checked");
}

/// Every pair's gain and sd (to 1e-9 pp, floating-point order), and its Wilcoxon p-value
/// against scipy.stats.wilcoxon's defaults with Holm and BH against statsmodels'
/// multipletests, to a relative 1e-8: the exact and permutation p-values are ratios of
/// integer counts (exact in f64), the normal approximation's differ only by the normal
/// CDF's implementation (statrs' erfc against scipy's ndtr: about 1e-10 relative in the
/// tail, where p is 1e-9).
#[test]
fn p_correct_pairs_match_scipy_wilcoxon() {
    let reference = reference();
    let summary = analysis(letters_grid(), 200).summary_json();
    let pairs = summary["p_correct"]["pairs"].as_array().unwrap();
    let want = reference["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), want.len());
    let mut methods = std::collections::BTreeSet::new();
    for w in want {
        let what = format!("{} on {}", w["model"], w["test_set"]);
        let g = pairs
            .iter()
            .find(|g| g["model"] == w["model"] && g["test_set"] == w["test_set"])
            .unwrap_or_else(|| panic!("{what}: no such pair"));
        assert_eq!(g["n"], w["n"], "{what}");
        let f = |v: &Value| v.as_f64().unwrap();
        close(&format!("{what}: gain"), f(&g["gain"]), f(&w["gain"]), 1e-9);
        close(&format!("{what}: sd"), f(&g["sd"]), f(&w["sd"]), 1e-9);
        let wx = &g["wilcoxon"];
        close(
            &format!("{what}: p"),
            f(&wx["p"]),
            f(&w["p"]),
            1e-8 * f(&w["p"]),
        );
        close(
            &format!("{what}: statistic"),
            f(&wx["statistic"]),
            f(&w["statistic"]),
            0.0,
        );
        close(
            &format!("{what}: Holm"),
            f(&g["p_holm"]),
            f(&w["p_holm"]),
            1e-9,
        );
        close(&format!("{what}: BH"), f(&g["p_bh"]), f(&w["p_bh"]), 1e-9);
        methods.insert(wx["method"].as_str().unwrap().to_owned());
    }
    // The fixture takes all three of scipy's paths.
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        ["exact", "normal", "permutation"]
    );
}

/// Difference vectors chosen to take each of scipy's paths, p-values to a relative 1e-8 as
/// above.
#[test]
fn wilcoxon_cases_match_scipy() {
    let reference = reference();
    let cases = reference["wilcoxon_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let d: Vec<f64> = case["d"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let w = wilcoxon_signed_rank(&d);
        let name = case["name"].as_str().unwrap();
        println!("{name}: {w:?}");
        assert!(
            name.starts_with(match w.method {
                xlt_stats::WilcoxonMethod::Exact => "exact",
                xlt_stats::WilcoxonMethod::Permutation => "permutation",
                xlt_stats::WilcoxonMethod::Normal => "normal",
            }),
            "{name}: method {:?}",
            w.method
        );
        let want = case["p"].as_f64().unwrap();
        close(name, w.p, want, 1e-8 * want);
        close(
            &format!("{name}: statistic"),
            w.statistic,
            case["statistic"].as_f64().unwrap(),
            0.0,
        );
    }
}

/// Paired t-test power and the smallest detectable effect against statsmodels'
/// TTestPower (noncentral t). Power to 1e-6 (Simpson's rule on 12,000 steps; statsmodels
/// integrates with scipy's nct); the effect to 1e-4 (our bisection stops at 1e-6, its
/// brentq at its own tolerance).
#[test]
fn power_matches_statsmodels() {
    let reference = reference();
    for case in reference["power"]["power"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        let e = case["effect"].as_f64().unwrap();
        close(
            &format!("power n {n} effect {e}"),
            paired_t_power(n, e, 0.05),
            case["power"].as_f64().unwrap(),
            1e-6,
        );
    }
    for case in reference["power"]["min_effect"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        close(
            &format!("min effect n {n}"),
            min_detectable_effect(n, 0.05, 0.8).unwrap(),
            case["effect"].as_f64().unwrap(),
            1e-4,
        );
    }
    assert_eq!(min_detectable_effect(1, 0.05, 0.8), None);
}

/// The p_correct grid keeps the pairs, marks its measure, averages rotations, and its power
/// table is the smallest effect times the pooled spread.
#[test]
fn p_correct_grid_and_power_table() {
    let grid = letters_grid();
    assert_eq!(grid.measure, Measure::Accuracy);
    let p = grid.p_correct_grid().unwrap();
    assert_eq!(p.measure, Measure::PCorrect);
    assert_eq!(p.rows.len(), grid.rows.len());
    assert!(p.p_correct_grid().is_none());
    // Medical questions carry two rotations: the base's p on Med en question 0 is the mean
    // of its two lines.
    let base = load("stats/letters")
        .into_iter()
        .find(|m| m.source.is_none())
        .unwrap();
    let lines: Vec<f64> = base
        .outcomes
        .iter()
        .filter(|o| o.sample_id == "anatomy/test/0" && o.language.code() == "en")
        .map(|o| o.p_correct().unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let i = p
        .rows
        .iter()
        .position(|r| r.target.to_string() == "Med en")
        .unwrap();
    let pair = &p.paired.as_ref().unwrap()[i];
    let k = pair
        .ids
        .iter()
        .position(|id| id == "anatomy/test/0")
        .unwrap();
    close(
        "rotation mean",
        pair.p_base[k],
        (lines[0] + lines[1]) / 2.0,
        1e-15,
    );
    let a = analysis(grid, 200);
    let table = &a.p_correct.as_ref().unwrap().power;
    assert_eq!(table.iter().map(|r| r.n).collect::<Vec<_>>(), [12, 55]);
    for r in table {
        let e = min_detectable_effect(r.n, 0.05, 0.8).unwrap();
        close(
            &format!("min gain n {}", r.n),
            r.min_gain.unwrap(),
            e * r.sd.unwrap(),
            1e-12,
        );
    }
    let report = a.report_markdown();
    for heading in [
        "## Probability of the correct letter",
        "### p(correct) by transfer type",
        "### Paired tests on p(correct)",
        "### Power for p(correct)",
    ] {
        assert!(report.contains(heading), "no `{heading}` in the report");
    }
}

/// Generated answers (no letter probabilities) have no p_correct statistics: no
/// `p_correct` key, no section (the snapshot tests pin the rest byte for byte).
#[test]
fn generated_outcomes_have_no_p_correct() {
    let grid = Grid::from_outcomes(&load("stats/outcomes"), &ResourceMap::study()).unwrap();
    assert!(grid.p_correct_grid().is_none());
    let a = analysis(grid, 200);
    assert!(a.p_correct.is_none());
    assert!(a.summary_json().get("p_correct").is_none());
    assert!(!a.report_markdown().contains("p(correct)"));
}

/// The p_correct section of the report on the letters fixture (200 resamples, seed 42),
/// reviewed like code; everything before it is the accuracy report.
#[test]
fn p_correct_section_snapshot() {
    let report = analysis(letters_grid(), 200).report_markdown();
    let start = report
        .find("## Probability of the correct letter")
        .expect("a p_correct section");
    insta::assert_snapshot!(&report[start..]);
}

/// A model whose outcomes were generated (no letters) is left out of the p_correct tables
/// with a warning counting its pairs; a p_correct outside [0, 1] is an error naming where.
#[test]
fn pairs_without_letters_are_left_out_and_bad_probabilities_refused() {
    let mut models = load("stats/letters");
    let he = models
        .iter_mut()
        .find(|m| m.label == "STEM he")
        .expect("STEM he in the fixture");
    for o in &mut he.outcomes {
        o.letters = None;
        o.method = "bare".to_owned();
    }
    let grid = Grid::from_outcomes(&models, &ResourceMap::study()).unwrap();
    let p = grid.p_correct_grid().unwrap();
    println!(
        "{} of {} rows, warnings {:?}",
        p.rows.len(),
        grid.rows.len(),
        p.warnings
    );
    assert_eq!((grid.rows.len(), p.rows.len()), (32, 24));
    assert!(p.rows.iter().all(|r| r.model != "STEM he"));
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].starts_with("8 of 32 (model, test set) pairs"),
        "{:?}",
        p.warnings
    );

    let mut models = load("stats/letters");
    let o = &mut models[1].outcomes[3];
    o.letters.as_mut().unwrap().p_correct = 1.5;
    let e = Grid::from_outcomes(&models, &ResourceMap::study()).unwrap_err();
    println!("{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("p_correct 1.5 is not a probability")
            && msg.contains("abstract_algebra/test/3")
            && msg.contains("model `STEM en`"),
        "{msg}"
    );
}

/// With letters, `## Chosen letters` shows every model's chosen letters (the argmax)
/// beside the answer key's, in percent of its questions with the options as in the data
/// (rotation 0), whether or not they are lopsided; the lopsided ones are named in a
/// warning. Expected cells are counted here from the fixture's outcomes.
#[test]
fn letter_reports_show_every_models_letters_beside_the_key() {
    let models = load("stats/letters");
    let report = analysis(letters_grid(), 50).report_markdown();
    let start = report.find("## Chosen letters").expect("a letters section");
    let section = &report[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut lopsided = Vec::new();
    for m in &models {
        let first: Vec<_> = m
            .outcomes
            .iter()
            .filter(|o| o.letters.is_some_and(|l| l.rotation == 0))
            .collect();
        let n = first.len();
        let (mut chosen, mut key) = ([0usize; 4], [0usize; 4]);
        for o in &first {
            chosen[o.letter.expect("letters choose").index()] += 1;
            key[o.answer.index()] += 1;
        }
        let pct = |k: usize| 100.0 * k as f64 / n as f64;
        let cells: Vec<String> = (0..4)
            .map(|i| format!("{:.0} / {:.0}", pct(chosen[i]), pct(key[i])))
            .collect();
        let row = format!("| {} | {n} | {} |", m.label, cells.join(" | "));
        println!("expected: {row}");
        assert!(section.contains(&row), "{row} not in:\n{section}");
        if (0..4).any(|i| pct(chosen[i]) - pct(key[i]) >= 20.0) {
            lopsided.push(m.label.clone());
        }
    }
    println!("lopsided: {lopsided:?}");
    match lopsided.is_empty() {
        true => assert!(!section.contains("**Warning:** lopsided"), "{section}"),
        false => {
            let warning = format!("or more): {}.", lopsided.join(", "));
            assert!(section.contains(&warning), "{warning} not in:\n{section}");
        }
    }
}

/// A baseline study (the base model's outcomes alone, `--train-slices none`) with letters:
/// the report gives, per test set, n and the base model's accuracy and mean p(correct)
/// (per question the mean over rotations, then the mean over questions; computed here from
/// the fixture), says in one line that there are no gains, and prints no empty gain,
/// interval, significance or power section; `summary.json` has the same means.
#[test]
fn a_baseline_reports_the_base_models_mean_p_correct_per_test_set() {
    let base: Vec<ModelOutcomes> = load("stats/letters")
        .into_iter()
        .filter(|m| m.source.is_none())
        .collect();
    // Test set -> sample id -> (sum, count); and rotation-0 correctness.
    type Sums = std::collections::BTreeMap<String, (f64, usize)>;
    let mut by: std::collections::BTreeMap<String, Sums> = Default::default();
    let mut correct: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for o in &base[0].outcomes {
        let key = Slice {
            domain: o.domain,
            language: o.language,
        }
        .to_string();
        let l = o.letters.expect("letters");
        let e = by
            .entry(key.clone())
            .or_default()
            .entry(o.sample_id.clone())
            .or_default();
        e.0 += l.p_correct;
        e.1 += 1;
        if l.rotation == 0 {
            let c = correct.entry(key).or_default();
            c.0 += usize::from(o.correct);
            c.1 += 1;
        }
    }
    let grid = Grid::from_outcomes(&base, &ResourceMap::study()).unwrap();
    let a = analysis(grid, 50);
    let report = a.report_markdown();
    let summary = a.summary_json();
    assert!(
        report.contains("## Baseline: no model was fine-tuned"),
        "{report}"
    );
    assert!(report.contains("so there are no gains"), "{report}");
    // The pooled row has the base model's accuracy over every question, not a blank.
    let (right, asked) = correct
        .values()
        .fold((0, 0), |(c, n), (ci, ni)| (c + ci, n + ni));
    let pooled = format!(
        "| all | {asked} | {:.1} |",
        100.0 * right as f64 / asked as f64
    );
    println!("pooled: {right} of {asked}; looking for `{pooled}`");
    assert!(report.contains(&pooled), "no `{pooled}` in:\n{report}");
    for absent in [
        "## Fine-tuning noise",
        "--replicates",
        "0 evaluation instances",
        "## Gains",
        "## Intervals",
        "## Significance",
        "## Power",
        "## Transfer type",
    ] {
        assert!(
            !report.contains(absent),
            "{absent} in a baseline's report:\n{report}"
        );
    }
    let tallies = summary["models"][0]["p_correct"]
        .as_array()
        .expect("base p_correct");
    assert_eq!(tallies.len(), by.len(), "{tallies:?}");
    for (set, questions) in &by {
        let n = questions.len();
        let mean = questions.values().map(|(s, k)| s / *k as f64).sum::<f64>() / n as f64;
        let (c, answered) = correct[set];
        let accuracy = 100.0 * c as f64 / answered as f64;
        let row = tallies
            .iter()
            .find(|t| t["test_set"] == set.as_str())
            .unwrap_or_else(|| panic!("{set} in {tallies:?}"));
        let got = row["mean"].as_f64().unwrap();
        println!(
            "{set}: n {n}, mean p(correct) ours {got} vs counted {mean}, accuracy {accuracy:.1}"
        );
        assert_eq!(row["n"].as_u64(), Some(n as u64), "{set}");
        assert!((got - mean).abs() < 1e-12, "{set}: {got} vs {mean}");
        let line = format!("| {set} | {n} | {accuracy:.1} | {:.1} |", 100.0 * mean);
        assert!(report.contains(&line), "{line} not in:\n{report}");
    }
    assert!(
        summary["closing_summary"]
            .as_str()
            .unwrap()
            .contains("Base model's mean p(correct):"),
        "{}",
        summary["closing_summary"]
    );
}
