//! The clinical knowledge of jakguard, as data.
//!
//! Code lists, dose limits, blood-count thresholds and every card text live in the TOML files
//! of the repository's `knowledge/` folder, so that a pharmacist can review them in one place
//! without reading Rust. This crate parses and validates them into [`Knowledge`]; the files
//! are embedded in the binary (the service runs on them by default) and a deployment can point
//! at its own copy of the folder instead.
//!
//! Invariant: a [`Knowledge`] value is always complete and consistent. Every broken entry is
//! refused at load time with a [`KnowledgeError`] naming the file and the entry, so that the
//! rules never meet a half-valid list at run time.

pub mod codes;
pub mod hash;
mod model;
pub mod vocab;

pub use model::*;
pub use vocab::{Analyte, FactorCode, Indicator, Lang, Topic, UnknownCode};

use std::path::Path;

/// A data file that could not be loaded, with where the fault is.
#[derive(Debug, thiserror::Error)]
#[error("knowledge file `{file}`, {entry}: {message}")]
pub struct KnowledgeError {
    pub file: String,
    pub entry: String,
    pub message: String,
}

impl KnowledgeError {
    pub(crate) fn new(file: &str, entry: impl Into<String>, message: impl Into<String>) -> Self {
        KnowledgeError {
            file: file.to_owned(),
            entry: entry.into(),
            message: message.into(),
        }
    }
}

/// The names of the data files, in the order they are loaded.
pub const FILES: [&str; 6] = [
    "molecules.toml",
    "factors.toml",
    "observations.toml",
    "thresholds.toml",
    "doses.toml",
    "texts.toml",
];

/// The text of each data file.
#[derive(Debug, Clone)]
pub struct Sources {
    pub files: [(String, String); 6],
}

impl Sources {
    /// The files shipped with this build.
    pub fn embedded() -> Self {
        let text = [
            include_str!("../../../knowledge/molecules.toml"),
            include_str!("../../../knowledge/factors.toml"),
            include_str!("../../../knowledge/observations.toml"),
            include_str!("../../../knowledge/thresholds.toml"),
            include_str!("../../../knowledge/doses.toml"),
            include_str!("../../../knowledge/texts.toml"),
        ];
        Sources {
            files: std::array::from_fn(|i| (FILES[i].to_owned(), text[i].to_owned())),
        }
    }

    /// The files of a folder laid out like the repository's `knowledge/`.
    pub fn from_dir(dir: &Path) -> Result<Self, KnowledgeError> {
        let mut files: [(String, String); 6] = Default::default();
        for (i, name) in FILES.iter().enumerate() {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                KnowledgeError::new(
                    &path.display().to_string(),
                    "file",
                    format!("cannot be read: {e}"),
                )
            })?;
            files[i] = (path.display().to_string(), text);
        }
        Ok(Sources { files })
    }
}

impl Knowledge {
    /// The knowledge shipped with this build.
    pub fn embedded() -> Result<Self, KnowledgeError> {
        Self::load(&Sources::embedded())
    }

    /// Loads a knowledge folder (see [`Sources::from_dir`]).
    pub fn from_dir(dir: &Path) -> Result<Self, KnowledgeError> {
        Self::load(&Sources::from_dir(dir)?)
    }

    /// Parses and validates every file.
    pub fn load(src: &Sources) -> Result<Self, KnowledgeError> {
        model::build(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_knowledge_loads_and_validates() {
        let k = Knowledge::embedded().unwrap();
        assert!(k.molecule("tofacitinib").is_some());
        assert!(!k.version().is_empty());
    }

    #[test]
    fn a_broken_entry_is_reported_with_its_file_and_entry() {
        let mut src = Sources::embedded();
        src.files[1].1 = src.files[1].1.replacen("\"I10-I15\"", "\"I15-I10\"", 1);
        let err = Knowledge::load(&src).unwrap_err();
        assert_eq!(err.file, "factors.toml");
        assert!(err.entry.contains("hypertension"), "{err}");
    }

    #[test]
    fn an_unknown_factor_code_is_refused() {
        let mut src = Sources::embedded();
        src.files[1].1 =
            src.files[1]
                .1
                .replacen("code = \"hypertension\"", "code = \"hypertensoin\"", 1);
        let err = Knowledge::load(&src).unwrap_err();
        assert!(err.to_string().contains("hypertensoin"), "{err}");
    }

    #[test]
    fn a_text_missing_in_one_language_is_refused() {
        let mut src = Sources::embedded();
        src.files[5].1 = src.files[5]
            .1
            .replacen("factor.obesity = \"Obésité\"\n", "", 1);
        let err = Knowledge::load(&src).unwrap_err();
        assert!(err.to_string().contains("factor.obesity"), "{err}");
    }

    #[test]
    fn a_threshold_for_an_unknown_molecule_is_refused() {
        let mut src = Sources::embedded();
        src.files[3]
            .1
            .push_str("\n[tofacitnib]\nlymphocytes = 0.5\n");
        let err = Knowledge::load(&src).unwrap_err();
        assert!(err.to_string().contains("tofacitnib"), "{err}");
    }
}
