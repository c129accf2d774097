//! rustic_core's errors in one line. Their Display is a report of many lines (guidance, docs
//! links, context and, with RUST_BACKTRACE set, a backtrace), and `display_log` still embeds
//! each cause's whole report. A status reason needs what failed and what to do; the report
//! itself goes to the session log.

use rustic_core::RusticError;

/// What failed, through the chain of causes, as one line; with what to do when the chain says
/// the repository's data is damaged.
pub fn summary(e: &RusticError) -> String {
    let mut parts = vec![head(&e.display_log())];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let part = if let Some(r) = s.downcast_ref::<RusticError>() {
            head(&r.display_log())
        } else if let Some(r) = s.downcast_ref::<Box<RusticError>>() {
            head(&r.display_log())
        } else {
            first_line(&s.to_string())
        };
        if !part.is_empty() && !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
        src = s.source();
    }
    let mut line = parts.join(": ");
    let lower = line.to_ascii_lowercase();
    if lower.contains("decryption failed") || lower.contains("mac check") {
        line.push_str(
            " — the repository's data is damaged: `restic check --read-data` names the \
             affected snapshots; restore an older one",
        );
    }
    line
}

/// The whole report, without the backtraces RUST_BACKTRACE adds to it (they show where
/// rustic built the error, not what went wrong; `COFFER_LOG=debug` logs them).
pub fn detail(e: &RusticError) -> String {
    let text = e.to_string();
    let mut out = Vec::new();
    let mut in_backtrace = false;
    for line in text.lines() {
        if line.trim_start().starts_with("Backtrace:") {
            in_backtrace = true;
        } else if in_backtrace && line.trim().is_empty() {
            in_backtrace = false;
        } else if !in_backtrace {
            out.push(line);
        }
    }
    out.join("\n").trim().to_string()
}

/// The guidance of one `display_log()`, without its kind, code, causes and internals.
fn head(log: &str) -> String {
    let s = log.strip_prefix("Error: ").unwrap_or(log);
    let s = s.split(": caused by: ").next().unwrap_or(s);
    let s = s.rfind(" (kind: related to ").map_or(s, |i| &s[..i]);
    let mut s = first_line(s);
    // Where in the pack file says nothing to the reader of a status.
    if let Some(i) = s.find(" at BlobLocation {") {
        if let Some(j) = s[i..].find('}') {
            s.replace_range(i..i + j + 1, "");
        }
    }
    s.trim_end_matches('.').to_string()
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustic_core::ErrorKind;

    #[test]
    fn a_damaged_pack_is_one_line_with_what_to_do() {
        let inner = RusticError::new(
            ErrorKind::Cryptography,
            "Data decryption failed, MAC check failed.",
        )
        .attach_error_code("C001")
        .attach_context("nonce", "[208, 22]");
        let outer = RusticError::with_source(
            ErrorKind::Internal,
            "error processing Pack:{id} at BlobLocation { offset: 0, length: 55870 }",
            inner,
        )
        .attach_context("id", "34af1a75");
        let s = summary(&outer);
        assert_eq!(
            s,
            "error processing Pack:34af1a75: Data decryption failed, MAC check failed — the \
             repository's data is damaged: `restic check --read-data` names the affected \
             snapshots; restore an older one"
        );
    }
}
