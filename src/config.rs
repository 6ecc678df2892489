//! The TOML config: every key, its default, its bound and its documentation in one place.
//!
//! `ringseed config print-default` prints [`print_default`]: the defaults with each key's doc as
//! a comment. A test checks that every key has a doc and that the printed text parses back to the
//! defaults, so the printed file can never drift from the code.

use serde::{Deserialize, Serialize};

use crate::metainfo::Version;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("`{key}` = {value}: {allowed}")]
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub hashing: Hashing,
    pub create: Create,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hashing {
    pub threads: u32,
    pub batch_kib: u32,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            threads: 0,
            batch_kib: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Create {
    pub version: CreateVersion,
    pub piece_kib: u32,
}

impl Default for Create {
    fn default() -> Self {
        Create {
            version: CreateVersion::V1,
            piece_kib: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CreateVersion {
    V1,
    V2,
    Hybrid,
}

impl From<CreateVersion> for Version {
    fn from(v: CreateVersion) -> Self {
        match v {
            CreateVersion::V1 => Version::V1,
            CreateVersion::V2 => Version::V2,
            CreateVersion::Hybrid => Version::Hybrid,
        }
    }
}

/// Documentation of every key, in print order: (`section.key`, comment lines).
const DOCS: &[(&str, &str)] = &[
    (
        "hashing",
        "Piece hashing for `verify`, `create` and rechecks.",
    ),
    (
        "hashing.threads",
        "Threads that hash pieces; 0 means one per available core. Range 0..=1024.",
    ),
    (
        "hashing.batch_kib",
        "KiB each hashing thread reads at once (rounded to whole pieces). Larger batches mean\n\
         fewer system calls; each thread holds one batch in memory. Range 64..=1048576.",
    ),
    ("create", "Defaults for `ringseed create`."),
    (
        "create.version",
        "Torrent format: \"v1\" (every client), \"v2\" (BEP 52 only) or \"hybrid\" (both,\n\
         with BEP 47 pad files so each file starts on a piece boundary).",
    ),
    (
        "create.piece_kib",
        "Piece length in KiB; 0 picks a power of two giving about 1000-2000 pieces (16 KiB to\n\
         16 MiB). Otherwise a multiple of 16 up to 262144; v2 and hybrid need a power of two.",
    ),
];

impl Config {
    /// Parses and validates a config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks every bound; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |key, value: u32, ok: bool, allowed| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    key,
                    value: value.to_string(),
                    allowed,
                })
            }
        };
        let h = &self.hashing;
        range(
            "hashing.threads",
            h.threads,
            h.threads <= 1024,
            "allowed 0..=1024",
        )?;
        range(
            "hashing.batch_kib",
            h.batch_kib,
            (64..=1 << 20).contains(&h.batch_kib),
            "allowed 64..=1048576",
        )?;
        let p = self.create.piece_kib;
        range(
            "create.piece_kib",
            p,
            p == 0 || (p.is_multiple_of(16) && p <= 262_144),
            "allowed 0 (auto) or a multiple of 16 up to 262144",
        )?;
        if p != 0 && self.create.version != CreateVersion::V1 && !p.is_power_of_two() {
            return Err(ConfigError::OutOfRange {
                key: "create.piece_kib",
                value: p.to_string(),
                allowed: "v2 and hybrid torrents need a power of two",
            });
        }
        Ok(())
    }

    pub fn hash_options(&self) -> crate::hash::HashOptions {
        crate::hash::HashOptions {
            threads: self.hashing.threads as usize,
            batch_bytes: u64::from(self.hashing.batch_kib) << 10,
        }
    }
}

/// The default config as TOML with every key documented, in the order of [`DOCS`].
pub fn print_default() -> String {
    let value = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# ringseed configuration. Every key is optional; shown here with its default.\n",
    );
    for (name, doc) in DOCS {
        let comment: String = doc
            .lines()
            .map(|l| format!("# {}\n", l.trim_start()))
            .collect();
        match name.split_once('.') {
            None => out.push_str(&format!("\n{comment}[{name}]\n")),
            Some((section, key)) => {
                if let Some(v) = value.get(section).and_then(|t| t.get(key)) {
                    out.push_str(&format!("{comment}{key} = {v}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_default_round_trips_and_documents_every_key() {
        let text = print_default();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        let table = toml::Table::try_from(Config::default()).unwrap();
        for (section, body) in &table {
            assert!(
                DOCS.iter().any(|(k, _)| k == section),
                "{section} undocumented"
            );
            for key in body.as_table().unwrap().keys() {
                let full = format!("{section}.{key}");
                assert!(DOCS.iter().any(|(k, _)| *k == full), "{full} undocumented");
            }
        }
        assert!(text.contains("# Threads that hash pieces"));
    }

    #[test]
    fn bad_configs_say_which_key() {
        let e = Config::parse("[hashing]\nthreadz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threadz"), "{e}");
        let e = Config::parse("[hashing]\nbatch_kib = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hashing.batch_kib") && e.contains("64..=1048576"),
            "{e}"
        );
        let e = Config::parse("[create]\nversion = \"v3\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v3"), "{e}");
        let e = Config::parse("[create]\nversion = \"v2\"\npiece_kib = 48\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("power of two"), "{e}");
        let e = Config::parse("[hashing]\nthreads = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads"), "{e}");
        assert!(Config::parse("").is_ok());
    }
}
