//! The admin UI's files (`--ui-dir`, the built Angular app) at `/`, with `index.html` for
//! client-side routes, and plugin uploads into the plugins folder.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::{ApiError, ApiResult, AppState};
use crate::openapi::ErrorSchema;

/// Where the admin UI's files are: `--ui-dir` when given, else where `scripts/run.sh` and the
/// container image install them beside the binary: `<bin>/ui` or `<bin>/../share/bkg/ui`
/// (`/usr/local/bin/bkg` finds `/usr/local/share/bkg/ui`). A folder counts only with an
/// `index.html` in it. None: the host serves no UI and says at `/` how to get it.
pub fn locate(explicit: Option<&Path>, exe: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    let bin = exe?.parent()?;
    [bin.join("ui"), bin.join("../share/bkg/ui")]
        .into_iter()
        .find(|dir| dir.join("index.html").is_file())
}

/// The answer to a GET for a UI page (not under `/api`, a plugin's prefix, ...) when the host
/// has no admin UI: a 404 that says how to get one, as a page for a browser (any such path)
/// and as JSON for `/` itself; other paths get the usual JSON 404.
pub(crate) fn not_installed(req: &HttpRequest) -> HttpResponse {
    let path = req.match_info().as_str();
    let how = "the admin UI is not installed: build it and start the host with \
               `--ui-dir admin-ui/dist/admin-ui/browser` (or BKG_UI_DIR), put the built files \
               in a folder `ui` beside the bkg binary, or start everything with scripts/run.sh";
    let browser = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !browser {
        // An API client asking for some other path gets the usual 404; `/` itself says why.
        let error = if path == "/" {
            ApiError::new(StatusCode::NOT_FOUND, "ui_not_installed", how)
        } else {
            ApiError::not_found(format!("no route for GET {path}"))
        };
        return actix_web::ResponseError::error_response(&error);
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bkg: no admin UI</title></head>\n\
         <body><h1>bkg is running</h1><p>{how}.</p>\n\
         <p>The REST API is under <a href=\"/api/openapi.json\">/api</a>; health at <a href=\"/healthz\">/healthz</a>.</p></body></html>\n"
    );
    HttpResponse::NotFound().content_type("text/html; charset=utf-8").body(page)
}

/// The file under `dir` a UI request path names, if it names one: every part plain (letters,
/// digits, `-`, `_`, `.`, `@`, `+`, not starting with `.`), so nothing outside `dir` is reachable.
fn ui_file(dir: &Path, path: &str) -> Option<PathBuf> {
    let mut file = dir.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let plain = !part.starts_with('.')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c));
        if !plain {
            return None;
        }
        file.push(part);
    }
    file.is_file().then_some(file)
}

/// Serve a GET for the UI: the file, or `index.html` so the app's router handles the path.
pub(crate) async fn serve(dir: &Path, req: &HttpRequest) -> ApiResult<HttpResponse> {
    let index = dir.join("index.html");
    let (file, is_index) = match ui_file(dir, req.match_info().as_str()) {
        Some(f) if f != index => (f, false),
        _ => (index, true),
    };
    let named = actix_files::NamedFile::open_async(&file).await.map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ui_missing",
            format!("the admin UI is not built ({}: {e}); run scripts/run.sh", file.display()),
        )
    })?;
    let mut response = named.into_response(req);
    if is_index {
        // The app shell must not be cached: a rebuilt UI names new asset files.
        response.headers_mut().insert(
            actix_web::http::header::CACHE_CONTROL,
            actix_web::http::header::HeaderValue::from_static("no-cache"),
        );
    }
    Ok(response)
}

/// A plugin file name an upload may use: letters, digits, `.`, `_`, `+`, `-`, not hidden, with
/// this platform's library extension.
fn check_upload_name(name: &str) -> Result<(), String> {
    let ext = std::env::consts::DLL_EXTENSION;
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if name.len() > 200 || !plain || name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "'{name}' is not a plain file name (letters, digits, '.', '_', '+', '-'; not \
             starting with '.' or '-')"
        ));
    }
    if !name.ends_with(&format!(".{ext}")) || name.len() == ext.len() + 1 {
        return Err(format!("'{name}' is not a plugin library: the name must end in .{ext}"));
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/core/plugins/upload/{filename}", tag = "plugins", security(("bearer" = [])),
    params(("filename" = String, Path, description = "the file name in the plugins folder", example = "libhello.so")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the plugin library"),
    responses((status = 201, description = "written into the plugins folder (atomically); the host loads or swaps it as for any copied file", body = Object),
    (status = 400, description = "a bad file name, or the body is not a complete shared library of this platform", body = ErrorSchema),
    (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema),
    (status = 413, description = "larger than --max-upload-bytes (1 GiB by default)", body = ErrorSchema)))]
/// `PUT /api/core/plugins/upload/{filename}`: write a library into the plugins folder the way
/// users are told to copy one: to a hidden temp name first, checked, then renamed into place.
pub(crate) async fn upload(
    state: Data<AppState>,
    filename: web::Path<String>,
    req: HttpRequest,
    mut body: web::Payload,
) -> ApiResult<HttpResponse> {
    let name = filename.into_inner();
    check_upload_name(&name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let limit = state.limits.upload;
    let too_large =
        || super::body::too_large(limit, "a plugin library upload", "--max-upload-bytes");
    if super::body::declared_length(&req).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // The file is written on a blocking thread, never on the HTTP worker: the worker only
    // hands chunks over a small bounded channel (so a slow disk slows the client down, and
    // nothing piles up in memory).
    // `None` marks the end of a complete body; a channel that closes without it means the
    // body was refused or broke off, and the writer discards what it has.
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<web::Bytes>>(8);
    let writer = web::block({
        let plugins_dir = state.plugins_dir.clone();
        let name = name.clone();
        move || write_upload(&plugins_dir, &name, rx)
    });
    let fed: ApiResult<()> = async {
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("upload broke off: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large());
            }
            if tx.send(Some(chunk)).await.is_err() {
                return Ok(()); // the writer failed; its error is the answer
            }
        }
        let _ = tx.send(None).await;
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(|e| ApiError::internal(e.to_string()))?;
    fed?;
    let (size, sha256) = written?;
    let target = state.plugins_dir.join(&name);
    tracing::info!(file = %target.display(), size, "plugin uploaded");
    // Who put the file there: its load is then the watcher's (`loaded`/`swapped`).
    let (store, actor) = (state.store.clone(), super::actor(&req));
    let details = serde_json::json!({
        "file": target.display().to_string(), "bytes": size, "sha256": sha256,
    });
    if let Err(e) =
        super::blocking(move || store.add_event(None, "uploaded", &actor, details)).await
    {
        tracing::warn!(file = %target.display(), "cannot write the upload event: {}", e.message);
    }
    Ok(HttpResponse::Created().json(serde_json::json!({
        "file": name, "bytes": size, "sha256": sha256,
    })))
}

/// Write an upload's chunks to a hidden temp file in the plugins folder, check it is a
/// complete library of this platform, and rename it into place. Runs on a blocking thread.
/// Returns the size and SHA-256; on any failure the temp file is removed.
fn write_upload(
    plugins_dir: &Path,
    name: &str,
    mut chunks: tokio::sync::mpsc::Receiver<Option<web::Bytes>>,
) -> ApiResult<(u64, String)> {
    let mut suffix = [0u8; 8];
    let _ = getrandom::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    // Hidden: the watcher ignores it until the rename.
    let tmp = plugins_dir.join(format!(".upload-{suffix}.tmp"));
    let target = plugins_dir.join(name);
    let io_err = |what: &str, e: std::io::Error| ApiError::internal(format!("{what}: {e}"));
    let result = (|| {
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| io_err("cannot create the upload", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            match chunks.blocking_recv() {
                Some(Some(chunk)) => {
                    size += chunk.len() as u64;
                    hasher.update(&chunk);
                    file.write_all(&chunk).map_err(|e| io_err("cannot write the upload", e))?;
                }
                Some(None) => break,
                None => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "the upload did not arrive whole; nothing was installed",
                    ))
                }
            }
        }
        file.sync_all().map_err(|e| io_err("cannot write the upload", e))?;
        drop(file);
        crate::loader::check_library_file(&tmp).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "not_a_library", format!("{name}: {e}"))
        })?;
        Ok((size, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()))
    })();
    match result {
        Ok(done) => match std::fs::rename(&tmp, &target) {
            Ok(()) => Ok(done),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io_err("cannot move the upload into the plugins folder", e))
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_is_found_beside_the_binary_only_with_an_index_and_the_flag_wins() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("bin/bkg");
        std::fs::create_dir_all(d.path().join("bin/ui")).unwrap();
        std::fs::create_dir_all(d.path().join("share/bkg/ui")).unwrap();
        // Folders without an index.html are no UI.
        assert_eq!(locate(None, Some(&exe)), None);
        assert_eq!(locate(None, None), None);
        std::fs::write(d.path().join("share/bkg/ui/index.html"), "<html>").unwrap();
        assert_eq!(locate(None, Some(&exe)), Some(d.path().join("bin/../share/bkg/ui")));
        std::fs::write(d.path().join("bin/ui/index.html"), "<html>").unwrap();
        assert_eq!(locate(None, Some(&exe)), Some(d.path().join("bin/ui")));
        let flag = d.path().join("elsewhere");
        assert_eq!(locate(Some(&flag), Some(&exe)), Some(flag));
    }

    #[test]
    fn ui_paths_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("assets")).unwrap();
        std::fs::write(d.path().join("assets/app-1.js"), "x").unwrap();
        std::fs::write(d.path().join(".secret"), "x").unwrap();
        assert!(ui_file(d.path(), "/assets/app-1.js").is_some());
        for bad in ["/../etc/passwd", "/.secret", "/assets/../.secret", "/a%2f..", "/assets"] {
            assert!(ui_file(d.path(), bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn upload_names() {
        let ext = std::env::consts::DLL_EXTENSION;
        assert!(check_upload_name(&format!("libhello.{ext}")).is_ok());
        assert!(check_upload_name(&format!("hello-2.0+x.{ext}")).is_ok());
        for bad in ["../x.so", ".hidden.so", "a/b.so", "-x.so", "x.txt", "x", "a b.so", ".so"] {
            let bad = bad.replace(".so", &format!(".{ext}"));
            assert!(check_upload_name(&bad).is_err(), "{bad}");
        }
    }
}
