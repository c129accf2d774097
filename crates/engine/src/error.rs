use coffer_api::Kind;

/// Why a session failed: what, on which resource or field, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "{kind} {namespace}/{name} not found ({referenced_by}): create it, or fix the reference"
    )]
    Missing {
        kind: Kind,
        namespace: String,
        name: String,
        referenced_by: String,
    },
    #[error("{resource}: {message}")]
    Invalid { resource: String, message: String },
    #[error("the platform's catalog failed: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Repo(#[from] coffer_repo::RepoError),
    #[error(transparent)]
    Db(#[from] coffer_db::DbError),
    #[error("{0}")]
    Step(String),
}

pub type EngineResult<T> = Result<T, EngineError>;

/// The longest status reason; the whole message is in the session log.
const REASON_MAX: usize = 300;

/// A failure's message as a status reason: its first one or two lines, without a backtrace,
/// at most [`REASON_MAX`] characters, with secrets in echoed SQL masked. Callers log the whole
/// message first.
pub fn status_reason(full: &str) -> String {
    let text = coffer_db::redact::sql(full);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Backtrace:") && !l.starts_with("stack backtrace:"))
        .filter(|l| !l.is_empty())
        .take(2)
        .collect();
    let reason = lines.join("\n");
    if reason.chars().count() <= REASON_MAX {
        return reason;
    }
    let cut: String = reason.chars().take(REASON_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::status_reason;

    #[test]
    fn reasons_are_short_and_masked() {
        let long = format!(
            "Repository demo/r: repository local:/r: Error: it broke\n\nMessage:\nmore\n\
             Backtrace:\n   0: frame\n{}",
            "   1: frame\n".repeat(100)
        );
        assert_eq!(
            status_reason(&long),
            "Repository demo/r: repository local:/r: Error: it broke\nMessage:"
        );
        let wide = "x".repeat(1000);
        assert_eq!(status_reason(&wide).chars().count(), 300);
        assert_eq!(
            status_reason("users and grants: near 'IDENTIFIED BY PASSWORD '*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9'"),
            "users and grants: near 'IDENTIFIED BY PASSWORD '<redacted>'"
        );
    }
}
