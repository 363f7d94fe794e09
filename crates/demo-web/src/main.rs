//! The demo web app run by `examples/demo/holdfast.yaml`: listens on `$PORT` and answers
//! every request with the instance that served it, so replicas and restarts are visible.
//!
//! - `GET /` — `hello from web-1 (pid 1234, project demo), request #7`
//! - `GET /peer` — asks the service's own stable address (`$<SERVICE>_HTTP_ADDR`, set by
//!   holdfast) and shows which replica answered: replicas find each other through the
//!   node's proxy, never by instance ports.
//! - `GET /healthz` — `ok`
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;

struct App {
    instance: String,
    service: String,
    project: String,
    greeting: String,
    hits: AtomicU64,
}

async fn hello(State(app): State<Arc<App>>) -> String {
    let n = app.hits.fetch_add(1, Ordering::Relaxed) + 1;
    format!(
        "{} from {} (pid {}, project {}), request #{n}\n",
        app.greeting,
        app.instance,
        std::process::id(),
        app.project
    )
}

/// One plain HTTP/1.0 GET over TCP (the demo keeps its dependencies minimal).
async fn http_get(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: peer\r\n\r\n").await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(text))
}

async fn peer(State(app): State<Arc<App>>) -> String {
    let var = format!("{}_HTTP_ADDR", app.service.to_uppercase().replace('-', "_"));
    let Ok(addr) = std::env::var(&var) else {
        return format!("{}: ${var} is not set (not run by holdfast?)\n", app.instance);
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), http_get(&addr)).await {
        Ok(Ok(body)) => format!("{} asked its service address {addr} and got: {body}", app.instance),
        Ok(Err(e)) => format!("{} could not reach {addr}: {e}\n", app.instance),
        Err(_) => format!("{} timed out reaching {addr}\n", app.instance),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("holdfast-demo-web: PORT must be a port number, got `{port}`");
        return std::process::ExitCode::from(2);
    };
    let app = Arc::new(App {
        instance: std::env::var("HOLDFAST_INSTANCE").unwrap_or_else(|_| "standalone".into()),
        service: std::env::var("HOLDFAST_SERVICE").unwrap_or_else(|_| "web".into()),
        project: std::env::var("HOLDFAST_PROJECT").unwrap_or_else(|_| "-".into()),
        greeting: std::env::var("GREETING").unwrap_or_else(|_| "hello".into()),
        hits: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/", get(hello))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/peer", get(peer))
        .with_state(app.clone());
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("holdfast-demo-web: cannot listen on 127.0.0.1:{port}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!("{} listening on 127.0.0.1:{port}", app.instance);
    let stop = async {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
        }
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
        eprintln!("holdfast-demo-web: {e}");
        return std::process::ExitCode::from(1);
    }
    println!("{} stopped", app.instance);
    std::process::ExitCode::SUCCESS
}
