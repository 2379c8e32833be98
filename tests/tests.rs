//! The integration tests, one binary (ripgrep's layout): each module runs the real `oar-tiles`
//! binary against real PostgreSQL + PostGIS, S3-compatible and GDAL processes, or checks the
//! project's scripts. Tests that need the database are `#[ignore]`d so that a plain `cargo test`
//! reports them as ignored; `scripts/test.sh` starts the servers and runs them all.

mod common;

mod agg_hash;
mod agg_lag;
mod bad_input;
mod bulk_changes;
mod cloudfront;
mod clusters;
mod dirty_shapes;
mod dirty_subtrees;
mod doc_snippets;
mod edge;
mod edge_calls;
mod edge_check;
mod edge_faults;
mod edge_hygiene;
mod edge_pace;
mod edge_plan;
mod edge_price;
mod geometries;
mod golden_tiles;
mod hostile;
mod hostile_files;
mod hostile_geometry;
mod image;
mod live_feed;
mod live_maps;
mod moved_shapes;
mod mvt_decoder;
mod outbox;
mod outbox_notes;
mod outputs;
mod partition_edge;
mod partition_types;
mod partitions;
mod pmtiles;
mod pmtiles_s3;
mod production;
mod remote_stores;
mod replicas;
mod reseed;
mod robustness;
mod row_sets;
mod s3;
mod seed;
mod serve;
mod setup_scripts;
mod shard_outputs;
mod shards;
mod slurm;
mod store_secrets;
mod toolbox;
mod tree_safety;
mod untransformable;
mod validate;
mod validate_container;
mod validate_mvt;
mod watch;
mod watch_partitions;
mod wide_geometries;
mod zoom_first;
