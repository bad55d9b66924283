//! Every definition against values worked out by hand for small inputs.

use xlt_data::{AnswerLetter, Domain, Language, ResourceMap};
use xlt_grade::OutcomeRecord;
use xlt_stats::{
    AccuracyMatrix, Analysis, AnalysisConfig, BootstrapConfig, Grid, ModelOutcomes, Slice,
};

/// Base: Hum en 0.50, STEM en 0.60, Hum ig 0.40. Gains by hand:
/// Hum en: +20 (in-domain), -5 (cross-domain), +10 (cross-lingual, en->ig);
/// STEM ig: -10 (cross-both, ig->en), +20 (cross-lingual, ig->en), Hum ig missing;
/// Hum ig: -5 (cross-lingual), 0 (cross-both), +20 (in-domain), extra 0.99 ignored.
const SMALL: &str = "Model\tHum en\tSTEM en\tHum ig\n\
Base\t0.50\t0.60\t0.40\n\
Hum en\t0.70\t0.55\t0.50\n\
STEM ig\t0.40\t0.80\n\
Hum ig\t0.45\t0.60\t0.60\t0.99\n";

fn analysis() -> Analysis {
    let m = AccuracyMatrix::parse_tsv(SMALL).unwrap();
    Analysis::new(m.grid(&ResourceMap::study()), &AnalysisConfig::default())
}

fn check(summary: &serde_json::Value, group: &str, key: &str, mean: f64, n: u64) {
    let s = &summary[group][key];
    assert!(
        (s["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{group}.{key}: mean {} != {mean}",
        s["mean"]
    );
    assert_eq!(s["n"].as_u64().unwrap(), n, "{group}.{key}: n");
}

#[test]
fn groupings_match_hand_computation() {
    let s = analysis().summary_json();
    assert_eq!(s["n_instances"], 8);
    assert_eq!(s["warnings"].as_array().unwrap().len(), 2);
    check(&s, "transfer_types", "in_domain", 20.0, 2);
    check(&s, "transfer_types", "cross_lingual", 25.0 / 3.0, 3);
    check(&s, "transfer_types", "cross_domain", -5.0, 1);
    check(&s, "transfer_types", "cross_both", -5.0, 2);
    // Directions and levels between different languages only; the same-language cells
    // (Hum en on Hum en and STEM en, Hum ig on Hum ig) are a group of their own.
    check(&s, "resource_directions", "downward", 10.0, 1);
    check(&s, "resource_directions", "upward", 1.25, 4);
    assert!(s["resource_directions"].get("lateral").is_none());
    check(&s, "resource_directions", "same_language", 35.0 / 3.0, 3);
    check(&s, "resource_levels", "high (same language)", 7.5, 2);
    check(&s, "resource_levels", "high->low", 10.0, 1);
    check(&s, "resource_levels", "low->high", 1.25, 4);
    check(&s, "resource_levels", "low (same language)", 20.0, 1);
    check(&s, "domain_matrix", "Humanities->Humanities", 11.25, 4);
    check(&s, "domain_matrix", "Humanities->STEM", -2.5, 2);
    check(&s, "domain_matrix", "STEM->Humanities", -10.0, 1);
    check(&s, "domain_matrix", "STEM->STEM", 20.0, 1);
    check(&s, "language_matrix", "en->en", 7.5, 2);
    check(&s, "language_matrix", "en->ig", 10.0, 1);
    check(&s, "language_matrix", "ig->en", 1.25, 4);
    check(&s, "language_matrix", "ig->ig", 20.0, 1);
    // sd and interval of in-domain: two equal gains, sd 0, interval collapses.
    let near = |v: &serde_json::Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(near(&s["transfer_types"]["in_domain"]["sd"], 0.0));
    assert!(near(
        &s["transfer_types"]["in_domain"]["ci95_independent_t"][0],
        20.0
    ));
    // cross-both: gains -10 and 0; sd = sqrt(50) = 7.0711; t(0.975, 1) = 12.7062;
    // half-width 12.7062 * 7.0711 / sqrt(2) = 63.531.
    assert!(near(&s["transfer_types"]["cross_both"]["sd"], 50f64.sqrt()));
    let hi = s["transfer_types"]["cross_both"]["ci95_independent_t"][1]
        .as_f64()
        .unwrap();
    assert!((hi - (-5.0 + 63.531)).abs() < 1e-2, "{hi}");
    // n = 1 has no sd and no interval.
    assert!(s["transfer_types"]["cross_domain"]["sd"].is_null());
    assert!(s["transfer_types"]["cross_domain"]["ci95_independent_t"].is_null());
    // Two models (Hum en, Hum ig) on two test sets: the in-domain gains are both +20, so
    // every interval collapses onto +20.
    assert!(near(
        &s["transfer_types"]["in_domain"]["ci95_cluster"][1],
        20.0
    ));
    assert!(near(
        &s["transfer_types"]["in_domain"]["ci95_bootstrap"][0],
        20.0
    ));
    // One instance is one model and one test set: no clustered interval.
    assert!(s["transfer_types"]["cross_domain"]["ci95_cluster"].is_null());
    // No per-question data: no test-set sizes, significance or power; the reading policy.
    assert!(s.get("test_set_sizes").is_none());
    assert!(s.get("significance").is_none());
    assert!(s.get("power").is_none());
    assert!(s["policy"].as_str().unwrap().starts_with("Cells align"));
}

#[test]
fn report_snapshot() {
    insta::assert_snapshot!(analysis().report_markdown());
}

#[test]
fn heatmaps_render_every_label() {
    let maps = analysis().heatmaps();
    let names: Vec<&str> = maps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "accuracy.svg",
            "gain.svg",
            "domain_transfer.svg",
            "language_transfer.svg"
        ]
    );
    let gain = &maps[1].1;
    assert!(gain.starts_with("<svg"));
    for label in ["Hum en", "STEM ig", "Hum ig", "+20", "-10", "n/a"] {
        assert!(gain.contains(label), "gain.svg lacks {label}");
    }
}

fn outcome(id: usize, model: &str, correct: bool) -> OutcomeRecord {
    OutcomeRecord {
        sample_id: format!("s/test/{id}"),
        language: Language::Igbo,
        domain: Domain::Stem,
        model: model.to_owned(),
        response: "A".to_owned(),
        letter: Some(AnswerLetter::A),
        method: "bare".to_owned(),
        answer: if correct {
            AnswerLetter::A
        } else {
            AnswerLetter::B
        },
        correct,
        finish_reason: Some("stop".into()),
        letters: None,
    }
}

#[test]
fn outcomes_give_paired_tests_and_bootstrap() {
    // 20 questions. Base right on 0-9; model right on 5-19. Only base: 0-4 (b = 5); only
    // model: 10-19 (c = 10). Gain (15 - 10) / 20 = +25 points. Exact McNemar:
    // 2 * P(X <= 5 | n = 15) = 2 * 4944 / 32768 = 0.3017578125.
    let base = ModelOutcomes {
        label: "Base".into(),
        source: None,
        outcomes: (0..20).map(|i| outcome(i, "base", i < 10)).collect(),
    };
    let tuned = ModelOutcomes {
        label: "STEM en".into(),
        source: Some(Slice::parse("STEM en").unwrap()),
        outcomes: (0..20).map(|i| outcome(i, "ft", i >= 5)).collect(),
    };
    let map = ResourceMap::study();
    let grid = Grid::from_outcomes(&[base.clone(), tuned.clone()], &map).unwrap();
    assert_eq!(grid.rows.len(), 1);
    assert!((grid.rows[0].gain - 25.0).abs() < 1e-9);
    let config = AnalysisConfig {
        bootstrap: BootstrapConfig {
            resamples: 500,
            seed: 7,
        },
        ..AnalysisConfig::default()
    };
    let a = Analysis::new(grid.clone(), &config);
    let sig = a.significance.as_ref().unwrap();
    assert_eq!((sig.rows[0].base_only, sig.rows[0].model_only), (5, 10));
    assert!((sig.rows[0].p - 0.301_757_812_5).abs() < 1e-12);
    assert_eq!(sig.gains_significant_raw, 0);
    let s = a.summary_json();
    let boot = &s["transfer_types"]["cross_lingual"]["ci95_bootstrap"];
    let (lo, hi) = (boot[0].as_f64().unwrap(), boot[1].as_f64().unwrap());
    assert!(lo < 25.0 && 25.0 < hi, "[{lo}, {hi}]");
    // Every pair is written, with n and the adjusted p-values.
    let pair = &s["pairs"][0];
    assert_eq!(pair["n"], 20);
    assert_eq!(
        (pair["base_only"].as_u64(), pair["model_only"].as_u64()),
        (Some(5), Some(10))
    );
    assert!((pair["p_holm"].as_f64().unwrap() - 0.301_757_812_5).abs() < 1e-12);
    assert_eq!(s["test_set_sizes"]["STEM ig"], 20);
    assert!(s.get("policy").is_none());
    // Seeded: the same again.
    assert_eq!(Analysis::new(grid, &config).summary_json(), s);
    // Exactly one base is required.
    assert!(Grid::from_outcomes(&[tuned], &map).is_err());
}

/// The report of the outcomes fixture (`fixtures/stats/outcomes`, written by
/// `fixtures/stats/reference.py`): test-set sizes, intervals, regression, significance with
/// losses beside gains, and power.
#[test]
fn outcomes_report_snapshot() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/stats/outcomes");
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
    let grid = Grid::from_outcomes(&models, &ResourceMap::study()).unwrap();
    insta::assert_snapshot!(Analysis::new(grid, &AnalysisConfig::default()).report_markdown());
}

/// The published table's report, with the study's own figures beside ours.
#[test]
fn published_table_report_snapshot() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/paper/table1.tsv"),
    )
    .unwrap();
    let matrix = AccuracyMatrix::parse_tsv(&text).unwrap();
    assert!(matrix.is_study_table());
    assert!(!AccuracyMatrix::parse_tsv(SMALL).unwrap().is_study_table());
    let config = AnalysisConfig {
        published: Some(xlt_stats::STUDY_FIGURES.to_vec()),
        ..AnalysisConfig::default()
    };
    let report = Analysis::new(matrix.grid(&config.resource_map), &config).report_markdown();
    insta::assert_snapshot!(report);
}

/// The text of every `<text>` element of an SVG, in document order, with whether it is a
/// column label (rotated).
fn svg_texts(svg: &str) -> Vec<(bool, String)> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let (attrs, rest) = t.split_once('>').unwrap();
            let body = rest.split("</text>").next().unwrap().trim().to_owned();
            (attrs.contains("rotate(270"), body)
        })
        .collect()
}

/// Rows and columns of the gain heatmap are in one (language, domain) order, whatever the
/// input's order: with a model for every test set, the diagonal is in-domain. Cells carry
/// their question count with outcomes.
#[test]
fn heatmap_rows_and_columns_share_one_order() {
    let square = "Model\tHum ig\tSTEM en\tHum en\n\
Base\t0.50\t0.60\t0.40\n\
STEM en\t0.40\t0.80\t0.45\n\
Hum ig\t0.45\t0.60\t0.60\n\
Hum en\t0.70\t0.55\t0.50\n";
    let m = AccuracyMatrix::parse_tsv(square).unwrap();
    let a = Analysis::new(m.grid(&ResourceMap::study()), &AnalysisConfig::default());
    let gain = &a.heatmaps()[1].1;
    let texts = svg_texts(gain);
    let cols: Vec<&str> = texts.iter().filter(|t| t.0).map(|t| t.1.as_str()).collect();
    let labels = ["Hum en", "STEM en", "Hum ig"];
    let rows: Vec<&str> = texts
        .iter()
        .filter(|t| !t.0 && labels.contains(&t.1.as_str()))
        .map(|t| t.1.as_str())
        .collect();
    assert_eq!(cols.len(), 3);
    assert_eq!(rows, cols, "rows and columns in different orders");
    // By language code, then domain in `Domain`'s order (STEM, Humanities, Medical).
    assert_eq!(cols, ["STEM en", "Hum en", "Hum ig"]);
    // The diagonal: in document order each row label is followed by its cells, left to
    // right. STEM en on STEM en (top left): 0.80 - 0.60 = +20; Hum en on Hum en (second
    // row, second cell): 0.50 - 0.40 = +10.
    let cells_of = |row: &str| -> Vec<&str> {
        texts
            .iter()
            .skip_while(|t| t.0 || t.1 != row)
            .skip(1)
            .take(3)
            .map(|t| t.1.as_str())
            .collect()
    };
    assert_eq!(cells_of("STEM en")[0], "+20");
    assert_eq!(cells_of("Hum en")[1], "+10");
    // A published table has no question counts; outcomes do.
    assert!(!gain.contains("n="));
    let outcomes = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/stats/outcomes/en-stem.jsonl"),
    )
    .unwrap();
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/stats/outcomes/base.jsonl"),
    )
    .unwrap();
    let grid = Grid::from_outcomes(
        &[
            ModelOutcomes {
                label: "Base".into(),
                source: None,
                outcomes: xlt_grade::read_jsonl(base.as_bytes(), "base").unwrap(),
            },
            ModelOutcomes {
                label: "STEM en".into(),
                source: Some(Slice::parse("STEM en").unwrap()),
                outcomes: xlt_grade::read_jsonl(outcomes.as_bytes(), "en-stem").unwrap(),
            },
        ],
        &ResourceMap::study(),
    )
    .unwrap();
    let gain = &Analysis::new(grid, &AnalysisConfig::default()).heatmaps()[1].1;
    assert!(gain.contains("n=12") && gain.contains("n=10"));
}
