//! The OpenAPI description of every endpoint, served at `/openapi.json` so that clients and
//! schema-driven test tools (schemathesis runs against it in CI) read what the binary serves.

use actix_web::HttpResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_and_names_every_route() {
        let v: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/cds-services",
            "/cds-services/{id}",
            "/cds-services/{id}/feedback",
            "/health/live",
            "/health/ready",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
    }
}
