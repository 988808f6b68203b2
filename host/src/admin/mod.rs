//! The admin HTTP listener (`admin.listen`, loopback by default): health and readiness probes,
//! a JSON API over the gateway's state (backends, sessions, policies, digests, users), actions
//! (kill a session, reload policies, reset digests), Prometheus `/metrics` and the status page.
//! Everything but the probes needs the bearer token when one is configured. Documented with an
//! example per endpoint in `docs/admin.md`.

pub mod metrics;
pub mod page;
pub mod views;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::Reloaders;
use crate::gateway::Gateway;
use crate::telemetry::digests::DigestSort;

/// What the handlers share.
pub struct AdminState {
    pub gw: Arc<Gateway>,
    pub reloaders: Reloaders,
}

type Shared = State<Arc<AdminState>>;

/// Binds `admin.listen` (port 0 picks a free one).
pub async fn bind(gw: &Gateway) -> anyhow::Result<TcpListener> {
    let addr = gw.config().admin.listen;
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen: cannot listen on {addr}: {e}"))
}

/// Serves the admin API on `listener` until the gateway shuts down.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, reloaders: Reloaders) {
    let state = Arc::new(AdminState {
        gw: Arc::clone(&gw),
        reloaders,
    });
    let app = router(state);
    let mut shutdown = gw.shutdown.clone();
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(prometheus))
        .route("/api/backends", get(backends))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", delete(kill_session))
        .route("/api/policies", get(policies))
        .route("/api/reload", post(reload))
        .route("/api/digests", get(digests))
        .route("/api/digests/reset", post(reset_digests))
        .route("/api/users", get(users))
        .route("/api/capture", get(capture_status))
        .route("/api/capture/start", post(start_capture))
        .route("/api/capture/stop", post(stop_capture))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            audit_actions,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// Equal in time whatever the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(s): Shared, headers: HeaderMap, req: Request, next: Next) -> Response {
    // The token in force: a reload (a rotated token file) applies to the next request.
    let config = s.gw.config();
    let Some(token) = &config.admin.token else {
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"error": "a valid bearer token is required (Authorization: Bearer ...)"})),
    )
        .into_response()
}

/// Actions (anything but GET) go to the audit log with their answer's status.
async fn audit_actions(State(s): Shared, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    let what = format!("{} {}", req.method(), req.uri().path());
    let res = next.run(req).await;
    let detail = format!("{what} -> {}", res.status().as_u16());
    s.gw.telemetry.audit(&crate::telemetry::audit::AuditEvent {
        event: "admin",
        detail: Some(&detail),
        ..Default::default()
    });
    res
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): Shared) -> Response {
    match views::ready(&s.gw) {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn status_page(State(s): Shared) -> Html<String> {
    Html(page::render(&s.gw))
}

async fn prometheus(State(s): Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&s.gw),
    )
        .into_response()
}

async fn backends(State(s): Shared) -> Json<Vec<views::BackendView>> {
    Json(views::backends(&s.gw))
}

async fn sessions(State(s): Shared) -> Json<Vec<views::SessionView>> {
    Json(views::sessions(&s.gw))
}

async fn kill_session(State(s): Shared, Path(id): Path<u32>) -> Response {
    let Some(entry) = s.gw.session(id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no session {id}")})),
        )
            .into_response();
    };
    entry.kill(false).await;
    tracing::info!(id, user = %entry.user, "session killed through the admin API");
    Json(serde_json::json!({"killed": id})).into_response()
}

async fn policies(State(s): Shared) -> Json<views::PoliciesView> {
    Json(views::policies(&s.gw))
}

/// Reloads the configuration file and then the policy directory; 422 names what was refused
/// (the rest still applied), 409 when the gateway has neither to reload.
async fn reload(State(s): Shared) -> Response {
    let out = s.reloaders.reload_all().await;
    if out.config.is_none() && out.policies.is_none() {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"ok": false, "reason": "nothing to reload: the configuration did not come from a file and no policy directory is in use"})),
        )
            .into_response();
    }
    let mut ok = true;
    let config = match &out.config {
        None => serde_json::Value::Null,
        Some(Ok(summary)) => serde_json::json!({
            "ok": true,
            "version": s.gw.reload_status().version,
            "changes": summary,
            "summary": summary.to_string(),
        }),
        Some(Err(reason)) => {
            ok = false;
            serde_json::json!({"ok": false, "reason": reason})
        }
    };
    let policies = match &out.policies {
        None => serde_json::Value::Null,
        Some(Ok(())) => serde_json::json!({"ok": true, "version": s.gw.policy_status().version}),
        Some(Err(e)) => {
            ok = false;
            serde_json::json!({"ok": false, "file": e.file, "reason": e.reason})
        }
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (
        status,
        Json(serde_json::json!({"ok": ok, "config": config, "policies": policies})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct DigestQuery {
    sort: Option<String>,
    limit: Option<usize>,
}

async fn digests(State(s): Shared, Query(q): Query<DigestQuery>) -> Response {
    let sort = match q.sort.as_deref().map(DigestSort::parse) {
        None => DigestSort::TotalTime,
        Some(Some(sort)) => sort,
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "sort must be one of total, count, errors, p99, max, rows, last_seen"})),
            )
                .into_response();
        }
    };
    let t = &s.gw.telemetry.digests;
    Json(serde_json::json!({
        "entries": t.len(),
        "max": t.capacity(),
        "evictions": t.evictions(),
        "digests": views::digests(&s.gw, sort, q.limit.unwrap_or(100)),
    }))
    .into_response()
}

async fn reset_digests(State(s): Shared) -> Json<serde_json::Value> {
    s.gw.telemetry.digests.reset();
    Json(serde_json::json!({"reset": true}))
}

/// `POST /api/capture/start`'s body: a file name in `capture.dir`, and limits that override the
/// configuration's.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct StartCapture {
    name: String,
    max_bytes: Option<u64>,
    max_secs: Option<u64>,
    redact_literals: Option<bool>,
}

async fn capture_status(State(s): Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "capture": s.gw.capture_status() }))
}

async fn start_capture(State(s): Shared, body: Option<Json<StartCapture>>) -> Response {
    let Some(Json(b)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"ok": false, "reason": "a JSON body is required: {\"name\": \"file.jsonl\"} (and optionally max-bytes, max-secs, redact-literals)"})),
        )
            .into_response();
    };
    use crate::capture::CaptureError;
    match s
        .gw
        .start_capture(&b.name, b.max_bytes, b.max_secs, b.redact_literals)
    {
        Ok(status) => Json(serde_json::json!({"ok": true, "capture": status})).into_response(),
        Err(e) => {
            let code = match e {
                CaptureError::Running(_) => StatusCode::CONFLICT,
                CaptureError::NoDirectory | CaptureError::BadName(_) => StatusCode::BAD_REQUEST,
                CaptureError::Create { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                code,
                Json(serde_json::json!({"ok": false, "reason": e.to_string()})),
            )
                .into_response()
        }
    }
}

async fn stop_capture(State(s): Shared) -> Response {
    // The writer drains its queue and closes the file: off the runtime's threads.
    let gw = Arc::clone(&s.gw);
    let stopped = tokio::task::spawn_blocking(move || gw.stop_capture("stopped by the admin API"))
        .await
        .ok()
        .flatten();
    match stopped {
        Some(status) => Json(serde_json::json!({"ok": true, "capture": status})).into_response(),
        None => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"ok": false, "reason": "no capture has run"})),
        )
            .into_response(),
    }
}

async fn users(State(s): Shared) -> Json<Vec<crate::telemetry::users::UserRow>> {
    Json(views::users(&s.gw))
}
