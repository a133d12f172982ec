//! The registry of services: one list feeds both discovery and routing.

use serde::Serialize;

/// The prefetch keys of the contract and the queries jakguard asks the EHR to run.
pub const PREFETCH: [(&str, &str); 4] = [
    ("patient", "Patient/{{context.patientId}}"),
    ("conditions", "Condition?patient={{context.patientId}}"),
    ("observations", "Observation?patient={{context.patientId}}&code=http://loinc.org|72166-2,http://loinc.org|11367-0,http://loinc.org|39156-5,http://loinc.org|731-0,http://loinc.org|26474-7,http://loinc.org|751-8,http://loinc.org|26499-4,http://loinc.org|718-7,http://loinc.org|777-3,http://loinc.org|26515-7,http://snomed.info/sct|401201003,http://loinc.org|8664-4"),
    ("medications", "MedicationRequest?patient={{context.patientId}}&status=active"),
];

/// Which context a hook carries, and which orders it evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Evaluates the draft orders named in `context.selections`.
    OrderSelect,
    /// Evaluates every draft order.
    OrderSign,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::OrderSelect => "order-select",
            Hook::OrderSign => "order-sign",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: &'static str,
    pub hook: Hook,
    pub title: &'static str,
    pub description: &'static str,
}

pub const SERVICES: [Service; 2] = [
    Service {
        id: "jakguard-order-select",
        hook: Hook::OrderSelect,
        title: "JAK inhibitor safety check (order selection)",
        description: "Checks a selected JAK inhibitor order against the 2023 ANSM/EMA restrictions: age 65 or over, smoking, cardiovascular and malignancy risk factors, VTE risk, connective tissue disease, dose and blood counts.",
    },
    Service {
        id: "jakguard-order-sign",
        hook: Hook::OrderSign,
        title: "JAK inhibitor safety check (order signature)",
        description: "Checks every JAK inhibitor order about to be signed against the 2023 ANSM/EMA restrictions: age 65 or over, smoking, cardiovascular and malignancy risk factors, VTE risk, connective tissue disease, dose and blood counts.",
    },
];

pub fn find(id: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.id == id)
}

#[derive(Serialize)]
struct DiscoveryService {
    hook: &'static str,
    title: &'static str,
    description: &'static str,
    id: &'static str,
    prefetch: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "usageRequirements")]
    usage_requirements: &'static str,
}

/// The body of `GET /cds-services`.
pub fn discovery() -> serde_json::Value {
    let prefetch: serde_json::Map<String, serde_json::Value> = PREFETCH
        .iter()
        .map(|(k, q)| (k.to_string(), serde_json::Value::String(q.to_string())))
        .collect();
    let services: Vec<DiscoveryService> = SERVICES
        .iter()
        .map(|s| DiscoveryService {
            hook: s.hook.as_str(),
            title: s.title,
            description: s.description,
            id: s.id,
            prefetch: prefetch.clone(),
            usage_requirements: "Needs the patient (Patient), and for a complete check the Conditions, the smoking-status, BMI and blood-count Observations and the active MedicationRequests, prefetched or readable from fhirServer.",
        })
        .collect();
    serde_json::json!({ "services": services })
}
