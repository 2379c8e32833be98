//! Config text made into SQL text: the one place identifiers and string literals are quoted.

/// Quotes an identifier for SQL, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that means the same under any `standard_conforming_strings`: the server (or an
/// application's session running a trigger) reads backslashes in an `E''` string the same way
/// whatever that setting says.
pub fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `body` as a dollar-quoted string whose tag occurs nowhere in it: the bodies hold schema, table
/// and column names, which may contain any text, `$f$` included.
pub fn dollar_quote(body: &str) -> String {
    let tag = (0..)
        .map(|n| {
            if n == 0 {
                "$f$".to_string()
            } else {
                format!("$f{n}$")
            }
        })
        .find(|tag| !body.contains(tag.as_str()))
        .expect("some tag is not in the body");
    format!("{tag}{body}\n{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_cannot_end_a_quoted_name_or_string() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal(r"it's \' x"), r"E'it''s \\'' x'");
    }
}
