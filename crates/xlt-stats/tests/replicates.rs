//! Seed replicates (issue #24): the variance decomposition against
//! `fixtures/stats/make_replicate_reference.py` (numpy and statsmodels), the replicate noise
//! of a gain, and intervals that cluster by slice so that adding replicates of the same
//! slices does not narrow them.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use xlt_data::{Domain, Language};
use xlt_stats::{
    BootstrapConfig, Grid, GridRow, Grouping, Measure, ReplicateAnalysis, ReplicateLabel, Slice,
    TransferType, TwoWayOls, group,
};

const LANGS: [&str; 14] = [
    "en", "ig", "tr", "he", "yo", "sw", "ar", "de", "fr", "es", "hi", "zh", "ja", "ko",
];

fn slices(languages: usize) -> Vec<Slice> {
    LANGS[..languages]
        .iter()
        .flat_map(|l| {
            Domain::STUDY.map(|domain| Slice {
                domain,
                language: l.parse::<Language>().unwrap(),
            })
        })
        .collect()
}

/// A grid of gains `gains[s][r][t]` (pp): model `slices[s]#r+1` (the slice alone with one
/// replicate) on `tests[t]`, base accuracy 0.5.
fn grid(sources: &[Slice], tests: &[Slice], gains: &[Vec<Vec<f64>>]) -> Grid {
    let mut rows = Vec::new();
    for (s, by_rep) in gains.iter().enumerate() {
        let n = by_rep.len() as u32;
        for (r, by_test) in by_rep.iter().enumerate() {
            let label = ReplicateLabel::new(&sources[s].to_string(), r as u32 + 1, n);
            for (t, gain) in by_test.iter().enumerate() {
                rows.push(GridRow {
                    model: label.to_string(),
                    source: sources[s],
                    target: tests[t],
                    accuracy: 0.5 + gain / 100.0,
                    base_accuracy: 0.5,
                    gain: *gain,
                    transfer: TransferType::of(sources[s], tests[t]),
                    direction: None,
                    levels: None,
                });
            }
        }
    }
    Grid {
        rows,
        paired: None,
        warnings: Vec::new(),
        base: Vec::new(),
        truncated: Vec::new(),
        answers: Vec::new(),
        measure: Measure::Accuracy,
    }
}

fn reference() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/stats/replicate_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Our decomposition of each synthetic design equals the reference's (closed-form sums of
/// squares of the same numbers: 1e-9 relative, rounding only), and on the large design every
/// estimate is near the variance the data were drawn with. Tolerances there: a variance
/// estimate on df degrees of freedom has a relative standard error of about √(2/df)
/// (more for slice and test set, whose estimates subtract other mean squares), so about 2.5
/// of them: 65% for slice (29 df) and test set (41 df), 35% for replicate (120 df), 15% for
/// slice x test set (1189 df) and 10% for the residual (4920 df).
#[test]
fn decomposition_matches_statsmodels_and_the_truth() {
    let reference = reference();
    for design in reference["designs"].as_array().unwrap() {
        let name = design["name"].as_str().unwrap();
        let gains: Vec<Vec<Vec<f64>>> = serde_json::from_value(design["gains"].clone()).unwrap();
        let (s_n, t_n) = (
            design["slices"].as_u64().unwrap() as usize,
            design["test_sets"].as_u64().unwrap() as usize,
        );
        let sources = slices(s_n / 3);
        let tests = slices(t_n / 3);
        let analysis = ReplicateAnalysis::of(&grid(&sources, &tests, &gains), None);
        let d = analysis.decomposition.as_ref().unwrap();
        let expected = &design["expected"];
        let mean = expected["mean"].as_f64().unwrap();
        println!("{name}: mean ours {} reference {mean}", d.mean);
        assert!((d.mean - mean).abs() < 1e-9);
        assert_eq!(
            d.components.len(),
            5,
            "no question component without outcomes"
        );
        for c in &d.components {
            let e = &expected["components"][&c.name];
            let (df, ms, v) = (
                e["df"].as_u64().unwrap() as usize,
                e["mean_square"].as_f64().unwrap(),
                e["variance"].as_f64().unwrap(),
            );
            println!(
                "{name} {}: df {:?}/{df}, mean square {:?}/{ms}, variance {}/{v}",
                c.name, c.df, c.mean_square, c.variance
            );
            assert_eq!(c.df, Some(df));
            assert!((c.mean_square.unwrap() - ms).abs() <= 1e-9 * ms.abs().max(1.0));
            assert!((c.variance - v).abs() <= 1e-9 * v.abs().max(1.0));
            if name == "large" {
                let sd = design["truth_sd"][&c.name].as_f64().unwrap();
                let tol = match c.name.as_str() {
                    "slice" | "test_set" => 0.65,
                    "replicate" => 0.35,
                    "slice_x_test_set" => 0.15,
                    _ => 0.10,
                };
                let truth = sd * sd;
                println!("  truth {truth}, estimate {}, tolerance {tol}", c.variance);
                assert!(
                    (c.variance - truth).abs() <= tol * truth,
                    "{}: estimate {} vs truth {truth}",
                    c.name,
                    c.variance
                );
            }
        }
        assert!(analysis.estimable());
        assert_eq!(
            analysis.max_replicates,
            design["replicates"].as_u64().unwrap() as usize
        );
    }
}

/// The replicate noise of a group: its mean from each replicate alone, their sd / √R, and
/// the rule |gain| > 2 SE, by hand on two slices, two test sets, three replicates.
#[test]
fn gain_noise_by_hand() {
    let sources = slices(1)[..2].to_vec(); // STEM en, Hum en
    let tests = slices(2)[3..5].to_vec(); // STEM ig, Hum ig: cross-lingual and cross-both
    // gains[s][r][t]
    let gains = vec![
        vec![vec![4.0, 1.0], vec![6.0, 1.0], vec![5.0, 1.0]],
        vec![vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0, 6.0]],
    ];
    let a = ReplicateAnalysis::of(&grid(&sources, &tests, &gains), None);
    // cross_lingual: (STEM en, STEM ig) and (Hum en, Hum ig) =
    // replicate 1: (4 + 3)/2 = 3.5, replicate 2: (6 + 3)/2 = 4.5, replicate 3: (5 + 6)/2 = 5.5;
    // mean 4.5, sd 1, SE 1/√3 = 0.57735; 4.5 > 2 · 0.577: exceeds.
    let g = a
        .noise
        .iter()
        .find(|g| g.grouping == "transfer_types" && g.group == "cross_lingual")
        .unwrap();
    println!("{g:?}");
    assert_eq!(g.by_replicate, vec![3.5, 4.5, 5.5]);
    assert!((g.mean - 4.5).abs() < 1e-12);
    assert!((g.replicate_se - 1.0 / 3f64.sqrt()).abs() < 1e-12);
    assert!(g.exceeds_noise);
    // cross_both: (STEM en, Hum ig) = 1, 1, 1 and (Hum en, STEM ig) = 2, 2, 2: means 1.5
    // each replicate, SE 0: replicates that agree exactly are no evidence of a gain beyond
    // the noise, so it does not count as exceeding it (the report says "cannot tell").
    let both = a
        .noise
        .iter()
        .find(|g| g.grouping == "transfer_types" && g.group == "cross_both")
        .unwrap();
    println!("{both:?}");
    assert_eq!(both.replicate_se, 0.0);
    assert!(!both.exceeds_noise);
    // The spread of (Hum en, Hum ig) is sd(3, 3, 6) = √3.
    let spread = a
        .spread
        .iter()
        .find(|s| s.slice == "Hum en" && s.test_set == "Hum ig")
        .unwrap();
    println!("{spread:?}");
    assert!((spread.sd_accuracy.unwrap() - 3f64.sqrt()).abs() < 1e-9);
    // One replicate: nothing estimated, the report says so.
    let one: Vec<Vec<Vec<f64>>> = gains.iter().map(|s| vec![s[0].clone()]).collect();
    let a = ReplicateAnalysis::of(&grid(&sources, &tests, &one), None);
    assert!(!a.estimable());
    assert!(a.noise.is_empty() && a.spread.is_empty() && a.decomposition.is_err());
    assert_eq!(a.to_json()["estimable"], false);
}

/// When the slice effect dominates, adding replicates of the same slices must not narrow
/// the intervals: 12 slices x 27 test sets, gains = slice effect (sd 5) + test-set effect
/// (sd 2) + replicate (sd 0.5) + noise (sd 0.3). With 5 replicates the slice-clustered
/// interval and the slice-then-replicate bootstrap keep their width within a factor of
/// 0.7-1.4 of one replicate's; clustering by model instead (each replicate its own
/// cluster) would narrow it by about √5, which the last assertion shows.
#[test]
fn replicates_do_not_narrow_slice_clustered_intervals() {
    let sources = slices(4);
    let tests = slices(9);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut normal = |sd: f64| {
        // Box-Muller.
        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
        sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let a: Vec<f64> = sources.iter().map(|_| normal(5.0)).collect();
    let b: Vec<f64> = tests.iter().map(|_| normal(2.0)).collect();
    let gains5: Vec<Vec<Vec<f64>>> = a
        .iter()
        .map(|a| {
            (0..5)
                .map(|_| {
                    let c = normal(0.5);
                    b.iter().map(|b| a + b + c + normal(0.3)).collect()
                })
                .collect()
        })
        .collect();
    let gains1: Vec<Vec<Vec<f64>>> = gains5.iter().map(|s| vec![s[0].clone()]).collect();
    let boot = BootstrapConfig::default();
    let width = |ci: Option<[f64; 2]>| ci.map(|[lo, hi]| hi - lo).unwrap();
    let widths = |g: &Grid| {
        let all = group(g, Grouping::TransferType, &boot);
        let s = &all["cross_both"];
        (width(s.ci95_cluster), width(s.ci95_bootstrap), s.models)
    };
    let (g1, g5) = (
        grid(&sources, &tests, &gains1),
        grid(&sources, &tests, &gains5),
    );
    let (c1, b1, m1) = widths(&g1);
    let (c5, b5, m5) = widths(&g5);
    println!(
        "cluster width: 1 replicate {c1:.3}, 5 replicates {c5:.3}; bootstrap {b1:.3}, {b5:.3}; clusters {m1}, {m5}"
    );
    assert_eq!((m1, m5), (12, 12), "replicates share their slice's cluster");
    assert!((0.7..=1.4).contains(&(c5 / c1)), "cluster {c5} vs {c1}");
    assert!((0.7..=1.4).contains(&(b5 / b1)), "bootstrap {b5} vs {b1}");
    // The same interval clustered by model, as before replicates existed.
    let by_model = |g: &Grid| {
        let mut ids = std::collections::BTreeMap::new();
        let rows: Vec<&GridRow> = g
            .rows
            .iter()
            .filter(|r| r.transfer == TransferType::CrossBoth)
            .collect();
        let mut tests = std::collections::BTreeMap::new();
        let m: Vec<usize> = rows
            .iter()
            .map(|r| {
                let n = ids.len();
                *ids.entry(r.model.clone()).or_insert(n)
            })
            .collect();
        let t: Vec<usize> = rows
            .iter()
            .map(|r| {
                let n = tests.len();
                *tests.entry(r.target).or_insert(n)
            })
            .collect();
        let y: Vec<f64> = rows.iter().map(|r| r.gain).collect();
        width(Some(
            TwoWayOls::mean(&y, &m, &t).unwrap().coefficients[0].ci95,
        ))
    };
    let (n1, n5) = (by_model(&g1), by_model(&g5));
    println!("clustered by model: 1 replicate {n1:.3}, 5 replicates {n5:.3}");
    assert!(
        (n1 - c1).abs() < 1e-9,
        "one replicate: the model is the slice"
    );
    assert!(
        n5 / n1 < 0.75,
        "by model, replicates narrow it: {n5} vs {n1}"
    );
}

/// The texts of an SVG's `<text>` elements, in document order.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let rest = t.split_once('>').unwrap().1;
            rest.split("</text>").next().unwrap().trim().to_owned()
        })
        .collect()
}

/// A heatmap cell is a slice x test set, whatever the replicates (#24, #26): the gain map
/// has one row per slice whose cells are the mean over its replicates, resting on the test
/// set's questions (not replicates x questions), and a language-pair cell counts each
/// (slice, test set) instance once, so that three replicates of one instance stay "too
/// few" (fewer than 3 instances) as one fine-tune does.
#[test]
fn heatmap_cells_count_a_slices_replicates_once() {
    let stem = |l: &str| Slice {
        domain: Domain::Stem,
        language: l.parse::<Language>().unwrap(),
    };
    let tests = [stem("en"), stem("ig")];
    // One slice, three replicates: gains 0, 10, 20 on both test sets (mean 10).
    let gains = vec![vec![vec![0.0, 0.0], vec![10.0, 10.0], vec![20.0, 20.0]]];
    let mut g = grid(&[stem("en")], &tests, &gains);
    // 40 questions per test set, answered by every replicate.
    g.paired = Some(
        g.rows
            .iter()
            .map(|r| {
                let right = (r.accuracy * 40.0).round() as usize;
                xlt_stats::Paired {
                    ids: (0..40).map(|i| format!("s/test/{i}")).collect(),
                    base: (0..40).map(|i| i < 20).collect(),
                    model: (0..40).map(|i| i < right).collect(),
                    p_base: Vec::new(),
                    p_model: Vec::new(),
                }
            })
            .collect(),
    );
    let analysis = xlt_stats::Analysis::new(g, &xlt_stats::AnalysisConfig::default());
    let maps = analysis.heatmaps();
    let gain = svg_texts(&maps[1].1);
    println!("gain.svg: {gain:?}");
    let row = gain
        .iter()
        .position(|t| t == "STEM en (mean of 3)")
        .unwrap_or_else(|| panic!("no row for the slice in {gain:?}"));
    assert!(
        !gain.iter().any(|t| t.contains('#')),
        "a replicate has its own row: {gain:?}"
    );
    assert_eq!(
        gain[row + 1..row + 5],
        ["+10", "n=40", "+10", "n=40"],
        "cells: the replicates' mean on the test set's 40 questions"
    );
    let language = svg_texts(&maps[3].1);
    println!("language_transfer.svg: {language:?}");
    assert!(
        language.iter().filter(|t| *t == "n=1").count() == 2
            && language.iter().filter(|t| *t == "too few").count() == 2,
        "en->en and en->ig each rest on one instance, too few: {language:?}"
    );
}
