//! Liveness, readiness, and the answer for unknown endpoints.
//!
//! Readiness reflects storage without taking evaluation down with it: while the database
//! cannot take writes the answer stays 200 (this replica still answers CDS calls in time,
//! which is what a load balancer routes) but says `"status": "degraded"` and
//! `"storage": "unavailable"`. Answering 503 instead would, with one database shared by every
//! replica, remove all of them at once and turn a feedback outage into a CDS outage. Both
//! answers carry the audit trail's counters (pending, written, dropped), so an operator or a
//! monitor sees a backlog or losses.

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
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "status": if storage_ok { "ready" } else { "degraded" },
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
