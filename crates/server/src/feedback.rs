//! The feedback endpoint: 200 only once the store has committed the feedback; 503 (retry)
//! when the database cannot take it now. Feedback about a card this deployment never issued
//! is stored all the same, flagged, and counted in the log.

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
    let (id, body) = match service_and_body(&req, path.into_inner(), payload, &state).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let items = match jakguard_cds::feedback::parse(&body) {
        Ok(items) => items,
        Err(e) => return cds_error(&e),
    };
    let started = std::time::Instant::now();
    match state.store.store(&id, &items).await {
        Ok(outcome) => {
            for item in &items {
                state.metrics.feedback_outcome(match item.outcome {
                    jakguard_cds::feedback::Outcome::Accepted => "accepted",
                    jakguard_cds::feedback::Outcome::Overridden => "overridden",
                });
            }
            // Counts only: card uuids and comments stay out of the log.
            tracing::info!(
                service = %id,
                items = items.len(),
                stored = outcome.stored,
                duplicates = outcome.duplicates,
                unknown_cards = outcome.unknown_cards,
                elapsed_us = started.elapsed().as_micros() as u64,
                "feedback stored"
            );
            HttpResponse::Ok().finish()
        }
        Err(e) => {
            tracing::warn!(service = %id, error = %e, "feedback not stored; answered 503");
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "feedback could not be stored; retry",
            );
            resp.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("5"),
            );
            resp
        }
    }
}
