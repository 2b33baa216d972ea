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
        let number = self.number(to_account)?;
        Some(Resolved {
            name: self.directory.account_name(number)?,
            kind: AccountKind::UserId,
        })
    }

    /// The live account a `To_Account` names, by the rule above (also `timpush/batch`'s).
    pub fn number(&self, to_account: &str) -> Option<u32> {
        let directory = self.directory;
        directory
            .account_number(to_account)
            .filter(|&number| directory.live().contains(number))
            .or_else(|| {
                self.devices
                    .owner_of_token(to_account)
                    .filter(|&owner| directory.live().contains(owner))
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
        // The lookups read the directory itself (numbers, liveness, names): validated first of
        // its group.
        self.write_settled(move |directory| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::notify::devices::Device;
    use crate::notify::Provider;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// The app on its own handle of the store in `dir`: a node of a cluster, without a bus.
    fn node(dir: &std::path::Path) -> Tenant {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        Tenant::load(AppConfig::new(1, "key"), store, Default::default()).unwrap()
    }

    #[test]
    fn attribute_kinds_reach_a_node_catching_up_and_one_starting() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, other) = (node(dir.path()), node(dir.path()));
        writer
            .write_directory(|_| {
                Ok(vec![
                    DirOp::SetAttrNames {
                        names: vec![(0, "city".into()), (1, "model".into())],
                    },
                    DirOp::SetAttrKinds {
                        kinds: vec![(1, AccountKind::RegistrationId)],
                    },
                ])
            })
            .unwrap();
        other.catch_up_to(u64::MAX);
        let kinds = writer.read(Directory::attr_kinds);
        assert_eq!(kinds[&1], AccountKind::RegistrationId);
        assert_eq!(other.read(Directory::attr_kinds), kinds);
        assert_eq!(node(dir.path()).read(Directory::attr_kinds), kinds);
    }

    #[test]
    fn a_to_account_is_a_live_user_id_first_then_a_device_token() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = node(dir.path());
        let import = |names: &[&str]| DirOp::Import {
            accounts: names.iter().map(|n| n.to_string()).collect(),
        };
        tenant
            .write_directory(move |_| {
                Ok(vec![
                    import(&["alice", "bob", "gone"]),
                    DirOp::AddTags {
                        users: vec![crate::directory::UserTags {
                            account: "ahead".into(),
                            tags: vec!["t".into()],
                        }],
                    },
                ])
            })
            .unwrap();
        let number = |name: &str| tenant.read(|d| d.account_number(name)).unwrap();
        let device = |token: &str| Device {
            provider: Provider::Fcm,
            token: token.into(),
        };
        // A token that is also a UserID names the UserID; "gone" is deleted after registering.
        tenant
            .register_device(number("alice"), "alice", device("bob"))
            .unwrap();
        tenant
            .register_device(number("alice"), "alice", device("alice-phone"))
            .unwrap();
        tenant
            .register_device(number("gone"), "gone", device("gone-phone"))
            .unwrap();
        tenant
            .write_directory(|_| {
                Ok(vec![DirOp::Delete {
                    accounts: vec!["gone".into()],
                }])
            })
            .unwrap();
        let resolved = |to_account: &str| {
            tenant.read_accounts(|_, accounts| {
                accounts
                    .resolve(to_account)
                    .map(|found| (found.name.to_owned(), found.kind))
            })
        };
        let user = |name: &str| Some((name.to_owned(), AccountKind::UserId));
        assert_eq!(resolved("alice"), user("alice"));
        assert_eq!(resolved("bob"), user("bob"));
        assert_eq!(resolved("alice-phone"), user("alice"));
        assert_eq!(resolved("gone"), None);
        assert_eq!(resolved("gone-phone"), None);
        assert_eq!(resolved("ahead"), None);
        assert_eq!(resolved("nobody"), None);
    }
}
