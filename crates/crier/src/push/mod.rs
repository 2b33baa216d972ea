//! Pushes: reading an `im_push` ([`validate`]), its limits ([`limits`]) and accepting it
//! ([`accept`]); the record itself is the store's ([`crate::store::PushRecord`]).

pub mod accept;
pub mod limits;
pub mod validate;

pub use crate::store::PushRecord;
pub use validate::PushRequest;
