//! What a remote output's key prefix or archive key may hold: only what every store, URL and CDN
//! takes as it is, so `tiles.json`'s URLs and a CDN's purges name the objects written.

use crate::error::{Error, Result};

/// Whether `byte` may stand in a remote output's key prefix or archive key: RFC 3986's unreserved
/// characters, which every store, URL and CDN takes as they are, and `=` (as in `date=2024`).
fn is_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'=')
}

/// Refuses a key prefix or archive key (`path`, without its outer `/`) of the remote output
/// `output` that no object name carries safely into the URLs built from it (`tiles.json`'s, a
/// CDN's purges): a `..` or `.` segment would leave the prefix in a URL, an empty one (`a//b`) is
/// not kept by every store, and `?`, `#`, `%`, spaces and the like end or change a URL.
pub(super) fn check_object_path(output: &str, path: &str) -> Result<()> {
    if path.is_empty() {
        return Ok(());
    }
    let rule = "each `/`-separated part holds only ASCII letters, digits, `-`, `_`, `.`, `~` and \
                `=`, and is neither empty nor `.` or `..`";
    for segment in path.split('/') {
        let fault = if segment.is_empty() {
            Some("an empty part (`//`)".to_string())
        } else if segment == "." || segment == ".." {
            Some(format!("the part `{segment}`"))
        } else {
            segment
                .chars()
                .find(|c| !c.is_ascii() || !is_key_byte(*c as u8))
                .map(|c| format!("the character {c:?} in `{segment}`"))
        };
        if let Some(fault) = fault {
            return Err(Error::Usage(format!(
                "output `{output}`: {fault} cannot stand in an object's key and its URLs: {rule}; \
                 rename the prefix (as in `tiles/v1`)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::OutputTarget;

    #[test]
    fn remote_prefixes_and_keys_no_url_carries_safely_are_refused_on_every_store() {
        for scheme in ["s3", "az", "gs"] {
            for (path, fault) in [
                ("../evil", "the part `..`"),
                ("v1/./x", "the part `.`"),
                ("x?y#z", "the character '?' in `x?y#z`"),
                ("a//b", "an empty part"),
                ("a b", "the character ' '"),
                ("v%2e1", "the character '%'"),
                ("tiles/caf\u{e9}.pmtiles", "the character '\u{e9}'"),
            ] {
                let output = format!("{scheme}://tiles/{path}");
                let err = OutputTarget::parse(&output).unwrap_err().to_string();
                assert!(err.contains(fault), "{output}: {err}");
                assert!(err.contains("rename the prefix"), "{output}: {err}");
            }
            for good in ["", "v1/", "/v1/date=2024-01/x_y~z", "v1/f.pmtiles"] {
                let output = format!("{scheme}://tiles/{good}");
                assert!(OutputTarget::parse(&output).is_ok(), "{output}");
            }
        }
    }
}
