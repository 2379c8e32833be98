//! The remote stores an output's address can name, one entry each: everything the rest of the tool
//! knows about a store without talking to it (its address, its names, its keys in `[store]`, the
//! write rate it documents) is read from that entry, so a new store is one entry here plus its
//! client in `store/`.

/// A store's documented write rate, against which `shard-plan` weighs what its shards ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    /// Writes a second.
    pub per_second: u64,
    /// What the rate is per (a prefix, a bucket, an account), with whose documentation says so.
    pub per: &'static str,
    /// Seconds after which the rate doubles under sustained load (GCS's ramp for a new bucket);
    /// `None` where it stays.
    pub doubling_every: Option<u64>,
}

/// What one store is, as addresses and messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemeFacts {
    /// How an address of the store starts (`s3://`).
    pub prefix: &'static str,
    /// A short name for files this machine keeps about the store's outputs, and the scheme an
    /// address with a slash missing (`s3:bucket`) is taken to mean.
    pub short_name: &'static str,
    /// The store as messages name it (`S3`).
    pub store: &'static str,
    /// What the store calls what an address names after its prefix (`bucket`, `container`).
    pub holder: &'static str,
    /// The characters a holder's name may hold besides lowercase letters, digits and `-`.
    pub extra_name_chars: &'static str,
    /// The `[store]` keys only this store takes: set where no output is in it, they are refused
    /// at their line.
    pub own_store_keys: &'static [&'static str],
    /// Whether the files this machine keeps about the store's prefixes (locks, journals) name the
    /// scheme in their digest: all but S3's do, whose files keep the names they had before other
    /// stores came, so a lock or journal an older version left is still found.
    pub names_scheme_in_local_files: bool,
    /// Its documented write rate.
    pub rate: WriteRate,
}

/// Declares [`Scheme`] from its table: each entry is a variant with its facts, so a variant
/// without facts, or facts left out of [`Scheme::ALL`], cannot be written.
macro_rules! schemes {
    ($($(#[doc = $doc:literal])* $variant:ident => $facts:expr,)+) => {
        /// The remote object stores outputs can live in, told apart by their address's scheme.
        /// Each has its client in `store/`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Scheme {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Scheme {
            /// Every scheme, in the order addresses are tried.
            pub const ALL: &'static [Scheme] = &[$(Scheme::$variant),+];

            /// Everything the tool knows of this store without talking to it.
            pub const fn facts(self) -> &'static SchemeFacts {
                match self {
                    $(Scheme::$variant => &$facts,)+
                }
            }
        }
    };
}

schemes! {
    /// S3 and S3-compatible stores: `s3://BUCKET/…`.
    S3 => SchemeFacts {
        prefix: "s3://",
        short_name: "s3",
        store: "S3",
        holder: "bucket",
        extra_name_chars: ".",
        own_store_keys: &["endpoint", "region", "force_path_style"],
        names_scheme_in_local_files: false,
        rate: WriteRate {
            per_second: 3_500,
            per: "prefix (S3's documented floor)",
            doubling_every: None,
        },
    },
    /// Azure Blob Storage: `az://CONTAINER/…`.
    Azure => SchemeFacts {
        prefix: "az://",
        short_name: "az",
        store: "Azure",
        holder: "container",
        extra_name_chars: "",
        own_store_keys: &[],
        names_scheme_in_local_files: true,
        rate: WriteRate {
            per_second: 20_000,
            per: "storage account (Azure)",
            doubling_every: None,
        },
    },
    /// Google Cloud Storage: `gs://BUCKET/…`.
    Gcs => SchemeFacts {
        prefix: "gs://",
        short_name: "gs",
        store: "GCS",
        holder: "bucket",
        extra_name_chars: "_.",
        own_store_keys: &[],
        names_scheme_in_local_files: true,
        rate: WriteRate {
            per_second: 1_000,
            per: "bucket at first, doubling at most every 20 min (GCS)",
            doubling_every: Some(1200),
        },
    },
}

impl Scheme {
    /// The scheme `address` starts with, if any.
    pub fn of(address: &str) -> Option<Scheme> {
        Scheme::ALL
            .iter()
            .copied()
            .find(|scheme| address.starts_with(scheme.prefix()))
    }

    /// How an address of this store starts.
    pub fn prefix(self) -> &'static str {
        self.facts().prefix
    }

    /// A short name for files this machine keeps about the store's outputs.
    pub fn short_name(self) -> &'static str {
        self.facts().short_name
    }

    /// Whether `name` is a valid bucket (container) name of the store.
    pub(super) fn is_valid_name(self, name: &str) -> bool {
        let extra = self.facts().extra_name_chars;
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(c);
        (3..=63).contains(&name.len()) && name.chars().all(allowed)
    }

    /// What [`Scheme::is_valid_name`] takes, as a message says it.
    pub(super) fn naming_rule(self) -> String {
        let facts = self.facts();
        let extra: String = facts
            .extra_name_chars
            .chars()
            .map(|c| format!(", `{c}`"))
            .collect();
        format!(
            "{} {} name (3-63 lowercase letters, digits, `-`{extra})",
            facts.store, facts.holder
        )
    }
}

/// Every form an output's address takes, for the parser's messages and the help of each
/// command-line argument that names an output: local files and trees, then each store's prefixes
/// and archives.
pub fn supported_forms() -> String {
    let mut forms = vec![
        "path.mbtiles".to_string(),
        "path.pmtiles".into(),
        "dir:PATH".into(),
        "PATH/".into(),
    ];
    for scheme in Scheme::ALL {
        let (prefix, holder) = (scheme.prefix(), scheme.facts().holder);
        forms.push(format!("{prefix}{holder}/prefix"));
        forms.push(format!("{prefix}{holder}/key.pmtiles"));
    }
    let last = forms.pop().unwrap_or_default();
    format!("{} or {last}", forms.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schemes_entry_is_found_again_by_its_address_and_names_alone() {
        for &scheme in Scheme::ALL {
            let facts = scheme.facts();
            assert_eq!(Scheme::of(&format!("{}maps", facts.prefix)), Some(scheme));
            assert_eq!(facts.prefix, format!("{}://", facts.short_name));
            let others = Scheme::ALL.iter().filter(|other| **other != scheme);
            for other in others {
                assert_ne!(other.short_name(), facts.short_name);
                assert!(!other.prefix().starts_with(facts.prefix));
            }
            assert!(scheme.is_valid_name("tiles-2024"));
            for c in facts.extra_name_chars.chars() {
                assert!(scheme.is_valid_name(&format!("tiles{c}2024")));
                assert!(scheme.naming_rule().contains(&format!("`{c}`")));
            }
            assert!(facts.rate.per_second > 0 && !facts.rate.per.is_empty());
        }
    }

    #[test]
    fn the_naming_rules_read_as_they_did_before_the_table() {
        assert_eq!(
            Scheme::S3.naming_rule(),
            "S3 bucket name (3-63 lowercase letters, digits, `-`, `.`)"
        );
        assert_eq!(
            Scheme::Azure.naming_rule(),
            "Azure container name (3-63 lowercase letters, digits, `-`)"
        );
        assert_eq!(
            Scheme::Gcs.naming_rule(),
            "GCS bucket name (3-63 lowercase letters, digits, `-`, `_`, `.`)"
        );
    }

    #[test]
    fn the_forms_name_the_local_ones_then_each_stores_prefix_and_archive() {
        let forms = supported_forms();
        assert!(forms.starts_with("path.mbtiles, path.pmtiles, dir:PATH, PATH/, s3://bucket/prefix, s3://bucket/key.pmtiles, az://container/prefix"), "{forms}");
        for scheme in Scheme::ALL {
            let holder = scheme.facts().holder;
            assert!(
                forms.contains(&format!("{}{holder}/prefix", scheme.prefix())),
                "{forms}"
            );
            assert!(
                forms.contains(&format!("{}{holder}/key.pmtiles", scheme.prefix())),
                "{forms}"
            );
        }
        if let Some(last) = Scheme::ALL.last() {
            let archive = format!(" or {}{}/key.pmtiles", last.prefix(), last.facts().holder);
            assert!(forms.ends_with(&archive), "{forms}");
        }
    }
}
