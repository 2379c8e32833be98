//! The configuration a reader copies must be one the tool accepts: `sample-config.toml` and every
//! TOML code block of `README.md` and the book (`docs/src/**/*.md`) go through the real config
//! parser, `oar_tiles::Config::parse` (what `Config::load` runs on a `--config` file), with no
//! `DATABASE_URL` standing in. No server is needed, so these tests always run.
//!
//! The rule for a block, by its info string (the words after the opening fence, split on commas):
//!
//! - ` ```toml `: a whole config file; it must parse as it is.
//! - ` ```toml,fragment `: a part of one, starting with a table header (`[watch]`,
//!   `[[tileset.cdn]]`, `[tileset.freshness]`, `[[tileset.layer]]`, …). It is appended to [`BASE`],
//!   a config of one tileset with one layer, so a `[tileset.…]` table or `[[tileset.…]]` entry
//!   lands in that tileset, and the result must parse.
//! - `invalid` beside either (` ```toml,invalid `, ` ```toml,fragment,invalid `): a block that shows
//!   a mistake; it must FAIL to parse, so the mistake stays one.
//!
//! Any other word after `toml` fails the test (a typo would otherwise skip a block's check).

use std::path::{Path, PathBuf};

/// The config a fragment is appended to: the least that parses, one tileset with one layer.
const BASE: &str = r#"[database]
url = "postgresql://tiles@127.0.0.1:5432/oar"

[[tileset]]
name = "facilities"
output = "facilities.mbtiles"

[[tileset.layer]]
name = "facilities"
table = "public.facilities"
geometry_column = "location"
"#;

/// One TOML code block of a Markdown file.
struct Snippet {
    /// The file and the 1-based line of its opening fence, for messages.
    at: String,
    /// The Markdown file's name and the 0-based line of the fence, to point at a key's own line.
    name: String,
    fence: usize,
    /// The fence's indentation, taken off every line of `text`.
    indent: usize,
    /// The block's text, without the fence's indentation.
    text: String,
    fragment: bool,
    invalid: bool,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The TOML blocks of one Markdown text. A fence may be indented (a block inside a list item);
/// its indentation is taken off the block's lines. Blocks in other languages are skipped whole, so
/// a ```` ``` ```` line inside them is not taken for an opening fence.
fn toml_snippets(name: &str, markdown: &str) -> Vec<Snippet> {
    let mut snippets = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut body = Vec::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                break;
            }
            body.push(inner.get(indent..).unwrap_or(inner.trim_start()));
        }
        let mut words = info.trim().split(',').map(str::trim);
        if words.next() != Some("toml") {
            continue;
        }
        let (mut fragment, mut invalid) = (false, false);
        for word in words {
            match word {
                "fragment" => fragment = true,
                "invalid" => invalid = true,
                other => panic!(
                    "{name}:{}: unknown word `{other}` in the info string `{info}` \
                     (known: fragment, invalid)",
                    index + 1
                ),
            }
        }
        snippets.push(Snippet {
            at: format!("{name}:{}", index + 1),
            name: name.to_string(),
            fence: index,
            indent,
            text: body.join("\n") + "\n",
            fragment,
            invalid,
        });
    }
    snippets
}

/// What a snippet's check found wrong, or `None` when it holds.
fn check(snippet: &Snippet, file: &Path) -> Option<String> {
    let text = if snippet.fragment {
        format!("{BASE}\n{}", snippet.text)
    } else {
        snippet.text.clone()
    };
    match (oar_tiles::Config::parse(file, &text, None), snippet.invalid) {
        (Ok(_), false) | (Err(_), true) => None,
        (Err(err), false) => Some(format!(
            "{}: does not parse: {}",
            snippet.at,
            in_markdown(snippet, err)
        )),
        (Ok(_), true) => Some(format!(
            "{}: marked `invalid` but parses: the mistake it shows is no longer one",
            snippet.at
        )),
    }
}

/// The parser's message with its position moved from the parsed text to the Markdown file, so it
/// names the line to fix (a fragment's text starts after [`BASE`] and a blank line).
fn in_markdown(snippet: &Snippet, err: oar_tiles::Error) -> String {
    let oar_tiles::Error::Config {
        line,
        column,
        message,
        ..
    } = err
    else {
        return err.to_string();
    };
    let offset = if snippet.fragment {
        BASE.lines().count() + 1
    } else {
        0
    };
    match line {
        Some(line) if line > offset => format!(
            "{}:{}:{}: {message}",
            snippet.name,
            snippet.fence + 1 + line - offset,
            column.unwrap_or(1) + snippet.indent
        ),
        _ => message,
    }
}

/// The TOML blocks of the README and every page of the book.
fn every_snippet() -> Vec<(PathBuf, Snippet)> {
    let mut files = vec![root().join("README.md")];
    files.extend(crate::common::files_with_extension(
        &root().join("docs/src"),
        "md",
    ));
    let mut found = Vec::new();
    for file in files {
        let markdown =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for snippet in toml_snippets(&name, &markdown) {
            found.push((file.clone(), snippet));
        }
    }
    found
}

#[test]
fn the_sample_config_parses() {
    let path = root().join("sample-config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    if let Err(err) = oar_tiles::Config::parse(&path, &text, None) {
        panic!("sample-config.toml does not parse: {err}");
    }
}

#[test]
fn every_toml_snippet_of_the_readme_and_the_book_parses() {
    let snippets = every_snippet();
    // The README's first config and the book's CDN, freshness and feed tables at least: a count
    // this low means the blocks were no longer found, not that they all pass.
    assert!(
        snippets.len() >= 6,
        "only {} TOML block(s) found in README.md and docs/src",
        snippets.len()
    );
    let problems: Vec<String> = snippets
        .iter()
        .filter_map(|(file, snippet)| check(snippet, file))
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {} TOML block(s) fail their check:\n{}",
        problems.len(),
        snippets.len(),
        problems.join("\n")
    );
}

#[test]
fn the_check_tells_a_broken_snippet_from_a_sound_one() {
    let markdown = [
        "text",
        "```toml,fragment",
        "[watch]",
        "debounce = \"2s\"",
        "```",
        "- in a list:",
        "  ```toml,fragment",
        "  [watch]",
        "  debounse = \"2s\"",
        "  ```",
        "```sh",
        "debounse = 2",
        "```",
        "```toml,fragment,invalid",
        "[watch]",
        "debounse = \"2s\"",
        "```",
    ]
    .join("\n");
    let snippets = toml_snippets("example.md", &markdown);
    assert_eq!(snippets.len(), 3, "blocks in other languages are skipped");
    let file = root().join("example.md");
    assert_eq!(check(&snippets[0], &file), None);
    let broken = check(&snippets[1], &file).expect("a misspelt key fails");
    // The fence is line 7 and the misspelt key line 9, in the file and at its column.
    assert!(
        broken
            .starts_with("example.md:7: does not parse: example.md:9:3: unknown field `debounse`"),
        "{broken}"
    );
    assert_eq!(
        check(&snippets[2], &file),
        None,
        "an invalid block that fails holds"
    );
}
