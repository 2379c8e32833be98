//! What a line or polygon draws at a zoom before any tile clips it, for the planner to compare
//! the two shapes of a geometry-only edit where the tiles would (`state/capture/log.rs`).
//!
//! `ST_AsMVTGeom` (PostGIS 3.3) removes repeated points and simplifies the *whole* geometry at
//! half a tile unit, then snaps it to the tile's grid, and only then clips and validates it: the
//! first steps are not local (moving one vertex may change which vertices Douglas-Peucker keeps
//! far away), the last one is. Called once over the whole world with `extent · 2^z` units, unclipped,
//! it takes those same first steps at the same resolution and on the same grid as every tile of
//! zoom `z` does (the tiles' grids are the world's, shifted by whole units), so where the two
//! shapes it returns agree, every tile clips the same geometry, and draws the same bytes: where a
//! clipped ring starts depends on the whole shape, so tiles put polygons' rings in a canonical
//! order ([`super::generalise::canonical_rings`]).

use super::{simplified, too_small};
use crate::config::LayerConfig;
use crate::tile::MERCATOR_HALF_WORLD;

/// The expressions a zoom draws a Web-Mercator geometry with, unclipped, in world units of that
/// zoom (`extent · 2^z` across, y down).
#[derive(Debug, Clone, PartialEq)]
pub struct Unclipped {
    /// The stored shape as drawn.
    pub stored: String,
    /// The simplified shape as drawn, where the layer simplifies: a tile draws it, or the stored
    /// shape where it leaves the tile nothing.
    pub simplified: Option<String>,
    /// Whether the thresholds leave the geometry out at this zoom; `None` without thresholds.
    pub too_small: Option<String>,
    /// Web-Mercator metres per world unit, to bring a shape in world units back to metres.
    pub unit: f64,
}

/// [`Unclipped`] for the geometry `merc` of `layer` at zoom `z` in tiles of `extent` units;
/// `None` where the world's width in units does not fit the `integer` extent `ST_AsMVTGeom`
/// takes (past zoom 18 at 4096).
pub fn unclipped(layer: &LayerConfig, merc: &str, z: u8, extent: u32) -> Option<Unclipped> {
    let units = i32::try_from(u64::from(extent).checked_shl(u32::from(z))?).ok()?;
    let world = format!(
        "ST_MakeEnvelope({h}, {h}, {half}, {half}, 3857)::box2d",
        h = -MERCATOR_HALF_WORLD,
        half = MERCATOR_HALF_WORLD
    );
    let draw = |geometry: &str| format!("ST_AsMVTGeom({geometry}, {world}, {units}, 0, false)");
    let rules = &layer.generalisation;
    let generalised = !rules.is_off();
    Some(Unclipped {
        stored: draw(merc),
        simplified: (generalised && rules.simplify > 0.0)
            .then(|| draw(&simplified(rules, merc, z))),
        too_small: generalised.then(|| too_small(rules, merc, z)).flatten(),
        unit: 2.0 * MERCATOR_HALF_WORLD / f64::from(units),
    })
}

/// `unit` metres per world unit as `ST_Affine`'s arguments after the geometry: world units of a
/// zoom (y down from the north edge) back to Web-Mercator metres.
pub fn world_units_to_metres(unit: f64) -> String {
    format!(
        "{unit}, 0, 0, {}, {}, {}",
        -unit, -MERCATOR_HALF_WORLD, MERCATOR_HALF_WORLD
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zoom_is_drawn_at_the_world_scale_of_its_tiles_while_the_extent_fits() {
        let mut layer = crate::config::LayerConfig::plain();
        let drawn = unclipped(&layer, "g", 3, 4096).unwrap();
        assert!(
            drawn.stored.contains(", 32768, 0, false)"),
            "{}",
            drawn.stored
        );
        assert!(drawn.simplified.unwrap().contains("ST_Simplify(g, "));
        assert!(drawn.too_small.is_some());
        assert!((drawn.unit * 32768.0 - 2.0 * MERCATOR_HALF_WORLD).abs() < 1e-6);
        assert!(unclipped(&layer, "g", 19, 4096).is_none(), "2^31 units");
        assert!(unclipped(&layer, "g", 18, 4096).is_some());
        layer.generalisation = crate::config::Generalisation {
            simplify: 0.0,
            min_area: 0.0,
            min_length: 0.0,
        };
        let plain = unclipped(&layer, "g", 3, 4096).unwrap();
        assert_eq!((plain.simplified, plain.too_small), (None, None));
    }
}
