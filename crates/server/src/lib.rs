//! The HTTP face of jakguard (actix-web): routes, CORS, body limits, errors as
//! OperationOutcomes. Startup is separated from `main` so that tests can run the real server
//! on port 0 (see [`Application::build`]).
//!
//! Invariants:
//! - every answer to a client fault is a 4xx with an OperationOutcome; nothing a client sends
//!   produces a 5xx (a panic in evaluation is caught and answered 500 as a last resort);
//! - no patient data, token or body is logged: only the service id, the hookInstance, the
//!   status and the duration.

pub mod config;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use jakguard_cds::{error::outcome, CdsError, Engine};
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::Date;
use jakguard_storage::{FeedbackStore, MemoryStore};

pub use config::Config;

/// What every request handler shares.
pub struct AppState {
    pub engine: Engine,
    pub store: Arc<dyn FeedbackStore>,
    pub default_language: Lang,
    pub body_limit: usize,
}

/// A built server, bound but not yet running.
pub struct Application {
    port: u16,
    server: Server,
    pub store: Arc<dyn FeedbackStore>,
}

impl Application {
    /// Loads the knowledge, binds the listener and builds the server.
    pub fn build(config: &Config) -> anyhow_like::Result<Application> {
        let knowledge = match &config.knowledge_dir {
            Some(dir) => Knowledge::from_dir(dir)?,
            None => Knowledge::embedded()?,
        };
        let listener = TcpListener::bind(config.bind)?;
        Self::with_listener(config, Arc::new(knowledge), listener)
    }

    pub fn with_listener(
        config: &Config,
        knowledge: Arc<Knowledge>,
        listener: TcpListener,
    ) -> anyhow_like::Result<Application> {
        let port = listener.local_addr()?.port();
        let store: Arc<dyn FeedbackStore> = Arc::new(MemoryStore::default());
        let state = web::Data::new(AppState {
            engine: Engine::new(knowledge),
            store: store.clone(),
            default_language: config.default_language,
            body_limit: config.body_limit,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(cors())
                .route("/cds-services", web::get().to(discovery))
                .route("/cds-services/{id}", web::post().to(call_service))
                .route("/cds-services/{id}/feedback", web::post().to(feedback))
                .route("/health/live", web::get().to(live))
                .route("/health/ready", web::get().to(ready))
                .default_service(web::to(not_found))
        })
        .client_request_timeout(std::time::Duration::from_secs(10))
        .client_disconnect_timeout(std::time::Duration::from_secs(2))
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until stopped (SIGINT/SIGTERM stop it gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Errors of startup: the knowledge, the listener.
pub mod anyhow_like {
    #[derive(Debug, thiserror::Error)]
    pub enum StartError {
        #[error(transparent)]
        Knowledge(#[from] jakguard_knowledge::KnowledgeError),
        #[error("cannot listen: {0}")]
        Io(#[from] std::io::Error),
    }
    pub type Result<T> = std::result::Result<T, StartError>;
}

/// Browser clients such as the CDS Hooks sandbox send a preflight before every call.
fn cors() -> Cors {
    Cors::default()
        .allow_any_origin()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::ACCEPT_LANGUAGE,
        ])
        .max_age(3600)
}

/// Today's date in UTC, for the rules.
pub fn today_utc() -> Date {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Date::from_days_since_epoch(secs.div_euclid(86_400))
}

/// The language of an `Accept-Language` header: the first of `fr` or `en` by preference.
pub fn negotiate_language(header: Option<&str>, default: Lang) -> Lang {
    let Some(h) = header else { return default };
    let mut best: Option<(f32, Lang)> = None;
    for part in h.split(',') {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.trim().parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let lang = match primary {
            "fr" => Lang::Fr,
            "en" => Lang::En,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(default, |(_, l)| l)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn error_response(status: StatusCode, code: &str, text: &str) -> HttpResponse {
    json_response(status, &outcome(code, text, &[]))
}

fn cds_error(e: &CdsError) -> HttpResponse {
    json_response(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        &e.operation_outcome(),
    )
}

async fn discovery() -> HttpResponse {
    json_response(StatusCode::OK, &jakguard_cds::services::discovery())
}

async fn live() -> HttpResponse {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "live" }))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.store.ready() {
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "knowledge": state.engine.knowledge().version() }),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "storage unavailable" }),
        )
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    if req.method() == actix_web::http::Method::OPTIONS {
        return HttpResponse::NoContent().finish();
    }
    error_response(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint; see GET /cds-services",
    )
}

/// Checks the content type and reads the body up to the limit.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, HttpResponse> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime == "application/json" || mime.ends_with("+json")) {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            &format!("the body is larger than {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            error_response(
                StatusCode::BAD_REQUEST,
                "incomplete",
                "the body could not be read",
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The service id of the path and the body, or the error answer (404, 413, 415...).
async fn service_and_body(
    req: &HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: &AppState,
) -> Result<(String, Vec<u8>), HttpResponse> {
    let id = path.into_inner();
    if jakguard_cds::services::find(&id).is_none() {
        return Err(cds_error(&CdsError::UnknownService(id)));
    }
    let body = read_body(req, payload, state.body_limit).await?;
    Ok((id, body))
}

async fn call_service(
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
        Ok(Ok(response)) => {
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

async fn feedback(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        assert_eq!(
            negotiate_language(Some("fr-FR,fr;q=0.9,en;q=0.8"), Lang::En),
            Lang::Fr
        );
        assert_eq!(
            negotiate_language(Some("de-DE, en;q=0.5"), Lang::Fr),
            Lang::En
        );
        assert_eq!(negotiate_language(Some("de-DE"), Lang::Fr), Lang::Fr);
        assert_eq!(
            negotiate_language(Some("en;q=0.3, fr;q=0.7"), Lang::En),
            Lang::Fr
        );
        assert_eq!(negotiate_language(None, Lang::Fr), Lang::Fr);
    }
}
