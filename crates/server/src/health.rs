//! Liveness, readiness, and the answer for unknown endpoints.
//!
//! Readiness reflects storage: 503 while the feedback database cannot take writes (a load
//! balancer then sends feedback elsewhere; evaluations would still be answered here). Both
//! answers carry the audit trail's counters, so an operator sees a backlog or losses.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::{error_response, json_response};
use crate::AppState;

pub(crate) async fn live() -> HttpResponse {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "live" }))
}

pub(crate) async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let audit = state.stores.audit.stats();
    if state.store.ready().await {
        json_response(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ready",
                "knowledge": state.engine.knowledge().version(),
                "audit": audit,
            }),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "storage unavailable", "audit": audit }),
        )
    }
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
