//! The one error type of the request path. Each variant knows its Tencent code
//! ([`Error::tencent_code`]); `api` turns it into the envelope in exactly one place.

use crier_proto::codes;
use crier_proto::usersig::UserSigError;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong; nothing was changed. `info` says how to fix it.
    #[error("{info}")]
    Rejected { code: u32, info: String },
    #[error(transparent)]
    UserSig(#[from] UserSigError),
    #[error("store failed: {0}")]
    Store(#[from] StoreError),
    #[error("internal failure: {0}")]
    Internal(String),
}

impl Error {
    pub fn rejected(code: u32, info: impl Into<String>) -> Self {
        Error::Rejected {
            code,
            info: info.into(),
        }
    }

    pub fn tencent_code(&self) -> u32 {
        match self {
            Error::Rejected { code, .. } => *code,
            Error::UserSig(e) => e.code(),
            Error::Store(_) | Error::Internal(_) => codes::INTERNAL,
        }
    }

    /// Whether this is the server's fault (logged with detail, answered generically).
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Store(_) | Error::Internal(_))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}
