use super::*;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn lines(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn waiting_batches_merge_per_set_of_takers_and_keep_every_line_and_the_oldest_age() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(OutboxStore::Folder(dir.path().join("outbox")), None);
    let consumers = lines(&["a", "b"]);
    block_on(async {
        let mut names = Vec::new();
        for batch in [
            &["1/0/0"][..],
            &["1/0/0", "2/1/1"],
            &["tiles.json"],
            &["3/2/2"],
        ] {
            outbox.add_batch(&lines(batch)).await.unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            let (all, _, _) = outbox.takers().await.unwrap();
            names.push(all.last().unwrap().clone());
        }
        // `a` took the last batch: it is merged with nothing.
        outbox.taken("a", &names[3..], &consumers).await.unwrap();
        let before = outbox.backlog().await.unwrap();
        assert_eq!(outbox.coalesce(8).await.unwrap(), 0, "below the threshold");
        assert_eq!(outbox.coalesce(1).await.unwrap(), 2);
        let after = outbox.backlog().await.unwrap();
        assert_eq!(after.batches, 2);
        assert!(after.oldest_seconds >= before.oldest_seconds);
        let mut pending = outbox.pending("b").await.unwrap();
        pending.sort();
        assert_eq!(pending[0].0, names[0]);
        assert_eq!(pending[0].1, lines(&["1/0/0", "2/1/1", "tiles.json"]));
        assert_eq!(pending[1].1, lines(&["3/2/2"]));
        assert_eq!(outbox.pending("a").await.unwrap().len(), 1);
    });
}

#[test]
fn a_hand_over_moves_what_waits_for_the_cdns_as_paths_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Outbox::new(OutboxStore::Folder(dir.path().join("p")), None);
    let tileset = Outbox::new(OutboxStore::Folder(dir.path().join("t")), None);
    let all = lines(&["cdn1", "cdn2", "changed-list"]);
    let cdns = lines(&["cdn1", "cdn2"]);
    block_on(async {
        partition.add_batch(&lines(&["1/0/0", "*"])).await.unwrap();
        let (names, _, _) = partition.takers().await.unwrap();
        partition.taken("cdn1", &names, &all).await.unwrap();
        let path_of = |line: &str| format!("CN/{line}");
        for _ in 0..2 {
            partition
                .hand_over(&tileset, &cdns, &all, "CN", path_of)
                .await
                .unwrap();
        }
        assert_eq!(tileset.pending("cdn1").await.unwrap().len(), 0);
        let moved = tileset.pending("cdn2").await.unwrap();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].1, lines(&["CN/*", "CN/1/0/0"]));
        // The partition keeps it for `--changed-list` only.
        assert!(partition.pending("cdn2").await.unwrap().is_empty());
        assert_eq!(partition.pending("changed-list").await.unwrap().len(), 1);
    });
}

#[test]
fn a_stopped_runs_intent_names_its_process_and_planned_tiles() {
    let run = StoppedRun::from_intent("000001700000000-4321", ["1/0/0", "2/3/1"].into_iter());
    assert_eq!(run.pid, Some(4321));
    assert_eq!(
        run.planned,
        Some(vec![
            TileCoord::new(1, 0, 0).unwrap(),
            TileCoord::new(2, 3, 1).unwrap()
        ])
    );
    let part = StoppedRun::from_intent("000001700000000-77.part-2-of-4", [EVERYTHING].into_iter());
    assert_eq!(part.pid, Some(77));
    assert_eq!(part.planned, None, "everything");
}

#[test]
fn lines_a_consumer_took_of_a_batch_leave_its_pending_only_and_go_with_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("outbox");
    let outbox = Outbox::new(OutboxStore::Folder(folder.clone()), None);
    let consumers = lines(&["cdn-a", "feed"]);
    block_on(async {
        outbox
            .add_batch(&lines(&["1/0/0", "2/1/1", "3/2/2", "tiles.json"]))
            .await
            .unwrap();
        let batch = outbox.pending("cdn-a").await.unwrap()[0].0.clone();
        outbox
            .took_lines("cdn-a", &[(batch.clone(), lines(&["1/0/0", "3/2/2"]))])
            .await
            .unwrap();
        outbox
            .took_lines("cdn-a", &[(batch.clone(), lines(&["2/1/1"]))])
            .await
            .unwrap();
        assert_eq!(
            outbox.pending("cdn-a").await.unwrap(),
            vec![(batch.clone(), lines(&["tiles.json"]))]
        );
        // The others still see the whole batch.
        assert_eq!(outbox.pending("feed").await.unwrap()[0].1.len(), 4);
        // Taken by all, the batch leaves with its partial record.
        outbox
            .taken("cdn-a", std::slice::from_ref(&batch), &consumers)
            .await
            .unwrap();
        outbox.taken("feed", &[batch], &consumers).await.unwrap();
        assert!(!folder.exists(), "the outbox is empty and removed");
    });
}

#[test]
fn a_merge_keeps_a_line_taken_only_where_its_newest_version_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(OutboxStore::Folder(dir.path().join("outbox")), None);
    block_on(async {
        let mut names = Vec::new();
        for batch in [
            &["1/0/0", "2/1/1", "tiles.json"][..],
            &["1/0/0"],
            &["3/2/2"],
        ] {
            outbox.add_batch(&lines(batch)).await.unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            let (all, _, _) = outbox.takers().await.unwrap();
            names.push(all.last().unwrap().clone());
        }
        // The CDN took the first batch's versions of two lines and the last batch's one.
        let took = [
            (names[0].clone(), lines(&["1/0/0", "2/1/1"])),
            (names[2].clone(), lines(&["3/2/2"])),
        ];
        outbox.took_lines("cdn", &took).await.unwrap();
        assert_eq!(outbox.coalesce(1).await.unwrap(), 2);
        let pending = outbox.pending("cdn").await.unwrap();
        assert_eq!(pending.len(), 1);
        // `1/0/0` changed again after its purge: the later version is still to purge.
        assert_eq!(pending[0].1, lines(&["1/0/0", "tiles.json"]));
        assert_eq!(outbox.pending("feed").await.unwrap()[0].1.len(), 4);
    });
}

#[test]
fn a_partial_record_that_cannot_be_read_sends_its_lines_again_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("outbox");
    let outbox = Outbox::new(OutboxStore::Folder(folder.clone()), None);
    block_on(async {
        outbox.add_batch(&lines(&["1/0/0", "2/1/1"])).await.unwrap();
        let batch = outbox.pending("cdn").await.unwrap()[0].0.clone();
        let record = folder.join(format!("{batch}{DONE}cdn"));
        // A sparse giant past every cap, then a link to a device.
        std::fs::File::create(&record)
            .unwrap()
            .set_len(LIST_CAP + 1)
            .unwrap();
        assert_eq!(
            outbox.pending("cdn").await.unwrap(),
            vec![(batch.clone(), lines(&["1/0/0", "2/1/1"]))]
        );
        std::fs::remove_file(&record).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &record).unwrap();
        assert_eq!(outbox.pending("cdn").await.unwrap()[0].1.len(), 2);
        // Taking lines replaces it with what is known.
        let took = [(batch.clone(), lines(&["2/1/1"]))];
        outbox.took_lines("cdn", &took).await.unwrap();
        assert_eq!(
            outbox.pending("cdn").await.unwrap(),
            vec![(batch, lines(&["1/0/0"]))]
        );
    });
}

#[test]
fn lines_appended_as_taken_leave_the_pending_lines_and_a_line_cut_short_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("outbox");
    let outbox = Outbox::new(OutboxStore::Folder(folder.clone()), None);
    block_on(async {
        outbox
            .add_batch(&lines(&["1/0/0", "2/1/1", "3/2/2", "3/2/20"]))
            .await
            .unwrap();
        let batch = outbox.pending("cdn").await.unwrap()[0].0.clone();
        outbox
            .append_done("cdn", &batch, &lines(&["1/0/0"]))
            .unwrap();
        outbox
            .append_done("cdn", &batch, &lines(&["2/1/1"]))
            .unwrap();
        // A crash in the middle of an append: `3/2/2` of `3/2/20`, without its newline.
        let record = folder.join(format!("{batch}{DONE}cdn"));
        let mut bytes = std::fs::read(&record).unwrap();
        bytes.extend_from_slice(b"3/2/2");
        std::fs::write(&record, bytes).unwrap();
        assert_eq!(
            outbox.pending("cdn").await.unwrap(),
            vec![(batch.clone(), lines(&["3/2/2", "3/2/20"]))]
        );
        assert_eq!(outbox.pending("feed").await.unwrap()[0].1.len(), 4);
        // The next append cuts it off rather than end it as a line.
        outbox
            .append_done("cdn", &batch, &lines(&["0/0/0"]))
            .unwrap();
        assert_eq!(
            outbox.pending("cdn").await.unwrap(),
            vec![(batch.clone(), lines(&["3/2/2", "3/2/20"]))]
        );
    });
}

/// Bytes this process has read so far (`rchar` of `/proc/self/io`).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_long_partial_record_is_cut_from_its_end_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(OutboxStore::Folder(dir.path().to_path_buf()), None);
    let path = dir.path().join(format!("batch{DONE}cdn"));
    // 256 MiB of taken lines (a hole reads as zeros), then a line a crash cut short.
    const TAKEN: u64 = 256 << 20;
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(TAKEN).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"\n12/1/", TAKEN).unwrap();
    drop(file);
    let before = bytes_read();
    outbox
        .append_done("cdn", "batch", &lines(&["12/1/13"]))
        .unwrap();
    let read = bytes_read() - before;
    assert!(read < 16 << 20, "{read} bytes read to append one line");
    let len = std::fs::metadata(&path).unwrap().len();
    let mut tail = vec![0u8; 9];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&path).unwrap(),
        &mut tail,
        len - 9,
    )
    .unwrap();
    assert_eq!(
        tail, b"\n12/1/13\n",
        "the cut line is gone, the new one whole"
    );
}
