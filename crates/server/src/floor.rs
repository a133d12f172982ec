//! The floor of the load budgets: `POST /bench/floor/{id}`, compiled only with the cargo
//! feature `bench-floor` (the load script builds with it; a release build without it has no
//! such route, and the path answers 404 like any unknown one).
//!
//! It does the least any CDS service must do with a request: the same routing, service lookup,
//! content-type and size checks and body reading as `POST /cds-services/{id}` (through the
//! same middleware), a full JSON syntax check of the body into `serde::de::IgnoredAny`, and an
//! empty `{"cards":[]}`. jakguard's budgets are ratios to this endpoint measured in the same
//! run, because the absolute numbers of a shared 2-core machine swing from run to run.

use actix_web::web;

/// Registers the floor route when the feature is on; nothing otherwise.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Static paths, as the services have (see `service::routes`): the floor must not pay a
    // routing cost the services do not.
    #[cfg(feature = "bench-floor")]
    crate::http::route_each_service(cfg, "/bench/floor/", enabled::floor);
    #[cfg(not(feature = "bench-floor"))]
    let _ = cfg;
}

#[cfg(feature = "bench-floor")]
mod enabled {
    use actix_web::http::StatusCode;
    use actix_web::{web, HttpRequest, HttpResponse};

    use crate::http::{error_response, service_and_body};
    use crate::AppState;

    pub(super) async fn floor(
        req: HttpRequest,
        id: String,
        payload: web::Payload,
        state: web::Data<AppState>,
    ) -> HttpResponse {
        let (_id, body) = match service_and_body(&req, id, payload, &state).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            Ok(_) => HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"cards":[]}"#),
            Err(_) => error_response(StatusCode::BAD_REQUEST, "invalid", "the body is not JSON"),
        }
    }
}
