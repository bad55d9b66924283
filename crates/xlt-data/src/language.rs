//! Languages of Global-MMLU and the resource levels a study assigns to them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DataError;

/// The writing system a language is written in, as Global-MMLU writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Script {
    /// Arabic script (ar, fa).
    Arabic,
    /// Bengali-Assamese script (bn).
    Bengali,
    /// Cyrillic script (ky, ru, sr, uk).
    Cyrillic,
    /// Devanagari script (hi, ne).
    Devanagari,
    /// Ge'ez script (am).
    Ethiopic,
    /// Greek script (el).
    Greek,
    /// Han characters (zh).
    Han,
    /// Hangul (ko).
    Hangul,
    /// Hebrew script (he).
    Hebrew,
    /// Kanji with hiragana and katakana (ja).
    Japanese,
    /// Latin script.
    Latin,
    /// Sinhala script (si).
    Sinhala,
    /// Telugu script (te).
    Telugu,
}

macro_rules! languages {
    ($($variant:ident => $code:literal, $name:literal, $script:ident;)*) => {
        /// One of the 42 languages of Global-MMLU, named by its code.
        ///
        /// Codes are ISO 639-1, except Filipino, which Global-MMLU names `fil` (ISO 639-2),
        /// there being no ISO 639-1 code for it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Language {
            $(
                #[doc = $name]
                $variant,
            )*
        }

        impl Language {
            /// Every language of Global-MMLU, in code order.
            pub const ALL: &'static [Language] = &[$(Language::$variant),*];

            /// The code Global-MMLU uses for this language (`"en"`, `"ig"`, `"fil"`).
            pub fn code(self) -> &'static str {
                match self { $(Language::$variant => $code),* }
            }

            /// The English name of the language.
            pub fn name(self) -> &'static str {
                match self { $(Language::$variant => $name),* }
            }

            /// The script Global-MMLU writes this language in.
            pub fn script(self) -> Script {
                match self { $(Language::$variant => Script::$script),* }
            }

            /// Looks a language up by its code, case-insensitively; `None` if Global-MMLU has
            /// no such language.
            pub fn from_code(code: &str) -> Option<Language> {
                let code = code.trim().to_ascii_lowercase();
                match code.as_str() { $($code => Some(Language::$variant),)* _ => None }
            }
        }
    };
}

languages! {
    Amharic => "am", "Amharic", Ethiopic;
    Arabic => "ar", "Arabic", Arabic;
    Bengali => "bn", "Bengali", Bengali;
    Czech => "cs", "Czech", Latin;
    German => "de", "German", Latin;
    Greek => "el", "Greek", Greek;
    English => "en", "English", Latin;
    Spanish => "es", "Spanish", Latin;
    Persian => "fa", "Persian", Arabic;
    Filipino => "fil", "Filipino", Latin;
    French => "fr", "French", Latin;
    Hausa => "ha", "Hausa", Latin;
    Hebrew => "he", "Hebrew", Hebrew;
    Hindi => "hi", "Hindi", Devanagari;
    Indonesian => "id", "Indonesian", Latin;
    Igbo => "ig", "Igbo", Latin;
    Italian => "it", "Italian", Latin;
    Japanese => "ja", "Japanese", Japanese;
    Korean => "ko", "Korean", Hangul;
    Kyrgyz => "ky", "Kyrgyz", Cyrillic;
    Lithuanian => "lt", "Lithuanian", Latin;
    Malagasy => "mg", "Malagasy", Latin;
    Malay => "ms", "Malay", Latin;
    Nepali => "ne", "Nepali", Devanagari;
    Dutch => "nl", "Dutch", Latin;
    Chichewa => "ny", "Chichewa", Latin;
    Polish => "pl", "Polish", Latin;
    Portuguese => "pt", "Portuguese", Latin;
    Romanian => "ro", "Romanian", Latin;
    Russian => "ru", "Russian", Cyrillic;
    Sinhala => "si", "Sinhala", Sinhala;
    Shona => "sn", "Shona", Latin;
    Somali => "so", "Somali", Latin;
    Serbian => "sr", "Serbian", Cyrillic;
    Swedish => "sv", "Swedish", Latin;
    Swahili => "sw", "Swahili", Latin;
    Telugu => "te", "Telugu", Telugu;
    Turkish => "tr", "Turkish", Latin;
    Ukrainian => "uk", "Ukrainian", Cyrillic;
    Vietnamese => "vi", "Vietnamese", Latin;
    Yoruba => "yo", "Yoruba", Latin;
    Chinese => "zh", "Chinese", Han;
}

impl Language {
    /// Parses a comma-separated list of codes (`"en,de, ar"`).
    ///
    /// # Errors
    /// [`DataError::UnknownLanguage`] for the first code Global-MMLU does not have, or for a
    /// list with no code at all.
    pub fn parse_list(list: &str) -> Result<Vec<Language>, DataError> {
        let parsed: Vec<Language> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // A list given but empty (`--languages ,`) is a mistake, never "everything".
        if parsed.is_empty() {
            return Err(DataError::UnknownLanguage {
                code: format!("{list:?} (an empty list)"),
                context: None,
            });
        }
        Ok(parsed)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Language {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::from_code(s).ok_or_else(|| DataError::UnknownLanguage {
            code: s.to_owned(),
            context: None,
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
            "mid" | "medium" => Ok(ResourceLevel::Mid),
            "high" => Ok(ResourceLevel::High),
            _ => Err(DataError::InvalidConfig(format!(
                "unknown resource level `{s}` (expected low, mid or high)"
            ))),
        }
    }
}

/// Which [`ResourceLevel`] each language has: a study's classification, not a fact about the
/// language. Languages the map does not name have no level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMap {
    levels: BTreeMap<Language, ResourceLevel>,
}

impl ResourceMap {
    /// The map of Slomiany et al., "One Model, Many Worlds": low am, yo, ig, ky, ar; mid he;
    /// high en, tr, de.
    pub fn study() -> ResourceMap {
        use Language::*;
        use ResourceLevel::*;
        [
            (Amharic, Low),
            (Yoruba, Low),
            (Igbo, Low),
            (Kyrgyz, Low),
            (Arabic, Low),
            (Hebrew, Mid),
            (English, High),
            (Turkish, High),
            (German, High),
        ]
        .into_iter()
        .collect()
    }

    /// The level of `language`, if the map names it.
    pub fn level(&self, language: Language) -> Option<ResourceLevel> {
        self.levels.get(&language).copied()
    }

    /// Sets the level of `language`, replacing any earlier one.
    pub fn set(&mut self, language: Language, level: ResourceLevel) {
        self.levels.insert(language, level);
    }

    /// The languages the map names, with their levels, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (Language, ResourceLevel)> + '_ {
        self.levels.iter().map(|(l, r)| (*l, *r))
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
        ResourceMap {
            levels: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_two_languages_with_unique_codes() {
        assert_eq!(Language::ALL.len(), 42);
        let codes: std::collections::BTreeSet<_> = Language::ALL.iter().map(|l| l.code()).collect();
        assert_eq!(codes.len(), 42);
        for &l in Language::ALL {
            assert_eq!(Language::from_code(l.code()), Some(l));
        }
    }

    #[test]
    fn parses_codes_and_rejects_unknown() {
        assert_eq!("EN".parse::<Language>().unwrap(), Language::English);
        assert_eq!(Language::Igbo.script(), Script::Latin);
        assert_eq!(Language::Amharic.script(), Script::Ethiopic);
        let err = "xx".parse::<Language>().unwrap_err();
        // The message lists every code, so that a typo can be corrected from it.
        let msg = err.to_string();
        assert!(
            msg.starts_with("unknown language code `xx`; known codes: am, ar, ")
                && msg.ends_with(", yo, zh"),
            "{msg}"
        );
        assert_eq!(
            Language::parse_list("en, de,ar").unwrap(),
            vec![Language::English, Language::German, Language::Arabic]
        );
        // A list given but empty is refused, not read as "every language".
        for empty in [",", " ", ""] {
            let err = Language::parse_list(empty).unwrap_err().to_string();
            assert!(err.contains("an empty list"), "{empty:?}: {err}");
            let err = crate::Domain::parse_list(empty).unwrap_err().to_string();
            assert!(err.contains("an empty list"), "{empty:?}: {err}");
        }
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
