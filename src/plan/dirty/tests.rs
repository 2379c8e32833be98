//! The dirty-tile planner's tests.

use super::*;

fn layer() -> LayerConfig {
    LayerConfig::plain()
}

/// A layer clustered up to `maxzoom` in cells of `cell` units, each cluster at its centroid.
fn clustered(maxzoom: u8, cell: u32) -> LayerConfig {
    LayerConfig {
        cluster: Some(crate::config::ClusterConfig {
            maxzoom,
            cell,
            position: crate::config::ClusterPosition::Centroid,
        }),
        ..LayerConfig::plain()
    }
}

/// The tiles of `zooms` that `changed` dirties in `layer`, in a world-wide tileset of 4096-unit
/// tiles with 64-unit buffers; `None` past `limit`.
fn dirty_in(
    layer: &LayerConfig,
    changed: &[ChangedBox],
    zooms: ZoomRange,
    limit: usize,
) -> Option<Vec<TileCoord>> {
    dirty_tiles(
        &[(layer, changed)],
        &[],
        BBox::WORLD,
        zooms,
        4096,
        64,
        limit,
    )
}

/// The zoom-1 tiles one changed box dirties.
fn at_zoom_1(layer: &LayerConfig, changed: ChangedBox) -> Vec<TileCoord> {
    dirty_in(layer, &[changed], ZoomRange::new(1, 1).unwrap(), 10).unwrap()
}

#[test]
fn a_change_dirties_the_tiles_whose_buffer_covers_it_at_every_zoom() {
    let layer = layer();
    let boxes = [ChangedBox::point(90.4, 23.8)];
    let zooms = ZoomRange::new(0, 14).unwrap();
    let dirty = dirty_in(&layer, &boxes, zooms, 1000).unwrap();
    for z in 0..=14 {
        assert!(dirty.iter().filter(|t| t.z() == z).count() >= 1, "zoom {z}");
    }
    assert!(dirty.contains(&TileCoord::new(10, 769, 442).unwrap()));
    assert!(
        dirty.windows(2).all(|w| w[0].z() <= w[1].z()),
        "lowest zoom first"
    );
    // Exactly on a tile corner at zoom 1, a point lies in the buffer of all four tiles.
    assert_eq!(at_zoom_1(&layer, ChangedBox::point(0.0, 0.0)).len(), 4);
    assert!(
        dirty_in(&layer, &boxes, zooms, 5).is_none(),
        "over the limit"
    );
}

/// A line a tenth of a pixel east of tile 2/1/1's buffered envelope: once simplified with a
/// quarter-pixel tolerance it may reach into the tile, which a full seed then draws.
#[test]
fn a_simplified_shape_dirties_the_tiles_within_its_tolerance() {
    let tile_size = MERCATOR_HALF_WORLD / 2.0;
    let x = (64.0 / 4096.0 + 0.1 / 256.0) * tile_size;
    let (_, south) = crate::tile::mercator(0.0, 10.0);
    let (_, north) = crate::tile::mercator(0.0, 20.0);
    let middle = (south + north) / 2.0;
    let line = ChangedBox {
        whole: [x, south, x, north],
        point: [x, middle, x, middle],
        shape: Some(line(&[(x, south), (x, north)])),
        source: None,
        moved: None,
    };
    let zoom = ZoomRange::new(2, 2).unwrap();
    let west_of_it = TileCoord::new(2, 1, 1).unwrap();
    for (simplify, dirty) in [(0.25, true), (0.0, false)] {
        let mut layer = layer();
        layer.generalisation.simplify = simplify;
        let tiles = dirty_in(&layer, std::slice::from_ref(&line), zoom, 100).unwrap();
        assert_eq!(
            tiles.contains(&west_of_it),
            dirty,
            "simplify {simplify}: {tiles:?}"
        );
        // Its box, without the shape, stays east of the tile: the simplified shape never
        // leaves it.
        let boxed = ChangedBox {
            shape: None,
            ..line.clone()
        };
        let tiles = dirty_in(&layer, &[boxed], zoom, 100).unwrap();
        assert!(
            !tiles.contains(&west_of_it),
            "simplify {simplify}: {tiles:?}"
        );
    }
}

#[test]
fn clustered_zooms_dirty_every_tile_that_can_show_the_cell() {
    let layer = clustered(5, 2048);
    // In the north-western cell of tile 1/1/0, whose west edge is 1/0/0's east edge.
    let dirty = at_zoom_1(&layer, ChangedBox::point(0.5, 70.0));
    let names: Vec<String> = dirty.iter().map(|t| t.to_string()).collect();
    assert_eq!(names, ["1/0/0", "1/1/0"], "the cell touches 1/0/0's buffer");
}

#[test]
fn a_wide_geometry_dirties_clustered_zooms_only_where_its_point_is() {
    let layer = clustered(3, 512);
    let (west, south) = crate::tile::mercator(-179.0, -80.0);
    let (east, north) = crate::tile::mercator(179.0, 80.0);
    let line = ChangedBox {
        whole: [west, south, east, north],
        point: [west, south, west, south],
        shape: None,
        source: None,
        moved: None,
    };
    let zooms = ZoomRange::new(3, 4).unwrap();
    let dirty = dirty_in(&layer, &[line], zooms, 1000).unwrap();
    let at = |z: u8| dirty.iter().filter(|t| t.z() == z).count();
    // The point's cell and the buffer of the tile beside it, not the 8 × 7 tiles of the box.
    assert_eq!(at(3), 2, "clustered at zoom 3");
    assert_eq!(at(4), 16 * 14, "drawn whole at zoom 4");
}

/// Fiji buffered past 180°: PROJ wraps the far vertices, so the projected polygon is a band
/// across the world; only tiles whose fetch envelope meets its box in degrees fetch the row.
#[test]
fn a_band_across_the_world_dirties_only_the_tiles_that_fetch_its_row() {
    let layer = layer();
    let (west, south) = crate::tile::mercator(-179.5, -17.0);
    let (east, north) = crate::tile::mercator(179.0, -16.0);
    let ring = [
        (east, south),
        (west, south),
        (west, north),
        (east, north),
        (east, south),
    ];
    let shape = polygon(&ring);
    let band = |source: Option<SourceBox>| ChangedBox {
        whole: [west, south, east, north],
        point: [east, south, east, south],
        shape: Some(Arc::clone(&shape)),
        source,
        moved: None,
    };
    let zooms = ZoomRange::new(4, 4).unwrap();
    let tiles = |changed: ChangedBox| dirty_in(&layer, &[changed], zooms, 1000).unwrap();
    assert_eq!(tiles(band(None)).len(), 16, "every column of its row");
    let fetched = tiles(band(SourceBox::new(4326, [179.0, -17.0, 180.5, -16.0])));
    let columns: Vec<u32> = fetched.iter().map(|t| t.x()).collect();
    assert_eq!(columns, [15], "only the east edge fetches it: {fetched:?}");
    // In another SRID the prefilter is PostGIS's own: every tile the band meets.
    assert_eq!(tiles(band(SourceBox::new(2263, [0.0; 4]))).len(), 16);
}

#[test]
fn a_geometry_postgis_cannot_project_dirties_every_tile_that_may_fetch_it() {
    let layer = layer();
    let zooms = ZoomRange::new(0, 3).unwrap();
    let tiles = |source: Option<SourceBox>| {
        let changed = ChangedBox::unprojected(source);
        dirty_in(&layer, &[changed], zooms, 1000).unwrap()
    };
    assert_eq!(tiles(None).len(), 1 + 4 + 16 + 64, "anywhere");
    // Past the pole: no tile's fetch envelope reaches it, as none fetches it.
    assert!(tiles(SourceBox::new(4326, [10.0, 91.0, 11.0, 92.0])).is_empty());
    let near = tiles(SourceBox::new(4326, [10.0, 80.0, 11.0, 91.0]));
    assert!(near.contains(&TileCoord::new(3, 4, 0).unwrap()), "{near:?}");
    assert_eq!(near.iter().filter(|t| t.z() == 3).count(), 1, "{near:?}");
}

/// A shape from little-endian WKB: `head` (the geometry type, and a polygon's ring count), then
/// the count of `points` and the `(x, y)` metres pairs themselves.
fn shape(head: &[u32], points: &[(f64, f64)]) -> Arc<Shape> {
    let mut wkb = vec![1u8];
    for word in head {
        wkb.extend(word.to_le_bytes());
    }
    wkb.extend(u32::try_from(points.len()).unwrap().to_le_bytes());
    for (x, y) in points {
        wkb.extend(x.to_le_bytes());
        wkb.extend(y.to_le_bytes());
    }
    Arc::new(Shape::from_wkb(&wkb, true).unwrap())
}

/// A line in WKB from `(x, y)` metres pairs.
fn line(points: &[(f64, f64)]) -> Arc<Shape> {
    shape(&[2], points)
}

#[test]
fn a_moved_shape_dirties_only_its_difference_where_the_zoom_was_compared() {
    let half = MERCATOR_HALF_WORLD;
    // A line across the world's width, north of the equator; its old and new
    // shapes differ only near its western end at zoom 3, drawn alike at zoom 2, and zoom 1
    // was not compared.
    let y = 1_000_000.0;
    let across = line(&[(-half * 0.9, y), (half * 0.9, y)]);
    let near_west = line(&[(-half * 0.9, y), (-half * 0.85, y)]);
    let zooms: BTreeMap<u8, DrawnChange> = [
        (2, DrawnChange::Nothing),
        (3, DrawnChange::Within(near_west)),
    ]
    .into();
    let zooms = Arc::new(zooms);
    let side = |lead: bool| ChangedBox {
        whole: [-half * 0.9, y, half * 0.9, y],
        point: [0.0, y, 0.0, y],
        shape: Some(Arc::clone(&across)),
        source: None,
        moved: Some(Moved {
            zooms: Arc::clone(&zooms),
            lead,
        }),
    };
    let layer = layer();
    let tiles = |boxes: &[ChangedBox]| {
        dirty_in(&layer, boxes, ZoomRange::new(1, 3).unwrap(), 1000).unwrap()
    };
    let both = tiles(&[side(true), side(false)]);
    let at = |z: u8| -> Vec<(u32, u32)> {
        both.iter()
            .filter(|t| t.z() == z)
            .map(|t| (t.x(), t.y()))
            .collect()
    };
    assert_eq!(at(1), vec![(0, 0), (1, 0)], "not compared");
    assert_eq!(at(2), vec![], "drawn alike");
    assert_eq!(at(3), vec![(0, 3)], "only where they differ");
    // The other side reports nothing of the difference, only its own shape where the zoom
    // was not compared.
    let partner = tiles(&[side(false)]);
    assert!(partner.iter().all(|t| t.z() == 1), "{partner:?}");
}

/// A polygon in WKB from one ring of `(x, y)` metres pairs (closed by its last point).
fn polygon(ring: &[(f64, f64)]) -> Arc<Shape> {
    shape(&[3, 1], ring)
}

#[test]
fn past_the_limit_every_dirty_tile_is_listed_or_below_a_subtree_root() {
    let m = |lon: f64, lat: f64| crate::tile::mercator(lon, lat);
    let triangle: Vec<(f64, f64)> = [(30.0, 50.0), (44.0, 58.0), (37.0, 41.0), (30.0, 50.0)]
        .iter()
        .map(|(lon, lat)| m(*lon, *lat))
        .collect();
    let road: Vec<(f64, f64)> = [(-70.0, -30.0), (-64.0, -25.0), (-60.0, -31.0)]
        .iter()
        .map(|(lon, lat)| m(*lon, *lat))
        .collect();
    let bounds = |points: &[(f64, f64)]| {
        points.iter().fold(
            [
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ],
            |[w, s, e, n], (x, y)| [w.min(*x), s.min(*y), e.max(*x), n.max(*y)],
        )
    };
    let shaped = |shape: Arc<Shape>, points: &[(f64, f64)]| {
        let whole = bounds(points);
        let (x, y) = points[1];
        ChangedBox {
            whole,
            point: [x, y, x, y],
            shape: Some(shape),
            source: None,
            moved: None,
        }
    };
    let (x0, y0) = m(100.0, 10.0);
    let (x1, y1) = m(103.0, 12.0);
    let unshaped = ChangedBox {
        whole: [x0, y0, x1, y1],
        point: [x0, y0, x0, y0],
        shape: None,
        source: None,
        moved: None,
    };
    let plain = layer();
    let clustered = clustered(5, 2048);
    let deep_only = LayerConfig {
        zooms: Some(ZoomRange::new(6, 9).unwrap()),
        ..layer()
    };
    let changes = [
        shaped(polygon(&triangle), &triangle),
        shaped(line(&road), &road),
        ChangedBox::point(-3.7, 40.4),
        unshaped,
    ];
    let boxes: Vec<(&LayerConfig, &[ChangedBox])> = vec![
        (&plain, &changes[..]),
        (&clustered, &changes[..]),
        (&deep_only, &changes[1..]),
    ];
    let zooms = ZoomRange::new(2, 12).unwrap();
    let all = dirty_tiles(&boxes, &[], BBox::WORLD, zooms, 4096, 64, usize::MAX).unwrap();
    assert!(all.len() > 20_000, "{}", all.len());
    for limit in [1, 40, 700, 5_000, all.len() / 2, all.len() - 1] {
        let work = dirty_work(&boxes, &[], BBox::WORLD, zooms, (4096, 64), limit);
        let Work::Subtrees { tiles, subtrees } = work else {
            panic!("limit {limit}: {work:?}");
        };
        let root_zoom = subtrees.top_zoom().unwrap();
        assert!(
            tiles.len() + subtrees.len() <= limit.max(1) || root_zoom == 0,
            "limit {limit}: {} listed, {} roots",
            tiles.len(),
            subtrees.len()
        );
        assert!(tiles.iter().all(|t| t.z() < root_zoom && all.contains(t)));
        let missed: Vec<&TileCoord> = all
            .iter()
            .filter(|t| !tiles.contains(t) && !subtrees.contains(**t))
            .collect();
        assert!(
            missed.is_empty(),
            "limit {limit}, roots at {root_zoom}: {} missed, first {:?}",
            missed.len(),
            &missed[..missed.len().min(5)]
        );
        // The subtrees follow the shapes: far fewer roots than the root zoom has tiles.
        if root_zoom >= 6 {
            assert!(
                subtrees.len() < 1 << (2 * root_zoom - 4),
                "{}",
                subtrees.len()
            );
        }
    }
    let under = dirty_work(&boxes, &[], BBox::WORLD, zooms, (4096, 64), all.len());
    assert_eq!(under, Work::Tiles(all), "at the limit the tiles are listed");
}

#[test]
fn a_point_a_metre_past_a_tiles_buffer_dirties_the_tile_as_single_precision_boxes_find_it() {
    // PostGIS' `&&` compares boxes rounded outwards to single precision (a unit in the last place
    // is 1 m this far east): a render of the parent finds a point half a metre past the tile's
    // buffer in it, and the tile draws it on its buffer's edge. `watch` missed two such tiles of
    // a 2,000-row sample (14/13388/7139 among them) against a fresh seed.
    let tile = TileCoord::new(14, 13388, 7139).unwrap();
    let size = 2.0 * MERCATOR_HALF_WORLD / f64::from(1u32 << 14);
    let west = -MERCATOR_HALF_WORLD + 13388.0 * size - size * 64.0 / 4096.0;
    let y = MERCATOR_HALF_WORLD - 7139.5 * size;
    let at = [west - 0.5, y, west - 0.5, y];
    let mut wkb = vec![1u8];
    wkb.extend(1u32.to_le_bytes());
    wkb.extend(f64::to_le_bytes(at[0]));
    wkb.extend(f64::to_le_bytes(y));
    let as_box = ChangedBox {
        whole: at,
        point: at,
        shape: None,
        source: None,
        moved: None,
    };
    let as_shape = ChangedBox {
        shape: Some(Arc::new(Shape::from_wkb(&wkb, true).unwrap())),
        ..as_box.clone()
    };
    let zooms = ZoomRange::new(14, 14).unwrap();
    for (how, changed) in [("its box", as_box), ("its shape", as_shape)] {
        let dirty = dirty_in(&layer(), &[changed], zooms, 10).unwrap();
        let holding_it = TileCoord::new(14, 13387, 7139).unwrap();
        let mut found = dirty.clone();
        found.sort();
        assert_eq!(
            found,
            [holding_it, tile],
            "by {how}: the tile holding it and the one past"
        );
    }
}
