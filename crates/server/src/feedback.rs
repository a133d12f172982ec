//! The feedback endpoint: 200 only once the store has taken the feedback.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::{cds_error, error_response, service_and_body};
use crate::AppState;

pub(crate) async fn feedback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (id, body) = match service_and_body(&req, path, payload, &state).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let items = match jakguard_cds::feedback::parse(&body) {
        Ok(items) => items,
        Err(e) => return cds_error(&e),
    };
    match state.store.store(&id, &items) {
        Ok(()) => {
            tracing::info!(service = %id, items = items.len(), "feedback stored");
            HttpResponse::Ok().finish()
        }
        Err(e) => {
            tracing::warn!(service = %id, error = %e, "feedback not stored");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "feedback could not be stored; retry",
            )
        }
    }
}
