//! The dashboard's static files, compiled into the binary: htmx (2.0.11, `dist/htmx.min.js`
//! of the npm package `htmx.org`, licence in `assets/htmx.LICENSE`) and the stylesheet.
//! Served under `/ui/static/<name>`.

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

/// How long browsers may keep an asset. The names carry no version, so this is short
/// enough for an upgraded node's files to be picked up within the hour.
pub const CACHE_CONTROL: &str = "public, max-age=3600";

const FILES: &[(&str, Asset)] = &[
    (
        "htmx.min.js",
        Asset { bytes: include_bytes!("../assets/htmx.min.js"), content_type: "text/javascript; charset=utf-8" },
    ),
    ("style.css", Asset { bytes: include_bytes!("../assets/style.css"), content_type: "text/css; charset=utf-8" }),
];

/// The file called `name` (`htmx.min.js`, `style.css`), if there is one.
pub fn asset(name: &str) -> Option<Asset> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_are_embedded_with_their_types() {
        let htmx = asset("htmx.min.js").expect("htmx");
        assert!(htmx.bytes.len() > 10_000 && htmx.bytes.starts_with(b"var htmx="));
        assert_eq!(htmx.content_type, "text/javascript; charset=utf-8");
        assert!(asset("style.css").is_some_and(|a| a.content_type.starts_with("text/css")));
        assert_eq!(asset("../Cargo.toml"), None);
        assert_eq!(asset("htmx.LICENSE"), None, "only what pages load is served");
    }
}
