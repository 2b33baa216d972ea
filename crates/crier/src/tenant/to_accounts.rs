//! The accounts a `To_Account` of the `v4/timpush` attribute and tag commands names
//! (timpush.md §1.3), and directory writes that answer more than success.
//!
//! A `To_Account` is first a UserID: an account imported or logged in, and not deleted. Failing
//! that, it is a device token a client registered (`RegisterDevice`), which stands for the
//! account that registered it: Crier gives devices no ids of their own yet, so every account it
//! knows is of kind UserID. Anything else names no account (70107, for that item alone).

use std::sync::Arc;

use parking_lot::Mutex;

use super::Tenant;
use crate::directory::{AccountKind, DirOp, Directory};
use crate::error::Error;
use crate::notify::devices::Devices;

/// Looks accounts up in one state of the directory and the device registry.
pub struct Accounts<'a> {
    directory: &'a Directory,
    devices: &'a Devices,
}

/// The account a `To_Account` named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// Its UserID, as the directory's writes name it.
    pub name: &'a str,
    pub kind: AccountKind,
}

impl<'a> Accounts<'a> {
    pub fn resolve(&self, to_account: &str) -> Option<Resolved<'a>> {
        let directory = self.directory;
        let number = directory
            .account_number(to_account)
            .filter(|&number| directory.live().contains(number))
            .or_else(|| {
                self.devices
                    .owner_of_token(to_account)
                    .filter(|&owner| directory.live().contains(owner))
            })?;
        Some(Resolved {
            name: directory.account_name(number)?,
            kind: AccountKind::UserId,
        })
    }
}

impl Tenant {
    /// Runs `f` on the current directory and a lookup of accounts in it. Keep `f` short:
    /// writers wait for it.
    pub fn read_accounts<R>(&self, f: impl FnOnce(&Directory, &Accounts) -> R) -> R {
        let directory = self.directory.read();
        f(
            &directory,
            &Accounts {
                directory: &directory,
                devices: &self.notify.devices,
            },
        )
    }

    /// A directory write ([`Tenant::write`]) whose `build` also looks accounts up and answers
    /// something besides the writes: what the request reports per item, for example. Nothing
    /// changes if `build` fails.
    pub async fn write_answering<R: Send + 'static>(
        self: &Arc<Self>,
        build: impl FnOnce(&Directory, &Accounts) -> Result<(Vec<DirOp>, R), Error> + Send + 'static,
    ) -> Result<R, Error> {
        let answer = Arc::new(Mutex::new(None));
        let (tenant, slot) = (Arc::clone(self), Arc::clone(&answer));
        self.write(move |directory| {
            let accounts = Accounts {
                directory,
                devices: &tenant.notify.devices,
            };
            let (ops, answer) = build(directory, &accounts)?;
            *slot.lock() = Some(answer);
            Ok(ops)
        })
        .await?;
        let answer = answer.lock().take();
        answer.ok_or_else(|| Error::Internal("a directory write ended without its answer".into()))
    }
}
