//! Wire types shared by the Crier server, its client library and its CLI.
//!
//! - [`usersig`]: the UserSig v2 token, byte-compatible with Tencent's signing libraries.
//! - [`envelope`]: the `{"ActionStatus","ErrorCode","ErrorInfo"}` answer every REST call returns.
//! - [`codes`]: the numeric error codes of Tencent's contract, named.
//!
//! Keeping these in one crate means the server and its clients cannot drift apart.
#![forbid(unsafe_code)]

pub mod codes;
pub mod echo;
pub mod envelope;
pub mod protocol;
pub mod usersig;
