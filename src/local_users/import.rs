//! Bringing accounts in from another system: CSV or JSON lines, one account a row.
//!
//! A bad row is reported with its line number and never stops the rest; nothing in a report
//! quotes a password or a hash. Rows go through the same checks as [`LocalUsers::add`] (names,
//! passwords) plus [`password::check_importable`] for hashes.
//!
//! The input is streamed, never read whole, and bounded: a row is at most [`MAX_ROW_BYTES`],
//! a file at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes. A file linked to `/dev/zero`
//! once grew the process to 23 GB; now the first over-long row stops the import (rows before it
//! stay imported), naming the line and the cap. The service runs imports for socket callers,
//! so the same bounds protect it.

use super::{check_password, hash, LocalUsers, UserError};
use crate::account::Account;
use crate::password;
use std::io::{BufRead, Read};
use std::path::Path;

/// Longest import row accepted, in bytes, line end excluded (64 KiB: a row is a few hundred).
pub const MAX_ROW_BYTES: usize = 64 * 1024;
/// Most lines an import reads (blank, comment and header lines included).
pub const MAX_LINES: usize = 1_000_000;
/// Most bytes an import reads (256 MiB).
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The layout of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON object per line:
    /// `{"username": "...", "package": "...", "password_hash": "$argon2id$..."}`, or
    /// `"password": "plain"` instead of `password_hash` (hashed on import); optional
    /// `"enabled": bool` (default true). Other keys are ignored.
    JsonLines,
    /// A header line naming the columns, then one row per user. Columns (any order):
    /// `username`, `package`, `password_hash` or `password`, optional `enabled`
    /// (`true/false/yes/no/1/0`, empty = true). Fields may be double-quoted (`""` is a quote
    /// inside); a quoted field cannot span lines. PHC hashes contain commas
    /// (`m=19456,t=2,p=1`): when a row has more fields than the header, the surplus is given
    /// back to the one secret column (joined with commas), which is right because the other
    /// columns never contain an unquoted comma. With both secret columns, quote the hash.
    Csv,
}

impl ImportFormat {
    /// The format for a file name: `.jsonl`, `.ndjson`, `.json` → JSON lines; `.csv` → CSV.
    pub fn from_path(path: &Path) -> Option<ImportFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(ImportFormat::JsonLines),
            "csv" => Some(ImportFormat::Csv),
            _ => None,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts created.
    pub imported: usize,
    /// Rows naming an account that already existed (left untouched; each is also in `errors`).
    pub skipped_existing: usize,
    /// `(line number, why)` for every row not imported; line numbers count from 1 and include
    /// blank, comment and header lines. No message contains a password or a hash.
    pub errors: Vec<(usize, String)>,
}

/// One row of an import, checked.
struct Row {
    username: String,
    package: String,
    secret: Secret,
    enabled: bool,
}

/// The password part of an import row.
enum Secret {
    Hash(String),
    Plain(String),
}

impl Secret {
    /// One of the two columns (JSON keys) `password_hash` and `password`, never both.
    fn from_columns(hash: Option<String>, plain: Option<String>) -> Result<Secret, RowError> {
        match (hash, plain) {
            (Some(h), None) => Ok(Secret::Hash(h)),
            (None, Some(p)) => Ok(Secret::Plain(p)),
            (Some(_), Some(_)) => Err(RowError::Bad(
                "give either `password_hash` or `password`, not both".to_string(),
            )),
            (None, None) => Err(RowError::Bad(
                "`password_hash` (or `password`) is missing or empty".to_string(),
            )),
        }
    }
}

impl LocalUsers {
    /// Imports accounts from `reader` (see [`ImportFormat`] for the layouts). Blank lines and
    /// lines starting with `#` are skipped. A bad row is reported with its line number and the
    /// rest is still imported; an existing account is never overwritten (reported as "already
    /// exists" and counted in `skipped_existing`). Hashes are checked with
    /// [`password::check_importable`]; plain passwords are hashed with argon2id.
    ///
    /// At most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes are read, each line at most
    /// [`MAX_ROW_BYTES`]: past a bound the import stops (what was imported before stays).
    ///
    /// # Errors
    /// [`UserError::BadInput`] when a CSV header is missing or unusable or a bound is passed
    /// (naming the line and the bound), [`UserError::Read`] when the reader fails (what was
    /// imported before stays), or a store error.
    pub fn import(
        &self,
        mut reader: impl BufRead,
        format: ImportFormat,
    ) -> Result<ImportReport, UserError> {
        let mut report = ImportReport::default();
        let mut header: Option<CsvHeader> = None;
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        let mut total = 0u64;
        let result = loop {
            buf.clear();
            line_no += 1;
            // One byte more than a row may have, plus its line end: enough to tell.
            let bound = (MAX_ROW_BYTES + 2) as u64;
            match (&mut reader).take(bound).read_until(b'\n', &mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(cause) => {
                    break Err(UserError::Read {
                        line: line_no,
                        cause,
                    })
                }
            }
            if let Err(e) = check_bounds(&buf, line_no, &mut total) {
                break Err(e);
            }
            let Ok(text) = std::str::from_utf8(&buf) else {
                report.errors.push((line_no, "not valid UTF-8".to_string()));
                continue;
            };
            let text = text.strip_suffix('\n').unwrap_or(text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            // Spreadsheet exports often start with a byte-order mark.
            let text = if line_no == 1 {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            let trimmed = text.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let row = match format {
                ImportFormat::JsonLines => parse_json_row(trimmed),
                ImportFormat::Csv => match &header {
                    None => match CsvHeader::parse(text) {
                        Ok(h) => {
                            header = Some(h);
                            continue;
                        }
                        Err(e) => break Err(UserError::BadInput(format!("line {line_no}: {e}"))),
                    },
                    Some(h) => h.row(text),
                },
            };
            match row.and_then(|r| self.import_row(r)) {
                Ok(()) => report.imported += 1,
                Err(RowError::Exists) => {
                    report.skipped_existing += 1;
                    report.errors.push((line_no, "already exists".to_string()));
                }
                Err(RowError::Bad(msg)) => report.errors.push((line_no, msg)),
                Err(RowError::Fatal(e)) => break Err(e),
            }
        };
        // Whatever happened, what was imported must last.
        self.store.flush()?;
        result?;
        if format == ImportFormat::Csv && header.is_none() {
            return Err(UserError::BadInput(
                "the CSV file has no header line (username,package,password_hash[,enabled])"
                    .to_string(),
            ));
        }
        log::info!(
            "import: {} local user(s) imported, {} already existed, {} row(s) refused",
            report.imported,
            report.skipped_existing,
            report.errors.len() - report.skipped_existing
        );
        Ok(report)
    }

    fn import_row(&self, row: Row) -> Result<(), RowError> {
        let account =
            Account::new(row.username, row.package).map_err(|e| RowError::Bad(e.to_string()))?;
        let hash = match row.secret {
            Secret::Hash(h) => {
                password::check_importable(&h)
                    .map_err(|e| RowError::Bad(format!("password_hash: {e}")))?;
                h
            }
            Secret::Plain(p) => {
                check_password("password", &p).map_err(RowError::from_input)?;
                hash(&p).map_err(RowError::Fatal)?
            }
        };
        match self.insert_new(&account, hash, row.enabled) {
            Ok(()) => Ok(()),
            Err(UserError::Exists { .. }) => Err(RowError::Exists),
            Err(e) => Err(RowError::Fatal(e)),
        }
    }
}

/// Refuses line `line_no` (as read, line end included) when it is longer than
/// [`MAX_ROW_BYTES`] or takes the import past [`MAX_LINES`] or [`MAX_BYTES`]; adds its length
/// to `total`.
fn check_bounds(line: &[u8], line_no: usize, total: &mut u64) -> Result<(), UserError> {
    let stop = "the import stops here; the rows before it were imported";
    if line_no > MAX_LINES {
        return Err(UserError::BadInput(format!(
            "line {line_no}: an import file has at most {MAX_LINES} lines ({stop}; split the file)"
        )));
    }
    let content = line.strip_suffix(b"\n").unwrap_or(line);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    if content.len() > MAX_ROW_BYTES {
        return Err(UserError::BadInput(format!(
            "line {line_no}: longer than {MAX_ROW_BYTES} bytes ({stop})"
        )));
    }
    *total += line.len() as u64;
    if *total > MAX_BYTES {
        return Err(UserError::BadInput(format!(
            "line {line_no}: an import file has at most {MAX_BYTES} bytes ({stop}; split the file)"
        )));
    }
    Ok(())
}

/// Why one import row was not imported.
enum RowError {
    /// The account is there already.
    Exists,
    /// The row is wrong; the message says how (never with a secret in it).
    Bad(String),
    /// Not the row's fault (store, hashing): the import stops.
    Fatal(UserError),
}

impl RowError {
    fn from_input(e: UserError) -> RowError {
        match e {
            UserError::BadInput(msg) => RowError::Bad(msg),
            other => RowError::Fatal(other),
        }
    }
}

/// One JSON-lines row. Parsed through `serde_json::Value` so that no message can quote a
/// value (serde's type errors do: "invalid type: string \"…\"").
fn parse_json_row(line: &str) -> Result<Row, RowError> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| RowError::Bad(format!("not valid JSON ({})", json_error_kind(&e))))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(RowError::Bad("not a JSON object".to_string()));
    };
    let string = |name: &str| -> Result<Option<String>, RowError> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RowError::Bad(format!("field `{name}` must be a string"))),
        }
    };
    let required = |name: &str| -> Result<String, RowError> {
        string(name)?.ok_or_else(|| RowError::Bad(format!("field `{name}` is missing")))
    };
    let username = required("username")?;
    let package = required("package")?;
    let secret = Secret::from_columns(string("password_hash")?, string("password")?)?;
    let enabled = match obj.get("enabled") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err(RowError::Bad(
                "field `enabled` must be true or false".to_string(),
            ))
        }
    };
    Ok(Row {
        username,
        package,
        secret,
        enabled,
    })
}

/// The kind and column of a JSON syntax error, without serde_json's wording (kept short and
/// certainly free of the line's content).
fn json_error_kind(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Eof => "unexpected end of line",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    };
    format!("{kind} at column {}", e.column())
}

/// The column positions named by a CSV header.
struct CsvHeader {
    width: usize,
    username: usize,
    package: usize,
    hash: Option<usize>,
    plain: Option<usize>,
    enabled: Option<usize>,
}

impl CsvHeader {
    fn parse(line: &str) -> Result<CsvHeader, String> {
        let names = split_csv(line).map_err(|e| format!("CSV header: {e}"))?;
        let find = |name: &str| -> Result<Option<usize>, String> {
            let mut hits = names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.trim().eq_ignore_ascii_case(name))
                .map(|(i, _)| i);
            let first = hits.next();
            if hits.next().is_some() {
                return Err(format!("CSV header names column `{name}` twice"));
            }
            Ok(first)
        };
        let expected = "expected username,package,password_hash[,enabled]";
        let username = find("username")?
            .ok_or_else(|| format!("CSV header has no `username` column ({expected})"))?;
        let package = find("package")?
            .ok_or_else(|| format!("CSV header has no `package` column ({expected})"))?;
        let hash = find("password_hash")?;
        let plain = find("password")?;
        let enabled = find("enabled")?;
        if hash.is_none() && plain.is_none() {
            return Err(format!(
                "CSV header has no `password_hash` (or `password`) column ({expected})"
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if ![Some(username), Some(package), hash, plain, enabled].contains(&Some(i)) {
                return Err(format!(
                    "CSV header has an unknown column `{}` ({expected})",
                    n.trim()
                ));
            }
        }
        Ok(CsvHeader {
            width: names.len(),
            username,
            package,
            hash,
            plain,
            enabled,
        })
    }

    fn row(&self, line: &str) -> Result<Row, RowError> {
        let mut fields = split_csv(line).map_err(RowError::Bad)?;
        if fields.len() > self.width {
            // Give the surplus back to the one secret column (see `ImportFormat::Csv`).
            let secret = match (self.hash, self.plain) {
                (Some(i), None) | (None, Some(i)) => i,
                _ => {
                    return Err(RowError::Bad(format!(
                        "{} fields, the header has {} (quote the password_hash)",
                        fields.len(),
                        self.width
                    )))
                }
            };
            let surplus = fields.len() - self.width;
            let joined = fields
                .drain(secret..=secret + surplus)
                .collect::<Vec<_>>()
                .join(",");
            fields.insert(secret, joined);
        }
        if fields.len() < self.width {
            return Err(RowError::Bad(format!(
                "{} fields, the header has {}",
                fields.len(),
                self.width
            )));
        }
        // Every index is below `width`, and `fields` has exactly `width` entries now.
        let mut take_field = |i: usize| std::mem::take(&mut fields[i]);
        let username = take_field(self.username).trim().to_string();
        let package = take_field(self.package).trim().to_string();
        let hash = self
            .hash
            .map(&mut take_field)
            .filter(|h| !h.trim().is_empty());
        let plain = self.plain.map(&mut take_field).filter(|p| !p.is_empty());
        let secret = Secret::from_columns(hash.map(|h| h.trim().to_string()), plain)?;
        let enabled = match self.enabled.map(&mut take_field) {
            None => true,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => {
                    return Err(RowError::Bad(
                        "enabled must be true/false, yes/no or 1/0".to_string(),
                    ))
                }
            },
        };
        Ok(Row {
            username,
            package,
            secret,
            enabled,
        })
    }
}

/// Splits one CSV line: commas separate fields; a field that starts with `"` runs to the
/// closing `"` (`""` inside is one quote) and may contain commas. Unquoted fields are taken
/// as they are.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err("unexpected text after a closing quote".to_string());
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_users::tests::{acct, is_ok, pbkdf2_hash, setup};
    use crate::local_users::Verification;
    #[test]
    fn imported_legacy_hashes_are_upgraded_on_first_good_login() {
        let (users, _) = setup();
        let pb = pbkdf2_hash("pbkdf2 pw");
        let bc = bcrypt::hash("bcrypt pw", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let input = format!(
            "{{\"username\":\"dave\",\"package\":\"web\",\"password_hash\":\"{pb}\"}}\n\
             {{\"username\":\"erin\",\"package\":\"web\",\"password_hash\":\"{bc}\"}}\n"
        );
        let report = users
            .import(input.as_bytes(), ImportFormat::JsonLines)
            .unwrap();
        assert_eq!(report.imported, 2, "{report:?}");
        for (user, pw, legacy) in [("dave", "pbkdf2 pw", &pb), ("erin", "bcrypt pw", &bc)] {
            assert_eq!(
                &users.get(&acct(user, "web")).unwrap().unwrap().hash,
                legacy
            );
            assert_eq!(
                users.verify(&acct(user, "web"), "wrong").unwrap(),
                Verification::Invalid
            );
            assert_eq!(
                &users.get(&acct(user, "web")).unwrap().unwrap().hash,
                legacy
            );
            let Verification::Ok { hash } = users.verify(&acct(user, "web"), pw).unwrap() else {
                panic!("{user} should log in");
            };
            assert!(hash.starts_with("$argon2id$"), "{user}");
            let stored = users.get(&acct(user, "web")).unwrap().unwrap();
            assert_eq!(stored.hash, hash);
            assert!(stored.lockout.is_clear());
            assert_eq!(
                users.verify(&acct(user, "web"), pw).unwrap(),
                Verification::Ok { hash }
            );
        }
    }

    #[test]
    fn import_json_lines_reports_bad_rows_by_line() {
        let (users, _) = setup();
        users.add(&acct("existing", "web"), "pw").unwrap();
        let argon = password::hash("a1").unwrap();
        let input = format!(
            "# exported 2024-05-01\n\
             {{\"username\":\"u1\",\"package\":\"web\",\"password_hash\":\"{argon}\"}}\n\
             \n\
             {{\"username\":\"u2\",\"package\":\"web\",\"password\":\"plain-secret\",\"enabled\":false}}\n\
             {{\"username\":\"u3\",\"package\":\"web\",\"password_hash\":\"$1$SECRETSALT$SECRETHASH\"}}\n\
             {{not json SECRET\n\
             {{\"username\":\"u4\",\"password\":\"SECRET\"}}\n\
             {{\"username\":\"EXISTING\",\"package\":\"web\",\"password\":\"SECRET\"}}\n\
             {{\"username\":\"u5\",\"package\":\"web\",\"password\":\"SECRET\",\"enabled\":\"SECRET\"}}\n\
             {{\"username\":\"u\\u0007\",\"package\":\"web\",\"password\":\"SECRET\"}}\n\
             {{\"username\":\"u1\",\"package\":\"web\",\"password\":\"SECRET\"}}\r\n\
             [\"SECRET\"]\n\
             {{\"username\":\"u6\",\"package\":\"web\",\"password_hash\":123456}}\n\
             {{\"username\":\"u7\",\"package\":\"web\",\"password\":\"ok\"}}"
        );
        let report = users
            .import(input.as_bytes(), ImportFormat::JsonLines)
            .unwrap();
        let lines: Vec<usize> = report.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [5, 6, 7, 8, 9, 10, 11, 12, 13], "{report:?}");
        assert_eq!(report.imported, 3);
        assert_eq!(report.skipped_existing, 2);
        for (_, msg) in &report.errors {
            assert!(!msg.contains("SECRET") && !msg.contains("123456"), "{msg}");
        }
        assert!(report.errors[0].1.contains("`$1$` is not accepted"));
        assert!(report.errors[2].1.contains("`package` is missing"));
        assert_eq!(report.errors[3].1, "already exists");
        assert!(report.errors[5].1.starts_with("username"));
        assert_eq!(users.get(&acct("u1", "web")).unwrap().unwrap().hash, argon);
        let u2 = users.get(&acct("u2", "web")).unwrap().unwrap();
        assert!(!u2.enabled);
        assert!(password::verify("plain-secret", &u2.hash));
        assert!(is_ok(&users.verify(&acct("u7", "web"), "ok").unwrap()));
        // The existing account was not overwritten.
        assert!(is_ok(
            &users.verify(&acct("existing", "web"), "pw").unwrap()
        ));
    }

    #[test]
    fn import_csv_with_unquoted_and_quoted_phc_hashes() {
        let (users, _) = setup();
        let a1 = password::hash("one").unwrap();
        let a2 = password::hash("two").unwrap();
        let bc = bcrypt::hash("three", 4).unwrap();
        assert!(a1.contains(','), "argon2 PHC params contain commas");
        let input = format!(
            "\u{feff}username,package,password_hash,enabled\n\
             u1,web,{a1},true\n\
             \"u,2\",web,\"{a2}\",no\n\
             # comment\n\
             u3, web ,{bc},\n\
             u4,web,$5$SECRET,true\n\
             u5,web\n\
             u6,web,{a1},maybe\n\
             u1,web,{a2},true\n\
             u7,web,\"{a1}\",true,extra\n\
             u8,web,\"{a1}"
        );
        let report = users.import(input.as_bytes(), ImportFormat::Csv).unwrap();
        let lines: Vec<usize> = report.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [6, 7, 8, 9, 10, 11], "{report:?}");
        assert_eq!(report.imported, 3);
        assert_eq!(report.skipped_existing, 1);
        for (_, msg) in &report.errors {
            assert!(
                !msg.contains("SECRET") && !msg.contains("argon2id$v"),
                "{msg}"
            );
        }
        assert!(is_ok(&users.verify(&acct("u1", "web"), "one").unwrap()));
        assert_eq!(
            users.verify(&acct("u,2", "web"), "two").unwrap(),
            Verification::Disabled
        );
        let u2 = users.get(&acct("u,2", "web")).unwrap().unwrap();
        assert!(password::verify("two", &u2.hash));
        assert!(is_ok(&users.verify(&acct("u3", "web"), "three").unwrap()));

        // Columns in another order, plain passwords.
        let input = "password,PACKAGE,username\nsecret,with,commas,api,frank\n";
        let report = users.import(input.as_bytes(), ImportFormat::Csv).unwrap();
        assert_eq!((report.imported, report.errors.len()), (1, 0), "{report:?}");
        assert!(is_ok(
            &users
                .verify(&acct("frank", "api"), "secret,with,commas")
                .unwrap()
        ));
    }

    #[test]
    fn import_csv_header_problems_are_errors() {
        let (users, _) = setup();
        for input in [
            "user,package,password_hash\nu,web,x\n",
            "username,package\n",
            "username,package,password_hash,email\n",
            "# only a comment\n\n",
        ] {
            let err = users
                .import(input.as_bytes(), ImportFormat::Csv)
                .unwrap_err();
            assert!(matches!(err, UserError::BadInput(_)), "{input:?}: {err}");
        }
    }

    /// Issue 15 point 5: an endless row (`/dev/zero`) stops the import at the row cap, naming
    /// the line; the rows before it stay imported.
    #[test]
    fn an_endless_row_stops_the_import_at_the_row_cap() {
        let (users, _) = setup();
        let first = "{\"username\":\"u1\",\"package\":\"web\",\"password\":\"pw\"}\n";
        let endless = first.as_bytes().chain(std::io::repeat(0));
        let err = users
            .import(std::io::BufReader::new(endless), ImportFormat::JsonLines)
            .unwrap_err();
        assert!(matches!(err, UserError::BadInput(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("line 2: longer than 65536 bytes"), "{msg}");
        assert!(is_ok(&users.verify(&acct("u1", "web"), "pw").unwrap()));
        // A row of exactly the cap is read (and judged as a row).
        let at_cap = format!("#{}\r\n", "x".repeat(MAX_ROW_BYTES - 1));
        let report = users
            .import(at_cap.as_bytes(), ImportFormat::JsonLines)
            .unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
    }

    #[test]
    fn the_line_and_byte_caps_name_the_line_and_the_cap() {
        let mut total = 0;
        assert!(check_bounds(b"row\n", MAX_LINES, &mut total).is_ok());
        assert_eq!(total, 4);
        let err = check_bounds(b"row\n", MAX_LINES + 1, &mut total).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1000001: an import file has at most 1000000 lines (the import stops here; \
             the rows before it were imported; split the file)"
        );
        let mut total = MAX_BYTES - 4;
        assert!(check_bounds(b"row\n", 7, &mut total).is_ok());
        let err = check_bounds(b"\n", 8, &mut total).unwrap_err().to_string();
        assert!(
            err.starts_with("line 8: an import file has at most 268435456 bytes"),
            "{err}"
        );
    }

    #[test]
    fn import_format_from_path() {
        let f = |p: &str| ImportFormat::from_path(Path::new(p));
        assert_eq!(f("users.jsonl"), Some(ImportFormat::JsonLines));
        assert_eq!(f("users.NDJSON"), Some(ImportFormat::JsonLines));
        assert_eq!(f("dir/users.json"), Some(ImportFormat::JsonLines));
        assert_eq!(f("users.csv"), Some(ImportFormat::Csv));
        assert_eq!(f("users.txt"), None);
        assert_eq!(f("users"), None);
    }

    #[test]
    fn csv_splitting() {
        assert_eq!(split_csv("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(split_csv("\"a,\"\"b\"\"\",c").unwrap(), ["a,\"b\"", "c"]);
        assert_eq!(split_csv("\"\"").unwrap(), [""]);
        assert_eq!(split_csv("a,").unwrap(), ["a", ""]);
        assert!(split_csv("\"open").is_err());
        assert!(split_csv("\"a\"b").is_err());
    }
}
