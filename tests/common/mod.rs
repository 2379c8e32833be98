#![allow(dead_code)]
pub mod mvt;
pub mod pg;
pub mod run;
pub mod s3;
