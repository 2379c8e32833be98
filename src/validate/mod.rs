//! `oar-tiles validate`: checks what an output stores against the formats it claims to hold.

pub mod mvt;
