//! Pushes: reading an `im_push` ([`validate`]), rate limits ([`limits`]); the record itself
//! is the store's ([`crate::store::PushRecord`]).

pub mod limits;
pub mod validate;

pub use crate::store::PushRecord;
pub use validate::PushRequest;
