//! One multiple-choice question and the small types it is made of.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DataError;
use crate::language::Language;

/// A subject domain: Global-MMLU's `subject_category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// Science, technology, engineering, mathematics (Global-MMLU counts anatomy here).
    Stem,
    /// History, law, philosophy, religion, logic.
    Humanities,
    /// Clinical knowledge, medicine, nutrition, virology, medical genetics, human aging.
    Medical,
    /// Economics, geography, politics, psychology, sociology.
    SocialSciences,
    /// Business ethics, management, marketing, accounting.
    Business,
    /// Global facts and miscellaneous (in MMLU's four categories, also business and health).
    Other,
    /// Reading comprehension of a passage: Belebele's one domain.
    Reading,
}

impl Domain {
    /// Every domain, in Global-MMLU's order of size-independent listing.
    pub const ALL: [Domain; 7] = [
        Domain::Stem,
        Domain::Humanities,
        Domain::Medical,
        Domain::SocialSciences,
        Domain::Business,
        Domain::Other,
        Domain::Reading,
    ];

    /// The three domains of the study: STEM, Humanities, Medical.
    pub const STUDY: [Domain; 3] = [Domain::Stem, Domain::Humanities, Domain::Medical];

    /// The name as Global-MMLU's `subject_category` spells it (`"STEM"`, `"Social Sciences"`).
    pub fn name(self) -> &'static str {
        match self {
            Domain::Stem => "STEM",
            Domain::Humanities => "Humanities",
            Domain::Medical => "Medical",
            Domain::SocialSciences => "Social Sciences",
            Domain::Business => "Business",
            Domain::Other => "Other",
            Domain::Reading => "Reading",
        }
    }

    /// Lower-case file-name form: `stem`, `humanities`, `medical`, `social-sciences`, ...
    pub fn slug(self) -> &'static str {
        match self {
            Domain::Stem => "stem",
            Domain::Humanities => "humanities",
            Domain::Medical => "medical",
            Domain::SocialSciences => "social-sciences",
            Domain::Business => "business",
            Domain::Other => "other",
            Domain::Reading => "reading",
        }
    }

    /// The study's table abbreviation: `STEM`, `Hum`, `Med` (and `Soc`, `Bus`, `Oth`).
    pub fn abbreviation(self) -> &'static str {
        match self {
            Domain::Stem => "STEM",
            Domain::Humanities => "Hum",
            Domain::Medical => "Med",
            Domain::SocialSciences => "Soc",
            Domain::Business => "Bus",
            Domain::Other => "Oth",
            Domain::Reading => "Read",
        }
    }

    /// Parses a comma-separated list of domains in any accepted spelling.
    ///
    /// # Errors
    /// [`DataError::InvalidList`] for a list with no entry or an empty entry;
    /// [`DataError::UnknownDomain`] for the first entry that names no domain (an empty
    /// item, as in `stem,,medical`, is named by its position).
    pub fn parse_list(list: &str) -> Result<Vec<Domain>, DataError> {
        // A list given but empty (`--domains ,`), or with an empty item (`stem,,medical`), is
        // a mistake, never "everything" or a silently shorter list.
        let items = crate::language::list_items(list, "domain").map_err(|reason| {
            DataError::InvalidList {
                what: "domains",
                list: list.to_owned(),
                reason,
            }
        })?;
        items.into_iter().map(str::parse).collect()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = DataError;

    /// Accepts the name, the slug or the abbreviation, in any case (`"Social Sciences"`,
    /// `"social-sciences"`, `"social_sciences"`, `"Hum"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .trim()
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        Domain::ALL
            .into_iter()
            .find(|d| {
                let norm = |x: &str| -> String {
                    x.chars()
                        .filter(|c| c.is_alphanumeric())
                        .flat_map(char::to_lowercase)
                        .collect()
                };
                norm(d.name()) == key || norm(d.abbreviation()) == key
            })
            .ok_or_else(|| DataError::UnknownDomain {
                value: s.to_owned(),
            })
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The letter of one of the four options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnswerLetter {
    /// The first option.
    A,
    /// The second option.
    B,
    /// The third option.
    C,
    /// The fourth option.
    D,
}

impl AnswerLetter {
    /// The four letters in order.
    pub const ALL: [AnswerLetter; 4] = [
        AnswerLetter::A,
        AnswerLetter::B,
        AnswerLetter::C,
        AnswerLetter::D,
    ];

    /// 0 for A through 3 for D.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The letter at `index` (0 to 3).
    pub fn from_index(index: usize) -> Option<AnswerLetter> {
        AnswerLetter::ALL.get(index).copied()
    }

    /// The letter as a char.
    pub fn as_char(self) -> char {
        (b'A' + self as u8) as char
    }

    /// The letter as a one-character string.
    pub fn as_str(self) -> &'static str {
        ["A", "B", "C", "D"][self.index()]
    }

    /// An upper- or lower-case Latin letter a-d.
    pub fn from_char(c: char) -> Option<AnswerLetter> {
        match c {
            'A' | 'a' => Some(AnswerLetter::A),
            'B' | 'b' => Some(AnswerLetter::B),
            'C' | 'c' => Some(AnswerLetter::C),
            'D' | 'd' => Some(AnswerLetter::D),
            _ => None,
        }
    }
}

impl fmt::Display for AnswerLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AnswerLetter {
    type Err = DataError;

    /// Exactly one of `A`, `B`, `C`, `D` (surrounding white space allowed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let mut chars = t.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_uppercase() => AnswerLetter::from_char(c),
            _ => None,
        }
        .ok_or_else(|| DataError::InvalidConfig(format!("`{s}` is not an answer letter A-D")))
    }
}

impl Serialize for AnswerLetter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AnswerLetter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Global-MMLU's `cultural_sensitivity_label`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CulturalLabel {
    /// `CS`: answering needs cultural, geographic or dialect knowledge.
    Sensitive,
    /// `CA`: culturally agnostic.
    Agnostic,
    /// `-`: not annotated.
    Unannotated,
}

impl CulturalLabel {
    /// The label as the data spells it: `CS`, `CA`, `-`.
    pub fn as_str(self) -> &'static str {
        match self {
            CulturalLabel::Sensitive => "CS",
            CulturalLabel::Agnostic => "CA",
            CulturalLabel::Unannotated => "-",
        }
    }
}

impl FromStr for CulturalLabel {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "CS" | "cs" => Ok(CulturalLabel::Sensitive),
            "CA" | "ca" => Ok(CulturalLabel::Agnostic),
            "-" | "" => Ok(CulturalLabel::Unannotated),
            other => Err(DataError::InvalidConfig(format!(
                "`{other}` is not a cultural-sensitivity label (CS, CA or -)"
            ))),
        }
    }
}

impl fmt::Display for CulturalLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CulturalLabel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CulturalLabel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One Global-MMLU question in one language.
///
/// The same `sample_id` names the same question in every language; the text fields differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// `<subject>/<split>/<index>`, e.g. `abstract_algebra/test/0`.
    pub sample_id: String,
    /// The MMLU subject, e.g. `abstract_algebra`.
    pub subject: String,
    /// The subject's category.
    pub domain: Domain,
    /// The language of the text fields.
    pub language: Language,
    /// The question text.
    pub question: String,
    /// The four options, A to D.
    pub options: [String; 4],
    /// The correct option.
    pub answer: AnswerLetter,
    /// Whether the question is culturally sensitive.
    pub cultural_label: CulturalLabel,
}

impl Question {
    /// The text of option `letter`.
    pub fn option(&self, letter: AnswerLetter) -> &str {
        &self.options[letter.index()]
    }

    /// The question with its options rotated cyclically by `r` (taken mod 4): the option
    /// shown as letter `i` is the original option `(i + r) mod 4`, and the answer moves with
    /// its option. Rotation 0 is the question as it is. Scoring a question under all four
    /// rotations puts its correct option under every letter once: an option-order control
    /// for a model's letter prior (issue #22).
    pub fn rotated(&self, r: usize) -> Question {
        let r = r % 4;
        Question {
            options: std::array::from_fn(|i| self.options[(i + r) % 4].clone()),
            answer: AnswerLetter::ALL[(self.answer.index() + 4 - r) % 4],
            ..self.clone()
        }
    }
}

/// Orders sample ids as MMLU does: by subject, then split, then numeric index
/// (`x/test/2` before `x/test/10`), falling back to plain string order.
pub fn compare_sample_ids(a: &str, b: &str) -> Ordering {
    fn key(id: &str) -> (&str, Option<u64>) {
        match id.rsplit_once('/') {
            Some((head, tail)) => (head, tail.parse().ok()),
            None => (id, None),
        }
    }
    let (ha, na) = key(a);
    let (hb, nb) = key(b);
    ha.cmp(hb).then(na.cmp(&nb)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_parse_in_every_spelling() {
        let check = |s: &str, d: Domain| assert_eq!(s.parse::<Domain>().unwrap(), d, "{s}");
        check("STEM", Domain::Stem);
        check("stem", Domain::Stem);
        check("Hum", Domain::Humanities);
        check("humanities", Domain::Humanities);
        check("Med", Domain::Medical);
        check("Social Sciences", Domain::SocialSciences);
        check("social-sciences", Domain::SocialSciences);
        check("social_sciences", Domain::SocialSciences);
        check("Business", Domain::Business);
        check("other", Domain::Other);
        assert!("Law".parse::<Domain>().is_err());
        assert_eq!(Domain::SocialSciences.slug(), "social-sciences");
    }

    #[test]
    fn answer_letters_are_strict() {
        assert_eq!("C".parse::<AnswerLetter>().unwrap(), AnswerLetter::C);
        assert_eq!(" D ".parse::<AnswerLetter>().unwrap(), AnswerLetter::D);
        for bad in ["E", "c", "", "AB", "1"] {
            assert!(bad.parse::<AnswerLetter>().is_err(), "{bad}");
        }
        assert_eq!(AnswerLetter::from_index(2), Some(AnswerLetter::C));
        assert_eq!(AnswerLetter::from_index(4), None);
        assert_eq!(AnswerLetter::B.as_char(), 'B');
    }

    #[test]
    fn sample_ids_sort_numerically() {
        let mut ids = vec!["a/test/10", "a/test/2", "a/dev/3", "b/test/0"];
        ids.sort_by(|a, b| compare_sample_ids(a, b));
        assert_eq!(ids, vec!["a/dev/3", "a/test/2", "a/test/10", "b/test/0"]);
    }

    #[test]
    fn rotation_moves_the_answer_with_its_option() {
        let q = Question {
            sample_id: "s/test/0".into(),
            subject: "s".into(),
            domain: Domain::Stem,
            language: "en".parse().unwrap(),
            question: "?".into(),
            options: ["w".into(), "x".into(), "y".into(), "z".into()],
            answer: AnswerLetter::B,
            cultural_label: CulturalLabel::Unannotated,
        };
        assert_eq!(q.rotated(0), q);
        let r = q.rotated(1);
        assert_eq!(r.options, ["x", "y", "z", "w"].map(String::from));
        assert_eq!(r.answer, AnswerLetter::A);
        assert_eq!(r.option(r.answer), "x");
        // Every rotation shows the correct option under another letter.
        let letters: Vec<AnswerLetter> = (0..4).map(|k| q.rotated(k).answer).collect();
        assert_eq!(
            letters,
            [
                AnswerLetter::B,
                AnswerLetter::A,
                AnswerLetter::D,
                AnswerLetter::C
            ]
        );
        for k in 0..8 {
            assert_eq!(
                q.rotated(k).option(q.rotated(k).answer),
                "x",
                "rotation {k}"
            );
        }
        assert_eq!(q.rotated(5), q.rotated(1));
    }
}
