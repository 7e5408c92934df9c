//! Model downloads and the model registry over HTTP.

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};

use super::{blocking, ApiError, ApiResult, AppState};
use crate::models::{DownloadRequest, JobView, ModelError, ModelView};
use crate::openapi::ErrorSchema;

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let message = e.to_string();
        match e {
            ModelError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            ModelError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ModelError::NoJob(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ModelError::Busy => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", message),
            ModelError::Internal(_) => ApiError::internal(message),
        }
    }
}

/// The installed models and the download jobs.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ModelsOverview {
    models: Vec<ModelView>,
    downloads: Vec<JobView>,
    /// The models folder on the host.
    models_dir: String,
}

#[utoipa::path(post, path = "/api/core/plugins/{id}/models/download", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "the plugin the model is for", example = "candle")),
    request_body(content = DownloadRequest, description = "what to fetch from the hub"),
    responses((status = 202, description = "the job started; follow it on /ws/core/plugins/{id}/models or GET /api/core/models", body = JobView),
    (status = 400, description = "a bad repo id, revision or file name (e.g. one that would leave the models folder)", body = ErrorSchema),
    (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema),
    (status = 404, description = "no such plugin", body = ErrorSchema),
    (status = 409, description = "a download of this repo is running, or its folder holds files bkg did not install", body = ErrorSchema),
    (status = 429, description = "too many downloads running", body = ErrorSchema)))]
/// `POST /api/core/plugins/{id}/models/download`: start fetching a model from the hub.
pub(crate) async fn start_download(
    state: Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Json<DownloadRequest>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    if state.registry.view(&id).is_none() {
        return Err(ApiError::not_found(format!("no plugin '{id}'")));
    }
    let actor = super::actor(&req);
    let models = state.models.clone();
    let job = web::block(move || models.start(&id, &actor, body.into_inner()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(HttpResponse::Accepted().json(job))
}

#[utoipa::path(get, path = "/api/core/models", tag = "models", security(("bearer" = [])),
    responses((status = 200, description = "installed models and download jobs", body = ModelsOverview),
    (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema)))]
/// `GET /api/core/models`: the model registry and the download jobs with their progress.
pub(crate) async fn list_models(state: Data<AppState>) -> ApiResult<HttpResponse> {
    let models = state.models.clone();
    let installed = blocking(move || models.installed()).await?;
    Ok(HttpResponse::Ok().json(ModelsOverview {
        models: installed,
        downloads: state.models.job_views(None),
        models_dir: state.models.dir().display().to_string(),
    }))
}

#[utoipa::path(get, path = "/api/core/models/downloads/{job}", tag = "models", security(("bearer" = [])),
    params(("job" = String, Path, description = "download job id")),
    responses((status = 200, description = "the job", body = JobView),
    (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema),
    (status = 404, description = "no such job", body = ErrorSchema)))]
/// `GET /api/core/models/downloads/{job}`: one job.
pub(crate) async fn get_download(
    state: Data<AppState>,
    job: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let view = state.models.job(&job).ok_or_else(|| ModelError::NoJob(job.into_inner()))?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, path = "/api/core/models/downloads/{job}", tag = "models", security(("bearer" = [])),
    params(("job" = String, Path, description = "download job id")),
    responses((status = 202, description = "cancelling: the job ends `cancelled`, installs nothing and removes its partial files", body = JobView),
    (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema),
    (status = 404, description = "no such job", body = ErrorSchema),
    (status = 409, description = "the job already ended", body = ErrorSchema)))]
/// `DELETE /api/core/models/downloads/{job}`: cancel a download.
pub(crate) async fn cancel_download(
    state: Data<AppState>,
    job: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Accepted().json(state.models.cancel(&job)?))
}

#[utoipa::path(get, path = "/ws/core/plugins/{id}/models", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "plugin id", example = "candle"),
      ("access_token" = Option<String>, Query, description = "API key, for clients that cannot send headers")),
    responses((status = 101, description = "WebSocket: the plugin's download jobs (JobView JSON), then each change; progress at most every 100 ms per job"),
    (status = 400, description = "not a WebSocket request", body = ErrorSchema), (status = 401, description = "no or invalid API key", body = ErrorSchema), (status = 403, description = "the key lacks the scope", body = ErrorSchema), (status = 404, description = "no such plugin", body = ErrorSchema)))]
/// `GET /ws/core/plugins/{id}/models` (WebSocket): download progress of one plugin's jobs.
pub(crate) async fn ws_models(
    state: Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let id = id.into_inner();
    if state.registry.view(&id).is_none() {
        return Err(ApiError::not_found(format!("no plugin '{id}'")).into());
    }
    let (response, session, incoming) = actix_ws::handle(&req, body)?;
    let live = state.models.subscribe();
    let backlog = state
        .models
        .job_views(Some(&id))
        .iter()
        .map(|j| serde_json::to_string(j).unwrap_or_default())
        .collect();
    crate::ws::pump(
        session,
        incoming,
        backlog,
        live,
        move |job| (job.plugin == id).then(|| serde_json::to_string(job).unwrap_or_default()),
        // Progress is a snapshot: the next message carries everything missed.
        |_| None,
    );
    Ok(response)
}
