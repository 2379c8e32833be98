//! Where a tileset's tiles go and how they are stored there, as the operator configured it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod keys;
mod scheme;
mod settings;
mod slashes;
pub use scheme::{supported_forms, Scheme, WriteRate};
pub use settings::{
    default_keep_versions, OutputSettings, PmtilesVersions, DEFAULT_CACHE_CONTROL,
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_PMTILES_COMPACT_ABOVE, POINTER_CACHE_CONTROL,
    VERSION_CACHE_CONTROL,
};

/// An output location as the operator wrote it, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// A single MBTiles 1.3 file.
    Mbtiles(PathBuf),
    /// A single PMTiles v3 archive, with its MBTiles store beside it.
    Pmtiles(PathBuf),
    /// A `{z}/{x}/{y}.ext` tree under a directory.
    Directory(PathBuf),
    /// A single PMTiles v3 archive as one object of a remote store, with its working copy and
    /// store on this machine.
    ObjectPmtiles {
        /// The store and its bucket or container.
        bucket: Bucket,
        /// The archive's object key.
        key: String,
    },
    /// `{prefix}/{z}/{x}/{y}.ext` objects in a remote store's bucket or container.
    Objects {
        /// The store and its bucket or container.
        bucket: Bucket,
        /// Key prefix without leading or trailing slash; may be empty.
        prefix: String,
    },
}

/// A bucket (S3) or container (Azure) of a remote store; prints as its address, `s3://NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Which store.
    pub scheme: Scheme,
    /// The bucket's or container's name.
    pub name: String,
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.scheme.prefix(), self.name)
    }
}

impl OutputTarget {
    /// Classifies an output: `s3://bucket/prefix` or `az://container/prefix`, `dir:path` or `path/` (a directory tree), or
    /// `path.mbtiles`, or `path.pmtiles` / `pmtiles:path`, or `s3://bucket/key.pmtiles` /
    /// `pmtiles:s3://bucket/key` (or the same on `az://`).
    pub fn parse(output: &str) -> Result<Self> {
        let output = output.trim();
        if output.is_empty() {
            return Err(Error::Usage("the output is empty".into()));
        }
        slashes::check_scheme_slashes(output)?;
        let (archive, output) = match output.strip_prefix("pmtiles:") {
            Some(rest) if Scheme::of(rest).is_some() => (true, rest),
            _ => (false, output),
        };
        if let Some(scheme) = Scheme::of(output) {
            let rest = &output[scheme.prefix().len()..];
            let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !scheme.is_valid_name(name) {
                return Err(Error::Usage(format!(
                    "output `{output}`: `{name}` is not a valid {}",
                    scheme.naming_rule()
                )));
            }
            let bucket = Bucket {
                scheme,
                name: name.to_string(),
            };
            keys::check_object_path(output, prefix.trim_matches('/'))?;
            if archive || prefix.ends_with(".pmtiles") {
                let key = prefix.trim_start_matches('/');
                if key.is_empty() || key.ends_with('/') {
                    return Err(Error::Usage(format!(
                        "output `{output}`: a PMTiles archive needs an object key, as in {bucket}/tiles/name.pmtiles"
                    )));
                }
                return Ok(OutputTarget::ObjectPmtiles {
                    bucket,
                    key: key.to_string(),
                });
            }
            return Ok(OutputTarget::Objects {
                bucket,
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if output.contains("://") {
            return Err(Error::Usage(format!(
                "output `{output}` is not supported: expected {}",
                supported_forms()
            )));
        }
        if let Some(path) = output.strip_prefix("dir:") {
            return Ok(OutputTarget::Directory(PathBuf::from(path)));
        }
        if let Some(path) = output.strip_prefix("pmtiles:") {
            return Ok(OutputTarget::Pmtiles(PathBuf::from(path)));
        }
        if output.ends_with(".pmtiles") {
            return Ok(OutputTarget::Pmtiles(PathBuf::from(output)));
        }
        if output.ends_with('/') || Path::new(output).is_dir() {
            return Ok(OutputTarget::Directory(PathBuf::from(output)));
        }
        if output.ends_with(".mbtiles") {
            return Ok(OutputTarget::Mbtiles(PathBuf::from(output)));
        }
        Err(Error::Usage(format!(
            "output `{output}` is not supported: expected {}",
            supported_forms()
        )))
    }

    /// A short name for logs and summaries.
    pub fn describe(&self) -> String {
        match self {
            OutputTarget::Mbtiles(path) => format!("{} (MBTiles)", path.display()),
            OutputTarget::Pmtiles(path) => format!("{} (PMTiles)", path.display()),
            OutputTarget::Directory(path) => format!("{} (directory)", path.display()),
            OutputTarget::ObjectPmtiles { bucket, key } => format!("{bucket}/{key} (PMTiles)"),
            OutputTarget::Objects { bucket, prefix } => format!("{bucket}/{prefix}"),
        }
    }
}

impl OutputTarget {
    /// What the output is, whatever path or working folder it was named from: the canonical path
    /// of a local output, the address of a remote one. The change log knows each of its consumers
    /// by this name, so one output is one consumer however its config was given.
    pub fn consumer_name(&self) -> String {
        match self {
            OutputTarget::Mbtiles(path)
            | OutputTarget::Pmtiles(path)
            | OutputTarget::Directory(path) => canonical(path).display().to_string(),
            OutputTarget::ObjectPmtiles { bucket, key } => format!("{bucket}/{key}"),
            OutputTarget::Objects { bucket, prefix } => format!("{bucket}/{prefix}"),
        }
    }
}

/// `path` made absolute with its links resolved, as far as it exists (an output not written yet
/// keeps its own name under its folder's canonical path).
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(found) = std::fs::canonicalize(path) {
        return found;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// How the shards of a sharded run write an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// Each shard writes a part file of its own ([`OutputTarget::shard_part`]), and `finalize`
    /// merges the parts into the output.
    PartFiles,
    /// Shards write their disjoint tiles straight into the output, each with a part record, and
    /// `finalize` adopts the records.
    IntoOutput,
    /// The output is one archive built whole (PMTiles): each shard keeps an MBTiles part and its
    /// record in the output's shard folder, and `finalize` merges the parts into the archive's
    /// tile store and writes the archive once.
    PartStores,
}

impl OutputTarget {
    /// How the shards of a sharded run write this output.
    pub fn sharding(&self) -> Sharding {
        match self {
            OutputTarget::Mbtiles(_) => Sharding::PartFiles,
            OutputTarget::Directory(_) | OutputTarget::Objects { .. } => Sharding::IntoOutput,
            OutputTarget::Pmtiles(_) | OutputTarget::ObjectPmtiles { .. } => Sharding::PartStores,
        }
    }

    /// The file or folder on this machine that holds the output; `None` for outputs on S3.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            OutputTarget::Mbtiles(path)
            | OutputTarget::Pmtiles(path)
            | OutputTarget::Directory(path) => Some(path),
            OutputTarget::Objects { .. } | OutputTarget::ObjectPmtiles { .. } => None,
        }
    }

    /// Whether the output is one PMTiles archive (a file or an S3 object), which alone can be
    /// published in versions (`pmtiles_versions`).
    pub fn is_pmtiles(&self) -> bool {
        match self {
            OutputTarget::Pmtiles(_) | OutputTarget::ObjectPmtiles { .. } => true,
            OutputTarget::Mbtiles(_)
            | OutputTarget::Directory(_)
            | OutputTarget::Objects { .. } => false,
        }
    }

    /// A short name for the output: a file's stem, a folder's or prefix's last segment (the
    /// bucket for a bare bucket), an archive key's name without `.pmtiles`.
    pub fn short_name(&self) -> String {
        match self {
            OutputTarget::Mbtiles(path)
            | OutputTarget::Pmtiles(path)
            | OutputTarget::Directory(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            OutputTarget::Objects { bucket, prefix } => prefix
                .rsplit('/')
                .next()
                .unwrap_or(&bucket.name)
                .to_string(),
            OutputTarget::ObjectPmtiles { key, .. } => {
                let name = key.rsplit('/').next().unwrap_or(key);
                name.strip_suffix(".pmtiles").unwrap_or(name).to_string()
            }
        }
    }

    /// The part file shard `index` of `count` writes instead of the output, where shards write
    /// part files: `OUT.part-I-of-N.mbtiles` beside `OUT.mbtiles`.
    pub fn shard_part(&self, index: u32, count: u32) -> Option<OutputTarget> {
        match self {
            OutputTarget::Mbtiles(path) => {
                let mut part = path.with_extension("").into_os_string();
                part.push(format!(".part-{index}-of-{count}.mbtiles"));
                Some(OutputTarget::Mbtiles(PathBuf::from(part)))
            }
            OutputTarget::Pmtiles(_)
            | OutputTarget::Directory(_)
            | OutputTarget::Objects { .. }
            | OutputTarget::ObjectPmtiles { .. } => None,
        }
    }
}

/// The longest partition value a name or key may carry, escaped: file systems allow 255 bytes.
const MAX_SEGMENT: usize = 200;

/// A partition value as one path segment and key part: ASCII letters, digits, `-` and `_` stay,
/// every other byte becomes `~XX` (hex). The mapping is one-to-one, the result never contains `/`,
/// `.` or `%`, so `../x` cannot leave the output, and a URL needs no further escaping (`~` is
/// unreserved, so CDNs and S3 see the same key the file system holds).
pub fn partition_segment(value: &str) -> Result<String> {
    let mut segment = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            segment.push(byte as char);
        } else {
            segment.push_str(&format!("~{byte:02X}"));
        }
    }
    if segment.is_empty() || segment.len() > MAX_SEGMENT {
        return Err(Error::Usage(format!(
            "partition value {value:?} cannot name an output: it must be 1 to {MAX_SEGMENT} bytes once escaped"
        )));
    }
    Ok(segment)
}

/// Whether `segment` is one [`partition_segment`] could have written: 1 to its maximum length of
/// ASCII letters, digits, `-`, `_` and `~`. A partition index read from an output is checked with
/// it before any of its paths is used, so an index someone edited cannot lead outside the output
/// (`../../etc`, an absolute path, a key prefix of another tree).
pub fn is_partition_segment(segment: &str) -> bool {
    (1..=MAX_SEGMENT).contains(&segment.len())
        && segment
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~'))
}

impl OutputTarget {
    /// Where the partition whose escaped value is `segment` goes: a subdirectory or key prefix of
    /// a tree, or a file (object) named after the value beside a single-file output.
    pub fn for_partition(&self, segment: &str) -> OutputTarget {
        let beside = |path: &Path| {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let extension = path.extension().unwrap_or_default().to_string_lossy();
            path.with_file_name(format!("{stem}.{segment}.{extension}"))
        };
        let beside_key = |key: &str| {
            let (stem, extension) = key.rsplit_once('.').unwrap_or((key, "pmtiles"));
            format!("{stem}.{segment}.{extension}")
        };
        match self {
            OutputTarget::Mbtiles(path) => OutputTarget::Mbtiles(beside(path)),
            OutputTarget::Pmtiles(path) => OutputTarget::Pmtiles(beside(path)),
            OutputTarget::Directory(path) => OutputTarget::Directory(path.join(segment)),
            OutputTarget::ObjectPmtiles { bucket, key } => OutputTarget::ObjectPmtiles {
                bucket: bucket.clone(),
                key: beside_key(key),
            },
            OutputTarget::Objects { bucket, prefix } => OutputTarget::Objects {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    segment.to_string()
                } else {
                    format!("{prefix}/{segment}")
                },
            },
        }
    }

    /// Where a partitioned tileset's index (`partitions.json`) goes: inside a tree, or beside a
    /// single-file output as `NAME.partitions.json`. A path for files, a bucket and key for S3.
    pub fn partition_index(&self) -> IndexLocation {
        let beside = |path: &Path| {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            path.with_file_name(format!("{stem}.{PARTITION_INDEX}"))
        };
        match self {
            OutputTarget::Mbtiles(path) | OutputTarget::Pmtiles(path) => {
                IndexLocation::File(beside(path))
            }
            OutputTarget::Directory(path) => IndexLocation::File(path.join(PARTITION_INDEX)),
            OutputTarget::ObjectPmtiles { bucket, key } => IndexLocation::Object {
                bucket: bucket.clone(),
                key: match key.rsplit_once('.') {
                    Some((stem, _)) => format!("{stem}.{PARTITION_INDEX}"),
                    None => format!("{key}.{PARTITION_INDEX}"),
                },
            },
            OutputTarget::Objects { bucket, prefix } => IndexLocation::Object {
                bucket: bucket.clone(),
                key: if prefix.is_empty() {
                    PARTITION_INDEX.to_string()
                } else {
                    format!("{prefix}/{PARTITION_INDEX}")
                },
            },
        }
    }
}

/// The name of a partitioned tileset's index.
pub const PARTITION_INDEX: &str = "partitions.json";

/// Where a partitioned tileset's index is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLocation {
    /// A local file.
    File(PathBuf),
    /// An object of a remote store.
    Object {
        /// The store and its bucket or container.
        bucket: Bucket,
        /// Object key.
        key: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(name: &str) -> Bucket {
        Bucket {
            scheme: Scheme::S3,
            name: name.into(),
        }
    }

    #[test]
    fn s3_keys_ending_in_pmtiles_are_archives_and_other_s3_outputs_are_prefixes() {
        let archive = |bucket: &str, key: &str| OutputTarget::ObjectPmtiles {
            bucket: s3(bucket),
            key: key.into(),
        };
        assert_eq!(
            OutputTarget::parse("s3://tiles/v1/facilities.pmtiles").unwrap(),
            archive("tiles", "v1/facilities.pmtiles")
        );
        assert_eq!(
            OutputTarget::parse("pmtiles:s3://tiles/facilities").unwrap(),
            archive("tiles", "facilities")
        );
        assert_eq!(
            OutputTarget::parse("s3://tiles/v1/").unwrap(),
            OutputTarget::Objects {
                bucket: s3("tiles"),
                prefix: "v1".into()
            }
        );
        assert_eq!(
            OutputTarget::parse("pmtiles:local/f.pmtiles").unwrap(),
            OutputTarget::Pmtiles("local/f.pmtiles".into())
        );
        for bad in [
            "pmtiles:s3://tiles",
            "pmtiles:s3://tiles/dir/",
            "s3://Bad/x.pmtiles",
        ] {
            assert!(OutputTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn az_addresses_name_azure_containers_and_keep_s3s_rules_apart() {
        let container = |name: &str| Bucket {
            scheme: Scheme::Azure,
            name: name.into(),
        };
        assert_eq!(
            OutputTarget::parse("az://tiles/v1/").unwrap(),
            OutputTarget::Objects {
                bucket: container("tiles"),
                prefix: "v1".into()
            }
        );
        assert_eq!(
            OutputTarget::parse("pmtiles:az://tiles/f").unwrap(),
            OutputTarget::ObjectPmtiles {
                bucket: container("tiles"),
                key: "f".into()
            }
        );
        assert_eq!(container("tiles").to_string(), "az://tiles");
        assert_eq!(
            OutputTarget::parse("az://tiles/v1")
                .unwrap()
                .partition_index(),
            IndexLocation::Object {
                bucket: container("tiles"),
                key: "v1/partitions.json".into()
            }
        );
        // A dot is an S3 bucket's, never a container's.
        assert!(OutputTarget::parse("s3://a.b/x").is_ok());
        assert!(OutputTarget::parse("az://a.b/x").is_err());
        assert!(OutputTarget::parse("az://Tiles/x").is_err());
    }

    #[test]
    fn gs_addresses_name_gcs_buckets_with_their_own_naming_rule() {
        let bucket = |name: &str| Bucket {
            scheme: Scheme::Gcs,
            name: name.into(),
        };
        assert_eq!(
            OutputTarget::parse("gs://my_tiles.example/v1/").unwrap(),
            OutputTarget::Objects {
                bucket: bucket("my_tiles.example"),
                prefix: "v1".into()
            }
        );
        for archive in [
            "gs://tiles/maps/f.pmtiles",
            "pmtiles:gs://tiles/maps/f.pmtiles",
        ] {
            assert_eq!(
                OutputTarget::parse(archive).unwrap(),
                OutputTarget::ObjectPmtiles {
                    bucket: bucket("tiles"),
                    key: "maps/f.pmtiles".into()
                },
                "{archive}"
            );
        }
        assert_eq!(bucket("tiles").to_string(), "gs://tiles");
        // An underscore is a GCS bucket's alone.
        assert!(OutputTarget::parse("s3://my_tiles/x").is_err());
        assert!(OutputTarget::parse("gs://Tiles/x").is_err());
    }

    #[test]
    fn partition_values_become_one_safe_segment_each() {
        assert_eq!(partition_segment("BD").unwrap(), "BD");
        assert_eq!(partition_segment("12").unwrap(), "12");
        assert_eq!(partition_segment("../x").unwrap(), "~2E~2E~2Fx");
        assert_eq!(partition_segment("a/b c").unwrap(), "a~2Fb~20c");
        assert_eq!(partition_segment("Côte").unwrap(), "C~C3~B4te");
        // One-to-one: an escape sequence typed as a value is escaped again.
        assert_ne!(
            partition_segment("~2F").unwrap(),
            partition_segment("/").unwrap()
        );
        assert!(partition_segment("").is_err());
        assert!(partition_segment(&"x".repeat(201)).is_err());
        let directory = OutputTarget::parse("dir:/out/tiles").unwrap();
        assert_eq!(
            directory.for_partition("BD"),
            OutputTarget::Directory("/out/tiles/BD".into())
        );
        assert_eq!(
            OutputTarget::parse("/out/f.mbtiles")
                .unwrap()
                .for_partition("~2E~2E"),
            OutputTarget::Mbtiles("/out/f.~2E~2E.mbtiles".into())
        );
        assert_eq!(
            OutputTarget::parse("s3://bkt/v1/f.pmtiles")
                .unwrap()
                .for_partition("BD"),
            OutputTarget::ObjectPmtiles {
                bucket: s3("bkt"),
                key: "v1/f.BD.pmtiles".into()
            }
        );
        assert_eq!(
            OutputTarget::parse("s3://bkt").unwrap().partition_index(),
            IndexLocation::Object {
                bucket: s3("bkt"),
                key: "partitions.json".into()
            }
        );
        assert_eq!(
            OutputTarget::parse("/out/f.mbtiles")
                .unwrap()
                .partition_index(),
            IndexLocation::File("/out/f.partitions.json".into())
        );
    }
}
