//! The rule of the test toolbox: everything tests share lives in `tests/common/`, and no test
//! module uses another's items. A helper borrowed from another test module ties the two together:
//! changing one test breaks a stranger, and what is shared hides among the tests instead of being
//! found, documented and reused in `common`. This reads the sources, so it needs no server.

use std::path::Path;

/// Written in two halves so that this file's own text holds no path for the check to find.
const CRATE: &str = concat!("crate", "::");
const SUPER: &str = concat!("super", "::");

/// Whether `c` can be part of an identifier, so that [`CRATE`] inside a longer name is not one.
fn identifier(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The 1-based lines of `text` holding a path to a module of the crate other than `common`:
/// [`CRATE`] followed by anything but `common`, and, where the file is a module of the crate root
/// (`at_root`), [`SUPER`] followed by anything but `common`, since that is the crate root too.
fn foreign_paths(text: &str, at_root: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let prefixes: &[&str] = if at_root { &[CRATE, SUPER] } else { &[CRATE] };
        let foreign = prefixes.iter().any(|prefix| {
            line.match_indices(prefix).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after: String = line[at + prefix.len()..]
                    .chars()
                    .take_while(|&c| identifier(c))
                    .collect();
                !before.is_some_and(identifier) && after != "common"
            })
        });
        if foreign {
            found.push((index + 1, line.trim().to_string()));
        }
    }
    found
}

#[test]
fn no_test_module_uses_another_test_modules_items() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let files = crate::common::files_with_extension(&tests, "rs");
    assert!(
        files.len() > 10,
        "found the test sources in {}",
        tests.display()
    );
    let mut problems = Vec::new();
    for file in &files {
        // A module of the crate root: tests/NAME.rs, or tests/NAME/mod.rs (tests/common/mod.rs).
        let parent = file.parent().unwrap();
        let at_root =
            parent == tests || (parent.parent() == Some(&tests) && file.ends_with("mod.rs"));
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in foreign_paths(&text, at_root) {
            let name = file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
            problems.push(format!("{}:{line}: {code}", name.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "test modules use another test module's items; move what they share into tests/common/:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_finds_a_test_modules_items_however_they_are_named() {
    let text = [
        format!("use {CRATE}common::run::oar_tiles;"),
        format!("use {CRATE}edge::{{metric, Watching}};"),
        format!("    let plan = {CRATE}edge::summary(&plan);"),
        format!("use {CRATE}{{common::pg, reseed::Setup}};"),
        format!("use {SUPER}common::fixture::Fixture;"),
        format!("use {SUPER}reseed::ZOOMS;"),
        "use oar_tiles::testing::https_client;".to_string(),
        format!("use {CRATE}common_like::x;"),
    ]
    .join("\n");
    let lines = |at_root| -> Vec<usize> {
        foreign_paths(&text, at_root)
            .into_iter()
            .map(|(line, _)| line)
            .collect()
    };
    assert_eq!(lines(true), [2, 3, 4, 6, 8]);
    // In a module's own folder `super` is that module, which its submodules may use.
    assert_eq!(lines(false), [2, 3, 4, 8]);
}
