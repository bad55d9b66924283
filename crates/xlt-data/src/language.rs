//! Languages of Global-MMLU, AfriMMLU, Belebele and MMMLU, the codes they are named by, and the
//! resource levels a study assigns to them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DataError;

/// The writing system a language is written in, as the benchmarks write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Script {
    /// Arabic script (ar, fa, ur, ps, sd, ckb).
    Arabic,
    /// Armenian script (hy).
    Armenian,
    /// Bengali-Assamese script (bn, as).
    Bengali,
    /// Cyrillic script (ky, ru, sr, uk, bg, kk, mk, mn, tg).
    Cyrillic,
    /// Devanagari script (hi, ne, mr).
    Devanagari,
    /// Ge'ez script (am, ti).
    Ethiopic,
    /// Georgian script (ka).
    Georgian,
    /// Greek script (el).
    Greek,
    /// Gujarati script (gu).
    Gujarati,
    /// Gurmukhi script (pa).
    Gurmukhi,
    /// Simplified Han characters (zh).
    Han,
    /// Hangul (ko).
    Hangul,
    /// Hebrew script (he).
    Hebrew,
    /// Kanji with hiragana and katakana (ja).
    Japanese,
    /// Kannada script (kn).
    Kannada,
    /// Khmer script (km).
    Khmer,
    /// Lao script (lo).
    Lao,
    /// Latin script.
    Latin,
    /// Malayalam script (ml).
    Malayalam,
    /// Myanmar script (my, shn).
    Myanmar,
    /// Odia script (or).
    Odia,
    /// Sinhala script (si).
    Sinhala,
    /// Tamil script (ta).
    Tamil,
    /// Telugu script (te).
    Telugu,
    /// Thai script (th).
    Thai,
    /// Tibetan script (bo).
    Tibetan,
}

impl Script {
    /// The ISO 15924 code FLORES-200 and Belebele write after the language (`Latn`, `Ethi`,
    /// `Hans`).
    pub fn flores_tag(self) -> &'static str {
        match self {
            Script::Arabic => "Arab",
            Script::Armenian => "Armn",
            Script::Bengali => "Beng",
            Script::Cyrillic => "Cyrl",
            Script::Devanagari => "Deva",
            Script::Ethiopic => "Ethi",
            Script::Georgian => "Geor",
            Script::Greek => "Grek",
            Script::Gujarati => "Gujr",
            Script::Gurmukhi => "Guru",
            Script::Han => "Hans",
            Script::Hangul => "Hang",
            Script::Hebrew => "Hebr",
            Script::Japanese => "Jpan",
            Script::Kannada => "Knda",
            Script::Khmer => "Khmr",
            Script::Lao => "Laoo",
            Script::Latin => "Latn",
            Script::Malayalam => "Mlym",
            Script::Myanmar => "Mymr",
            Script::Odia => "Orya",
            Script::Sinhala => "Sinh",
            Script::Tamil => "Taml",
            Script::Telugu => "Telu",
            Script::Thai => "Thai",
            Script::Tibetan => "Tibt",
        }
    }
}

macro_rules! languages {
    ($($variant:ident => $code:literal, $iso3:literal, [$($alias:literal),*], $name:literal, $script:ident;)*) => {
        /// A language of Global-MMLU (42), AfriMMLU (17 with English and French) , Belebele
        /// (115 of its 122 variants: those written in the language's usual script) or MMMLU
        /// (14), named by its code.
        ///
        /// [`Language::code`] is ISO 639-1 where there is one, else ISO 639-3 (`fil` for
        /// Filipino, as Global-MMLU writes it; `ceb`, `luo`, `nso`, the Arabic varieties
        /// Belebele holds). [`Language::from_code`] also reads ISO 639-3 codes (`ibo`),
        /// FLORES-200 codes (`ibo_Latn`) and MMMLU locales (`YO-NG`, `YO_NG`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Language {
            $(
                #[doc = $name]
                $variant,
            )*
        }

        impl Language {
            /// Every language known here, in code order.
            pub const ALL: &'static [Language] = &[$(Language::$variant),*];

            /// The code this crate names the language by: ISO 639-1 (`"en"`, `"ig"`), or ISO
            /// 639-3 where there is no ISO 639-1 code (`"fil"`, `"ceb"`).
            pub fn code(self) -> &'static str {
                match self { $(Language::$variant => $code),* }
            }

            /// The ISO 639-3 code FLORES-200 and Belebele use (`"ibo"`, `"swh"`, `"pes"`):
            /// for a macrolanguage, the individual language the benchmarks hold.
            pub fn iso639_3(self) -> &'static str {
                match self { $(Language::$variant => $iso3),* }
            }

            /// Other codes read as this language: the macrolanguage's ISO 639-3 code where
            /// [`Language::iso639_3`] is an individual language (`swa` for Swahili, as
            /// AfriMMLU writes it; `orm` for Oromo), and `tgl`/`tl` for Filipino.
            pub fn aliases(self) -> &'static [&'static str] {
                match self { $(Language::$variant => &[$($alias),*]),* }
            }

            /// The English name of the language.
            pub fn name(self) -> &'static str {
                match self { $(Language::$variant => $name),* }
            }

            /// The script the benchmarks write this language in.
            pub fn script(self) -> Script {
                match self { $(Language::$variant => Script::$script),* }
            }

            fn from_plain_code(code: &str) -> Option<Language> {
                match code {
                    $($code => Some(Language::$variant),)*
                    _ => None,
                }
                .or_else(|| match code {
                    $($iso3 => Some(Language::$variant),)*
                    _ => None,
                })
                .or_else(|| match code {
                    $($($alias => Some(Language::$variant),)*)*
                    _ => None,
                })
            }
        }
    };
}

languages! {
    MesopotamianArabic => "acm", "acm", [], "Mesopotamian Arabic", Arabic;
    Afrikaans => "af", "afr", [], "Afrikaans", Latin;
    Amharic => "am", "amh", [], "Amharic", Ethiopic;
    LevantineArabic => "apc", "apc", [], "Levantine Arabic", Arabic;
    Arabic => "ar", "arb", ["ara"], "Arabic", Arabic;
    NajdiArabic => "ars", "ars", [], "Najdi Arabic", Arabic;
    MoroccanArabic => "ary", "ary", [], "Moroccan Arabic", Arabic;
    EgyptianArabic => "arz", "arz", [], "Egyptian Arabic", Arabic;
    Assamese => "as", "asm", [], "Assamese", Bengali;
    Azerbaijani => "az", "azj", ["aze"], "Azerbaijani", Latin;
    Bulgarian => "bg", "bul", [], "Bulgarian", Cyrillic;
    Bambara => "bm", "bam", [], "Bambara", Latin;
    Bengali => "bn", "ben", [], "Bengali", Bengali;
    Tibetan => "bo", "bod", [], "Tibetan", Tibetan;
    Catalan => "ca", "cat", [], "Catalan", Latin;
    Cebuano => "ceb", "ceb", [], "Cebuano", Latin;
    CentralKurdish => "ckb", "ckb", [], "Central Kurdish", Arabic;
    Czech => "cs", "ces", [], "Czech", Latin;
    Danish => "da", "dan", [], "Danish", Latin;
    German => "de", "deu", [], "German", Latin;
    Ewe => "ee", "ewe", [], "Ewe", Latin;
    Greek => "el", "ell", [], "Greek", Greek;
    English => "en", "eng", [], "English", Latin;
    Spanish => "es", "spa", [], "Spanish", Latin;
    Estonian => "et", "est", ["ekk"], "Estonian", Latin;
    Basque => "eu", "eus", [], "Basque", Latin;
    Persian => "fa", "pes", ["fas"], "Persian", Arabic;
    Finnish => "fi", "fin", [], "Finnish", Latin;
    Filipino => "fil", "fil", ["tgl", "tl"], "Filipino", Latin;
    French => "fr", "fra", [], "French", Latin;
    NigerianFulfulde => "fuv", "fuv", [], "Nigerian Fulfulde", Latin;
    Guarani => "gn", "grn", [], "Guarani", Latin;
    Gujarati => "gu", "guj", [], "Gujarati", Gujarati;
    Hausa => "ha", "hau", [], "Hausa", Latin;
    Hebrew => "he", "heb", [], "Hebrew", Hebrew;
    Hindi => "hi", "hin", [], "Hindi", Devanagari;
    Croatian => "hr", "hrv", [], "Croatian", Latin;
    HaitianCreole => "ht", "hat", [], "Haitian Creole", Latin;
    Hungarian => "hu", "hun", [], "Hungarian", Latin;
    Armenian => "hy", "hye", [], "Armenian", Armenian;
    Indonesian => "id", "ind", [], "Indonesian", Latin;
    Igbo => "ig", "ibo", [], "Igbo", Latin;
    Ilocano => "ilo", "ilo", [], "Ilocano", Latin;
    Icelandic => "is", "isl", [], "Icelandic", Latin;
    Italian => "it", "ita", [], "Italian", Latin;
    Japanese => "ja", "jpn", [], "Japanese", Japanese;
    Javanese => "jv", "jav", [], "Javanese", Latin;
    Georgian => "ka", "kat", [], "Georgian", Georgian;
    Jingpho => "kac", "kac", [], "Jingpho", Latin;
    Kabuverdianu => "kea", "kea", [], "Kabuverdianu", Latin;
    Kazakh => "kk", "kaz", [], "Kazakh", Cyrillic;
    Khmer => "km", "khm", [], "Khmer", Khmer;
    Kannada => "kn", "kan", [], "Kannada", Kannada;
    Korean => "ko", "kor", [], "Korean", Hangul;
    Kyrgyz => "ky", "kir", [], "Kyrgyz", Cyrillic;
    Luganda => "lg", "lug", [], "Luganda", Latin;
    Lingala => "ln", "lin", [], "Lingala", Latin;
    Lao => "lo", "lao", [], "Lao", Lao;
    Lithuanian => "lt", "lit", [], "Lithuanian", Latin;
    Luo => "luo", "luo", [], "Luo", Latin;
    Latvian => "lv", "lvs", ["lav"], "Latvian", Latin;
    Malagasy => "mg", "plt", ["mlg"], "Malagasy", Latin;
    Maori => "mi", "mri", [], "Maori", Latin;
    Macedonian => "mk", "mkd", [], "Macedonian", Cyrillic;
    Malayalam => "ml", "mal", [], "Malayalam", Malayalam;
    Mongolian => "mn", "khk", ["mon"], "Mongolian", Cyrillic;
    Marathi => "mr", "mar", [], "Marathi", Devanagari;
    Malay => "ms", "zsm", ["msa"], "Malay", Latin;
    Maltese => "mt", "mlt", [], "Maltese", Latin;
    Burmese => "my", "mya", [], "Burmese", Myanmar;
    NorwegianBokmal => "nb", "nob", [], "Norwegian Bokmål", Latin;
    Nepali => "ne", "npi", ["nep"], "Nepali", Devanagari;
    Dutch => "nl", "nld", [], "Dutch", Latin;
    NorthernSotho => "nso", "nso", [], "Northern Sotho", Latin;
    Chichewa => "ny", "nya", [], "Chichewa", Latin;
    Oromo => "om", "gaz", ["orm"], "Oromo", Latin;
    Odia => "or", "ory", ["ori"], "Odia", Odia;
    Punjabi => "pa", "pan", [], "Punjabi", Gurmukhi;
    Polish => "pl", "pol", [], "Polish", Latin;
    Pashto => "ps", "pbt", ["pus"], "Pashto", Arabic;
    Portuguese => "pt", "por", [], "Portuguese", Latin;
    Romanian => "ro", "ron", [], "Romanian", Latin;
    Russian => "ru", "rus", [], "Russian", Cyrillic;
    Kinyarwanda => "rw", "kin", [], "Kinyarwanda", Latin;
    Sindhi => "sd", "snd", [], "Sindhi", Arabic;
    Shan => "shn", "shn", [], "Shan", Myanmar;
    Sinhala => "si", "sin", [], "Sinhala", Sinhala;
    Slovak => "sk", "slk", [], "Slovak", Latin;
    Slovenian => "sl", "slv", [], "Slovenian", Latin;
    Shona => "sn", "sna", [], "Shona", Latin;
    Somali => "so", "som", [], "Somali", Latin;
    Albanian => "sq", "als", ["sqi"], "Albanian", Latin;
    Serbian => "sr", "srp", [], "Serbian", Cyrillic;
    Swati => "ss", "ssw", [], "Swati", Latin;
    SouthernSotho => "st", "sot", [], "Southern Sotho", Latin;
    Sundanese => "su", "sun", [], "Sundanese", Latin;
    Swedish => "sv", "swe", [], "Swedish", Latin;
    Swahili => "sw", "swh", ["swa"], "Swahili", Latin;
    Tamil => "ta", "tam", [], "Tamil", Tamil;
    Telugu => "te", "tel", [], "Telugu", Telugu;
    Tajik => "tg", "tgk", [], "Tajik", Cyrillic;
    Thai => "th", "tha", [], "Thai", Thai;
    Tigrinya => "ti", "tir", [], "Tigrinya", Ethiopic;
    Tswana => "tn", "tsn", [], "Tswana", Latin;
    Turkish => "tr", "tur", [], "Turkish", Latin;
    Tsonga => "ts", "tso", [], "Tsonga", Latin;
    Twi => "tw", "twi", [], "Twi", Latin;
    Ukrainian => "uk", "ukr", [], "Ukrainian", Cyrillic;
    Urdu => "ur", "urd", [], "Urdu", Arabic;
    Uzbek => "uz", "uzn", ["uzb"], "Uzbek", Latin;
    Vietnamese => "vi", "vie", [], "Vietnamese", Latin;
    Waray => "war", "war", [], "Waray", Latin;
    Wolof => "wo", "wol", [], "Wolof", Latin;
    Xhosa => "xh", "xho", [], "Xhosa", Latin;
    Yoruba => "yo", "yor", [], "Yoruba", Latin;
    Chinese => "zh", "zho", ["cmn"], "Chinese", Han;
    Zulu => "zu", "zul", [], "Zulu", Latin;
}

impl Language {
    /// The 42 languages of Global-MMLU, in code order.
    pub const GLOBAL_MMLU: [Language; 42] = {
        use Language::*;
        [
            Amharic, Arabic, Bengali, Czech, German, Greek, English, Spanish, Persian, Filipino,
            French, Hausa, Hebrew, Hindi, Indonesian, Igbo, Italian, Japanese, Korean, Kyrgyz,
            Lithuanian, Malagasy, Malay, Nepali, Dutch, Chichewa, Polish, Portuguese, Romanian,
            Russian, Sinhala, Shona, Somali, Serbian, Swedish, Swahili, Telugu, Turkish, Ukrainian,
            Vietnamese, Yoruba, Chinese,
        ]
    };

    /// Looks a language up, case-insensitively, by any code the benchmarks name it by: ISO
    /// 639-1 (`ig`), ISO 639-3 (`ibo`, and the macrolanguage codes of
    /// [`Language::aliases`]), FLORES-200 (`ibo_Latn`; the script must be the language's,
    /// see [`Language::script`]) or an MMMLU locale (`YO-NG`, `YO_NG`). `None` if no
    /// language known here has that code.
    pub fn from_code(code: &str) -> Option<Language> {
        let code = code.trim().to_ascii_lowercase();
        if let Some(l) = Language::from_plain_code(&code) {
            return Some(l);
        }
        let (head, tail) = code.split_once(['_', '-'])?;
        match (head.len(), tail.len()) {
            // FLORES-200: `ibo_latn`.
            (3, 4) => Language::from_plain_code(head)
                .filter(|l| l.script().flores_tag().eq_ignore_ascii_case(tail)),
            // MMMLU locale: `yo-ng`, `ar_xy`.
            (2, 2) => Language::from_plain_code(head),
            _ => None,
        }
    }

    /// The FLORES-200 code of the language in its script (`ibo_Latn`, `amh_Ethi`,
    /// `zho_Hans`), as Belebele names its files.
    pub fn flores_code(self) -> String {
        format!("{}_{}", self.iso639_3(), self.script().flores_tag())
    }

    /// Parses a comma-separated list of codes (`"en,de, ar"`).
    ///
    /// # Errors
    /// [`DataError::InvalidList`] for a list with no code at all or with an empty item
    /// (`en,,de`, naming its position); [`DataError::UnknownLanguage`] for the first code
    /// no benchmark known here has, with the nearest known codes.
    pub fn parse_list(list: &str) -> Result<Vec<Language>, DataError> {
        Language::parse_list_in(list, &[])
    }

    /// As [`Language::parse_list`], for data that holds `data_has`: an unknown code's
    /// error also lists those languages (see [`crate::path_languages`]).
    ///
    /// # Errors
    /// As [`Language::parse_list`].
    pub fn parse_list_in(list: &str, data_has: &[Language]) -> Result<Vec<Language>, DataError> {
        // A list given but empty (`--languages ,`) is a mistake, never "everything"; so is
        // an empty item in a list (`en,,de`), which would silently drop what was meant.
        let items = list_items(list, "language code").map_err(|reason| DataError::InvalidList {
            what: "languages",
            list: list.to_owned(),
            reason,
        })?;
        items
            .into_iter()
            .map(|code| {
                code.parse().map_err(|e| match e {
                    DataError::UnknownLanguage {
                        code,
                        context,
                        nearest,
                        ..
                    } => DataError::UnknownLanguage {
                        code,
                        context,
                        nearest,
                        data_has: data_has.to_vec(),
                    },
                    other => other,
                })
            })
            .collect()
    }
}

/// The items of a comma-separated list, trimmed; `Err` says, in words, why the list is
/// refused: it has no item at all (`""`, `","`), or its item at a 1-based position is empty
/// (`en,,de`, `en,`). `item` names one entry (`language code`).
pub(crate) fn list_items<'a>(list: &'a str, item: &str) -> Result<Vec<&'a str>, String> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().all(|s| s.is_empty()) {
        let example = if item == "domain" {
            "stem,humanities"
        } else {
            "ig,yo"
        };
        return Err(format!(
            "the list is empty; name at least one {item} (as in `{example}`), or leave the option out"
        ));
    }
    match items.iter().position(|s| s.is_empty()) {
        Some(i) => Err(format!(
            "item {} of {} in `{}` is empty; separate the items with single commas",
            i + 1,
            items.len(),
            list.trim()
        )),
        None => Ok(items),
    }
}

/// Edit distance (Levenshtein) between two short strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The known languages nearest to an unknown `code`: those one edit away from one of their
/// codes (ISO 639-1, ISO 639-3, an alias, FLORES-200) or two from their name, nearest
/// first, at most five; a code that names a language (`igbo`) suggests it alone.
pub(crate) fn nearest_languages(code: &str) -> Vec<Language> {
    let wanted = code.trim().to_ascii_lowercase();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(usize, Language)> = Language::ALL
        .iter()
        .filter_map(|&l| {
            let flores = l.flores_code().to_ascii_lowercase();
            let by_code = [l.code(), l.iso639_3(), flores.as_str()]
                .into_iter()
                .chain(l.aliases().iter().copied())
                .map(|c| edit_distance(&wanted, c))
                .min()
                .unwrap_or(usize::MAX);
            let name = l.name().to_ascii_lowercase();
            let by_name = if wanted.len() >= 3 && name.starts_with(&wanted) {
                0
            } else {
                edit_distance(&wanted, &name)
            };
            let score = if by_name == 0 {
                0
            } else if by_code <= 1 {
                by_code
            } else if by_name <= 2 && wanted.len() >= 4 {
                by_name
            } else {
                return None;
            };
            Some((score, l))
        })
        .collect();
    scored.sort_by_key(|&(score, l)| (score, l.code()));
    if scored.first().is_some_and(|(score, _)| *score == 0) {
        scored.retain(|(score, _)| *score == 0);
    }
    scored.into_iter().take(5).map(|(_, l)| l).collect()
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Language {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::from_code(s).ok_or_else(|| {
            // A FLORES code in a second script (`hin_Latn`, `zho_Hant`) names a language
            // known here in another script: say so, rather than "unknown".
            let context = s
                .trim()
                .split_once('_')
                .and_then(|(head, _)| Language::from_plain_code(&head.to_ascii_lowercase()))
                .map(|l| {
                    format!(
                        "{} is known in its {} script only ({}); variants in a second script are not read",
                        l.name(),
                        l.script().flores_tag(),
                        l.flores_code()
                    )
                });
            DataError::UnknownLanguage {
                code: s.to_owned(),
                context,
                nearest: nearest_languages(s),
                data_has: Vec::new(),
            }
        })
    }
}

impl Serialize for Language {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Language::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown language code `{code}`")))
    }
}

/// How much data and model support a language has, in a study's own classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceLevel {
    /// Low-resource.
    Low,
    /// Mid-resource.
    Mid,
    /// High-resource.
    High,
}

impl ResourceLevel {
    /// The level of a class of Joshi et al. (2020): classes 0-2 ("The Left-Behinds",
    /// "The Scraping-Bys", "The Hopefuls") are low, 3 ("The Rising Stars") mid, 4-5 ("The
    /// Underdogs", "The Winners") high. With this rule the study's own labels agree with
    /// Joshi for eight of its nine languages; Arabic is class 5 in Joshi and low in the
    /// study, which is why the study's map stays the default for its languages.
    pub fn from_joshi_class(class: u8) -> ResourceLevel {
        match class {
            0..=2 => ResourceLevel::Low,
            3 => ResourceLevel::Mid,
            _ => ResourceLevel::High,
        }
    }

    /// Lower-case name: `low`, `mid`, `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceLevel::Low => "low",
            ResourceLevel::Mid => "mid",
            ResourceLevel::High => "high",
        }
    }
}

impl fmt::Display for ResourceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceLevel {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(ResourceLevel::Low),
            "mid" => Ok(ResourceLevel::Mid),
            "high" => Ok(ResourceLevel::High),
            _ => Err(DataError::InvalidConfig(format!(
                "unknown resource level `{s}` (expected low, mid or high)"
            ))),
        }
    }
}

/// Which source classified a language's [`ResourceLevel`] in a [`ResourceMap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LevelSource {
    /// The study's own map ([`ResourceMap::study`]).
    Study,
    /// The class, 0 to 5, of Joshi et al. (2020), mapped by
    /// [`ResourceLevel::from_joshi_class`] (see [`ResourceMap::joshi2020`]).
    Joshi2020 {
        /// The class, 0 ("The Left-Behinds") to 5 ("The Winners").
        class: u8,
    },
    /// A file the user gave ([`ResourceMap::from_file`]).
    File {
        /// The file.
        path: std::path::PathBuf,
    },
    /// Set in code or on the command line ([`ResourceMap::set`], [`ResourceMap::parse`]).
    Given,
}

impl fmt::Display for LevelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelSource::Study => f.write_str("the study's map"),
            LevelSource::Joshi2020 { class } => write!(f, "Joshi et al. (2020) class {class}"),
            LevelSource::File { path } => write!(f, "{}", path.display()),
            LevelSource::Given => f.write_str("given"),
        }
    }
}

/// The classes of Joshi et al. (2020) for the languages known here: `code,name_in_file,
/// class,note`, derived from `lang2tax.txt` of microsoft/linguisticdiversity (see
/// `data/README.md` in this crate for the source and every judgement call).
const JOSHI_2020: &str = include_str!("../data/joshi2020-classes.csv");

/// Which [`ResourceLevel`] each language has: a study's classification, not a fact about the
/// language, with the source that classified each language. Languages the map does not
/// name have no level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMap {
    levels: BTreeMap<Language, ResourceLevel>,
    #[serde(default)]
    sources: BTreeMap<Language, LevelSource>,
}

impl ResourceMap {
    /// The map of Slomiany et al., "One Model, Many Worlds": low am, yo, ig, ky, ar; mid he;
    /// high en, tr, de. Only these nine languages.
    pub fn study() -> ResourceMap {
        use Language::*;
        use ResourceLevel::*;
        let mut map = ResourceMap::default();
        for (l, r) in [
            (Amharic, Low),
            (Yoruba, Low),
            (Igbo, Low),
            (Kyrgyz, Low),
            (Arabic, Low),
            (Hebrew, Mid),
            (English, High),
            (Turkish, High),
            (German, High),
        ] {
            map.insert(l, r, LevelSource::Study);
        }
        map
    }

    /// Every language known here that Joshi et al. (2020) classify (111 of 117; the
    /// Mesopotamian, Levantine, Najdi and Moroccan Arabic varieties, Kabuverdianu and Luo
    /// have no entry), at the level [`ResourceLevel::from_joshi_class`] gives its class.
    ///
    /// Source: P. Joshi, S. Santy, A. Budhiraja, K. Bali, M. Choudhury, "The State and Fate
    /// of Linguistic Diversity and Inclusion in the NLP World", ACL 2020,
    /// doi:10.18653/v1/2020.acl-main.560; the class file `lang2tax.txt` of
    /// microsoft/linguisticdiversity.
    pub fn joshi2020() -> ResourceMap {
        let mut map = ResourceMap::default();
        for line in JOSHI_2020.lines().skip(1) {
            let mut cells = line.splitn(4, ',');
            let (Some(code), Some(_name), Some(class)) = (cells.next(), cells.next(), cells.next())
            else {
                continue;
            };
            let (Some(language), Ok(class)) = (Language::from_code(code), class.parse::<u8>())
            else {
                continue;
            };
            map.insert(
                language,
                ResourceLevel::from_joshi_class(class),
                LevelSource::Joshi2020 { class },
            );
        }
        map
    }

    /// The default classification: the study's map for its nine languages, Joshi et al.
    /// (2020) for every other language they classify ([`ResourceMap::study`] over
    /// [`ResourceMap::joshi2020`]).
    pub fn classified() -> ResourceMap {
        let mut map = ResourceMap::joshi2020();
        map.overlay(&ResourceMap::study());
        map
    }

    /// Reads a map from a file, one `code,level` or `code=level` per line (`am,low`,
    /// `ibo_Latn=mid`); blank lines and lines starting with `#` are skipped, and a first
    /// line `code,level` or `language,level` is a header. A level is `low`, `mid` or `high`
    /// (any case), nothing else: no alias such as `medium`. Every entry's source is the
    /// file.
    ///
    /// # Errors
    /// [`DataError::Io`] if the file cannot be read; [`DataError::InvalidLine`] naming the
    /// file and the line for an entry that is not `code,level`, an unknown code, an unknown
    /// level, or a language listed a second time (under any of its codes: `ig` and `ibo`
    /// are one language), naming both lines.
    pub fn from_file(path: &std::path::Path) -> Result<ResourceMap, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let mut map = ResourceMap::default();
        let mut first_line: BTreeMap<Language, (usize, String)> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason: String| DataError::InvalidLine {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let Some((code, level)) = line.split_once([',', '=']) else {
                return Err(invalid(format!(
                    "`{line}` is not of the form code,level (as `am,low`)"
                )));
            };
            let (code, level) = (code.trim(), level.trim());
            if i == 0 && ["code", "language"].contains(&code.to_ascii_lowercase().as_str()) {
                continue;
            }
            let language = Language::from_code(code).ok_or_else(|| {
                let nearest: Vec<String> = nearest_languages(code)
                    .iter()
                    .map(|l| format!("{} ({})", l.code(), l.name()))
                    .collect();
                let nearest = if nearest.is_empty() {
                    String::new()
                } else {
                    format!("; nearest known codes: {}", nearest.join(", "))
                };
                invalid(format!(
                    "unknown language code `{code}`{nearest}; every known code is listed in docs/DATA.md (Languages)"
                ))
            })?;
            let level: ResourceLevel = match level.to_ascii_lowercase().as_str() {
                "low" => ResourceLevel::Low,
                "mid" => ResourceLevel::Mid,
                "high" => ResourceLevel::High,
                _ => {
                    return Err(invalid(format!(
                        "unknown resource level `{level}` for `{code}`; a level is low, mid or high"
                    )));
                }
            };
            if let Some((first, as_written)) = first_line.get(&language) {
                return Err(invalid(format!(
                    "{} ({}) is listed twice: line {first} (`{as_written}`) and line {} (`{line}`); keep one",
                    language.code(),
                    language.name(),
                    i + 1
                )));
            }
            first_line.insert(language, (i + 1, line.to_owned()));
            map.insert(
                language,
                level,
                LevelSource::File {
                    path: path.to_owned(),
                },
            );
        }
        Ok(map)
    }

    /// The default classification ([`ResourceMap::classified`]) with the entries of
    /// `file`, when given, over it: what `--resource-map FILE` selects.
    ///
    /// # Errors
    /// As [`ResourceMap::from_file`].
    pub fn classified_with(file: Option<&std::path::Path>) -> Result<ResourceMap, DataError> {
        let mut map = ResourceMap::classified();
        if let Some(file) = file {
            map.overlay(&ResourceMap::from_file(file)?);
        }
        Ok(map)
    }

    /// Puts every entry of `other` over this map's (level and source).
    pub fn overlay(&mut self, other: &ResourceMap) {
        for (l, r) in other.iter() {
            let source = other.source(l).cloned().unwrap_or(LevelSource::Given);
            self.insert(l, r, source);
        }
    }

    /// The level of `language`, if the map names it.
    pub fn level(&self, language: Language) -> Option<ResourceLevel> {
        self.levels.get(&language).copied()
    }

    /// Which source classified `language`, if the map names it.
    pub fn source(&self, language: Language) -> Option<&LevelSource> {
        self.sources.get(&language)
    }

    /// Sets the level of `language`, replacing any earlier one; its source is
    /// [`LevelSource::Given`].
    pub fn set(&mut self, language: Language, level: ResourceLevel) {
        self.insert(language, level, LevelSource::Given);
    }

    fn insert(&mut self, language: Language, level: ResourceLevel, source: LevelSource) {
        self.levels.insert(language, level);
        self.sources.insert(language, source);
    }

    /// The languages the map names, with their levels, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (Language, ResourceLevel)> + '_ {
        self.levels.iter().map(|(l, r)| (*l, *r))
    }

    /// One line per language of `languages`: its code, level and source, or that no
    /// source classifies it (`ig  low   the study's map`). For a report's "classified by
    /// which source" table.
    pub fn describe(&self, languages: &[Language]) -> String {
        let mut s = String::new();
        for &l in languages {
            match (self.level(l), self.source(l)) {
                (Some(r), Some(src)) => {
                    s.push_str(&format!("{:<4} {:<5} {src}\n", l.code(), r.as_str()))
                }
                (Some(r), None) => {
                    s.push_str(&format!("{:<4} {:<5} given\n", l.code(), r.as_str()))
                }
                _ => s.push_str(&format!("{:<4} -     no source classifies it\n", l.code())),
            }
        }
        s
    }

    /// Parses `"am=low,he=mid,en=high"`.
    ///
    /// # Errors
    /// [`DataError::UnknownLanguage`] or [`DataError::InvalidConfig`] naming the bad entry.
    pub fn parse(spec: &str) -> Result<ResourceMap, DataError> {
        let mut map = ResourceMap::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (code, level) = entry.split_once('=').ok_or_else(|| {
                DataError::InvalidConfig(format!(
                    "resource map entry `{entry}` is not of the form code=level"
                ))
            })?;
            map.set(code.parse()?, level.parse()?);
        }
        Ok(map)
    }
}

impl FromIterator<(Language, ResourceLevel)> for ResourceMap {
    fn from_iter<I: IntoIterator<Item = (Language, ResourceLevel)>>(iter: I) -> Self {
        let mut map = ResourceMap::default();
        for (l, r) in iter {
            map.set(l, r);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_names_one_language() {
        assert_eq!(Language::GLOBAL_MMLU.len(), 42);
        assert_eq!(Language::ALL.len(), 117);
        let mut seen = std::collections::BTreeMap::new();
        for &l in Language::ALL {
            for code in [l.code(), l.iso639_3()]
                .into_iter()
                .chain(l.aliases().iter().copied())
            {
                let before = seen.insert(code, l);
                assert!(
                    before.is_none() || before == Some(l),
                    "{code}: {before:?} and {l:?}"
                );
                assert_eq!(Language::from_code(code), Some(l), "{code}");
            }
            assert_eq!(
                Language::from_code(&l.flores_code()),
                Some(l),
                "{}",
                l.flores_code()
            );
        }
        let mut sorted = Language::ALL.to_vec();
        sorted.sort_by_key(|l| l.code());
        assert_eq!(sorted, Language::ALL, "ALL is in code order");
    }

    #[test]
    fn benchmark_codes_parse() {
        let check = |code: &str, l: Language| {
            assert_eq!(code.parse::<Language>().unwrap(), l, "{code}");
        };
        check("ibo_Latn", Language::Igbo);
        check("amh_Ethi", Language::Amharic);
        check("swa", Language::Swahili);
        check("swh_Latn", Language::Swahili);
        check("gaz_Latn", Language::Oromo);
        check("zho_Hans", Language::Chinese);
        check("YO-NG", Language::Yoruba);
        check("AR_XY", Language::Arabic);
        check("tgl_Latn", Language::Filipino);
        check("acm_Arab", Language::MesopotamianArabic);
        assert_eq!(Language::Oromo.flores_code(), "gaz_Latn");
        assert_eq!(Language::Burmese.script(), Script::Myanmar);
        // A FLORES code in a second script is refused, saying why.
        for code in ["hin_Latn", "zho_Hant", "ibo_Ethi"] {
            let err = code.parse::<Language>().unwrap_err().to_string();
            assert!(err.contains("second script"), "{code}: {err}");
        }
        assert!("xyz_Latn".parse::<Language>().is_err());
    }

    #[test]
    fn joshi_classes_map_by_the_documented_rule() {
        let m = ResourceMap::joshi2020();
        assert_eq!(m.iter().count(), 111);
        let check = |l: Language, class: u8, level: ResourceLevel| {
            assert_eq!(m.level(l), Some(level), "{l}");
            assert_eq!(m.source(l), Some(&LevelSource::Joshi2020 { class }), "{l}");
        };
        check(Language::Igbo, 1, ResourceLevel::Low);
        check(Language::Yoruba, 2, ResourceLevel::Low);
        check(Language::Hebrew, 3, ResourceLevel::Mid);
        check(Language::Turkish, 4, ResourceLevel::High);
        check(Language::Arabic, 5, ResourceLevel::High);
        check(Language::Zulu, 2, ResourceLevel::Low);
        check(Language::Afrikaans, 3, ResourceLevel::Mid);
        assert_eq!(m.level(Language::Luo), None);
        // The study's map wins for its languages; Joshi classifies the rest.
        let c = ResourceMap::classified();
        assert_eq!(c.level(Language::Arabic), Some(ResourceLevel::Low));
        assert_eq!(c.source(Language::Arabic), Some(&LevelSource::Study));
        assert_eq!(
            c.source(Language::Wolof),
            Some(&LevelSource::Joshi2020 { class: 2 })
        );
        let table = c.describe(&[Language::Igbo, Language::Wolof, Language::Luo]);
        assert_eq!(
            table,
            "ig   low   the study's map\nwo   low   Joshi et al. (2020) class 2\nluo  -     no source classifies it\n"
        );
    }

    #[test]
    fn a_resource_file_overrides_and_names_its_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levels.csv");
        std::fs::write(&path, "code,level\n# mine\nar,high\nwol_Latn=mid\n").unwrap();
        let m = ResourceMap::classified_with(Some(&path)).unwrap();
        assert_eq!(m.level(Language::Arabic), Some(ResourceLevel::High));
        assert_eq!(m.level(Language::Wolof), Some(ResourceLevel::Mid));
        assert_eq!(
            m.source(Language::Wolof),
            Some(&LevelSource::File { path: path.clone() })
        );
        assert_eq!(m.source(Language::Igbo), Some(&LevelSource::Study));
        // Bad lines name the file and the line: an unknown code (with the nearest ones), a
        // line that is not code,level, a level other than low, mid or high (no `medium`),
        // a language listed twice under any of its codes (both lines named).
        let cases: &[(&str, &str)] = &[
            (
                "ar,high\nqq,low\n",
                "levels.csv: line 2: unknown language code `qq`",
            ),
            (
                "ar high\n",
                "levels.csv: line 1: `ar high` is not of the form code,level",
            ),
            (
                "# levels\nde,medium\n",
                "levels.csv: line 2: unknown resource level `medium` for `de`; a level is low, mid or high",
            ),
            (
                "code,level\nig,high\n\nen,high\nibo,low\n",
                "levels.csv: line 5: ig (Igbo) is listed twice: line 2 (`ig,high`) and line 5 (`ibo,low`); keep one",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let err = ResourceMap::from_file(&path).unwrap_err();
            assert!(matches!(err, DataError::InvalidLine { .. }), "{err:?}");
            let err = err.to_string();
            assert!(err.contains(want), "{text:?}: expected {want:?} in {err}");
        }
        std::fs::write(&path, "de,MID\nen,High\n").unwrap();
        let m = ResourceMap::from_file(&path).unwrap();
        assert_eq!(m.level(Language::German), Some(ResourceLevel::Mid));
        assert_eq!(m.level(Language::English), Some(ResourceLevel::High));
    }

    #[test]
    fn parses_codes_and_rejects_unknown() {
        assert_eq!("EN".parse::<Language>().unwrap(), Language::English);
        assert_eq!(Language::Igbo.script(), Script::Latin);
        assert_eq!(Language::Amharic.script(), Script::Ethiopic);
        // An unknown code names the nearest known codes and where every code is listed,
        // not all 117 of them.
        let cases: &[(&str, &str)] = &[
            (
                "ibb",
                "unknown language code `ibb`; nearest known codes: ig (Igbo); every known code is listed in docs/DATA.md (Languages)",
            ),
            ("igbo", "nearest known codes: ig (Igbo);"),
            ("amhr", "nearest known codes: am (Amharic);"),
            (
                "xqzw",
                "unknown language code `xqzw`; every known code is listed in docs/DATA.md",
            ),
        ];
        for (code, want) in cases {
            let msg = code.parse::<Language>().unwrap_err().to_string();
            assert!(msg.contains(want), "{code}: expected {want:?} in {msg}");
            assert!(!msg.contains(", zh, zu"), "{msg}");
        }
        // With the data's languages known, they are listed too.
        let msg = Language::parse_list_in("ig,yy", &[Language::Igbo, Language::Yoruba])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("; the data has ig (Igbo), yo (Yoruba);"),
            "{msg}"
        );
        assert_eq!(
            Language::parse_list("en, de,ar").unwrap(),
            vec![Language::English, Language::German, Language::Arabic]
        );
        // A list given but empty is refused, not read as "every language", and said plainly.
        for empty in [",", " ", ""] {
            let err = Language::parse_list(empty).unwrap_err();
            assert!(
                matches!(
                    err,
                    DataError::InvalidList {
                        what: "languages",
                        ..
                    }
                ),
                "{err:?}"
            );
            let err = err.to_string();
            assert_eq!(
                err,
                "languages: the list is empty; name at least one language code (as in `ig,yo`), or leave the option out",
                "{empty:?}"
            );
            let err = crate::Domain::parse_list(empty).unwrap_err().to_string();
            assert!(
                err.starts_with("domains: the list is empty;"),
                "{empty:?}: {err}"
            );
        }
        // An empty item is refused, naming its position, not skipped.
        for (list, domains, position) in [
            ("en,,de", "stem,,medical", "item 2 of 3 in `"),
            ("en, ,de", "stem, ,medical", "item 2 of 3 in `"),
            (",en", ",stem", "item 1 of 2 in `"),
            ("en,de,", "stem,medical,", "item 3 of 3 in `"),
        ] {
            let err = Language::parse_list(list).unwrap_err().to_string();
            assert!(
                err.starts_with("languages: ") && err.contains(position) && !err.contains('"'),
                "{list:?}: {err}"
            );
            let err = crate::Domain::parse_list(domains).unwrap_err().to_string();
            assert!(err.contains(position), "{domains:?}: {err}");
        }
        assert_eq!(
            Language::parse_list("en,,de").unwrap_err().to_string(),
            "languages: item 2 of 3 in `en,,de` is empty; separate the items with single commas"
        );
    }

    #[test]
    fn docs_list_every_known_code() {
        // The error for an unknown code points to docs/DATA.md instead of listing all 117:
        // the list there must name every language by its code and ISO 639-3 code.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/DATA.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let missing: Vec<String> = Language::ALL
            .iter()
            .flat_map(|l| [l.code(), l.iso639_3()])
            .filter(|c| !doc.contains(&format!("`{c}`")))
            .map(str::to_owned)
            .collect();
        assert!(missing.is_empty(), "docs/DATA.md lacks {missing:?}");
    }

    #[test]
    fn study_map_matches_the_paper() {
        let m = ResourceMap::study();
        let level = |c: &str| m.level(c.parse().unwrap());
        for c in ["am", "yo", "ig", "ky", "ar"] {
            assert_eq!(level(c), Some(ResourceLevel::Low), "{c}");
        }
        assert_eq!(level("he"), Some(ResourceLevel::Mid));
        for c in ["en", "tr", "de"] {
            assert_eq!(level(c), Some(ResourceLevel::High), "{c}");
        }
        assert_eq!(level("fr"), None);
        assert_eq!(m.iter().count(), 9);
    }

    #[test]
    fn user_maps_parse() {
        let m = ResourceMap::parse("sw=low, fr=high").unwrap();
        assert_eq!(m.level(Language::Swahili), Some(ResourceLevel::Low));
        assert_eq!(m.level(Language::French), Some(ResourceLevel::High));
        assert!(ResourceMap::parse("sw").is_err());
        assert!(ResourceMap::parse("sw=huge").is_err());
        assert!(ResourceMap::parse("qq=low").is_err());
    }
}
