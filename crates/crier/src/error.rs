//! The error of the request path, and the one place any error becomes what a client sees.
//!
//! Each layer has its own error type (`StoreError`, `UserSigError`, `RegisterError`, ...) and
//! says which Tencent code it is ([`TencentCode`]); they all convert into [`Error`].
//! [`Error::to_wire`] turns one into the code and text a client gets, for the REST envelope
//! and the WebSocket `Error` frame alike: a refused request says how to fix it; a failure
//! inside the server (store, I/O, a task that died) is logged once, with an error id, and the
//! client gets 91000 with that id and no backend detail.

use crier_proto::codes;
use crier_proto::usersig::UserSigError;

use crate::notify::devices::RegisterError;
use crate::store::StoreError;

/// The Tencent error code an error is answered with.
pub trait TencentCode {
    fn tencent_code(&self) -> u32;
}

impl TencentCode for StoreError {
    fn tencent_code(&self) -> u32 {
        codes::INTERNAL
    }
}

impl TencentCode for UserSigError {
    fn tencent_code(&self) -> u32 {
        self.code()
    }
}

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

/// What a client is told of an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: u32,
    pub info: String,
}

impl Error {
    pub fn rejected(code: u32, info: impl Into<String>) -> Self {
        Error::Rejected {
            code,
            info: info.into(),
        }
    }

    /// Whether this is the server's fault (logged with detail, answered generically).
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Store(_) | Error::Internal(_))
    }

    /// The code and text a client gets for this error. Failures inside the server are logged
    /// here, and only here, under an error id the client is given too.
    pub fn to_wire(&self) -> WireError {
        if !self.is_internal() {
            return WireError {
                code: self.tencent_code(),
                info: self.to_string(),
            };
        }
        let error_id = format!("{:08x}", rand::random::<u32>());
        tracing::error!(%error_id, error = %self, "request failed inside the server");
        WireError {
            code: codes::INTERNAL,
            info: format!(
                "internal error (error id {error_id}): the server could not complete the request; retry later"
            ),
        }
    }
}

impl TencentCode for Error {
    fn tencent_code(&self) -> u32 {
        match self {
            Error::Rejected { code, .. } => *code,
            Error::UserSig(e) => e.tencent_code(),
            Error::Store(e) => e.tencent_code(),
            Error::Internal(_) => codes::INTERNAL,
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

impl From<RegisterError> for Error {
    fn from(error: RegisterError) -> Self {
        match error {
            // Tencent has no code for a cap on devices (they are Crier's own); 90001 is what
            // every other refused client frame gets.
            RegisterError::TooManyDevices => Error::rejected(codes::BAD_JSON, error.to_string()),
            RegisterError::Store(error) => Error::Store(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_failures_reach_clients_as_91000_with_an_error_id_and_no_detail() {
        let secret = "disk I/O error at /var/lib/crier/crier.db";
        for error in [
            Error::Store(StoreError::Corrupt(secret.into())),
            Error::Internal(secret.into()),
        ] {
            let wire = error.to_wire();
            assert_eq!(wire.code, codes::INTERNAL);
            assert!(!wire.info.contains("disk"), "{}", wire.info);
            let id = wire
                .info
                .strip_prefix("internal error (error id ")
                .and_then(|rest| rest.split(')').next())
                .unwrap();
            assert_eq!(id.len(), 8);
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        }
        let refused = Error::rejected(codes::BAD_JSON, "Token must be 1 to 4096 bytes");
        assert_eq!(
            refused.to_wire(),
            WireError {
                code: 90001,
                info: "Token must be 1 to 4096 bytes".into()
            }
        );
        let capped = Error::from(RegisterError::TooManyDevices).to_wire();
        assert_eq!(capped.code, 90001);
    }
}
