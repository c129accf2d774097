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
    #[error("the platform's store failed: {0}")]
    Catalog(String),
    #[error(transparent)]
    Repo(#[from] coffer_repo::RepoError),
    #[error(transparent)]
    Db(#[from] coffer_db::DbError),
    #[error("{0}")]
    Step(String),
}

pub type EngineResult<T> = Result<T, EngineError>;
