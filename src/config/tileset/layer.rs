//! `[[tileset.layer]]`: a source table rendered into one MVT layer, with its clustering and
//! generalisation, checked key by key.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{zoom, Problem};
use crate::tile::ZoomRange;
/// A source table rendered into one MVT layer of each tile.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Layer")]
// What the parser refuses across this table's keys, said in JSON Schema for editors: the cluster
// keys need `cluster_maxzoom`, and a clustered layer's attributes may not take a cluster
// property's name (CLUSTER_PROPERTIES).
#[schemars(extend(
    "dependencies" = {
        "cluster_cell": ["cluster_maxzoom"],
        "cluster_position": ["cluster_maxzoom"],
        "cluster_breakdown": ["cluster_maxzoom"]
    },
    "if" = {"required": ["cluster_maxzoom"]},
    "then" = {"properties": {"attributes": {"items": {"not": {"enum": CLUSTER_PROPERTIES}}}}}
))]
pub(super) struct RawLayer {
    /// Layer name inside the tiles; unique in the tileset.
    name: String,
    /// Source table or view, optionally schema-qualified (`public.facilities`). It needs a GiST
    /// index on the geometry column.
    table: String,
    /// Geometry column.
    #[schemars(extend("default" = "geom"))]
    geometry_column: Option<String>,
    /// SRID the geometry is stored in; may be left out when the column declares one, as
    /// `geometry(Point, 4326)` does.
    srid: Option<i32>,
    /// Unique column that orders features. An integer id becomes the MVT feature id; any other
    /// type is added as a property.
    #[schemars(extend("default" = "id"))]
    id_column: Option<String>,
    /// Columns carried as feature properties. Numbers, booleans and text keep their type; anything
    /// else is sent as text.
    #[serde(default)]
    #[schemars(extend("items" = {"type": "string", "not": {"pattern": "^__oar_"}}))]
    attributes: Vec<String>,
    /// SQL boolean expression over the table's columns that selects the rows of this layer. It is
    /// inserted into the tile statement as written: the one piece of config that is SQL.
    #[schemars(regex(pattern = r"^[^;]*$"))]
    filter: Option<String>,
    /// Shallowest zoom at which this layer appears. Default: the tileset's.
    minzoom: Option<u32>,
    /// Deepest zoom at which this layer appears. Default: the tileset's.
    maxzoom: Option<u32>,
    /// Grid clustering: up to this zoom each tile carries one feature per grid cell, with `count`
    /// and the members' extent (`extent_west`, `extent_south`, `extent_east`, `extent_north`), and
    /// for a cell of one row its id and attributes. Default: no clustering.
    cluster_maxzoom: Option<u32>,
    /// Cluster cell size in tile units: a power of two from 8 to the extent (512 of 4096 is 8
    /// cells across). Needs `cluster_maxzoom`.
    #[schemars(extend("default" = 512, "enum" = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]))]
    cluster_cell: Option<u32>,
    /// Where a cluster's point goes. Needs `cluster_maxzoom`.
    #[schemars(extend("default" = "centroid"))]
    cluster_position: Option<ClusterPosition>,
    /// An attribute of single values whose per-value member counts every cluster carries, as
    /// `count_by_<column> = "BD:3,CN:5"`. Needs `cluster_maxzoom`.
    cluster_breakdown: Option<String>,
    /// Tolerance in pixels of the zoom (1/256 of a tile's width) of the topology-preserving
    /// simplification of lines and polygons applied before clipping; 0 keeps every vertex.
    #[schemars(extend("default" = Generalisation::DEFAULT.simplify))]
    simplify: Option<f64>,
    /// A polygon whose whole area is below this many square pixels is left out of that zoom's
    /// tiles; 0 keeps them all.
    #[schemars(extend("default" = Generalisation::DEFAULT.min_area))]
    min_area: Option<f64>,
    /// A line whose whole length is below this many pixels is left out of that zoom's tiles; 0
    /// keeps them all.
    #[schemars(extend("default" = Generalisation::DEFAULT.min_length))]
    min_length: Option<f64>,
}

/// Where a cluster's point goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterPosition {
    /// The mean position of its members.
    Centroid,
    /// The centre of its grid cell.
    CellCenter,
}

/// Grid clustering of a layer at low zooms. Each row counts at one representative point: a point
/// as it is, any other geometry (a line, a polygon, a collection) at `ST_PointOnSurface` of it, a
/// point on it that is the same wherever the row is read; rows of NULL or empty geometry are left
/// out. The cluster's extent is that of its members' points. Above `maxzoom` the layer's rows are
/// drawn whole, whatever their kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Zooms up to and including this one are clustered.
    pub maxzoom: u8,
    /// Cell size in tile units (a power of two dividing the extent).
    pub cell: u32,
    /// Where each cluster's point goes.
    pub position: ClusterPosition,
}

/// Properties every cluster feature carries; layer attributes may not use these names.
pub const CLUSTER_PROPERTIES: [&str; 5] = [
    "count",
    "extent_west",
    "extent_south",
    "extent_east",
    "extent_north",
];

/// How a layer's lines and polygons are generalised at each zoom, in pixels of that zoom, a pixel
/// being 1/256 of a tile's width (the scale web maps define their zoom levels at). Points are
/// never touched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generalisation {
    /// Tolerance of the topology-preserving simplification applied before clipping; 0 keeps every
    /// vertex.
    pub simplify: f64,
    /// A polygonal feature whose whole area is below this many square pixels is left out; 0 keeps
    /// them all.
    pub min_area: f64,
    /// A linear feature whose whole length is below this many pixels is left out; 0 keeps them all.
    pub min_length: f64,
}

impl Generalisation {
    /// What a layer gets unless its config says otherwise: differences under a quarter of a pixel,
    /// invisible on a 512-pixel display of the tile, are generalised away.
    pub const DEFAULT: Generalisation = Generalisation {
        simplify: 0.25,
        min_area: 0.25,
        min_length: 0.25,
    };

    /// Whether it changes nothing at all.
    pub fn is_off(&self) -> bool {
        self.simplify == 0.0 && self.min_area == 0.0 && self.min_length == 0.0
    }
}

/// One value of a partitioned tileset: its layers render only the rows holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The column the tileset is partitioned by.
    pub column: String,
    /// The value, as the column's text form (`column::text`, or an element's for an array).
    pub value: String,
    /// Whether the column is an array, whose rows belong to the partition of each element.
    pub array: bool,
    /// The SQL type the value is cast to (an element's for an array): tile statements take the
    /// value as a parameter, so every partition of a tileset shares one set of statements.
    pub value_type: String,
    /// The temporary table each rendering session copies the value's rows into before its tiles
    /// (`crate::render::row_set`), which tiles then read through its own spatial index; `None`:
    /// tiles read the table, filtered by the value.
    pub row_set: Option<String>,
}

/// One `[[tileset.layer]]`: a source table rendered into one MVT layer.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// Layer name inside the tile.
    pub name: String,
    /// Schema (when given) of the source table.
    pub schema: Option<String>,
    /// Source table.
    pub table: String,
    /// Geometry column.
    pub geometry_column: String,
    /// SRID the geometry is stored in, when the config states it.
    pub srid: Option<i32>,
    /// Column that orders features and, when integer, becomes the MVT feature id.
    pub id_column: String,
    /// Columns carried as feature properties.
    pub attributes: Vec<String>,
    /// Operator-written SQL boolean expression; the one place config text becomes SQL.
    pub filter: Option<String>,
    /// Zooms at which this layer appears; `None` means every zoom the job renders.
    pub zooms: Option<ZoomRange>,
    /// Grid clustering at low zooms, if configured: every row clustered at a representative point
    /// (see [`ClusterConfig`]), and drawn whole above the clustered zooms.
    pub cluster: Option<ClusterConfig>,
    /// An attribute whose per-value member counts each cluster carries, as [`breakdown_property`]
    /// names it.
    pub cluster_breakdown: Option<String>,
    /// Set on the layers of one partition of a partitioned tileset; never by the config itself.
    pub partition: Option<Partition>,
    /// Per-zoom generalisation of lines and polygons.
    pub generalisation: Generalisation,
}

/// The cluster property holding the per-value member counts of `column`.
pub fn breakdown_property(column: &str) -> String {
    format!("count_by_{column}")
}

/// How far beyond a tile its rows are fetched at zoom `z`, in tile widths: the buffer, or, where a
/// layer is clustered, whole grid cells around the tile, so every cell reaching into the buffer is
/// aggregated from all of its members. Never larger at a deeper zoom, so a child's fetch envelope
/// stays inside its parent's and pruning stays sound. The renderer builds its envelopes with it
/// and the dirty-tile planner reckons which tiles can fetch a row with it: one rule for both.
pub fn fetch_margin<'a>(
    layers: impl IntoIterator<Item = &'a LayerConfig>,
    z: u8,
    extent: u32,
    buffer: u32,
) -> f64 {
    let pixels = layers
        .into_iter()
        .filter_map(|layer| layer.cluster_at(z))
        .map(|cluster| buffer.div_ceil(cluster.cell.max(1)) * cluster.cell)
        .fold(buffer, u32::max);
    f64::from(pixels) / f64::from(extent)
}

impl LayerConfig {
    /// The clustering in force at zoom `z`, if any.
    pub fn cluster_at(&self, z: u8) -> Option<&ClusterConfig> {
        self.cluster.as_ref().filter(|c| z <= c.maxzoom)
    }

    /// A layer `l` of table `t` (geometry `g`, id `id`) as a config without keys of its own
    /// gets it: unclustered, unfiltered, no attributes, the default generalisation.
    #[cfg(test)]
    pub fn plain() -> LayerConfig {
        LayerConfig {
            name: "l".into(),
            schema: None,
            table: "t".into(),
            geometry_column: "g".into(),
            srid: None,
            id_column: "id".into(),
            attributes: vec![],
            filter: None,
            zooms: None,
            cluster: None,
            cluster_breakdown: None,
            partition: None,
            generalisation: Generalisation::DEFAULT,
        }
    }
}

impl LayerConfig {
    /// `schema.table` as written, for messages.
    pub fn qualified_table(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.table),
            None => self.table.clone(),
        }
    }
}

pub(super) fn resolve_layer(
    raw: RawLayer,
    tileset_zooms: ZoomRange,
    extent: u32,
) -> Result<LayerConfig, Problem> {
    let name = raw.name.trim().to_string();
    if name.is_empty() {
        return Err("a layer has an empty name".into());
    }
    let in_layer = format!("layer `{name}`");
    let context = |problem: Problem| problem.within(&in_layer);
    let refuse = |message: String| context(Problem::Key(message));
    let (schema, table) = match raw.table.split_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, raw.table.clone()),
    };
    if table.is_empty() || schema.as_deref() == Some("") {
        return Err(refuse(format!("table `{}` is not a table name", raw.table)));
    }
    let zooms = match (raw.minzoom, raw.maxzoom) {
        (None, None) => None,
        (min, max) => Some(
            ZoomRange::new(
                zoom(min, tileset_zooms.min, "minzoom").map_err(context)?,
                zoom(max, tileset_zooms.max, "maxzoom").map_err(context)?,
            )
            .map_err(|e| context(e.into()))?,
        ),
    };
    let cluster = resolve_cluster(&raw, extent).map_err(context)?;
    let generalisation = resolve_generalisation(&raw).map_err(context)?;
    if let Some(column) = &raw.cluster_breakdown {
        if cluster.is_none() {
            return Err(context("cluster_breakdown needs cluster_maxzoom".into()));
        }
        if !raw.attributes.contains(column) {
            return Err(refuse(format!(
                "cluster_breakdown `{column}` must be one of the layer's attributes"
            )));
        }
        let property = breakdown_property(column);
        if raw.attributes.contains(&property) {
            return Err(refuse(format!(
                "attribute `{property}` clashes with the cluster breakdown's property"
            )));
        }
    }
    let geometry_column = raw.geometry_column.unwrap_or_else(|| "geom".into());
    let id_column = raw.id_column.unwrap_or_else(|| "id".into());
    for column in raw.attributes.iter().chain([&geometry_column, &id_column]) {
        if column.is_empty() {
            return Err(context("a column name is empty".into()));
        }
    }
    if let Some(reserved) = raw.attributes.iter().find(|a| a.starts_with("__oar_")) {
        return Err(refuse(format!(
            "attribute `{reserved}`: names starting with __oar_ are reserved"
        )));
    }
    if raw.attributes.contains(&geometry_column) {
        return Err(refuse(format!(
            "attribute `{geometry_column}` is the geometry column"
        )));
    }
    if let Some(filter) = &raw.filter {
        if filter.contains(';') {
            return Err(context(
                "filter must be one SQL expression, without `;`".into(),
            ));
        }
    }
    Ok(LayerConfig {
        name,
        schema,
        table,
        geometry_column,
        srid: raw.srid,
        id_column,
        attributes: raw.attributes,
        filter: raw.filter.filter(|f| !f.trim().is_empty()),
        zooms,
        cluster,
        cluster_breakdown: raw.cluster_breakdown,
        partition: None,
        generalisation,
    })
}

/// The layer's `simplify`, `min_area` and `min_length`, each a finite number of (square) pixels.
fn resolve_generalisation(raw: &RawLayer) -> Result<Generalisation, Problem> {
    let defaults = Generalisation::DEFAULT;
    let pixels = |value: Option<f64>, default: f64, key: &str| match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Some(v) => Err(Problem::Key(format!(
            "{key} {v} must be a number of pixels, 0 or more (0 turns it off)"
        ))),
    };
    Ok(Generalisation {
        simplify: pixels(raw.simplify, defaults.simplify, "simplify")?,
        min_area: pixels(raw.min_area, defaults.min_area, "min_area")?,
        min_length: pixels(raw.min_length, defaults.min_length, "min_length")?,
    })
}

/// The layer's grid clustering, if `cluster_maxzoom` asks for it.
fn resolve_cluster(raw: &RawLayer, extent: u32) -> Result<Option<ClusterConfig>, Problem> {
    Ok(match raw.cluster_maxzoom {
        None if raw.cluster_cell.is_some() || raw.cluster_position.is_some() => {
            return Err("cluster_cell and cluster_position need cluster_maxzoom".into())
        }
        None => None,
        Some(maxzoom) => {
            let maxzoom = zoom(Some(maxzoom), 0, "cluster_maxzoom")?;
            let cell = raw.cluster_cell.unwrap_or(512);
            if !cell.is_power_of_two() || !(8..=extent).contains(&cell) {
                return Err(Problem::Key(format!(
                    "cluster_cell {cell} must be a power of two between 8 and the extent ({extent})"
                )));
            }
            if let Some(clash) = raw
                .attributes
                .iter()
                .find(|a| CLUSTER_PROPERTIES.contains(&a.as_str()))
            {
                return Err(Problem::Key(format!(
                    "attribute `{clash}` clashes with a cluster property ({})",
                    CLUSTER_PROPERTIES.join(", ")
                )));
            }
            Some(ClusterConfig {
                maxzoom,
                cell,
                position: raw.cluster_position.unwrap_or(ClusterPosition::Centroid),
            })
        }
    })
}
