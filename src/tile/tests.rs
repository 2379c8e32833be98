//! Tile maths against known values.

use super::*;

#[test]
fn tile_keys_unpack_to_their_tile() {
    for tile in [(0, 0, 0), (14, 12307, 7075), (24, (1 << 24) - 1, 5)] {
        let tile = TileCoord::new(tile.0, tile.1, tile.2).unwrap();
        assert_eq!(tile_from_key(tile_key(tile)), Some(tile));
    }
    assert_eq!(tile_from_key(u64::MAX), None);
}

#[test]
fn the_tms_row_flip_counts_from_the_south_and_undoes_itself() {
    assert_eq!(TileCoord::new(0, 0, 0).unwrap().tms_row(), 0);
    assert_eq!(TileCoord::new(3, 1, 0).unwrap().tms_row(), 7);
    assert_eq!(TileCoord::new(3, 1, 6).unwrap().tms_row(), 1);
    let tile = TileCoord::new(14, 12307, 7075).unwrap();
    assert_eq!(
        TileCoord::from_tms(14, 12307, i64::from(tile.tms_row())),
        Ok(tile)
    );
    assert!(TileCoord::from_tms(3, 1, 8).is_err());
    assert!(TileCoord::from_tms(3, 1, -1).is_err());
    assert!(TileCoord::from_tms(30, 0, 0).is_err());
}

#[test]
fn tile_coords_outside_their_zoom_are_refused() {
    assert!(TileCoord::new(0, 0, 0).is_ok());
    assert!(TileCoord::new(0, 1, 0).is_err());
    assert!(TileCoord::new(3, 7, 8).is_err());
    assert!(TileCoord::new(25, 0, 0).is_err());
}

#[test]
fn tile_coords_round_trip_through_text() {
    let tile: TileCoord = "14/13105/7032".parse().unwrap();
    assert_eq!((tile.z(), tile.x(), tile.y()), (14, 13105, 7032));
    assert_eq!(tile.to_string(), "14/13105/7032");
    assert!("14/13105".parse::<TileCoord>().is_err());
    assert!("1/2/0".parse::<TileCoord>().is_err());
}

#[test]
fn children_cover_the_parent() {
    let parent = TileCoord::new(3, 5, 2).unwrap();
    let children: Vec<String> = parent.children().map(|c| c.to_string()).collect();
    assert_eq!(children, ["4/10/4", "4/11/4", "4/10/5", "4/11/5"]);
    assert!(parent.children().all(|c| c.parent() == Some(parent)));
    assert_eq!(TileCoord::new(0, 0, 0).unwrap().parent(), None);
    assert_eq!(
        TileCoord::new(MAX_ZOOM, 0, 0).unwrap().children().count(),
        0
    );
}

#[test]
fn a_childs_buffered_envelope_lies_inside_its_parents() {
    let margin = 64.0 / 4096.0;
    let parent = TileCoord::new(5, 0, 31).unwrap();
    let outer = parent.mercator_envelope(margin);
    for child in parent.children() {
        let inner = child.mercator_envelope(margin);
        assert!(inner.west > outer.west && inner.east < outer.east);
        assert!(inner.south > outer.south && inner.north < outer.north);
    }
}

#[test]
fn zoom_ranges_parse_and_validate() {
    assert_eq!(
        "0-14".parse::<ZoomRange>().unwrap(),
        ZoomRange { min: 0, max: 14 }
    );
    assert_eq!(
        "7".parse::<ZoomRange>().unwrap(),
        ZoomRange { min: 7, max: 7 }
    );
    assert!("14-3".parse::<ZoomRange>().is_err());
    assert!("0-25".parse::<ZoomRange>().is_err());
    assert!("-1".parse::<ZoomRange>().is_err());
    assert!("a-b".parse::<ZoomRange>().is_err());
}

#[test]
fn bboxes_validate_and_map_to_tile_ranges() {
    assert!("10,0,-10,5".parse::<BBox>().is_err());
    assert!("-200,0,10,5".parse::<BBox>().is_err());
    assert!("0,0,1".parse::<BBox>().is_err());
    let world = BBox::WORLD.tile_range(2);
    assert_eq!(
        (world.min_x, world.max_x, world.min_y, world.max_y),
        (0, 3, 0, 3)
    );
    let dhaka: BBox = "90.3,23.7,90.5,23.9".parse().unwrap();
    let range = dhaka.tile_range(10);
    assert_eq!((range.min_x, range.max_x), (768, 769));
    assert_eq!((range.min_y, range.max_y), (441, 442));
}

#[test]
fn mercator_envelopes_match_postgis_tile_envelope() {
    let env = TileCoord::new(1, 1, 0).unwrap().mercator_envelope(0.0);
    assert_eq!((env.west, env.south), (0.0, 0.0));
    assert!((env.east - MERCATOR_HALF_WORLD).abs() < 1e-6);
    let lonlat = env.mercator_to_lonlat();
    assert!((lonlat.north - MAX_MERCATOR_LAT).abs() < 1e-9);
    assert!((lonlat.east - 180.0).abs() < 1e-9);
}

#[test]
fn locality_order_keeps_siblings_together() {
    let mut tiles: Vec<TileCoord> = [(2, 0), (0, 0), (1, 1), (3, 3), (0, 1), (1, 0)]
        .iter()
        .map(|(x, y)| TileCoord::new(2, *x, *y).unwrap())
        .collect();
    tiles.sort_unstable_by_key(|t| locality_key(*t));
    let order: Vec<String> = tiles.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        order,
        ["2/0/0", "2/1/0", "2/0/1", "2/1/1", "2/2/0", "2/3/3"]
    );
}

#[test]
fn walk_order_keys_sort_by_zoom_then_locality_and_unpack() {
    let tiles: Vec<TileCoord> = [
        (24, (1 << 24) - 1, (1 << 24) - 1),
        (0, 0, 0),
        (3, 5, 2),
        (3, 2, 5),
        (24, 12_345, 6_789_012),
    ]
    .iter()
    .map(|(z, x, y)| TileCoord::new(*z, *x, *y).unwrap())
    .collect();
    for tile in &tiles {
        assert_eq!(tile_from_walk_order_key(walk_order_key(*tile)), *tile);
    }
    let mut sorted = tiles.clone();
    sorted.sort_unstable_by_key(|t| walk_order_key(*t));
    let mut expected = tiles;
    expected.sort_unstable_by_key(|t| (t.z(), locality_key(*t)));
    assert_eq!(sorted, expected);
}

#[test]
fn coverage_is_the_deepest_zooms_tiles_as_a_box_within_the_area() {
    let mut coverage = Coverage::default();
    assert_eq!(coverage.bbox(&BBox::WORLD), None);
    for tile in ["0/0/0", "2/1/1", "2/2/1", "2/1/2", "1/0/0"] {
        coverage.add(tile.parse().unwrap());
    }
    let bbox = coverage.bbox(&BBox::WORLD).unwrap();
    assert_eq!((bbox.west, bbox.east), (-90.0, 90.0));
    assert!(bbox.north > 66.5 && bbox.north < 66.52, "{bbox}");
    assert!(bbox.south < -66.5 && bbox.south > -66.52, "{bbox}");
    // Its tiles at that zoom are exactly the ones counted (less than a micro-degree beyond).
    let hair = 1e-6;
    let inner = BBox::new(
        bbox.west + hair,
        bbox.south + hair,
        bbox.east - hair,
        bbox.north - hair,
    )
    .unwrap();
    let range = inner.tile_range(2);
    assert_eq!(
        (range.min_x, range.max_x, range.min_y, range.max_y),
        (1, 2, 1, 2)
    );
    let within = BBox::new(0.0, 0.0, 10.0, 10.0).unwrap();
    assert_eq!(coverage.bbox(&within), Some(within));
}

#[test]
fn coverage_reaches_into_a_shallower_tile_beside_the_deepest_ones() {
    // A regional seed's zoom-3 tile holds a row that no zoom-4 tile of the seed does.
    let mut coverage = Coverage::default();
    for tile in ["0/0/0", "3/6/3", "4/8/8"] {
        coverage.add(tile.parse().unwrap());
    }
    let bbox = coverage.bbox(&BBox::WORLD).unwrap();
    for (z, x, y) in [(0, 0, 0), (3, 6, 3), (4, 8, 8)] {
        let tile = TileCoord::new(z, x, y).unwrap();
        assert!(bbox.tile_range(z).contains(tile), "{tile} outside {bbox}");
    }
    // Into the tile, not over it: the bounds end just past its near edge.
    assert!(bbox.east > 90.0 && bbox.east < 90.001, "{bbox}");
    assert_eq!(bbox.west, 0.0);
    // What was declared stays when a run writes nothing deeper.
    let declared = BBox::new(-30.0, -30.0, 30.0, 30.0).unwrap();
    let mut written = Coverage::default();
    written.add("4/8/8".parse().unwrap());
    assert_eq!(written.widen((4, declared), &BBox::WORLD), Some(declared));
}
