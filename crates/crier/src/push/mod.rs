//! Pushes: reading an `im_push` ([`validate`]), rate limits ([`limits`]) and the stored
//! record ([`record`]). The flow itself lives in [`crate::tenant::Tenant::push`].

pub mod limits;
pub mod record;
pub mod validate;

pub use record::PushRecord;
pub use validate::PushRequest;
