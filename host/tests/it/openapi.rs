use serde_json::Value;

use crate::support::{fixture, lib_name, Host};

/// Every route the host mounts, as OpenAPI path templates.
const MOUNTED: &[&str] = &[
    "/api/core/plugins",
    "/api/core/plugins/{id}",
    "/api/core/plugins/{id}/{action}",
    "/api/core/plugins/{id}/isolation",
    "/api/core/plugins/{id}/status",
    "/api/core/plugins/{id}/config",
    "/api/core/plugins/{id}/logs",
    "/api/core/plugins/{id}/telemetry",
    "/api/core/events",
    "/api/core/plugins/upload/{filename}",
    "/api/core/plugins/{id}/models/download",
    "/api/core/models",
    "/api/core/models/downloads/{job}",
    "/ws/core/plugins/{id}/models",
    "/api/core/telemetry",
    "/ws/core/plugins/{id}/logs",
    "/ws/core/plugins/{id}/telemetry",
    "/ws/core/telemetry",
    "/metrics",
    "/api/plugins/{id}/{capability}",
    "/api/plugins/{id}/admin/{route}",
    "/api/openapi.json",
    "/healthz",
    "/readyz",
];

#[test]
fn the_openapi_document_describes_every_route_and_nothing_else() {
    let host = Host::start();
    host.install(&fixture("echo"), &lib_name("echo"));
    host.wait_state("echo", "running");

    let (status, body) = host.get_as("/api/openapi.json", "");
    assert_eq!(status, 200, "the document is public: {body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    for route in MOUNTED {
        assert!(paths.contains_key(*route), "{route} is mounted but not documented");
    }
    for (template, operations) in paths {
        assert!(
            MOUNTED.contains(&template.as_str()),
            "{template} is documented but not in the list"
        );
        // Each documented route is really served (not the 404 of the fallback).
        let path = template
            .replace("{id}", "echo")
            .replace("{action}", "restart")
            .replace("{capability}", "echo")
            .replace("{route}", "info")
            .replace("{job}", "no-such-job")
            .replace("{filename}", "not-a-library.txt");
        for method in operations.as_object().unwrap().keys() {
            let (status, body) =
                host.request_as(&method.to_uppercase(), &path, crate::support::ADMIN_KEY);
            assert!(
                !(status == 404 && body.contains("no route for")) && status != 405,
                "{method} {path} is documented but not served: {body}"
            );
        }
    }
    // Schemas of the typed answers are there.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "PluginView",
        "PluginDetail",
        "Error",
        "LogLine",
        "Event",
        "HistoryEntry",
        "JobView",
        "DownloadRequest",
        "ModelsOverview",
        "InstalledModel",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
}
