//! Admin calls: the Tencent query string, the UserSig check and the admin list, in the order
//! the contract fixes (app known → UserSig valid → identifier is an admin).

use std::collections::HashMap;
use std::sync::Arc;

use crier_proto::echo::echo;
use crier_proto::{codes, usersig};

use crate::clock::now_secs;
use crate::error::Error;
use crate::tenant::Tenant;

/// The services of the REST API; they differ in the codes of some refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    AllMemberPush,
    LoginSvc,
    OpenIm,
}

impl Service {
    pub fn not_admin_code(self) -> u32 {
        match self {
            Service::LoginSvc => codes::LOGIN_SVC_NOT_ADMIN,
            Service::AllMemberPush | Service::OpenIm => codes::NOT_ADMIN,
        }
    }

    /// The code of a body that does not parse, or of a malformed field without its own code.
    pub fn bad_request_code(self) -> u32 {
        match self {
            Service::LoginSvc => codes::LOGIN_SVC_BAD_REQUEST,
            Service::AllMemberPush | Service::OpenIm => codes::BAD_JSON,
        }
    }
}

/// Query parameters, percent-decoded. `+` stays `+`: UserSigs and identifiers may hold it,
/// and Tencent's clients do not form-encode.
pub fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (decode(key), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// An authenticated admin call.
pub struct AdminCall {
    pub tenant: Arc<Tenant>,
    pub identifier: String,
}

pub fn authenticate_admin(
    tenants: &HashMap<u64, Arc<Tenant>>,
    query: &HashMap<String, String>,
    service: Service,
) -> Result<AdminCall, Error> {
    let sdkappid = query
        .get("sdkappid")
        .filter(|text| !text.is_empty())
        .ok_or_else(|| {
            Error::rejected(
                codes::MISSING_SDKAPPID,
                "the query string lacks sdkappid: add ?sdkappid=<your app id>",
            )
        })?;
    let tenant = sdkappid
        .parse::<u64>()
        .ok()
        // Rust's parser takes "+1400000000"; the query's sdkappid is plain digits.
        .filter(|_| sdkappid.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| tenants.get(&id))
        .ok_or_else(|| {
            Error::rejected(
                codes::UNKNOWN_APP,
                format!("sdkappid {} is not an app of this server", echo(sdkappid)),
            )
        })?;
    let identifier = query.get("identifier").cloned().unwrap_or_default();
    let token = query.get("usersig").map(String::as_str).unwrap_or_default();
    let key = &tenant.config().secret_key.0;
    // Also refuses identifiers no account can have (see `usersig::check_identifier`), so the
    // ones below are short and printable.
    usersig::verify(token, tenant.sdkappid(), &identifier, key, now_secs())?;
    if !tenant.config().is_admin(&identifier) {
        return Err(Error::rejected(
            service.not_admin_code(),
            format!(
                "{} is not an admin of app {}: call with an identifier listed in the app's admins",
                echo(&identifier),
                tenant.sdkappid()
            ),
        ));
    }
    Ok(AdminCall {
        tenant: Arc::clone(tenant),
        identifier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded_and_plus_is_kept() {
        let query = parse_query(Some("usersig=ab%2Acd+e&identifier=admin&ver=v4&flag"));
        assert_eq!(query["usersig"], "ab*cd+e");
        assert_eq!(query["identifier"], "admin");
        assert_eq!(query["flag"], "");
    }
}
