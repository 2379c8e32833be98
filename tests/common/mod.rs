//! Helpers shared by the integration tests: the test database, running the binary, reading MVT
//! and the S3 test server.

pub mod fixture;
pub mod mvt;
pub mod pg;
pub mod recorder;
pub mod run;
pub mod s3;
pub mod serve;
pub mod varnish;
