//! Leak-free train/test splits by sample id, and an audit for anyone's splits.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Item;
use crate::error::DataError;
use crate::language::Language;
use crate::question::compare_sample_ids;

/// How to split: the fraction that goes to training, and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Fraction of each subject's questions on the training side, strictly between 0 and 1.
    pub train_fraction: f64,
    /// Seed of the deterministic shuffle.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            train_fraction: 0.7,
            seed: 42,
        }
    }
}

/// A split of sample ids into training and test sides. The same ids are on the same side in
/// every language: the split is of question instances, not of rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training ids, in sample-id order.
    pub train: Vec<String>,
    /// Test ids, in sample-id order.
    pub test: Vec<String>,
}

impl Split {
    /// Whether `sample_id` is on the training side.
    pub fn is_train(&self, sample_id: &str) -> bool {
        self.train
            .binary_search_by(|x| compare_sample_ids(x, sample_id))
            .is_ok()
    }

    /// Whether `sample_id` is on the test side.
    pub fn is_test(&self, sample_id: &str) -> bool {
        self.test
            .binary_search_by(|x| compare_sample_ids(x, sample_id))
            .is_ok()
    }
}

/// The seeded shuffle key of a sample id: SHA-256 of the seed and the id. It does not depend
/// on the order the ids arrive in, nor on the platform.
pub fn shuffle_key(seed: u64, sample_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(sample_id.as_bytes());
    h.finalize().into()
}

/// Splits items into training and test, stratified by subject.
///
/// Within each subject the items are ordered by [`shuffle_key`] (of their passage, for
/// Belebele's reading questions, whose passage's questions stay on one side), and the first ones go to
/// training. How many: `round(train_fraction x n)` of the subject's `n` questions (halves
/// rounded up), each subject on its own. A subject's split thus depends only on its own
/// items and the seed, never on which other subjects (or domains) are selected: the same
/// seed gives the same test questions of a subject in every study that holds it, so test
/// sets of different studies pair. The total is the sum of the subjects' rounded quotas,
/// which can differ from `round(train_fraction x N)` by up to half a question per
/// subject (a subject of 5 at 0.7 trains on 4, 80%).
///
/// # Errors
/// [`DataError::InvalidConfig`] if the fraction is not strictly between 0 and 1;
/// [`DataError::EmptySlice`] if there is no item.
pub fn split_items(items: &[Item], config: &SplitConfig) -> Result<Split, DataError> {
    let f = config.train_fraction;
    if !(f > 0.0 && f < 1.0) {
        return Err(DataError::InvalidConfig(format!(
            "train fraction {f} is not strictly between 0 and 1"
        )));
    }
    if items.is_empty() {
        return Err(DataError::EmptySlice {
            what: "nothing to split: no question is left after selection and alignment".to_owned(),
        });
    }
    // Per subject: its ids, each under the unit of the split it belongs to.
    let mut strata: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for item in items {
        if seen.insert(item.sample_id.as_str()) {
            strata
                .entry(item.subject.as_str())
                .or_default()
                .push((split_unit(item), item.sample_id.as_str()));
        }
    }
    // Each subject's quota is rounded on its own (not by largest remainder across
    // subjects), so that no subject's split depends on the others present.
    let quotas: Vec<(&str, usize)> = strata
        .iter()
        .map(|(s, ids)| (*s, subject_train_count(ids.len(), f)))
        .collect();

    let mut split = Split::default();
    for (subject, n_train) in quotas {
        // Units in shuffled order, each whole on one side: training takes units until it
        // holds the quota (a unit of several questions may take it one or two past).
        let mut units: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for &(unit, id) in &strata[subject] {
            units.entry(unit).or_default().push(id);
        }
        let mut order: Vec<(&str, Vec<&str>)> = units.into_iter().collect();
        order.sort_by_cached_key(|(unit, _)| (shuffle_key(config.seed, unit), unit.to_string()));
        let mut taken = 0;
        for (_, ids) in order {
            let side = if taken < n_train {
                taken += ids.len();
                &mut split.train
            } else {
                &mut split.test
            };
            side.extend(ids.iter().map(|s| s.to_string()));
        }
    }
    split.train.sort_by(|a, b| compare_sample_ids(a, b));
    split.test.sort_by(|a, b| compare_sample_ids(a, b));
    Ok(split)
}

/// What a split keeps whole on one side: a Belebele question's passage (its id
/// `<link>/<question_number>` without the number; Belebele is the one benchmark of the
/// reading domain, and asks up to two questions of a passage that is part of each
/// question), so that no passage read in training is asked about in test; any other
/// question alone.
fn split_unit(item: &Item) -> &str {
    match item.domain {
        crate::Domain::Reading => item
            .sample_id
            .rsplit_once('/')
            .map_or(item.sample_id.as_str(), |(passage, _)| passage),
        _ => item.sample_id.as_str(),
    }
}

/// How many of a subject's `n` questions go to training at fraction `f`: `round(f x n)`,
/// halves up, computed on the subject alone.
fn subject_train_count(n: usize, f: f64) -> usize {
    ((f * n as f64).round() as usize).min(n)
}

/// A sample id that is on the training side somewhere and on the test side somewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakedId {
    /// The id.
    pub sample_id: String,
    /// Languages where it is trained on.
    pub train_languages: Vec<Language>,
    /// Languages where it is tested on.
    pub test_languages: Vec<Language>,
}

/// The result of [`leakage_audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakageReport {
    /// Every leaked id, in sample-id order.
    pub leaked: Vec<LeakedId>,
    /// Distinct ids seen on the training side.
    pub train_ids: usize,
    /// Distinct ids seen on the test side.
    pub test_ids: usize,
}

impl LeakageReport {
    /// Whether no id is on both sides.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
    }
}

/// Audits any set of per-language splits for cross-lingual leakage: an id trained on in one
/// language and tested in the same or another language. Takes `(language, sample_id)` pairs
/// for each side, so it can audit splits made by anyone.
pub fn leakage_audit<'a>(
    train: impl IntoIterator<Item = (Language, &'a str)>,
    test: impl IntoIterator<Item = (Language, &'a str)>,
) -> LeakageReport {
    let mut train_map: BTreeMap<&str, BTreeSet<Language>> = BTreeMap::new();
    for (l, id) in train {
        train_map.entry(id).or_default().insert(l);
    }
    let mut test_map: BTreeMap<&str, BTreeSet<Language>> = BTreeMap::new();
    for (l, id) in test {
        test_map.entry(id).or_default().insert(l);
    }
    let mut leaked: Vec<LeakedId> = train_map
        .iter()
        .filter_map(|(id, tl)| {
            test_map.get(id).map(|sl| LeakedId {
                sample_id: (*id).to_owned(),
                train_languages: tl.iter().copied().collect(),
                test_languages: sl.iter().copied().collect(),
            })
        })
        .collect();
    leaked.sort_by(|a, b| compare_sample_ids(&a.sample_id, &b.sample_id));
    LeakageReport {
        leaked,
        train_ids: train_map.len(),
        test_ids: test_map.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question::Domain;
    use proptest::prelude::*;

    fn items(spec: &[(&str, usize)]) -> Vec<Item> {
        spec.iter()
            .flat_map(|(subject, n)| {
                (0..*n).map(move |i| Item {
                    sample_id: format!("{subject}/test/{i}"),
                    subject: (*subject).to_owned(),
                    domain: Domain::Stem,
                })
            })
            .collect()
    }

    #[test]
    fn rejects_bad_fractions_and_empty_input() {
        let it = items(&[("a", 3)]);
        for f in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            let c = SplitConfig {
                train_fraction: f,
                seed: 1,
            };
            assert!(split_items(&it, &c).is_err(), "{f}");
        }
        assert!(matches!(
            split_items(&[], &SplitConfig::default()),
            Err(DataError::EmptySlice { .. })
        ));
    }

    #[test]
    fn each_subject_rounds_its_own_quota() {
        // Three subjects of 3 at 0.5: quotas 1.5 each, each rounded up on its own, so every
        // subject trains on 2 (a total of 6, where round(4.5) would be 5).
        let s = split_items(
            &items(&[("a", 3), ("b", 3), ("c", 3)]),
            &SplitConfig {
                train_fraction: 0.5,
                seed: 7,
            },
        )
        .unwrap();
        println!("train {} test {}", s.train.len(), s.test.len());
        assert_eq!((s.train.len(), s.test.len()), (6, 3));
    }

    #[test]
    fn audit_finds_cross_lingual_leaks() {
        use Language::{English as En, Igbo as Ig, Turkish as Tr};
        let train = [(Ig, "x/test/1"), (Tr, "x/test/2")];
        let test = [(Tr, "x/test/1"), (En, "x/test/3"), (Ig, "x/test/1")];
        let r = leakage_audit(train, test);
        assert_eq!(r.leaked.len(), 1);
        assert_eq!(r.leaked[0].sample_id, "x/test/1");
        assert_eq!(r.leaked[0].train_languages, vec![Ig]);
        assert_eq!(r.leaked[0].test_languages, vec![Ig, Tr]);
        assert!(!r.is_clean());
        assert_eq!((r.train_ids, r.test_ids), (2, 2));
    }

    fn arb_items() -> impl Strategy<Value = Vec<Item>> {
        prop::collection::vec(1usize..12, 1..8).prop_map(|sizes| {
            let spec: Vec<(String, usize)> = sizes
                .into_iter()
                .enumerate()
                .map(|(i, n)| (format!("subject{i}"), n))
                .collect();
            let spec_ref: Vec<(&str, usize)> = spec.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            items(&spec_ref)
        })
    }

    proptest! {
        #[test]
        fn split_invariants(items in arb_items(), f in 0.05f64..0.95, seed in any::<u64>()) {
            let config = SplitConfig { train_fraction: f, seed };
            let s = split_items(&items, &config).unwrap();
            // Disjoint and complete.
            let train: BTreeSet<_> = s.train.iter().collect();
            let test: BTreeSet<_> = s.test.iter().collect();
            prop_assert!(train.is_disjoint(&test));
            prop_assert_eq!(train.len() + test.len(), items.len());
            // Stratified: each subject trains on round(f x n) of its n, on its own.
            let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            for it in &items {
                let e = per.entry(it.subject.as_str()).or_default();
                e.0 += 1;
                if s.is_train(&it.sample_id) { e.1 += 1; }
            }
            for (subject, (n, k)) in per {
                let quota = f * n as f64;
                prop_assert_eq!(k, quota.round() as usize,
                    "{} has {} of {} on train, quota {}", subject, k, n, quota);
            }
            // Deterministic and independent of input order.
            let mut reversed = items.clone();
            reversed.reverse();
            prop_assert_eq!(&split_items(&reversed, &config).unwrap(), &s);
            // The same split audited across languages is clean.
            let langs = [Language::English, Language::Igbo, Language::Hebrew];
            let tr: Vec<_> = langs.iter().flat_map(|l| s.train.iter().map(move |id| (*l, id.as_str()))).collect();
            let te: Vec<_> = langs.iter().flat_map(|l| s.test.iter().map(move |id| (*l, id.as_str()))).collect();
            prop_assert!(leakage_audit(tr, te).is_clean());
        }

        /// The split of one subject is the same whatever other subjects are split with it:
        /// adding a domain moves no question of another subject between train and test.
        #[test]
        fn a_subjects_split_ignores_the_other_subjects(
            items in arb_items(),
            n in 1usize..40,
            f in 0.05f64..0.95,
            seed in any::<u64>(),
        ) {
            let config = SplitConfig { train_fraction: f, seed };
            let alone_items = super::tests::items(&[("zz_subject", n)]);
            let alone = split_items(&alone_items, &config).unwrap();
            let mut with_others = items.clone();
            with_others.extend(alone_items.iter().cloned());
            let together = split_items(&with_others, &config).unwrap();
            let own = |ids: &[String]| -> Vec<String> {
                ids.iter().filter(|id| id.starts_with("zz_subject/")).cloned().collect()
            };
            prop_assert_eq!(own(&together.train), alone.train.clone(),
                "train side of zz_subject alone {:?}, with {} other items {:?}",
                alone.train, items.len(), own(&together.train));
            prop_assert_eq!(own(&together.test), alone.test.clone());
        }
    }
}
