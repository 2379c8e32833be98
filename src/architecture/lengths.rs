//! Lengths a reader takes in at once: no source file over [`FILE_LINES`] lines, and no function
//! outside tests over [`FUNCTION_LINES`], so a long function is split along the steps its comments
//! already name rather than growing a step at a time.

use std::path::{Path, PathBuf};

/// The most lines a file under `src/` may hold.
const FILE_LINES: usize = 600;

/// The most lines a function outside tests may span, from its `fn` line to its closing brace.
const FUNCTION_LINES: usize = 100;

/// Functions still over [`FUNCTION_LINES`], as `(file under src/, name)`: a ratchet that only
/// shrinks. A function split below the limit must leave this list (the test says so), and no other
/// may join it.
const NOT_YET_SPLIT: &[(&str, &str)] = &[];

/// Every `.rs` file under `src/`, sorted.
pub(super) fn source_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Whether `path` holds only tests: a `tests.rs` or a file in a `tests` folder.
fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "tests.rs")
        || path
            .parent()
            .is_some_and(|dir| dir.components().any(|part| part.as_os_str() == "tests"))
}

/// `text` with its comments and the contents of its string and character literals blanked out
/// (line breaks kept, so lines still line up), so only the braces of code are counted: a format
/// string spanning lines may hold braces of its own (`{{`, `{name}`) and quotes (`\"`).
fn code_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        if c == '/' && next == Some('/') {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while at < chars.len() {
                if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                    depth += 1;
                    at += 2;
                } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                    depth -= 1;
                    at += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    code.push(blank(chars[at]));
                    at += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && raw_opens(&chars[at + 1..])
        {
            let hashes = chars[at + 1..].iter().take_while(|h| **h == '#').count();
            at += 2 + hashes;
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while at < chars.len() && !chars[at..].iter().collect::<String>().starts_with(&closing)
            {
                code.push(blank(chars[at]));
                at += 1;
            }
            at += closing.len();
            code.push_str("\"\"");
        } else if c == '"' {
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                if chars[at] == '\\' {
                    at += 1;
                }
                code.push(blank(*chars.get(at).unwrap_or(&' ')));
                at += 1;
            }
            at += 1;
            code.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('{', '\''), not a lifetime ('a): it closes within 3 more.
            let close = if next == Some('\\') {
                (at + 3..(at + 6).min(chars.len())).find(|i| chars[*i] == '\'')
            } else {
                (chars.get(at + 2) == Some(&'\'')).then_some(at + 2)
            };
            match close {
                Some(end) => {
                    code.push_str("''");
                    at = end + 1;
                }
                None => {
                    code.push(c);
                    at += 1;
                }
            }
        } else {
            code.push(c);
            at += 1;
        }
    }
    code
}

/// Whether the text after an `r` opens a raw string: `#`s then `"`.
fn raw_opens(after: &[char]) -> bool {
    let hashes = after.iter().take_while(|h| **h == '#').count();
    after.get(hashes) == Some(&'"')
}

/// The name of the function a line starts, if it starts one with a body.
fn function_started(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.peek() {
        let qualifier = ["pub", "const", "async", "unsafe", "extern"].contains(word)
            || word.starts_with("pub(")
            || word.starts_with('"');
        if !qualifier {
            break;
        }
        // `pub(in crate::seed)` spans words: skip to the one that closes it.
        if word.starts_with("pub(") && !word.contains(')') {
            while words.next().is_some_and(|w| !w.contains(')')) {}
            continue;
        }
        words.next();
    }
    if words.next() != Some("fn") || line.trim_end().ends_with(';') {
        return None;
    }
    let name: String = words
        .next()?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// `(name, lines)` of every function in `text` before its first `#[cfg(test)]`.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let masked = code_of(text);
    let code_lines: Vec<&str> = masked.lines().collect();
    let end = lines
        .iter()
        .position(|line| line.trim_start().starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    let mut at = 0;
    while at < end {
        let Some(name) = function_started(code_lines.get(at).unwrap_or(&"")) else {
            at += 1;
            continue;
        };
        let (mut depth, mut opened, mut last) = (0i64, false, at);
        while last < code_lines.len() {
            let code = code_lines.get(last).unwrap_or(&"");
            let opens = code.matches('{').count() as i64;
            depth += opens - code.matches('}').count() as i64;
            opened |= opens > 0;
            if opened && depth <= 0 {
                break;
            }
            last += 1;
        }
        found.push((name, last - at + 1));
        at = if opened { last + 1 } else { at + 1 };
    }
    found
}

#[test]
fn no_file_is_longer_than_a_reader_takes_in() {
    let long: Vec<String> = source_files()
        .iter()
        .map(|path| (path, std::fs::read_to_string(path).unwrap().lines().count()))
        .filter(|(_, lines)| *lines > FILE_LINES)
        .map(|(path, lines)| format!("{} ({lines} lines)", path.display()))
        .collect();
    assert!(long.is_empty(), "files over {FILE_LINES} lines: {long:?}");
}

#[test]
fn no_function_outside_tests_is_longer_than_a_reader_takes_in() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut long, mut listed) = (Vec::new(), Vec::new());
    for path in source_files().iter().filter(|path| !is_test_file(path)) {
        let text = std::fs::read_to_string(path).unwrap();
        let file = path.strip_prefix(&src).unwrap().display().to_string();
        for (name, lines) in function_lengths(&text) {
            let known = NOT_YET_SPLIT.contains(&(file.as_str(), name.as_str()));
            if lines > FUNCTION_LINES && known {
                listed.push((file.clone(), name));
            } else if lines > FUNCTION_LINES {
                long.push(format!("{name} in src/{file} ({lines} lines)"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {FUNCTION_LINES} lines; split them along the steps they name: {long:?}"
    );
    let split: Vec<_> = NOT_YET_SPLIT
        .iter()
        .filter(|(file, name)| !listed.iter().any(|(f, n)| f == file && n == name))
        .collect();
    assert!(
        split.is_empty(),
        "now within {FUNCTION_LINES} lines (or gone): remove them from NOT_YET_SPLIT: {split:?}"
    );
}

#[test]
fn the_length_check_sees_a_function_and_its_end() {
    let body = "    let brace = '{';\n    let text = \"}}\"; // }\n".repeat(3);
    let text = format!("pub(crate) async fn long<'a>(x: &'a str) {{\n{body}}}\nfn next() {{}}\n#[cfg(test)]\nfn hidden() {{\n}}\n");
    assert_eq!(
        function_lengths(&text),
        [("long".to_string(), 8), ("next".to_string(), 1)]
    );
    assert_eq!(function_started("fn declared(&self);"), None);
    assert_eq!(
        function_started("    pub(in crate::seed) async fn scoped("),
        Some("scoped".to_string())
    );
    let spanning =
        "fn sql() -> String {\n    format!(\"{{\\\"a\\\": 1}}\n     }} }}\n\")\n}\nfn after() {}\n";
    assert_eq!(
        function_lengths(spanning),
        [("sql".to_string(), 5), ("after".to_string(), 1)]
    );
}
