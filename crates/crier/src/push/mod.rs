//! Pushes: reading an `im_push` ([`validate`]) or a `timpush` push, batch or revoke
//! ([`timpush`]), their limits ([`limits`]), TaskIds ([`task_id`]) and accepting them
//! ([`accept`]); reading the scheduled-task commands ([`sched`]); the record itself is the
//! store's ([`crate::store::PushRecord`]).

pub mod accept;
pub mod limits;
pub mod sched;
pub mod task_id;
pub mod timpush;
pub mod validate;

pub use crate::store::PushRecord;
pub use validate::PushRequest;
