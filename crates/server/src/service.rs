//! Discovery and the service calls.

use std::time::Instant;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::{cds_error, error_response, json_response, service_and_body};
use crate::{negotiate_language, today_utc, AppState};

pub(crate) async fn discovery() -> HttpResponse {
    json_response(StatusCode::OK, &jakguard_cds::services::discovery())
}

pub(crate) async fn call_service(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (id, body) = match service_and_body(&req, path, payload, &state).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let lang = negotiate_language(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        state.default_language,
    );
    let started = Instant::now();
    let engine = state.engine.clone();
    let today = today_utc();
    // Evaluation takes microseconds; it runs on the worker. A panic would be a bug: it is
    // caught so that the worker survives and the client gets an OperationOutcome.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.evaluate(&id, &body, lang, today)
    }));
    let elapsed_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(Ok(jakguard_cds::Evaluated { response, audit })) => {
            state.audit.record(audit);
            tracing::info!(service = %id, status = 200, cards = response.cards.len(), elapsed_us, "evaluated");
            match serde_json::to_vec(&response) {
                Ok(bytes) => HttpResponse::Ok()
                    .content_type("application/json")
                    .body(bytes),
                Err(_) => error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "the response could not be written",
                ),
            }
        }
        Ok(Err(e)) => {
            tracing::info!(service = %id, status = e.status(), elapsed_us, "refused");
            cds_error(&e)
        }
        Err(_) => {
            tracing::error!(service = %id, "evaluation panicked");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "internal error",
            )
        }
    }
}
