//! The web dashboard's rendering: what `/ui/` on every node shows, as HTML strings made
//! from `holdfast_api::types` values, and the static assets it needs. Pure: no IO, no
//! clock (the time is passed in), no server; the node's `ui.rs` gathers the data, checks
//! the token and serves what these functions return.
//!
//! - [`pages`]: the full pages (overview, a service, the event history, the login form)
//!   and the fragments htmx swaps into them every few seconds. Every data source is a
//!   [`Source`]: a page still renders when one failed, saying which and why.
//! - [`chart`]: SVG line charts of CPU and memory over the last hour.
//! - [`assets`]: the embedded static files (htmx, vendored from npm, and the stylesheet);
//!   nothing is loaded from anywhere else, so the dashboard works offline.
//!
//! Everything user-controlled is escaped: askama's HTML escaping stays on, and the chart
//! escapes its own text.
#![forbid(unsafe_code)]

pub mod assets;
pub mod chart;
mod format;
pub mod pages;

pub use pages::{Header, Overview, ServicePage, Source};

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("rendering the {what}: {source}")]
    Render {
        what: &'static str,
        #[source]
        source: askama::Error,
    },
}
