//! Bounds on the config file, checked before the YAML parser sees it.
//!
//! A config file is small and shallow: a few dozen keys, five levels deep. The parser, though,
//! is not bounded by that: a file nested 100 000 levels deep took serde_yaml 28 s to refuse,
//! and a config path pointed at `/dev/zero` would be read until memory ran out. So the file is
//! read [`MAX_BYTES`] at most, and a quick scan of its nesting (indentation levels, block
//! sequence dashes, flow brackets) refuses more than [`MAX_DEPTH`] levels, in time linear in
//! the file's size, naming the file and the line.

use super::ConfigError;
use std::io::Read;
use std::path::Path;

/// Largest config file accepted, in bytes (1 MiB).
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Deepest nesting accepted (mappings, sequences and flow collections counted together).
pub const MAX_DEPTH: usize = 64;

/// Reads `path`, refusing a file larger than [`MAX_BYTES`] (without reading more than that).
///
/// # Errors
///
/// [`ConfigError::Read`] naming the file: not found, unreadable, too large, not UTF-8.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let err = |reason: String| ConfigError::Read {
        file: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| {
        err(match e.kind() {
            std::io::ErrorKind::NotFound => "not found (pass --config FILE)".to_string(),
            _ => e.to_string(),
        })
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(err(format!(
            "larger than {MAX_BYTES} bytes; a config file is a few kilobytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| err("not valid UTF-8".to_string()))
}

/// Refuses `text` (from `path`) when it is larger than [`MAX_BYTES`] or nested deeper than
/// [`MAX_DEPTH`] levels.
///
/// # Errors
///
/// [`ConfigError::Parse`] naming the file and the first line that goes too deep.
pub fn check(text: &str, path: &Path) -> Result<(), ConfigError> {
    let err = |reason: String| ConfigError::Parse {
        file: path.to_path_buf(),
        reason,
    };
    if text.len() as u64 > MAX_BYTES {
        return Err(err(format!(
            "larger than {MAX_BYTES} bytes; a config file is a few kilobytes"
        )));
    }
    match too_deep(text) {
        Some(line) => Err(err(format!(
            "line {line}: nested more than {MAX_DEPTH} levels deep; a config file needs a handful"
        ))),
        None => Ok(()),
    }
}

/// The first line (from 1) at which `text` nests deeper than [`MAX_DEPTH`], if any. Block
/// nesting is the stack of indentation columns (a `- ` opens one more at the column after it);
/// flow nesting is the count of open `[` / `{` outside quotes and comments; the two add up.
/// Over-counting is harmless (the limit is far beyond any real file); the scan never looks at
/// a character twice.
fn too_deep(text: &str) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (i, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut col = bytes.iter().take_while(|&&b| b == b' ').count();
        let rest = &bytes[col..];
        if flow == 0 {
            if rest.is_empty() || rest[0] == b'#' {
                continue;
            }
            while indents.last().is_some_and(|&top| top > col) {
                indents.pop();
            }
            if indents.last().is_none_or(|&top| top < col) {
                indents.push(col);
                if indents.len() > MAX_DEPTH {
                    return Some(i + 1);
                }
            }
            // `- - - x`: each dash opens a sequence whose items sit further right.
            let mut j = col;
            while bytes.get(j) == Some(&b'-') && matches!(bytes.get(j + 1), Some(b' ')) {
                j += 2;
                while bytes.get(j) == Some(&b' ') {
                    j += 1;
                }
                col = j;
                indents.push(col);
                if indents.len() > MAX_DEPTH {
                    return Some(i + 1);
                }
            }
        }
        match scan_flow(&bytes[col..], flow, indents.len()) {
            Some(depth) => flow = depth,
            None => return Some(i + 1),
        }
    }
    None
}

/// Follows the flow brackets of one line from depth `flow`; `None` when the line goes past
/// [`MAX_DEPTH`] (with `block` levels already open). Quoted scalars are skipped when a quote
/// starts a token; a `#` after a space (or at the start) ends the line.
fn scan_flow(line: &[u8], mut flow: usize, block: usize) -> Option<usize> {
    let mut k = 0;
    let mut token_start = true;
    while k < line.len() {
        let b = line[k];
        match b {
            b'#' if token_start => return Some(flow),
            b'"' | b'\'' if token_start => {
                k += 1;
                while k < line.len() && line[k] != b {
                    if b == b'"' && line[k] == b'\\' {
                        k += 1;
                    }
                    k += 1;
                }
            }
            b'[' | b'{' => {
                flow += 1;
                if block + flow > MAX_DEPTH {
                    return None;
                }
            }
            b']' | b'}' => flow = flow.saturating_sub(1),
            _ => {}
        }
        token_start = matches!(b, b' ' | b'\t' | b'[' | b'{' | b',' | b':');
        k += 1;
    }
    Some(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_files_pass_and_deep_ones_are_refused_at_their_line() {
        let ok = "# c [[[[\nkeycloak:\n  server_url: \"http://x[[[[\"\n  packages:\n    a: {realm: r, client_id: c}\n  list:\n    - - a\n      - b\n    - 'it''s [['\n";
        assert_eq!(too_deep(ok), None);
        let flow = format!("a: {}1{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(too_deep(&flow), Some(1));
        let fits = format!("a: {}1{}\n", "[".repeat(10), "]".repeat(10));
        assert_eq!(too_deep(&fits), None);
        let mut block = String::new();
        for d in 0..=MAX_DEPTH {
            block.push_str(&format!("{}k{d}:\n", " ".repeat(d)));
        }
        assert_eq!(too_deep(&block), Some(MAX_DEPTH + 1));
        let dashes = format!("{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert_eq!(too_deep(&dashes), Some(1));
        // Flow nesting over several lines counts across them.
        let lines = "a: [\n".to_string() + &"[\n".repeat(MAX_DEPTH);
        assert!(too_deep(&lines).is_some());
    }

    #[test]
    fn errors_name_the_file_and_the_limit() {
        let path = Path::new("/etc/kr/config.yaml");
        let deep = "[".repeat(100_000);
        let err = check(&deep, path).unwrap_err().to_string();
        assert!(err.starts_with("config file /etc/kr/config.yaml: line 1: nested more than 64"));
        let big = "#".repeat(MAX_BYTES as usize + 1);
        let err = check(&big, path).unwrap_err().to_string();
        assert!(err.contains("larger than 1048576 bytes"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, &big).unwrap();
        let err = read(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("larger than 1048576 bytes"), "{err}");
        std::fs::write(&file, "a: 1\n").unwrap();
        assert_eq!(read(&file).unwrap(), "a: 1\n");
        let err = read(&dir.path().join("absent.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
