//! Liveness, readiness, and the answer for unknown endpoints.
//!
//! Readiness reflects storage: while the database cannot take writes the answer is 503
//! (`"storage": "unavailable"`), so that feedback is not routed to a replica that must refuse it.
//! With one database shared by every replica that removes all of them at once, turning a
//! feedback outage into a CDS outage; an operator who prefers CDS to keep answering sets
//! `ready_requires_storage = false`, and readiness then stays 200 with `"status": "degraded"`.
//! Both answers carry the audit trail's counters (pending, written, dropped), so an operator or
//! a monitor sees a backlog or losses.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::{error_response, json_response};
use crate::AppState;

pub(crate) async fn live() -> HttpResponse {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "live" }))
}

pub(crate) async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let audit = state.stores.audit.stats();
    let storage_ok = state.store.ready().await;
    let status = if storage_ok || !state.ready_requires_storage {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &serde_json::json!({
            "status": match (storage_ok, state.ready_requires_storage) {
                (true, _) => "ready",
                (false, true) => "unavailable",
                (false, false) => "degraded",
            },
            "storage": if storage_ok { "ok" } else { "unavailable" },
            "knowledge": state.engine.knowledge().version(),
            "audit": audit,
        }),
    )
}

pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    if req.method() == actix_web::http::Method::OPTIONS {
        return HttpResponse::NoContent().finish();
    }
    error_response(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint; see GET /cds-services",
    )
}
