//! Digests that identify what decides tile bytes, stored with an output so a later run can tell
//! whether its tiles were made under the same settings.
//!
//! The digest is taken over an explicit, versioned description ([`TileSettings`]), never over
//! `Debug` output: adding an option that does not change tile bytes (or a defaulted one) must not
//! change every output's digest and force every `--dirty` run after an upgrade into a full reseed.
//! When the meaning of a described setting changes, or the SQL draws other bytes from the same
//! settings, bump [`SETTINGS_VERSION`]: `tests/golden_tiles.rs` pins a fixed data set's tile bytes
//! per version and fails when they change under the same one.

use md5::{Digest, Md5};
use serde::Serialize;

use crate::config::{ClusterPosition, Generalisation, LayerConfig};
use crate::tile::{BBox, ZoomRange};

/// Version of [`TileSettings`] and of the SQL that draws tiles from them; part of every digest, so
/// a new version makes every output's next `--dirty` run (or `watch` cycle) render its whole
/// pyramid once, as another config would.
///
/// 2: generalisation drew differently after outputs recorded version 1 with it (a feature that
/// simplification leaves undrawable is drawn unsimplified; points in a mixed column are clipped
/// as they are), and clustered layers cluster rows that are not points; outputs written before
/// are rendered again.
///
/// 3: a polygon's rings are drawn in one canonical order (each starting at its least vertex,
/// holes and parts sorted), where they started wherever clipping the whole shape left them; a
/// tile's bytes no longer depend on the shape outside it. Every polygon tile is rendered again
/// once, and the writer keeps those whose bytes come out the same.
pub const SETTINGS_VERSION: u32 = 3;

/// Everything in a config that decides the bytes of a tileset's tiles, and nothing else.
#[derive(Debug, Serialize)]
pub struct TileSettings<'a> {
    version: u32,
    extent: u32,
    buffer: u32,
    layers: Vec<LayerSettings<'a>>,
}

#[derive(Debug, Serialize)]
struct LayerSettings<'a> {
    name: &'a str,
    schema: Option<&'a str>,
    table: &'a str,
    geometry_column: &'a str,
    srid: Option<i32>,
    id_column: &'a str,
    attributes: &'a [String],
    filter: Option<&'a str>,
    zooms: Option<[u8; 2]>,
    cluster: Option<ClusterSettings>,
    /// Array properties sent as delimited lists; left out when there are none, so the digests of
    /// outputs made before lists existed stay the same.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lists: Vec<&'a str>,
    /// Left out when not set, like `lists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_breakdown: Option<&'a str>,
    /// `[column, value]` of a partition's layer; left out when not set, like `lists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<[&'a str; 2]>,
    /// `[simplify, min_area, min_length]` where they apply (not to a column of points only);
    /// left out otherwise, like `lists`, so point layers' digests stay those of earlier versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    generalisation: Option<[f64; 3]>,
}

#[derive(Debug, Serialize)]
struct ClusterSettings {
    maxzoom: u8,
    cell: u32,
    position: &'static str,
}

impl<'a> TileSettings<'a> {
    /// The description of a tileset's extent, buffer and layers.
    pub fn new(
        extent: u32,
        buffer: u32,
        layers: impl IntoIterator<Item = &'a LayerConfig>,
    ) -> Self {
        let layers = layers
            .into_iter()
            .map(|layer| LayerSettings {
                name: &layer.name,
                schema: layer.schema.as_deref(),
                table: &layer.table,
                geometry_column: &layer.geometry_column,
                srid: layer.srid,
                id_column: &layer.id_column,
                attributes: &layer.attributes,
                filter: layer.filter.as_deref(),
                zooms: layer.zooms.map(|z| [z.min, z.max]),
                cluster: layer.cluster.map(|c| ClusterSettings {
                    maxzoom: c.maxzoom,
                    cell: c.cell,
                    position: match c.position {
                        ClusterPosition::Centroid => "centroid",
                        ClusterPosition::CellCenter => "cell-center",
                    },
                }),
                lists: Vec::new(),
                cluster_breakdown: layer.cluster_breakdown.as_deref(),
                partition: layer
                    .partition
                    .as_ref()
                    .map(|p| [p.column.as_str(), p.value.as_str()]),
                generalisation: None,
            })
            .collect();
        TileSettings {
            version: SETTINGS_VERSION,
            extent,
            buffer,
            layers,
        }
    }

    /// Records, layer by layer, which properties are arrays sent as delimited lists: the source's
    /// column types decide that, not the config.
    pub fn with_lists(mut self, lists: impl IntoIterator<Item = Vec<&'a str>>) -> Self {
        for (layer, lists) in self.layers.iter_mut().zip(lists) {
            layer.lists = lists;
        }
        self
    }

    /// Records, layer by layer, the generalisation its lines and polygons get: whether the column
    /// can hold them is the source's to say, not the config's.
    pub fn with_generalisation<'g>(
        mut self,
        rules: impl IntoIterator<Item = Option<&'g Generalisation>>,
    ) -> Self {
        for (layer, rules) in self.layers.iter_mut().zip(rules) {
            layer.generalisation = rules.map(|r| [r.simplify, r.min_area, r.min_length]);
        }
        self
    }

    /// The digest an output's watermark records: hex MD5 of the description as JSON.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).expect("settings serialize");
        hex::encode(Md5::digest(json.as_bytes()))
    }
}

/// Identifies a full seed job (tileset, zooms, area and tile settings), so a journal is only
/// resumed by a run that would render the same tiles.
pub fn job_fingerprint(
    tileset: &str,
    zooms: ZoomRange,
    bbox: BBox,
    settings_digest: &str,
) -> String {
    let text = format!("{tileset}\n{zooms}\n{bbox}\n{settings_digest}");
    hex::encode(Md5::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    fn layer() -> LayerConfig {
        LayerConfig {
            name: "facilities".into(),
            schema: Some("public".into()),
            table: "facilities".into(),
            geometry_column: "location".into(),
            srid: Some(4326),
            id_column: "id".into(),
            attributes: vec!["name".into(), "country_code".into()],
            filter: None,
            zooms: None,
            cluster_breakdown: None,
            partition: None,
            generalisation: crate::config::Generalisation::DEFAULT,
            cluster: Some(ClusterConfig {
                maxzoom: 11,
                cell: 512,
                position: ClusterPosition::Centroid,
            }),
        }
    }

    /// Pinned: if this changes, every output's next `--dirty` run redoes every tile. Change it only
    /// together with SETTINGS_VERSION, on purpose, and say so in the release notes.
    #[test]
    fn the_settings_digest_of_a_known_config_is_pinned() {
        let layer = layer();
        let digest = TileSettings::new(4096, 64, [&layer]).digest();
        assert_eq!(digest, "4e4d2cbe7f2da311de4f6c441ec2a800");
    }

    #[test]
    fn every_setting_that_decides_tile_bytes_changes_the_digest() {
        let base = layer();
        let digest = |layer: &LayerConfig| TileSettings::new(4096, 64, [layer]).digest();
        let reference = digest(&base);
        let variants = [
            LayerConfig {
                filter: Some("x > 1".into()),
                ..base.clone()
            },
            LayerConfig {
                attributes: vec!["name".into()],
                ..base.clone()
            },
            LayerConfig {
                id_column: "os_id".into(),
                ..base.clone()
            },
            LayerConfig {
                zooms: Some(ZoomRange::new(2, 9).unwrap()),
                ..base.clone()
            },
            LayerConfig {
                cluster: None,
                ..base.clone()
            },
            LayerConfig {
                cluster_breakdown: Some("country_code".into()),
                ..base.clone()
            },
        ];
        for variant in &variants {
            assert_ne!(digest(variant), reference, "{variant:?}");
        }
        assert_ne!(TileSettings::new(4096, 128, [&base]).digest(), reference);
        let rules = crate::config::Generalisation::DEFAULT;
        let generalised = TileSettings::new(4096, 64, [&base]).with_generalisation([Some(&rules)]);
        assert_ne!(generalised.digest(), reference);
        let finer = crate::config::Generalisation {
            simplify: 0.5,
            ..rules
        };
        let other = TileSettings::new(4096, 64, [&base]).with_generalisation([Some(&finer)]);
        assert_ne!(other.digest(), generalised.digest());
        let points = TileSettings::new(4096, 64, [&base]).with_generalisation([None]);
        assert_eq!(points.digest(), reference);
        let listed = TileSettings::new(4096, 64, [&base]).with_lists([vec!["name"]]);
        assert_ne!(listed.digest(), reference);
        let unlisted = TileSettings::new(4096, 64, [&base]).with_lists([vec![]]);
        assert_eq!(unlisted.digest(), reference);
        assert_ne!(TileSettings::new(8192, 64, [&base]).digest(), reference);
    }
}
