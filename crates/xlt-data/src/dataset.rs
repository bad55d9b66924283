//! A set of questions in several languages: selection, duplicate removal, alignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::language::Language;
use crate::question::{CulturalLabel, Domain, Question, compare_sample_ids};
use crate::scheme::DomainScheme;

/// Questions in one or more languages. Order is canonical: by language, then sample id.
///
/// A dataset loaded from files ([`crate::load_paths`]) remembers the file of every row, so
/// that an audit can name it ([`Dataset::origin`]). Two datasets are equal when they hold
/// the same questions, wherever they were read from.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    questions: Vec<Question>,
    origins: Origins,
}

/// The file of each (language, sample id), shared by the datasets selected from one load.
type Origins = Arc<HashMap<(Language, String), PathBuf>>;

impl PartialEq for Dataset {
    fn eq(&self, other: &Dataset) -> bool {
        self.questions == other.questions
    }
}

impl Eq for Dataset {}

/// Which questions to keep. An empty list keeps everything on that axis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Languages to keep.
    pub languages: Vec<Language>,
    /// Domains to keep.
    pub domains: Vec<Domain>,
    /// MMLU subjects to keep (`abstract_algebra`, ...).
    pub subjects: Vec<String>,
    /// Cultural-sensitivity labels to keep.
    pub cultural_labels: Vec<CulturalLabel>,
}

/// What [`Dataset::dedup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupReport {
    /// The sample ids dropped, in every language, each because its normalized question and
    /// options equal those of an earlier id in at least one language.
    pub dropped_ids: Vec<String>,
    /// Rows removed, all languages together.
    pub dropped_rows: usize,
}

/// What [`Dataset::align`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlignReport {
    /// Sample ids kept: present in every language.
    pub kept_ids: usize,
    /// Sample ids dropped: missing from at least one language.
    pub dropped_ids: usize,
    /// Rows removed, all languages together.
    pub dropped_rows: usize,
}

impl Dataset {
    /// A dataset of these questions, put in canonical order.
    pub fn new(mut questions: Vec<Question>) -> Dataset {
        questions.sort_by(|a, b| {
            a.language
                .cmp(&b.language)
                .then_with(|| compare_sample_ids(&a.sample_id, &b.sample_id))
        });
        Dataset {
            questions,
            origins: Origins::default(),
        }
    }

    /// This dataset, remembering the file of each (language, sample id).
    pub(crate) fn with_origins(mut self, origins: HashMap<(Language, String), PathBuf>) -> Dataset {
        self.origins = Arc::new(origins);
        self
    }

    /// Keeps `questions` with this dataset's origins.
    pub(crate) fn replaced(&self, questions: Vec<Question>) -> Dataset {
        Dataset {
            questions,
            origins: Arc::clone(&self.origins),
        }
    }

    /// The file a question was loaded from, when the dataset was loaded from files.
    pub fn origin(&self, question: &Question) -> Option<&Path> {
        self.origins
            .get(&(question.language, question.sample_id.clone()))
            .map(PathBuf::as_path)
    }

    /// Every question's domain under `scheme` (see [`DomainScheme::domain`]).
    pub fn with_scheme(mut self, scheme: DomainScheme) -> Dataset {
        for q in &mut self.questions {
            q.domain = scheme.domain(&q.subject, q.domain);
        }
        self
    }

    /// All questions, in canonical order.
    pub fn questions(&self) -> &[Question] {
        &self.questions
    }

    /// Number of rows (questions times languages).
    pub fn len(&self) -> usize {
        self.questions.len()
    }

    /// Whether there is no question at all.
    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// The languages present, in code order.
    pub fn languages(&self) -> Vec<Language> {
        let set: BTreeSet<Language> = self.questions.iter().map(|q| q.language).collect();
        set.into_iter().collect()
    }

    /// The domains present.
    pub fn domains(&self) -> Vec<Domain> {
        let set: BTreeSet<Domain> = self.questions.iter().map(|q| q.domain).collect();
        set.into_iter().collect()
    }

    /// The questions of one language and domain, in sample-id order.
    pub fn slice(&self, language: Language, domain: Domain) -> impl Iterator<Item = &Question> {
        self.questions
            .iter()
            .filter(move |q| q.language == language && q.domain == domain)
    }

    /// The questions of one language, keyed by sample id.
    pub fn by_id(&self, language: Language) -> HashMap<&str, &Question> {
        self.questions
            .iter()
            .filter(|q| q.language == language)
            .map(|q| (q.sample_id.as_str(), q))
            .collect()
    }

    /// Keeps the questions `selection` names.
    pub fn select(self, selection: &Selection) -> Dataset {
        let keep = |q: &Question| {
            (selection.languages.is_empty() || selection.languages.contains(&q.language))
                && (selection.domains.is_empty() || selection.domains.contains(&q.domain))
                && (selection.subjects.is_empty() || selection.subjects.contains(&q.subject))
                && (selection.cultural_labels.is_empty()
                    || selection.cultural_labels.contains(&q.cultural_label))
        };
        let origins = Arc::clone(&self.origins);
        let questions = self.questions.into_iter().filter(|q| keep(q)).collect();
        Dataset { questions, origins }
    }

    /// Drops questions that the source holds twice under different sample ids.
    ///
    /// Two rows of one language are duplicates when their question and their options, as a
    /// set, are equal after normalization (Unicode lower case, white space collapsed). The
    /// later id in sample-id order is dropped, and dropped **in every language**, so that
    /// the dataset stays aligned and a duplicate cannot land on both sides of a split.
    pub fn dedup(self) -> (Dataset, DedupReport) {
        let mut drop: BTreeSet<String> = BTreeSet::new();
        let mut first: HashMap<(Language, String), &str> = HashMap::new();
        for q in &self.questions {
            let key = (q.language, normalized_key(q));
            match first.get(&key) {
                Some(_) => {
                    drop.insert(q.sample_id.clone());
                }
                None => {
                    first.insert(key, &q.sample_id);
                }
            }
        }
        let before = self.questions.len();
        let origins = Arc::clone(&self.origins);
        let questions: Vec<Question> = self
            .questions
            .into_iter()
            .filter(|q| !drop.contains(&q.sample_id))
            .collect();
        let mut dropped_ids: Vec<String> = drop.into_iter().collect();
        dropped_ids.sort_by(|a, b| compare_sample_ids(a, b));
        let report = DedupReport {
            dropped_rows: before - questions.len(),
            dropped_ids,
        };
        (Dataset { questions, origins }, report)
    }

    /// Keeps only the sample ids present in every language of the dataset, so that each
    /// language has the same question instances.
    pub fn align(self) -> (Dataset, AlignReport) {
        let languages = self.languages();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &self.questions {
            *seen.entry(q.sample_id.as_str()).or_default() += 1;
        }
        let keep: BTreeSet<String> = seen
            .iter()
            .filter(|(_, n)| **n == languages.len())
            .map(|(id, _)| (*id).to_owned())
            .collect();
        let report_ids = seen.len();
        let before = self.questions.len();
        let origins = Arc::clone(&self.origins);
        let questions: Vec<Question> = self
            .questions
            .into_iter()
            .filter(|q| keep.contains(&q.sample_id))
            .collect();
        let report = AlignReport {
            kept_ids: keep.len(),
            dropped_ids: report_ids - keep.len(),
            dropped_rows: before - questions.len(),
        };
        (Dataset { questions, origins }, report)
    }

    /// The distinct sample ids with their subject and domain, in sample-id order.
    pub fn items(&self) -> Vec<Item> {
        let mut map: BTreeMap<&str, (&str, Domain)> = BTreeMap::new();
        for q in &self.questions {
            map.entry(q.sample_id.as_str())
                .or_insert((q.subject.as_str(), q.domain));
        }
        let mut items: Vec<Item> = map
            .into_iter()
            .map(|(id, (subject, domain))| Item {
                sample_id: id.to_owned(),
                subject: subject.to_owned(),
                domain,
            })
            .collect();
        items.sort_by(|a, b| compare_sample_ids(&a.sample_id, &b.sample_id));
        items
    }
}

/// One question instance, independent of language: what a split assigns to a side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Item {
    /// The sample id shared by every language.
    pub sample_id: String,
    /// Its MMLU subject: the split's stratum.
    pub subject: String,
    /// Its domain.
    pub domain: Domain,
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .flat_map(|w| w.chars().flat_map(char::to_lowercase).chain(Some(' ')))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

fn normalized_key(q: &Question) -> String {
    let mut options: Vec<String> = q.options.iter().map(|o| normalize(o)).collect();
    options.sort();
    let mut key = normalize(&q.question);
    for o in options {
        key.push('\u{1f}');
        key.push_str(&o);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question::AnswerLetter;

    pub(crate) fn q(lang: Language, id: &str, text: &str) -> Question {
        let subject = id.split('/').next().unwrap().to_owned();
        Question {
            sample_id: id.to_owned(),
            subject,
            domain: Domain::Stem,
            language: lang,
            question: text.to_owned(),
            options: ["w".into(), "x".into(), "y".into(), "z".into()],
            answer: AnswerLetter::A,
            cultural_label: CulturalLabel::Agnostic,
        }
    }

    #[test]
    fn dedup_drops_later_id_in_every_language() {
        use Language::{English as En, German as De};
        let ds = Dataset::new(vec![
            q(En, "s/test/1", "What is  2+2?"),
            q(En, "s/test/2", "what is 2+2?"),
            q(En, "s/test/3", "Other"),
            q(De, "s/test/1", "Was ist 2+2?"),
            q(De, "s/test/2", "Was ist zwei plus zwei?"),
            q(De, "s/test/3", "Anders"),
        ]);
        let (ds, report) = ds.dedup();
        assert_eq!(report.dropped_ids, vec!["s/test/2".to_owned()]);
        assert_eq!(report.dropped_rows, 2);
        assert_eq!(ds.len(), 4);
        assert!(ds.questions().iter().all(|q| q.sample_id != "s/test/2"));
    }

    #[test]
    fn dedup_sees_permuted_options() {
        let mut a = q(Language::English, "s/test/1", "Q");
        let mut b = q(Language::English, "s/test/2", "Q");
        a.options = ["1".into(), "2".into(), "3".into(), "4".into()];
        b.options = ["4".into(), "3".into(), "2".into(), "1".into()];
        let (_, report) = Dataset::new(vec![a, b]).dedup();
        assert_eq!(report.dropped_ids.len(), 1);
    }

    #[test]
    fn align_keeps_ids_in_every_language() {
        use Language::{Arabic as Ar, English as En};
        let ds = Dataset::new(vec![
            q(En, "s/test/1", "a"),
            q(En, "s/test/2", "b"),
            q(Ar, "s/test/2", "b"),
            q(Ar, "s/test/3", "c"),
        ]);
        let (ds, report) = ds.align();
        assert_eq!(report.kept_ids, 1);
        assert_eq!(report.dropped_ids, 2);
        assert_eq!(report.dropped_rows, 2);
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.items().len(), 1);
    }

    #[test]
    fn select_filters_each_axis() {
        use Language::{Arabic as Ar, English as En};
        let mut med = q(En, "m/test/1", "m");
        med.domain = Domain::Medical;
        let ds = Dataset::new(vec![q(En, "s/test/1", "a"), q(Ar, "s/test/1", "a"), med]);
        let only_en = ds.clone().select(&Selection {
            languages: vec![En],
            ..Selection::default()
        });
        assert_eq!(only_en.len(), 2);
        let only_med = ds.clone().select(&Selection {
            domains: vec![Domain::Medical],
            ..Selection::default()
        });
        assert_eq!(only_med.len(), 1);
        let subj = ds.select(&Selection {
            subjects: vec!["s".into()],
            cultural_labels: vec![CulturalLabel::Agnostic],
            ..Selection::default()
        });
        assert_eq!(subj.len(), 2);
    }
}
