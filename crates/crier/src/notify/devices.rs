//! The devices of each account, durable in the store and mirrored in memory with a bitmap of
//! the accounts that have any, so a push's notification targets are
//! `audience AND has-devices AND NOT online`: bitmap algebra, not a scan.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use roaring::RoaringBitmap;
use tracing::warn;

use super::Provider;
use crate::store::{Store, StoreError};

/// Longest device token accepted (FCM tokens run to a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Most devices one account may have. A person has a handful of phones, tablets and browsers;
/// without a cap one account could store tokens without end, each notified on every push.
pub const MAX_DEVICES_PER_ACCOUNT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "the account already has {MAX_DEVICES_PER_ACCOUNT} devices, the most one account may \
         have; unregister one it no longer uses before registering another"
    )]
    TooManyDevices,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    pub provider: Provider,
    pub token: String,
}

#[derive(Default)]
struct Registry {
    by_account: HashMap<u32, Vec<Device>>,
    owner: HashMap<Device, u32>,
    with_devices: RoaringBitmap,
    /// Per provider, the accounts with a device of it: statistics count a push's targets per
    /// provider with one bitmap intersection.
    by_provider: HashMap<Provider, RoaringBitmap>,
}

impl Registry {
    fn insert(&mut self, account: u32, device: Device) {
        if let Some(previous) = self.owner.insert(device.clone(), account) {
            if previous == account {
                return;
            }
            self.detach(previous, &device);
        }
        self.by_provider
            .entry(device.provider)
            .or_default()
            .insert(account);
        self.by_account.entry(account).or_default().push(device);
        self.with_devices.insert(account);
    }

    fn detach(&mut self, account: u32, device: &Device) {
        if let Some(devices) = self.by_account.get_mut(&account) {
            devices.retain(|d| d != device);
            if !devices.iter().any(|d| d.provider == device.provider) {
                if let Some(accounts) = self.by_provider.get_mut(&device.provider) {
                    accounts.remove(account);
                }
            }
            if devices.is_empty() {
                self.by_account.remove(&account);
                self.with_devices.remove(account);
            }
        }
    }

    fn remove(&mut self, device: &Device) -> bool {
        match self.owner.remove(device) {
            Some(account) => {
                self.detach(account, device);
                true
            }
            None => false,
        }
    }
}

pub struct Devices {
    app: u64,
    store: Arc<dyn Store>,
    registry: RwLock<Registry>,
}

impl Devices {
    /// Loads the app's devices; `account_number` maps a stored account name to its number
    /// (devices of accounts that no longer exist are dropped). Blocking.
    pub fn load(
        app: u64,
        store: Arc<dyn Store>,
        account_number: impl Fn(&str) -> Option<u32>,
    ) -> Result<Devices, StoreError> {
        let mut registry = Registry::default();
        for stored in store.load_devices(app)? {
            let (Some(provider), Some(account)) = (
                Provider::parse(&stored.platform),
                account_number(&stored.account),
            ) else {
                warn!(app, account = %stored.account, platform = %stored.platform, "skipping a stored device of an unknown account or platform");
                continue;
            };
            registry.insert(
                account,
                Device {
                    provider,
                    token: stored.token,
                },
            );
        }
        Ok(Devices {
            app,
            store,
            registry: RwLock::new(registry),
        })
    }

    /// Durably registers a device for `account` (named `name`). Registering it again is a
    /// no-op; a token another account had moves to this one, unless this one already has
    /// [`MAX_DEVICES_PER_ACCOUNT`]. Blocking.
    pub fn register(&self, account: u32, name: &str, device: Device) -> Result<(), RegisterError> {
        // Holding the lock across the write keeps memory and store in the same order.
        let mut registry = self.registry.write();
        if registry.owner.get(&device) == Some(&account) {
            return Ok(());
        }
        let has = registry.by_account.get(&account).map_or(0, Vec::len);
        if has >= MAX_DEVICES_PER_ACCOUNT {
            return Err(RegisterError::TooManyDevices);
        }
        self.store
            .put_device(self.app, name, device.provider.name(), &device.token)?;
        registry.insert(account, device);
        Ok(())
    }

    /// Durably forgets a device `account` gives up; answers whether it was registered to that
    /// account. A token another account holds stays: nobody can silence someone else's phone
    /// by naming its token. Blocking.
    pub fn unregister_own(&self, account: u32, device: &Device) -> Result<bool, StoreError> {
        let mut registry = self.registry.write();
        if registry.owner.get(device) != Some(&account) {
            return Ok(false);
        }
        self.store
            .delete_device(self.app, device.provider.name(), &device.token)?;
        Ok(registry.remove(device))
    }

    /// Durably forgets a device whoever holds it (the provider reported the token dead);
    /// answers whether it was registered. Blocking.
    pub fn unregister(&self, device: &Device) -> Result<bool, StoreError> {
        let mut registry = self.registry.write();
        self.store
            .delete_device(self.app, device.provider.name(), &device.token)?;
        Ok(registry.remove(device))
    }

    /// Forgets every device of a deleted account. Blocking.
    pub fn forget_account(&self, account: u32, name: &str) -> Result<(), StoreError> {
        let registry = self.registry.write();
        self.store.delete_account_devices(self.app, name)?;
        drop(registry);
        self.forget_in_memory(account);
        Ok(())
    }

    /// Takes a device another node registered (and stored) into memory.
    pub fn remember(&self, account: u32, device: Device) {
        self.registry.write().insert(account, device);
    }

    /// Drops a device another node unregistered (and deleted from the store) from memory.
    pub fn forget_device(&self, device: &Device) {
        self.registry.write().remove(device);
    }

    /// Forgets the devices of a deleted account in memory only (another node deleted them
    /// from the store).
    pub fn forget_in_memory(&self, account: u32) {
        let mut registry = self.registry.write();
        for device in registry.by_account.remove(&account).unwrap_or_default() {
            registry.owner.remove(&device);
            if let Some(accounts) = registry.by_provider.get_mut(&device.provider) {
                accounts.remove(account);
            }
        }
        registry.with_devices.remove(account);
    }

    /// The account that registered `token` (on any provider): how a `timpush` RegistrationID
    /// is resolved.
    pub fn owner_of_token(&self, token: &str) -> Option<u32> {
        let registry = self.registry.read();
        Provider::ALL.into_iter().find_map(|provider| {
            let device = Device {
                provider,
                token: token.to_owned(),
            };
            registry.owner.get(&device).copied()
        })
    }

    pub fn of(&self, account: u32) -> Vec<Device> {
        self.registry
            .read()
            .by_account
            .get(&account)
            .cloned()
            .unwrap_or_default()
    }

    /// The accounts of `audience` that have a device and are not in `online`.
    pub fn targets(&self, audience: &RoaringBitmap, online: &RoaringBitmap) -> RoaringBitmap {
        let mut targets = audience & &self.registry.read().with_devices;
        targets -= online;
        targets
    }

    /// Per provider, how many accounts of `accounts` have a device of it.
    pub fn accounts_per_provider(&self, accounts: &RoaringBitmap) -> Vec<(Provider, u64)> {
        let registry = self.registry.read();
        let mut counts: Vec<(Provider, u64)> = registry
            .by_provider
            .iter()
            .map(|(provider, with)| (*provider, accounts.intersection_len(with)))
            .filter(|(_, count)| *count > 0)
            .collect();
        counts.sort();
        counts
    }

    pub fn count(&self) -> usize {
        self.registry.read().owner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn device(provider: Provider, token: &str) -> Device {
        Device {
            provider,
            token: token.into(),
        }
    }

    #[test]
    fn devices_survive_a_reopen_and_move_between_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let number = |name: &str| match name {
            "a" => Some(1),
            "b" => Some(2),
            _ => None,
        };
        let devices = Devices::load(7, Arc::clone(&store), number).unwrap();
        devices
            .register(1, "a", device(Provider::Apns, "t1"))
            .unwrap();
        devices
            .register(1, "a", device(Provider::Apns, "t1"))
            .unwrap();
        devices
            .register(1, "a", device(Provider::Fcm, "t2"))
            .unwrap();
        devices
            .register(2, "b", device(Provider::Fcm, "t3"))
            .unwrap();
        assert_eq!(devices.count(), 3);
        let everyone: RoaringBitmap = (0..10).collect();
        let online: RoaringBitmap = [2].into_iter().collect();
        assert_eq!(
            devices.targets(&everyone, &online),
            [1].into_iter().collect()
        );

        // The phone changed hands: the token now notifies b.
        devices
            .register(2, "b", device(Provider::Apns, "t1"))
            .unwrap();
        assert!(devices.unregister(&device(Provider::Fcm, "t3")).unwrap());
        assert!(!devices.unregister(&device(Provider::Fcm, "t3")).unwrap());
        drop(devices);

        let devices = Devices::load(7, Arc::clone(&store), number).unwrap();
        assert_eq!(devices.of(1), vec![device(Provider::Fcm, "t2")]);
        assert_eq!(devices.of(2), vec![device(Provider::Apns, "t1")]);
        devices.forget_account(1, "a").unwrap();
        assert!(devices.of(1).is_empty());
        let devices = Devices::load(7, store, number).unwrap();
        assert_eq!(devices.count(), 1);
        assert_eq!(
            devices.targets(&everyone, &RoaringBitmap::new()),
            [2].into_iter().collect()
        );
    }

    #[test]
    fn a_token_is_found_under_any_provider_and_follows_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let devices = Devices::load(7, store, |_| None).unwrap();
        devices
            .register(1, "a", device(Provider::Webhook, "https://d/1"))
            .unwrap();
        devices
            .register(2, "b", device(Provider::Fcm, "fcm-2"))
            .unwrap();
        assert_eq!(devices.owner_of_token("https://d/1"), Some(1));
        assert_eq!(devices.owner_of_token("fcm-2"), Some(2));
        assert_eq!(devices.owner_of_token("fcm-3"), None);
        devices
            .register(3, "c", device(Provider::Fcm, "fcm-2"))
            .unwrap();
        assert_eq!(devices.owner_of_token("fcm-2"), Some(3));
        devices.unregister(&device(Provider::Fcm, "fcm-2")).unwrap();
        assert_eq!(devices.owner_of_token("fcm-2"), None);
    }

    #[test]
    fn an_account_at_the_cap_can_register_no_other_device_but_repeat_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let number = |name: &str| match name {
            "a" => Some(1),
            "b" => Some(2),
            _ => None,
        };
        let devices = Devices::load(7, Arc::clone(&store), number).unwrap();
        for n in 0..MAX_DEVICES_PER_ACCOUNT {
            devices
                .register(1, "a", device(Provider::Fcm, &format!("t{n}")))
                .unwrap();
        }
        devices
            .register(1, "a", device(Provider::Fcm, "t0"))
            .expect("a repeat is a no-op, even at the cap");
        let extra = device(Provider::Apns, "one too many");
        assert!(matches!(
            devices.register(1, "a", extra.clone()),
            Err(RegisterError::TooManyDevices)
        ));
        // Not even a token another account holds moves to a full account.
        devices
            .register(2, "b", device(Provider::Fcm, "b's"))
            .unwrap();
        assert!(matches!(
            devices.register(1, "a", device(Provider::Fcm, "b's")),
            Err(RegisterError::TooManyDevices)
        ));
        assert_eq!(devices.of(1).len(), MAX_DEVICES_PER_ACCOUNT);
        assert_eq!(devices.of(2), vec![device(Provider::Fcm, "b's")]);
        drop(devices);
        let devices = Devices::load(7, store, number).unwrap();
        assert_eq!(
            devices.of(1).len(),
            MAX_DEVICES_PER_ACCOUNT,
            "nothing more was stored"
        );
        assert!(!devices.of(1).contains(&extra));
        // Room made, room taken.
        assert!(devices
            .unregister_own(1, &device(Provider::Fcm, "t3"))
            .unwrap());
        devices.register(1, "a", extra).unwrap();
    }
}
