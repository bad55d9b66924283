//! Which repository, of which kind, at which revision.

use std::fmt;

use crate::error::HubError;

/// The branch a repository is read from when no revision is given.
pub const DEFAULT_REVISION: &str = "main";

/// The kind of a Hub repository: it decides the URL prefix and the cache folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// A dataset: `/datasets/Org/Name`, cache folder `datasets--Org--Name`.
    Dataset,
    /// A model: `/Org/Name`, cache folder `models--Org--Name`.
    Model,
}

impl RepoKind {
    /// `dataset` or `model`, as `huggingface-cli --repo-type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Dataset => "dataset",
            RepoKind::Model => "model",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            RepoKind::Dataset => "datasets",
            RepoKind::Model => "models",
        }
    }

    fn hf(self) -> hf_hub::RepoType {
        match self {
            RepoKind::Dataset => hf_hub::RepoType::Dataset,
            RepoKind::Model => hf_hub::RepoType::Model,
        }
    }
}

/// A repository at a revision: `dataset CohereLabs/Global-MMLU@main`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubRepo {
    /// Dataset or model.
    pub kind: RepoKind,
    /// `Org/Name` (or a bare `name` for legacy models).
    pub id: String,
    /// A branch, tag or commit hash; `main` by default.
    pub revision: String,
}

impl HubRepo {
    /// A repository of `kind` at `revision` (default [`DEFAULT_REVISION`]).
    ///
    /// # Errors
    /// [`HubError::Invalid`] for an id that is not `Org/Name` or `name` made of letters,
    /// digits, `-`, `_` and `.`, or an empty revision.
    pub fn new(kind: RepoKind, id: &str, revision: Option<&str>) -> Result<HubRepo, HubError> {
        let invalid = |reason: &str| HubError::Invalid {
            value: id.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 {
            return Err(invalid("a repository id is `Org/Name`"));
        }
        for part in &parts {
            let ok = !part.is_empty()
                && !part.starts_with(['.', '-'])
                && !part.contains("--")
                && !part.contains("..")
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(invalid(
                    "each part of `Org/Name` is letters, digits, `-`, `_` or `.`",
                ));
            }
        }
        let revision = revision.unwrap_or(DEFAULT_REVISION);
        if revision.is_empty() || revision.contains("..") {
            return Err(HubError::Invalid {
                value: format!("{id}@{revision}"),
                reason: "the revision is empty or contains `..`".to_owned(),
            });
        }
        Ok(HubRepo {
            kind,
            id: id.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// A dataset repository; see [`HubRepo::new`].
    ///
    /// # Errors
    /// As [`HubRepo::new`].
    pub fn dataset(id: &str, revision: Option<&str>) -> Result<HubRepo, HubError> {
        HubRepo::new(RepoKind::Dataset, id, revision)
    }

    /// A model repository; see [`HubRepo::new`].
    ///
    /// # Errors
    /// As [`HubRepo::new`].
    pub fn model(id: &str, revision: Option<&str>) -> Result<HubRepo, HubError> {
        HubRepo::new(RepoKind::Model, id, revision)
    }

    /// The repository's folder in the cache: `datasets--Org--Name`, `models--Org--Name`.
    pub fn folder_name(&self) -> String {
        format!("{}--{}", self.kind.plural(), self.id.replace('/', "--"))
    }

    /// The repository's page: `<endpoint>/datasets/Org/Name` or `<endpoint>/Org/Name`.
    pub fn page_url(&self, endpoint: &str) -> String {
        match self.kind {
            RepoKind::Dataset => format!("{endpoint}/datasets/{}", self.id),
            RepoKind::Model => format!("{endpoint}/{}", self.id),
        }
    }

    /// Whether the revision is a full commit hash (40 hexadecimal digits).
    pub fn revision_is_commit(&self) -> bool {
        is_commit(&self.revision)
    }

    /// The same repository at another revision.
    pub(crate) fn at(&self, revision: &str) -> HubRepo {
        HubRepo {
            revision: revision.to_owned(),
            ..self.clone()
        }
    }

    pub(crate) fn hf(&self) -> hf_hub::Repo {
        hf_hub::Repo::with_revision(self.id.clone(), self.kind.hf(), self.revision.clone())
    }
}

impl fmt::Display for HubRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}@{}", self.kind.as_str(), self.id, self.revision)
    }
}

pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_folders() {
        let ok = |id: &str, folder: &str| {
            let repo = HubRepo::dataset(id, None).unwrap();
            assert_eq!(repo.folder_name(), folder);
            assert_eq!(repo.revision, "main");
        };
        ok(
            "CohereLabs/Global-MMLU",
            "datasets--CohereLabs--Global-MMLU",
        );
        ok(
            "CohereLabs/Global-MMLU-Lite",
            "datasets--CohereLabs--Global-MMLU-Lite",
        );
        ok("squad", "datasets--squad");
        let model = HubRepo::model("Qwen/Qwen2.5-0.5B-Instruct", Some("v1.0")).unwrap();
        assert_eq!(model.folder_name(), "models--Qwen--Qwen2.5-0.5B-Instruct");
        assert_eq!(model.to_string(), "model Qwen/Qwen2.5-0.5B-Instruct@v1.0");
        for bad in ["", "a/b/c", "../x", "a/", "a b/c", "a--b/c"] {
            assert!(HubRepo::dataset(bad, None).is_err(), "{bad}");
        }
        assert!(HubRepo::dataset("a/b", Some("")).is_err());
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }
}
