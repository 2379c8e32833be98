//! The tally and the summaries' text, against known runs.

use super::*;

#[test]
fn the_tally_counts_per_zoom_and_keeps_the_slowest() {
    let mut tally = Tally::default();
    for i in 0..20u32 {
        let tile = TileCoord::new(5, i, 0).unwrap();
        let stored = (i % 2 == 0).then_some(100 + i as usize);
        tally.record(
            tile,
            Mode::Render,
            Duration::from_millis(u64::from(i)),
            stored,
        );
    }
    tally.record(
        TileCoord::new(1, 0, 0).unwrap(),
        Mode::Probe,
        Duration::ZERO,
        None,
    );
    let header = SummaryHeader::complete("t".into(), "o".into(), "1-5".into());
    let summary = tally.summarize(header, Duration::from_secs(2));
    assert_eq!(summary.tiles_written, 10);
    assert_eq!(summary.tiles_probed, 1);
    let z5 = summary.per_zoom.iter().find(|z| z.zoom == 5).unwrap();
    assert_eq!((z5.queried, z5.empty, z5.written), (20, 10, 10));
    assert_eq!(z5.largest_tile.as_ref().unwrap().tile, "5/18/0");
    assert_eq!(z5.render_ms_max, 19.0);
    assert_eq!(summary.slowest_tiles.len(), SLOWEST_KEPT);
    assert_eq!(summary.slowest_tiles[0].tile, "5/19/0");
    assert!(summary.to_text().contains("5/18/0 118 B"));
}
