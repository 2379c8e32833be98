#![allow(dead_code)]
pub mod mvt;
