//! Typological and genealogical distances between languages, from WALS feature values and
//! Glottolog classification paths (both CC BY 4.0, embedded from `fixtures/typology/`; see its
//! `README.md` for provenance and the citations to give).
//!
//! - WALS: Dryer, Matthew S. & Haspelmath, Martin (eds.) 2013. *The World Atlas of Language
//!   Structures Online.* Leipzig: Max Planck Institute for Evolutionary Anthropology
//!   (<https://wals.info>), CLDF dataset `cldf-datasets/wals` v2020.4.
//! - Glottolog: Hammarström, Harald & Forkel, Robert & Haspelmath, Martin & Bank, Sebastian.
//!   2024. *Glottolog 5.1.* Leipzig: Max Planck Institute for Evolutionary Anthropology
//!   (<https://glottolog.org>).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{DataError, Language};

const LANGUAGES_CSV: &str = include_str!("../../../fixtures/typology/languages.csv");
const GENEALOGY_CSV: &str = include_str!("../../../fixtures/typology/genealogy.csv");
const WALS_VALUES_CSV: &str = include_str!("../../../fixtures/typology/wals-values.csv");

/// The fewest WALS features two languages must both have coded for their distance to be
/// used: WALS coverage is uneven (Standard Malay has 4 features, English 159), and a Hamming
/// distance over a handful of features is mostly noise. Pairs below it are reported and left
/// out.
pub const MIN_SHARED_FEATURES: usize = 20;

/// The normalized Hamming distance of two languages' WALS feature values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WalsDistance {
    /// Share of the shared features on which the two languages' values differ, in `[0, 1]`
    /// (`NaN` when `shared` is 0).
    pub distance: f64,
    /// WALS features coded for both languages.
    pub shared: usize,
}

/// Distance along the Glottolog classification tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenealogicalDistance {
    /// `1 - shared / max(len_a, len_b)`, where a language's path is its Glottolog ancestors
    /// from the top-level family down, then the language itself, `len` is a path's length
    /// and `shared` the length of the two paths' common prefix: 0 for a language and itself,
    /// 1 for languages of different families (no common ancestor), in between by how deep
    /// the deepest common ancestor lies.
    pub distance: f64,
    /// Nodes the two paths share from the top (the family counts as one).
    pub shared: usize,
    /// Whether the two belong to one top-level family.
    pub same_family: bool,
}

/// Both distances of a language pair, as the analysis reports them per instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairDistance {
    /// The WALS distance, whatever the number of shared features.
    pub wals: WalsDistance,
    /// Whether `wals.shared` reaches the minimum asked for (see [`MIN_SHARED_FEATURES`]);
    /// when not, the pair's WALS distance is reported but left out of analyses.
    pub wals_usable: bool,
    /// The Glottolog distance.
    pub genealogical: GenealogicalDistance,
}

/// One language's entry.
#[derive(Debug, Clone)]
struct Entry {
    /// Glottolog ancestors from the top-level family down, then the language's glottocode.
    path: Vec<String>,
    /// WALS parameter id -> value (the code number), of the primary WALS doculect.
    wals: BTreeMap<String, String>,
}

/// WALS feature values and Glottolog paths of the languages of Global-MMLU and AfriMMLU.
///
/// The WALS doculect of a language is `languages.csv`'s `wals_id` (the primary one), never the
/// richer `wals_alt_id` of another variety (Egyptian Arabic for Standard Arabic, Indonesian for
/// Malay, Harar Oromo for West Central Oromo): a distance is between the languages tested, and
/// a pair too thinly coded is left out by [`MIN_SHARED_FEATURES`] rather than measured on
/// a neighbour.
#[derive(Debug, Clone)]
pub struct Typology {
    entries: BTreeMap<Language, Entry>,
}

fn malformed(file: &str, message: String) -> DataError {
    DataError::Malformed {
        path: PathBuf::from(format!("fixtures/typology/{file}")),
        format: "CSV",
        message,
    }
}

/// The rows of a CSV text as maps from column name to value.
fn rows(file: &str, text: &str) -> Result<Vec<BTreeMap<String, String>>, DataError> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| malformed(file, e.to_string()))?
        .clone();
    reader
        .records()
        .enumerate()
        .map(|(i, r)| {
            let r = r.map_err(|e| malformed(file, format!("row {}: {e}", i + 1)))?;
            Ok(header
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect())
        })
        .collect()
}

fn column<'a>(
    file: &str,
    row: usize,
    r: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<&'a str, DataError> {
    r.get(name)
        .map(String::as_str)
        .ok_or_else(|| malformed(file, format!("row {row}: no column `{name}`")))
}

impl Typology {
    /// Reads the three tables: `languages.csv` (`iso639_1`, `glottocode`, `wals_id`),
    /// `genealogy.csv` (`glottocode`, `classification`: slash-separated ancestors) and
    /// `wals-values.csv` (`Language_ID`, `Parameter_ID`, `Value`), in the layout of
    /// `fixtures/typology/`.
    ///
    /// # Errors
    /// [`DataError::Malformed`] naming the file and 1-based data row of a row that cannot be
    /// read, a language code this crate does not know, or a glottocode without a genealogy.
    pub fn parse(languages: &str, genealogy: &str, values: &str) -> Result<Typology, DataError> {
        let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, r) in rows("genealogy.csv", genealogy)?.iter().enumerate() {
            let code = column("genealogy.csv", i + 1, r, "glottocode")?;
            let class = column("genealogy.csv", i + 1, r, "classification")?;
            let mut path: Vec<String> = class
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            path.push(code.to_owned());
            paths.insert(code.to_owned(), path);
        }
        let mut by_wals: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (i, r) in rows("wals-values.csv", values)?.iter().enumerate() {
            let lang = column("wals-values.csv", i + 1, r, "Language_ID")?;
            let param = column("wals-values.csv", i + 1, r, "Parameter_ID")?;
            let value = column("wals-values.csv", i + 1, r, "Value")?;
            by_wals
                .entry(lang.to_owned())
                .or_default()
                .entry(param.to_owned())
                .or_insert_with(|| value.to_owned());
        }
        let mut entries = BTreeMap::new();
        for (i, r) in rows("languages.csv", languages)?.iter().enumerate() {
            let code = column("languages.csv", i + 1, r, "iso639_1")?;
            let language = Language::from_code(code).ok_or_else(|| {
                malformed(
                    "languages.csv",
                    format!("row {}: unknown language `{code}`", i + 1),
                )
            })?;
            let glottocode = column("languages.csv", i + 1, r, "glottocode")?;
            let path = paths.get(glottocode).cloned().ok_or_else(|| {
                malformed(
                    "languages.csv",
                    format!(
                        "row {}: glottocode `{glottocode}` is not in genealogy.csv",
                        i + 1
                    ),
                )
            })?;
            let wals_id = column("languages.csv", i + 1, r, "wals_id")?;
            let wals = by_wals.get(wals_id).cloned().unwrap_or_default();
            entries.insert(language, Entry { path, wals });
        }
        Ok(Typology { entries })
    }

    /// The tables embedded in this crate (`fixtures/typology/`: 52 languages, 5,298 WALS
    /// values of 54 doculects), read once.
    pub fn embedded() -> &'static Typology {
        static EMBEDDED: OnceLock<Typology> = OnceLock::new();
        EMBEDDED.get_or_init(|| {
            Typology::parse(LANGUAGES_CSV, GENEALOGY_CSV, WALS_VALUES_CSV)
                .expect("the embedded typology tables parse (tested)")
        })
    }

    /// The languages the tables cover.
    pub fn languages(&self) -> impl Iterator<Item = Language> + '_ {
        self.entries.keys().copied()
    }

    fn entry(&self, language: Language) -> Result<&Entry, DataError> {
        self.entries
            .get(&language)
            .ok_or_else(|| DataError::UnknownTypology {
                language: language.code().to_owned(),
                table: "languages.csv",
            })
    }

    /// WALS features coded for `language`'s primary doculect.
    ///
    /// # Errors
    /// [`DataError::UnknownTypology`] for a language the tables do not cover.
    pub fn wals_features(&self, language: Language) -> Result<usize, DataError> {
        Ok(self.entry(language)?.wals.len())
    }

    /// The normalized Hamming distance over the WALS features both languages have coded:
    /// `differing / shared` (Hamming 1950; as lang2vec's `syntax_wals`-style distances,
    /// Littell et al. 2017, but over raw WALS values with missing features skipped, not
    /// imputed).
    ///
    /// # Errors
    /// [`DataError::UnknownTypology`] for a language the tables do not cover.
    pub fn wals_distance(&self, a: Language, b: Language) -> Result<WalsDistance, DataError> {
        let (ea, eb) = (self.entry(a)?, self.entry(b)?);
        let (mut shared, mut differing) = (0usize, 0usize);
        for (param, va) in &ea.wals {
            if let Some(vb) = eb.wals.get(param) {
                shared += 1;
                differing += usize::from(va != vb);
            }
        }
        Ok(WalsDistance {
            distance: if shared == 0 {
                f64::NAN
            } else {
                differing as f64 / shared as f64
            },
            shared,
        })
    }

    /// The distance along the Glottolog tree (see [`GenealogicalDistance::distance`]): a
    /// normalized shared-path measure in the manner of URIEL's genetic distance (Littell et
    /// al., "URIEL and lang2vec", EACL 2017).
    ///
    /// # Errors
    /// [`DataError::UnknownTypology`] for a language the tables do not cover.
    pub fn genealogical_distance(
        &self,
        a: Language,
        b: Language,
    ) -> Result<GenealogicalDistance, DataError> {
        let (pa, pb) = (&self.entry(a)?.path, &self.entry(b)?.path);
        let shared = pa.iter().zip(pb).take_while(|(x, y)| x == y).count();
        let longest = pa.len().max(pb.len());
        Ok(GenealogicalDistance {
            distance: 1.0 - shared as f64 / longest as f64,
            shared,
            same_family: shared > 0,
        })
    }

    /// Both distances of a pair; the WALS one is usable when the pair shares at least
    /// `min_shared` features.
    ///
    /// # Errors
    /// [`DataError::UnknownTypology`] for a language the tables do not cover.
    pub fn pair(
        &self,
        a: Language,
        b: Language,
        min_shared: usize,
    ) -> Result<PairDistance, DataError> {
        let wals = self.wals_distance(a, b)?;
        Ok(PairDistance {
            wals,
            wals_usable: wals.shared >= min_shared && wals.shared > 0,
            genealogical: self.genealogical_distance(a, b)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made tables: three languages, two of one family.
    const LANGS: &str =
        "iso639_1,glottocode,wals_id\nen,stan1293,eng\nde,stan1295,ger\ntr,nucl1301,tur\n";
    const GEN: &str = "glottocode,classification\nstan1293,indo1319/germ1287/west2793/nort3152/angl1265\nstan1295,indo1319/germ1287/west2793/high1289\nnucl1301,turk1311/comm1245\n";
    const VALS: &str = "ID,Language_ID,Parameter_ID,Value,Code_ID\na,eng,1A,3,x\nb,eng,2A,1,x\nc,eng,3A,2,x\nd,ger,1A,3,x\ne,ger,2A,2,x\nf,tur,1A,1,x\n";

    #[test]
    fn distances_match_hand_computation() {
        let t = Typology::parse(LANGS, GEN, VALS).unwrap();
        let (en, de, tr) = (Language::English, Language::German, Language::Turkish);
        // en and de share 1A (equal) and 2A (different): 1 of 2 differ.
        assert_eq!(
            t.wals_distance(en, de).unwrap(),
            WalsDistance {
                distance: 0.5,
                shared: 2
            }
        );
        // en: 6 nodes, de: 5; they share indo1319/germ1287/west2793 = 3: 1 - 3/6.
        let g = t.genealogical_distance(en, de).unwrap();
        assert_eq!((g.shared, g.same_family), (3, true), "{g:?}");
        assert!((g.distance - 0.5).abs() < 1e-12, "{}", g.distance);
        let g = t.genealogical_distance(en, tr).unwrap();
        assert_eq!((g.distance, g.shared, g.same_family), (1.0, 0, false));
        let g = t.genealogical_distance(tr, tr).unwrap();
        assert_eq!((g.distance, g.shared), (0.0, 3));
        let p = t.pair(en, tr, 2).unwrap();
        assert_eq!((p.wals.shared, p.wals_usable), (1, false));
        assert_eq!(p.wals.distance, 1.0);
    }

    #[test]
    fn an_unknown_language_is_a_typed_error() {
        let t = Typology::parse(LANGS, GEN, VALS).unwrap();
        let e = t
            .wals_distance(Language::English, Language::Igbo)
            .unwrap_err();
        assert!(
            matches!(&e, DataError::UnknownTypology { language, .. } if language == "ig"),
            "{e}"
        );
        assert!(e.to_string().contains("`ig`"), "{e}");
    }

    #[test]
    fn a_glottocode_without_genealogy_names_the_file_and_row() {
        let langs = "iso639_1,glottocode,wals_id\nen,stan1293,eng\nde,nope1234,ger\n";
        let e = Typology::parse(langs, GEN, VALS).unwrap_err().to_string();
        assert!(
            e.contains("languages.csv") && e.contains("row 2") && e.contains("nope1234"),
            "{e}"
        );
    }

    #[test]
    fn the_embedded_tables_cover_the_study_languages() {
        let t = Typology::embedded();
        assert_eq!(t.languages().count(), 52);
        // SOURCE.md: tr-ky share 40 WALS features; Malay's primary doculect has 4.
        let tk = t
            .wals_distance(Language::Turkish, Language::Kyrgyz)
            .unwrap();
        assert_eq!(tk.shared, 40, "{tk:?}");
        assert_eq!(t.wals_features(Language::Malay).unwrap(), 4);
        assert_eq!(t.wals_features(Language::English).unwrap(), 159);
        let p = t
            .pair(Language::Malay, Language::English, MIN_SHARED_FEATURES)
            .unwrap();
        assert!(!p.wals_usable, "{p:?}");
        // Both Turkic: one family, not the same language.
        let g = t
            .genealogical_distance(Language::Turkish, Language::Kyrgyz)
            .unwrap();
        assert!(
            g.same_family && g.distance > 0.0 && g.distance < 1.0,
            "{g:?}"
        );
    }
}
