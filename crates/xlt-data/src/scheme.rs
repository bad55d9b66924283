//! Domain schemes: how a question's subject is grouped into the domains an experiment trains
//! and tests on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::question::Domain;

/// How subjects are grouped into domains.
///
/// * [`DomainScheme::Study`] (the default): Global-MMLU's `subject_category` (STEM,
///   Humanities, Social Sciences, Medical, Business, Other); the study trains on STEM,
///   Humanities and Medical. AfriMMLU's and MMMLU's subjects get the category Global-MMLU
///   gives the same MMLU subject.
/// * [`DomainScheme::Mmlu`]: the four categories of MMLU (Hendrycks et al. 2021,
///   `categories.py`): STEM, Humanities, Social Sciences, Other (business and health
///   included).
///
/// Belebele's questions are one domain, [`Domain::Reading`], in every scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DomainScheme {
    /// Global-MMLU's six subject categories; the study's three are its default selection.
    #[default]
    Study,
    /// MMLU's four categories.
    Mmlu,
}

impl DomainScheme {
    /// The name `--domain-scheme` takes and `manifest.json` records: `study` or `mmlu`.
    pub fn name(self) -> &'static str {
        match self {
            DomainScheme::Study => "study",
            DomainScheme::Mmlu => "mmlu",
        }
    }

    /// The domains of the scheme ([`Domain::Reading`] included: Belebele's).
    pub fn domains(self) -> &'static [Domain] {
        match self {
            DomainScheme::Study => &Domain::ALL,
            DomainScheme::Mmlu => &[
                Domain::Stem,
                Domain::Humanities,
                Domain::SocialSciences,
                Domain::Other,
                Domain::Reading,
            ],
        }
    }

    /// The domains an experiment uses when none is named: the study's three (STEM,
    /// Humanities, Medical), or MMLU's four.
    pub fn default_domains(self) -> Vec<Domain> {
        match self {
            DomainScheme::Study => Domain::STUDY.to_vec(),
            DomainScheme::Mmlu => vec![
                Domain::Stem,
                Domain::Humanities,
                Domain::SocialSciences,
                Domain::Other,
            ],
        }
    }

    /// The domain of a question of `subject` under this scheme. `given` is the domain the
    /// source gave it (Global-MMLU's `subject_category`); a subject that is not one of
    /// MMLU's 57 keeps `given`.
    pub fn domain(self, subject: &str, given: Domain) -> Domain {
        match self {
            DomainScheme::Study => given,
            DomainScheme::Mmlu => mmlu_category(subject).unwrap_or(given),
        }
    }

    /// Parses a comma-separated list of domains and checks that each is one of the
    /// scheme's: what `--domains` takes with `--domain-scheme`.
    ///
    /// # Errors
    /// [`DataError::UnknownDomain`] for an entry that names no domain;
    /// [`DataError::InvalidConfig`] for a domain the scheme does not have (Medical under
    /// `mmlu`), listing the scheme's.
    pub fn parse_domains(self, list: &str) -> Result<Vec<Domain>, DataError> {
        let domains = Domain::parse_list(list)?;
        for d in &domains {
            if !self.domains().contains(d) {
                let names: Vec<&str> = self.domains().iter().map(|d| d.name()).collect();
                return Err(DataError::InvalidConfig(format!(
                    "domain `{d}` is not one of the {} scheme's: {} (see --domain-scheme)",
                    self.name(),
                    names.join(", ")
                )));
            }
        }
        Ok(domains)
    }
}

impl fmt::Display for DomainScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DomainScheme {
    type Err = DataError;

    /// `study` (also `global-mmlu`) or `mmlu`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "study" | "global-mmlu" | "global_mmlu" => Ok(DomainScheme::Study),
            "mmlu" => Ok(DomainScheme::Mmlu),
            _ => Err(DataError::InvalidConfig(format!(
                "unknown domain scheme `{s}` (expected study or mmlu)"
            ))),
        }
    }
}

/// Global-MMLU's `subject_category` of an MMLU subject (`high_school_geography` is Social
/// Sciences), `None` for a subject that is not one of MMLU's 57. Read from Global-MMLU's
/// English dev split (`fixtures/global-mmlu/full/en.dev.jsonl`, every subject).
pub fn global_mmlu_category(subject: &str) -> Option<Domain> {
    SUBJECTS
        .binary_search_by(|(s, _, _)| (*s).cmp(subject))
        .ok()
        .map(|i| SUBJECTS[i].1)
}

/// MMLU's category of one of its 57 subjects (STEM, Humanities, Social Sciences, Other), as
/// `categories.py` of hendrycks/test groups its subcategories; `None` for any other subject.
pub fn mmlu_category(subject: &str) -> Option<Domain> {
    SUBJECTS
        .binary_search_by(|(s, _, _)| (*s).cmp(subject))
        .ok()
        .map(|i| SUBJECTS[i].2)
}

/// (subject, Global-MMLU category, MMLU category), sorted by subject.
const SUBJECTS: [(&str, Domain, Domain); 57] = [
    ("abstract_algebra", Domain::Stem, Domain::Stem),
    ("anatomy", Domain::Stem, Domain::Other),
    ("astronomy", Domain::Stem, Domain::Stem),
    ("business_ethics", Domain::Business, Domain::Other),
    ("clinical_knowledge", Domain::Medical, Domain::Other),
    ("college_biology", Domain::Stem, Domain::Stem),
    ("college_chemistry", Domain::Stem, Domain::Stem),
    ("college_computer_science", Domain::Stem, Domain::Stem),
    ("college_mathematics", Domain::Stem, Domain::Stem),
    ("college_medicine", Domain::Medical, Domain::Other),
    ("college_physics", Domain::Stem, Domain::Stem),
    ("computer_security", Domain::Stem, Domain::Stem),
    ("conceptual_physics", Domain::Stem, Domain::Stem),
    (
        "econometrics",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("electrical_engineering", Domain::Stem, Domain::Stem),
    ("elementary_mathematics", Domain::Stem, Domain::Stem),
    ("formal_logic", Domain::Humanities, Domain::Humanities),
    ("global_facts", Domain::Other, Domain::Other),
    ("high_school_biology", Domain::Stem, Domain::Stem),
    ("high_school_chemistry", Domain::Stem, Domain::Stem),
    ("high_school_computer_science", Domain::Stem, Domain::Stem),
    (
        "high_school_european_history",
        Domain::Humanities,
        Domain::Humanities,
    ),
    (
        "high_school_geography",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    (
        "high_school_government_and_politics",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    (
        "high_school_macroeconomics",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("high_school_mathematics", Domain::Stem, Domain::Stem),
    (
        "high_school_microeconomics",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("high_school_physics", Domain::Stem, Domain::Stem),
    (
        "high_school_psychology",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("high_school_statistics", Domain::Stem, Domain::Stem),
    (
        "high_school_us_history",
        Domain::Humanities,
        Domain::Humanities,
    ),
    (
        "high_school_world_history",
        Domain::Humanities,
        Domain::Humanities,
    ),
    ("human_aging", Domain::Medical, Domain::Other),
    (
        "human_sexuality",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("international_law", Domain::Humanities, Domain::Humanities),
    ("jurisprudence", Domain::Humanities, Domain::Humanities),
    ("logical_fallacies", Domain::Humanities, Domain::Humanities),
    ("machine_learning", Domain::Stem, Domain::Stem),
    ("management", Domain::Business, Domain::Other),
    ("marketing", Domain::Business, Domain::Other),
    ("medical_genetics", Domain::Medical, Domain::Other),
    ("miscellaneous", Domain::Other, Domain::Other),
    ("moral_disputes", Domain::Humanities, Domain::Humanities),
    ("moral_scenarios", Domain::Humanities, Domain::Humanities),
    ("nutrition", Domain::Medical, Domain::Other),
    ("philosophy", Domain::Humanities, Domain::Humanities),
    ("prehistory", Domain::Humanities, Domain::Humanities),
    ("professional_accounting", Domain::Business, Domain::Other),
    ("professional_law", Domain::Humanities, Domain::Humanities),
    ("professional_medicine", Domain::Medical, Domain::Other),
    (
        "professional_psychology",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    (
        "public_relations",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    (
        "security_studies",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("sociology", Domain::SocialSciences, Domain::SocialSciences),
    (
        "us_foreign_policy",
        Domain::SocialSciences,
        Domain::SocialSciences,
    ),
    ("virology", Domain::Medical, Domain::Other),
    ("world_religions", Domain::Humanities, Domain::Humanities),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn afrimmlu_subjects_map_into_both_schemes() {
        let cases = [
            ("elementary_mathematics", Domain::Stem, Domain::Stem),
            (
                "high_school_geography",
                Domain::SocialSciences,
                Domain::SocialSciences,
            ),
            ("international_law", Domain::Humanities, Domain::Humanities),
            ("global_facts", Domain::Other, Domain::Other),
            (
                "high_school_microeconomics",
                Domain::SocialSciences,
                Domain::SocialSciences,
            ),
            ("clinical_knowledge", Domain::Medical, Domain::Other),
            ("anatomy", Domain::Stem, Domain::Other),
            ("management", Domain::Business, Domain::Other),
        ];
        for (subject, study, mmlu) in cases {
            assert_eq!(global_mmlu_category(subject), Some(study), "{subject}");
            assert_eq!(mmlu_category(subject), Some(mmlu), "{subject}");
            assert_eq!(DomainScheme::Mmlu.domain(subject, study), mmlu, "{subject}");
            assert_eq!(
                DomainScheme::Study.domain(subject, study),
                study,
                "{subject}"
            );
        }
        assert!(SUBJECTS.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(
            DomainScheme::Mmlu.domain("reading", Domain::Reading),
            Domain::Reading
        );
        assert_eq!(global_mmlu_category("reading"), None);
    }

    #[test]
    fn schemes_parse_and_check_their_domains() {
        assert_eq!("MMLU".parse::<DomainScheme>().unwrap(), DomainScheme::Mmlu);
        assert_eq!(
            "study".parse::<DomainScheme>().unwrap(),
            DomainScheme::Study
        );
        assert!("subjects".parse::<DomainScheme>().is_err());
        assert_eq!(
            DomainScheme::Mmlu.parse_domains("stem,other").unwrap(),
            vec![Domain::Stem, Domain::Other]
        );
        let err = DomainScheme::Mmlu
            .parse_domains("stem,medical")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("domain `Medical` is not one of the mmlu scheme's: STEM, Humanities"),
            "{err}"
        );
        assert_eq!(
            DomainScheme::Study.parse_domains("reading").unwrap(),
            vec![Domain::Reading]
        );
    }
}
