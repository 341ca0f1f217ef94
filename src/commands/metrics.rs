//! `metrics`: the Prometheus text, printed or written for node_exporter's textfile collector.
//! The text is its own format, so there is no `--json` view.

use super::{Io, EXIT_OK};
use crate::auth::Auth;
use std::path::Path;

/// Prints the metrics, or writes them atomically to `textfile`.
pub(super) fn metrics(auth: &Auth, textfile: Option<&Path>, io: &mut Io) -> anyhow::Result<u8> {
    let text = crate::metrics::render(auth)?;
    match textfile {
        Some(path) => crate::metrics::write_textfile(path, &text)?,
        None => io.out.write_all(text.as_bytes())?,
    }
    Ok(EXIT_OK)
}
