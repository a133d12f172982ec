//! Discovery and the service calls: prepare (what the prefetch lacks), fetch it from the EHR's
//! FHIR server (`jakguard-fetch`), complete (rules and cards).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use futures_util::FutureExt;
use jakguard_cds::{CdsError, Engine, Evaluated};
use jakguard_fetch::{FetchReport, Fetcher, Refused};
use jakguard_knowledge::Lang;
use jakguard_rules::Date;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::{cds_error, error_response, json_response, route_each_service, service_and_body};
use crate::{negotiate_language, today_utc, AppState};

pub(crate) async fn discovery() -> HttpResponse {
    json_response(StatusCode::OK, &jakguard_cds::services::discovery())
}

/// The service routes: each service's own static path (see [`route_each_service`]), then
/// `{id}` for any other (answered 404).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    route_each_service(cfg, "/cds-services/", call);
    cfg.route("/cds-services/{id}", web::post().to(call_service));
}

async fn call_service(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    call(req, path.into_inner(), payload, state).await
}

async fn call(
    req: HttpRequest,
    id: String,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (id, body) = match service_and_body(&req, id, payload, &state).await {
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
    // Evaluation takes microseconds and runs on the worker; only the fetch from the EHR's FHIR
    // server waits (asynchronously, within its deadline). A panic would be a bug: it is caught
    // in every phase so that the worker survives and the client gets an OperationOutcome.
    let outcome = evaluate(&engine, &state.fetcher, &id, &body, lang, today).await;
    let elapsed_us = started.elapsed().as_micros() as u64;
    // Counts and durations only: the fetch's URLs carry the patient id, its reasons may too.
    let report = outcome.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
    let fetch_ms = report.elapsed.as_millis() as u64;
    let (fetched, fetch_failed) = (report.keys, report.failed);
    if fetched > 0 {
        state
            .metrics
            .fetched("all", fetch_failed == 0, report.elapsed.as_secs_f64());
    }
    let short_circuited = report.short_circuited;
    let result = outcome.map(|(r, _)| r).ok_or(());
    match result {
        Ok(Ok(jakguard_cds::Evaluated { response, audit })) => {
            state.audit.record(audit);
            tracing::info!(
                service = %id,
                status = 200,
                cards = response.cards.len(),
                elapsed_us,
                fetched,
                fetch_failed,
                fetch_ms,
                short_circuited,
                "evaluated"
            );
            // Sized for the usual answer (2 to 6 KB): growing from empty copied it five times.
            let mut bytes = Vec::with_capacity(8 * 1024);
            // jakguard_cds::json: serde_json's bytes, with strings escaped eight at a time.
            match jakguard_cds::json::to_writer(&mut bytes, &response) {
                Ok(()) => HttpResponse::Ok()
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
            tracing::info!(
                service = %id,
                status = e.status(),
                elapsed_us,
                fetched,
                fetch_failed,
                fetch_ms,
                "refused"
            );
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

/// Prepare, fetch, complete. `None` when a phase panicked (a bug, answered 500).
pub(crate) async fn evaluate(
    engine: &Engine,
    fetcher: &Fetcher,
    id: &str,
    body: &[u8],
    lang: Lang,
    today: Date,
) -> Option<(Result<Evaluated, CdsError>, FetchReport)> {
    let prepared = match catch_unwind(AssertUnwindSafe(|| engine.prepare(id, body))).ok()? {
        Ok(p) => p,
        Err(e) => return Some((Err(e), FetchReport::default())),
    };
    // The request's span (opened by the metrics middleware) carries the hookInstance, so that
    // every log line of this call can be tied to the EHR's own logs. It identifies the call,
    // not the patient.
    tracing::Span::current().record("hook_instance", prepared.request().hook_instance.as_ref());
    let fetch = AssertUnwindSafe(fetcher.fetch_for(&prepared))
        .catch_unwind()
        .await
        .ok()?;
    let fetch = match fetch {
        Ok(f) => f,
        // A server outside the allowlist: nothing was contacted, and the keys it would have
        // given are named in the 412 (the rule: a request naming another server is
        // refused, so that a misconfigured EHR is seen at once, not answered half-blind).
        Err(Refused::ServerNotAllowed { keys }) => {
            return Some((
                Err(CdsError::PreconditionFailed(keys)),
                FetchReport::default(),
            ))
        }
    };
    let done = catch_unwind(AssertUnwindSafe(|| {
        engine.complete(&prepared, &fetch.fetched, lang, today)
    }))
    .ok()?;
    Some((done, fetch.report))
}
