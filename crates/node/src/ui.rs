//! The web dashboard at `/ui/` on the holdfast port: thin handlers that gather the same
//! values the `/v1` reads answer (by calling their `build_...` functions, never by HTTP
//! to this node) and hand them to `holdfast_ui`, which renders them.
//!
//! - Auth: the same check as `/v1` reads — the admin token or an API token whose scope
//!   may read — taken from `Authorization: Bearer` or the `holdfast_ui` cookie that
//!   `POST /ui/login` sets (`HttpOnly; Secure; SameSite=Strict; Path=/ui`). Without it a
//!   page redirects (303) to `/ui/login` and a fragment answers 401 (with `HX-Redirect`,
//!   so htmx goes to the login page). `/ui/static/...` needs no token.
//! - The dashboard only reads: every route but the login form is a `GET`, and nothing on
//!   it changes the cluster, so there is no cross-site request forgery to guard against
//!   beyond the cookie's `SameSite=Strict`.
//! - Reads only the leader answers fully (status, nodes, databases: the instances' and
//!   members' reports reach the leader) are built here on the leader; a follower fetches
//!   the leader's `/v1` answer with the user's token, as `server::forward_to_leader` does
//!   for the CLI, and shows "unavailable: no leader" without one. Events, routes and
//!   usage are gathered by the node asked, as their `/v1` calls are.
//! - Each source is read on its own: one that fails or is slow shows as unavailable
//!   without blanking the page; fragments refresh each section every 5 s.
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use holdfast_api::types::ErrorBody;
use holdfast_state::acl::Need;
use holdfast_ui::pages::{self, Header, Overview, ServicePage, Source};
use holdfast_ui::UiError;

use crate::api::{databases, events, nodes, routes, usage};
use crate::NodeContext;

/// The cookie the login page sets: the token itself.
const COOKIE: &str = "holdfast_ui";
/// How long a follower waits for the leader's answer to one read.
const LEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a leader's answer may weigh.
const MAX_LEADER_ANSWER: usize = 32 << 20;
/// What a section shows when the control plane has no leader to ask.
const NO_LEADER: &str = "no leader (no quorum): the control plane cannot answer now; running services keep running";
/// How many events are searched for one service's.
const SERVICE_EVENTS_SEARCHED: usize = 1000;
/// Pages load only this node's own files: no inline script or style, no other origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The user's token, for the reads a follower asks the leader for.
#[derive(Clone)]
struct UiToken(String);

/// The `/ui` routes (merged into `server::router`).
pub fn router(ctx: NodeContext) -> Router<NodeContext> {
    let authed = Router::new()
        .route("/ui/", get(overview))
        .route("/ui/services/{name}", get(service))
        .route("/ui/events", get(history))
        .route("/ui/fragments/nodes", get(nodes_fragment))
        .route("/ui/fragments/services", get(services_fragment))
        .route("/ui/fragments/services/{name}", get(service_fragment))
        .route("/ui/fragments/routes", get(routes_fragment))
        .route("/ui/fragments/databases", get(databases_fragment))
        .route("/ui/fragments/events", get(events_fragment))
        .route("/ui/fragments/history", get(history_fragment))
        .route_layer(middleware::from_fn_with_state(ctx, require_reader));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/static/{file}", get(asset))
        .merge(authed)
}

// ---- auth ----

/// The token of a request: its bearer token, else the dashboard's cookie.
fn token_of(headers: &HeaderMap) -> Option<String> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    if let Some(t) = bearer {
        return Some(t.trim().to_string());
    }
    // HTTP/2 may split cookies over several headers.
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// Whether `token` may read the cluster (the admin token, or an API token whose scope
/// grants reads), or why not.
fn may_read(ctx: &NodeContext, token: &str) -> Result<(), &'static str> {
    let state = ctx.control.state();
    let caller =
        crate::api::acl::authenticate(&state, &ctx.identity.admin_token, &|t| ctx.keyring.check_job_token(t), token)
            .ok_or("the token was refused")?;
    caller.require(&Need::Read).map_err(|_| "this token may not read the cluster")
}

/// Every dashboard page and fragment: a token that may read, or off to the login page.
async fn require_reader(State(ctx): State<NodeContext>, mut req: Request, next: Next) -> Response {
    if !ctx.started.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the node is still starting; try again in a moment\n")
            .into_response();
    }
    let token = token_of(req.headers()).filter(|t| may_read(&ctx, t).is_ok());
    match token {
        Some(t) => {
            req.extensions_mut().insert(UiToken(t));
            next.run(req).await
        }
        None if req.uri().path().starts_with("/ui/fragments/") => {
            (StatusCode::UNAUTHORIZED, [("hx-redirect", "/ui/login")], "sign in at /ui/login\n").into_response()
        }
        None => Redirect::to("/ui/login").into_response(),
    }
}

/// What `POST /ui/login` carries.
#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// A token that can go in a cookie as it is (tokens are hex, or `hfapi1.` + base64url).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

fn cookie(value: &str, max_age: Option<u32>) -> HeaderValue {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/ui{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("holdfast_ui=; Path=/ui; Max-Age=0"))
}

async fn login_form() -> Response {
    page(StatusCode::OK, pages::login_page(None))
}

/// Checks the token; sets the cookie and goes to the overview, or shows the form again.
async fn login(State(ctx): State<NodeContext>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let checked = if cookie_safe(token) { may_read(&ctx, token) } else { Err("the token was refused") };
    match checked {
        Ok(()) => {
            let mut resp = Redirect::to("/ui/").into_response();
            resp.headers_mut().insert(header::SET_COOKIE, cookie(token, None));
            resp
        }
        Err(why) => page(StatusCode::UNAUTHORIZED, pages::login_page(Some(why))),
    }
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie("", Some(0)));
    resp
}

async fn asset(Path(file): Path<String>) -> Response {
    match holdfast_ui::assets::asset(&file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, holdfast_ui::assets::CACHE_CONTROL),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

// ---- answers ----

/// An HTML answer (a page or a fragment), never cached; a rendering failure is a 500.
fn page(status: StatusCode, rendered: Result<String, UiError>) -> Response {
    match rendered {
        Ok(body) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard page not rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

fn header(ctx: &NodeContext) -> Header {
    Header { node: ctx.identity.name.clone(), now_ms: crate::peer::now_ms() }
}

// ---- sources ----

/// A read the leader answers fully: built here on the leader, else the leader's `/v1`
/// answer to `path`, asked with the user's token.
async fn leader_read<T, Fut>(ctx: &NodeContext, token: &UiToken, path: &str, build: Fut) -> Source<T>
where
    T: serde::de::DeserializeOwned,
    Fut: Future<Output = T>,
{
    if ctx.control.is_leader() {
        return Ok(build.await);
    }
    let Some((_, addr)) = ctx.control.leader() else { return Err(NO_LEADER.into()) };
    let req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", token.0))
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let answer = async {
        let resp = crate::server::forward(ctx, &addr, req).await?;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), MAX_LEADER_ANSWER).await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            let why = serde_json::from_slice::<ErrorBody>(&body).map(|b| b.error).unwrap_or_default();
            return Err(format!("the leader answered {status}: {why}"));
        }
        serde_json::from_slice::<T>(&body).map_err(|e| format!("the leader's answer: {e}"))
    };
    tokio::time::timeout(LEADER_TIMEOUT, answer)
        .await
        .map_err(|_| format!("the leader at {addr} did not answer within {LEADER_TIMEOUT:?}"))?
}

async fn status(ctx: &NodeContext, token: &UiToken) -> Source<holdfast_api::types::StatusResponse> {
    leader_read(ctx, token, "/v1/status", crate::status::build(ctx)).await
}

async fn node_list(ctx: &NodeContext, token: &UiToken) -> Source<holdfast_api::types::NodesResponse> {
    leader_read(ctx, token, "/v1/nodes", nodes::build_nodes(ctx)).await
}

async fn database_list(ctx: &NodeContext, token: &UiToken) -> Source<holdfast_api::types::DatabasesResponse> {
    leader_read(ctx, token, "/v1/databases", databases::build_list(ctx)).await
}

/// Usage now (no history) of every instance, or a service's last hour.
async fn usage_of(ctx: &NodeContext, service: Option<&str>) -> Source<holdfast_api::types::UsageResponse> {
    let samples = match service {
        Some(_) => (holdfast_agent::usage::WINDOW_MS / holdfast_agent::usage::SAMPLE_EVERY_MS) as usize + 1,
        None => 0,
    };
    Ok(usage::collect(ctx, service, None, samples).await)
}

async fn event_list(ctx: &NodeContext, limit: usize) -> Source<holdfast_api::types::EventsResponse> {
    Ok(events::build_events(ctx, 0, limit).await)
}

async fn route_list(ctx: &NodeContext) -> Source<holdfast_api::types::RoutesResponse> {
    Ok(routes::build_routes(ctx).await)
}

async fn service_data(ctx: &NodeContext, token: &UiToken, name: String) -> ServicePage {
    let (status, usage, events) =
        tokio::join!(status(ctx, token), usage_of(ctx, Some(&name)), event_list(ctx, SERVICE_EVENTS_SEARCHED));
    ServicePage { name, status, usage, events }
}

// ---- pages ----

type Token = axum::Extension<UiToken>;

async fn overview(State(ctx): State<NodeContext>, axum::Extension(token): Token) -> Response {
    let (nodes, usage, status, routes, databases, events) = tokio::join!(
        node_list(&ctx, &token),
        usage_of(&ctx, None),
        status(&ctx, &token),
        route_list(&ctx),
        database_list(&ctx, &token),
        event_list(&ctx, pages::OVERVIEW_EVENTS)
    );
    let data = Overview { nodes, usage, status, routes, databases, events };
    page(StatusCode::OK, pages::overview_page(&header(&ctx), &data))
}

async fn service(State(ctx): State<NodeContext>, axum::Extension(token): Token, Path(name): Path<String>) -> Response {
    let data = service_data(&ctx, &token, name).await;
    let code = if data.unknown() { StatusCode::NOT_FOUND } else { StatusCode::OK };
    page(code, pages::service_page(&header(&ctx), &data))
}

async fn history(State(ctx): State<NodeContext>) -> Response {
    let events = event_list(&ctx, pages::HISTORY_EVENTS).await;
    page(StatusCode::OK, pages::events_page(&header(&ctx), &events))
}

// ---- fragments ----

async fn nodes_fragment(State(ctx): State<NodeContext>, axum::Extension(token): Token) -> Response {
    let (nodes, usage) = tokio::join!(node_list(&ctx, &token), usage_of(&ctx, None));
    page(StatusCode::OK, pages::nodes_section(&nodes, &usage))
}

async fn services_fragment(State(ctx): State<NodeContext>, axum::Extension(token): Token) -> Response {
    page(StatusCode::OK, pages::services_section(&status(&ctx, &token).await))
}

async fn service_fragment(
    State(ctx): State<NodeContext>,
    axum::Extension(token): Token,
    Path(name): Path<String>,
) -> Response {
    let data = service_data(&ctx, &token, name).await;
    page(StatusCode::OK, pages::service_section(&data, crate::peer::now_ms()))
}

async fn routes_fragment(State(ctx): State<NodeContext>) -> Response {
    page(StatusCode::OK, pages::routes_section(&route_list(&ctx).await))
}

async fn databases_fragment(State(ctx): State<NodeContext>, axum::Extension(token): Token) -> Response {
    page(StatusCode::OK, pages::databases_section(&database_list(&ctx, &token).await))
}

async fn events_fragment(State(ctx): State<NodeContext>) -> Response {
    let events = event_list(&ctx, pages::OVERVIEW_EVENTS).await;
    page(StatusCode::OK, pages::events_section(&events, pages::OVERVIEW_EVENTS, crate::peer::now_ms()))
}

async fn history_fragment(State(ctx): State<NodeContext>) -> Response {
    let events = event_list(&ctx, pages::HISTORY_EVENTS).await;
    page(StatusCode::OK, pages::events_section(&events, pages::HISTORY_EVENTS, crate::peer::now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_cookie() {
        assert_eq!(token_of(&headers(&[(header::AUTHORIZATION, "Bearer abc ")])).as_deref(), Some("abc"));
        let split = headers(&[(header::COOKIE, "a=1"), (header::COOKIE, "x=2; holdfast_ui=tok.1-2")]);
        assert_eq!(token_of(&split).as_deref(), Some("tok.1-2"));
        assert_eq!(token_of(&headers(&[(header::COOKIE, "holdfast_uix=1; holdfast_ui=")])), None);
        assert_eq!(token_of(&HeaderMap::new()), None);
    }

    #[test]
    fn only_cookie_safe_tokens_become_cookies() {
        assert!(cookie_safe("hfapi1.ab12.Zm9v_-x"));
        assert!(!cookie_safe("a;b") && !cookie_safe("a b") && !cookie_safe("") && !cookie_safe("é"));
        let set = cookie("t0k", None);
        assert_eq!(set.to_str().ok(), Some("holdfast_ui=t0k; HttpOnly; Secure; SameSite=Strict; Path=/ui"));
        assert!(cookie("", Some(0)).to_str().is_ok_and(|c| c.ends_with("Max-Age=0")));
    }
}
