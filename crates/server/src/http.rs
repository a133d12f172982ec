//! Shared pieces of the handlers: JSON answers, OperationOutcomes, body reading.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use jakguard_cds::{error::outcome, CdsError};

use crate::AppState;

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

pub(crate) fn error_response(status: StatusCode, code: &str, text: &str) -> HttpResponse {
    json_response(status, &outcome(code, text, &[]))
}

pub(crate) fn cds_error(e: &CdsError) -> HttpResponse {
    json_response(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        &e.operation_outcome(),
    )
}

/// Routes `POST {prefix}{id}` for each service to `handler`, which gets the service's id. A
/// static path is matched by comparing strings, where a `{id}` segment costs a match of
/// actix's regular expression on every call (about 26,000 instructions, 3% of a call).
pub(crate) fn route_each_service<F, Fut>(cfg: &mut web::ServiceConfig, prefix: &str, handler: F)
where
    F: Fn(HttpRequest, String, web::Payload, web::Data<AppState>) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = HttpResponse> + 'static,
{
    for s in &jakguard_cds::SERVICES {
        let handler = handler.clone();
        cfg.route(
            &format!("{prefix}{}", s.id),
            web::post().to(
                move |req: HttpRequest, payload: web::Payload, state: web::Data<AppState>| {
                    handler(req, s.id.to_owned(), payload, state)
                },
            ),
        );
    }
}

/// Checks the content type and reads the body up to the limit.
/// How long a client may take to send its whole body.
pub(crate) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, HttpResponse> {
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
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    // A body that arrives in one chunk is kept as that chunk, uncopied; a longer one is
    // gathered into a buffer sized once from the declared length (at most the limit): growing
    // it chunk by chunk copied a 26 KB body about four times.
    let mut body = Body::Empty;
    // A client that trickles its body holds a worker: the whole body must arrive in time.
    let deadline = actix_web::rt::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(actix_web::rt::time::Instant::now());
        let next = match actix_web::rt::time::timeout(left, payload.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body did not arrive in time",
                ))
            }
        };
        let Some(chunk) = next else { break };
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
        body = match body {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                let mut all = web::BytesMut::with_capacity(
                    declared.unwrap_or(0).max(first.len() + chunk.len()),
                );
                all.extend_from_slice(&first);
                all.extend_from_slice(&chunk);
                Body::Many(all)
            }
            Body::Many(mut all) => {
                all.extend_from_slice(&chunk);
                Body::Many(all)
            }
        };
    }
    Ok(match body {
        Body::Empty => web::Bytes::new(),
        Body::One(b) => b,
        Body::Many(all) => all.freeze(),
    })
}

/// A body as it arrives.
enum Body {
    Empty,
    One(web::Bytes),
    Many(web::BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }
}

/// The service id of the path and the body, or the error answer (404, 413, 415...).
pub(crate) async fn service_and_body(
    req: &HttpRequest,
    id: String,
    payload: web::Payload,
    state: &AppState,
) -> Result<(String, web::Bytes), HttpResponse> {
    if jakguard_cds::services::find(&id).is_none() {
        return Err(cds_error(&CdsError::UnknownService(id)));
    }
    let body = read_body(req, payload, state.body_limit).await?;
    Ok((id, body))
}
