//! The REST query string: `parse_query`, then the admin check a request meets before its body
//! is read, against a real app (opened once over a store in a temporary directory).
//!
//! Nothing may panic; a refusal is never an internal error; an accepted call is for an admin of
//! the app the query names, with a UserSig that verifies for that admin.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crier::auth::{authenticate_admin, parse_query, Service};
use crier::config::AppConfig;
use crier::server::AppState;
use crier::tenant::Tenant;
use crier_proto::usersig;
use libfuzzer_sys::fuzz_target;

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const ADMIN: &str = "administrator";
/// Inside the lifetime of the spec's test vectors, so they reach the HMAC check.
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let query = parse_query(Some(raw));
    for (key, value) in &query {
        // `%XX` decodes to one byte, or to a three-byte replacement character when invalid, so
        // a parameter is never longer than the query it came from.
        assert!(key.len() + value.len() <= raw.len());
    }
    let identifier = query
        .get("identifier")
        .map(String::as_str)
        .unwrap_or_default();
    if let Some(token) = query.get("usersig") {
        if let Ok(doc) = usersig::verify(token, APP, identifier, KEY, NOW) {
            assert_eq!(doc.identifier, identifier);
            assert_eq!(doc.sdkappid, APP);
        }
    }
    for service in [Service::AllMemberPush, Service::LoginSvc, Service::OpenIm] {
        match authenticate_admin(tenants(), &query, service) {
            Ok(call) => {
                assert_eq!(call.identifier, ADMIN);
                assert_eq!(call.tenant.sdkappid(), APP);
                // As a number: `+1400000000` names the app too, harmlessly.
                assert_eq!(query["sdkappid"].parse::<u64>(), Ok(APP));
                let token = &query["usersig"];
                assert!(usersig::decode(token).is_ok_and(|doc| doc.identifier == ADMIN));
            }
            Err(error) => assert!(!error.is_internal(), "internal error: {error}"),
        }
    }
});

fn tenants() -> &'static HashMap<u64, Arc<Tenant>> {
    static STATE: OnceLock<AppState> = OnceLock::new();
    &STATE
        .get_or_init(|| {
            // Under `scripts/fuzz` TMPDIR is inside `fuzz/target`, so runs leave nothing behind.
            let dir = std::env::temp_dir().join(format!("crier-fuzz-query-{}", std::process::id()));
            let app = AppConfig {
                admins: vec![ADMIN.into()],
                ..AppConfig::new(APP, KEY)
            };
            AppState::open(&dir, vec![app]).expect("the app opens over an empty store")
        })
        .tenants
}
