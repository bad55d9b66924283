//! The typological distances and the transfer regression against the independent computation
//! of `fixtures/stats/transfer_reference.py` (plain Python over the typology CSVs, statsmodels
//! for the fit) on the published table; and the coverage simulation that chooses the primary
//! interval, in a small version.

use std::path::PathBuf;

use serde_json::Value;
use xlt_data::ResourceMap;
use xlt_stats::{
    AccuracyMatrix, CoverageConfig, Grid, IntervalMethod, PRIMARY_INTERVAL, TransferType,
    choose_primary, coverage_tolerance, pair_distances, simulate_coverage, transfer_regression,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn table_grid() -> Grid {
    let text = std::fs::read_to_string(fixtures().join("paper/table1.tsv")).unwrap();
    AccuracyMatrix::parse_tsv(&text)
        .unwrap()
        .grid(&ResourceMap::study())
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("stats/transfer_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Distances are exact rationals of small integers: compared to 1e-12.
#[test]
fn distances_match_the_independent_script() {
    let grid = table_grid();
    let reference = reference();
    let distances = pair_distances(&grid);
    let mut checked = 0;
    for (r, d) in grid.rows.iter().zip(&distances) {
        let key = format!("{}->{}", r.source.language.code(), r.target.language.code());
        let want = &reference["pairs"][&key];
        let d = d.unwrap_or_else(|| panic!("{key}: no distance"));
        assert_eq!(
            d.wals.shared as u64,
            want["wals_shared"].as_u64().unwrap(),
            "{key}: shared features, ours {} vs reference {}",
            d.wals.shared,
            want["wals_shared"]
        );
        let w = want["wals_distance"].as_f64().unwrap();
        assert!(
            (d.wals.distance - w).abs() < 1e-12,
            "{key}: WALS distance, ours {} vs reference {w}",
            d.wals.distance
        );
        let g = want["genealogical_distance"].as_f64().unwrap();
        assert!(
            (d.genealogical.distance - g).abs() < 1e-12,
            "{key}: genealogical distance, ours {} vs reference {g}",
            d.genealogical.distance
        );
        assert_eq!(
            d.genealogical.same_family,
            want["same_family"].as_bool().unwrap(),
            "{key}"
        );
        checked += 1;
    }
    assert_eq!(checked, grid.rows.len());
}

/// Estimates and standard errors are closed-form; they differ from statsmodels' only in
/// floating-point order: 1e-8.
#[test]
fn transfer_regression_matches_statsmodels() {
    let grid = table_grid();
    let reference = &reference()["regression"];
    let fit = transfer_regression(&grid, &pair_distances(&grid)).unwrap();
    let names: Vec<&str> = reference["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = fit
        .fit
        .coefficients
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(ours, names);
    assert_eq!(fit.fit.n as u64, reference["n"].as_u64().unwrap());
    assert_eq!(
        fit.left_out_distance as u64,
        reference["left_out_distance"].as_u64().unwrap()
    );
    assert_eq!(fit.fit.df as u64, reference["df"].as_u64().unwrap());
    assert_eq!(
        fit.fit.psd_adjusted,
        reference["psd_adjusted"].as_bool().unwrap()
    );
    let aliased: Vec<&str> = reference["aliased"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(fit.aliased, aliased);
    for (j, c) in fit.fit.coefficients.iter().enumerate() {
        let b = reference["estimate"][j].as_f64().unwrap();
        let se = reference["se"][j].as_f64().unwrap();
        assert!(
            (c.estimate - b).abs() < 1e-8,
            "{}: estimate {} vs statsmodels {b}",
            c.name,
            c.estimate
        );
        assert!(
            (c.se - se).abs() < 1e-8,
            "{}: se {} vs statsmodels {se}",
            c.name,
            c.se
        );
        for k in 0..2 {
            let e = reference["ci95"][j][k].as_f64().unwrap();
            assert!(
                (c.ci95[k] - e).abs() < 1e-8,
                "{}: ci95[{k}] {} vs reference {e}",
                c.name,
                c.ci95[k]
            );
        }
    }
}

/// A small coverage simulation (300 studies a setting, 199 resamples; a few seconds): the
/// primary method covers 0 within a binomial tolerance of 95% (1.5 times
/// [`coverage_tolerance`], 3.7 points at 300 studies) in every transfer type with and
/// without replicates, the rule never chooses the independent t interval, and that interval
/// undercovers on the cross-language groups, whose instances share slices and test sets.
#[test]
fn the_primary_interval_covers_and_the_independent_t_does_not() {
    let studies = 300;
    let mut rows = Vec::new();
    for replicates in [1, 3] {
        rows.extend(simulate_coverage(&CoverageConfig {
            studies,
            resamples: 199,
            replicates,
            ..CoverageConfig::default()
        }));
    }
    let chosen = choose_primary(&rows, studies);
    assert_ne!(chosen, IntervalMethod::IndependentT, "{rows:#?}");
    let tol = 1.5 * coverage_tolerance(studies);
    for r in rows.iter().filter(|r| r.method == PRIMARY_INTERVAL) {
        assert!(r.computed + 2 >= studies, "{r:?}");
        assert!(
            (r.coverage - 0.95).abs() <= tol,
            "{} with {} replicates, {}: coverage {:.3}, want 0.95 ± {tol:.3}",
            r.method.label(),
            r.replicates,
            r.group.key(),
            r.coverage
        );
    }
    let cross_language = [TransferType::CrossLingual, TransferType::CrossBoth];
    for r in rows
        .iter()
        .filter(|r| r.method == IntervalMethod::IndependentT && cross_language.contains(&r.group))
    {
        assert!(
            r.coverage < 0.95 - tol,
            "independent t with {} replicates, {}: coverage {:.3}, want below {:.3}",
            r.replicates,
            r.group.key(),
            r.coverage,
            0.95 - tol
        );
    }
}

/// A regressor that is nearly a linear combination of the others (here relatedness made an
/// affine function of the WALS distance plus a wiggle far below its own variation, as WALS
/// distance and relatedness are on three languages of three families) is dropped and named,
/// not fitted into two huge opposite coefficients.
#[test]
fn a_nearly_collinear_regressor_is_dropped_and_named() {
    let grid = table_grid();
    let mut distances = pair_distances(&grid);
    for (i, d) in distances.iter_mut().enumerate() {
        if let Some(d) = d {
            let wiggle = if i % 2 == 0 { 1e-4 } else { -1e-4 };
            d.genealogical.distance = 0.1 + 0.5 * d.wals.distance + wiggle;
        }
    }
    let fit = transfer_regression(&grid, &distances).unwrap();
    let kept: Vec<&str> = fit
        .fit
        .coefficients
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    println!("kept {kept:?}, dropped {:?}", fit.aliased);
    assert!(
        fit.aliased.iter().any(|a| a.contains("relatedness")),
        "relatedness kept: {kept:?}, dropped {:?}",
        fit.aliased
    );
    for c in &fit.fit.coefficients {
        assert!(
            c.se < 100.0,
            "{}: se {} (an inflated variance)",
            c.name,
            c.se
        );
    }
}
