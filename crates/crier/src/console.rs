//! The web console at `/console/`: static files compiled into the binary (`crates/crier/console/`,
//! plain HTML, CSS and JavaScript modules with no build step), so serving it needs nothing
//! but the binary. The console is one more client of the signed REST API: these routes serve
//! files only, and the page signs its calls with the UserSig the operator types in.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// (file name, content type, contents).
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/ui.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/pages.js"),
    ),
    (
        "compose.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/compose.js"),
    ),
];

/// Everything from this origin, nothing from anywhere else; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{file}",
            get(
                |axum::extract::Path(name): axum::extract::Path<String>| async move { file(&name) },
            ),
        )
}

fn file(name: &str) -> Response {
    let Some((_, content_type, contents)) = FILES.iter().find(|(file, ..)| *file == name) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let mut response = (*contents).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let index = FILES[0].2;
        for (name, ..) in FILES {
            if *name != "index.html" && name.ends_with(".css") {
                assert!(index.contains(name), "index.html links {name}");
            }
        }
        // Modules import each other by relative path; each must be served.
        for (_, _, contents) in FILES {
            for line in contents.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit("from ")
                    .next()
                    .unwrap()
                    .trim_matches(|c| c == '\'' || c == '"' || c == ';' || c == ' ');
                let target = target.trim_start_matches("./");
                assert!(
                    FILES.iter().any(|(name, ..)| *name == target),
                    "{target} is imported but not embedded"
                );
            }
        }
    }
}
