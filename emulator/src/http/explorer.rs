//! `GET /$explorer`: a page to look inside the emulator and drive it, served by the
//! emulator itself (plain HTML, CSS and JavaScript embedded in the binary, no build step).
//! The assets carry no secret: the page asks for a key and signs its own requests. The
//! default key is filled in only when the emulator runs on it (it is public anyway).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::{DEFAULT_KEY, DEFAULT_KEY_NAME};

const INDEX: &str = include_str!("explorer/index.html");
const SCRIPT: &str = include_str!("explorer/app.js");
const STYLE: &str = include_str!("explorer/style.css");

/// An asset of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    /// `/$explorer`.
    Index,
    /// `/$explorer/app.js`.
    Script,
    /// `/$explorer/style.css`.
    Style,
}

impl Asset {
    /// The asset a file name names.
    pub(crate) fn named(file: &str) -> Option<Asset> {
        match file {
            "" | "index.html" => Some(Asset::Index),
            "app.js" => Some(Asset::Script),
            "style.css" => Some(Asset::Style),
            _ => None,
        }
    }
}

/// Serves `asset`; the page is told the primary key's name, and its value only when it is
/// the well-known default.
pub(super) fn serve(asset: Asset, key_name: &str, key: &str) -> Response {
    let (body, content_type) = match asset {
        Asset::Index => {
            let default = if key_name == DEFAULT_KEY_NAME && key == DEFAULT_KEY {
                DEFAULT_KEY
            } else {
                ""
            };
            let page = INDEX
                .replace("{{KEY_NAME}}", &attribute(key_name))
                .replace("{{DEFAULT_KEY}}", default);
            (page, "text/html; charset=utf-8")
        }
        Asset::Script => (SCRIPT.to_string(), "text/javascript; charset=utf-8"),
        Asset::Style => (STYLE.to_string(), "text/css; charset=utf-8"),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `text` for a double-quoted HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_is_filled_in_only_when_it_is_the_one_in_use() {
        let body = |key_name: &str, key: &str| {
            let response = serve(Asset::Index, key_name, key);
            assert_eq!(response.status(), StatusCode::OK);
            let text = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
                response.into_body(),
                usize::MAX,
            ))
            .unwrap()
            .unwrap();
            String::from_utf8(text.to_vec()).unwrap()
        };
        let default = body(DEFAULT_KEY_NAME, DEFAULT_KEY);
        assert!(default.contains(&format!(r#"data-default-key="{DEFAULT_KEY}""#)));
        let own = body("ops\"<x>", "s3cret");
        assert!(own.contains(r#"data-default-key="""#), "{own}");
        assert!(!own.contains("s3cret"));
        assert!(own.contains(r#"data-key-name="ops&quot;&lt;x&gt;""#));
    }
}
