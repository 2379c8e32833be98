//! An address with a slash missing after its scheme (`gs:bucket/x.pmtiles`, `s3:/bucket`) reads as
//! a local path: the run would write a folder named `gs:bucket` in the working directory, so it is
//! refused with the address that was meant.

use super::Scheme;
use crate::error::{Error, Result};

/// Refuses `output` when it starts with a store's scheme and a colon but not the two slashes.
pub(super) fn check_scheme_slashes(output: &str) -> Result<()> {
    let (archive, address) = match output.strip_prefix("pmtiles:") {
        Some(rest) => ("pmtiles:", rest),
        None => ("", output),
    };
    for scheme in Scheme::ALL {
        let Some(rest) = address
            .strip_prefix(scheme.short_name())
            .and_then(|rest| rest.strip_prefix(':'))
        else {
            continue;
        };
        if !rest.starts_with("//") {
            let meant = format!(
                "{archive}{}{}",
                scheme.prefix(),
                rest.trim_start_matches('/')
            );
            return Err(Error::Usage(format!(
                "output `{output}` has a slash missing: did you mean {meant}? (a store's address \
                 starts with {}; a local path cannot start with `{}:`)",
                scheme.prefix(),
                scheme.short_name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::OutputTarget;

    fn refusal(output: &str) -> String {
        OutputTarget::parse(output).unwrap_err().to_string()
    }

    #[test]
    fn a_missing_slash_is_refused_with_the_address_meant() {
        for (typed, meant) in [
            ("gs:bucket/x.pmtiles", "gs://bucket/x.pmtiles"),
            ("gs:/bucket", "gs://bucket"),
            ("s3:bucket/tiles/", "s3://bucket/tiles/"),
            ("az:/container/v1", "az://container/v1"),
            ("pmtiles:s3:bucket/key", "pmtiles:s3://bucket/key"),
        ] {
            let message = refusal(typed);
            assert!(
                message.contains(&format!("did you mean {meant}?")),
                "{typed}: {message}"
            );
        }
    }

    #[test]
    fn full_addresses_and_local_paths_still_parse() {
        assert!(OutputTarget::parse("gs://bucket/x.pmtiles").is_ok());
        assert!(OutputTarget::parse("s3x/tiles.mbtiles").is_ok());
        assert!(OutputTarget::parse("gsa:b.mbtiles").is_ok());
    }
}
