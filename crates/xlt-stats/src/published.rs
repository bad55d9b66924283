//! The figures the study published from its own table, to set beside ours when the analysis
//! reads that table.

use serde::{Deserialize, Serialize};

/// One published mean gain, with where it lives in [`crate::Groups`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PublishedFigure {
    /// The grouping, as in `summary.json`: `transfer_types`, `domain_matrix`,
    /// `resource_levels`.
    pub grouping: &'static str,
    /// The group's key in that grouping.
    pub key: &'static str,
    /// The published mean gain, percentage points.
    pub gain: f64,
}

const fn fig(grouping: &'static str, key: &'static str, gain: f64) -> PublishedFigure {
    PublishedFigure {
        grouping,
        key,
        gain,
    }
}

/// The mean gains Slomiany et al. (*One Model, Many Worlds*) report for gpt-4.1-nano, from
/// the accuracy matrix shipped as `fixtures/paper/table1.tsv`.
pub const STUDY_FIGURES: [PublishedFigure; 14] = [
    fig("transfer_types", "in_domain", -4.59),
    fig("transfer_types", "cross_lingual", 2.61),
    fig("transfer_types", "cross_domain", -2.44),
    fig("transfer_types", "cross_both", 4.35),
    fig("domain_matrix", "Medical->STEM", 9.61),
    fig("domain_matrix", "Humanities->STEM", 7.64),
    fig("domain_matrix", "STEM->STEM", 5.09),
    fig("domain_matrix", "Medical->Medical", 2.97),
    fig("domain_matrix", "Humanities->Humanities", -2.63),
    fig("domain_matrix", "Medical->Humanities", 3.41),
    fig("domain_matrix", "STEM->Medical", 0.37),
    fig("domain_matrix", "STEM->Humanities", -0.25),
    fig("resource_levels", "high->low", 15.96),
    fig("resource_levels", "mid->low", 10.67),
];
