//! Errors as the API answers them: a status code and `{"error": message, "status": code}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <http.token>; the dashboard: \
             open /#token=<http.token>)",
        )
    }

    /// A backend (database, Redis) failed: the client cannot fix it.
    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("{what}: {e}"))
    }
}

/// A listing's `limit` query parameter: `default` when absent, else a whole number from 1 to
/// `max`, or a 400 naming the parameter and what was given.
pub fn parse_limit(given: Option<&str>, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(given) = given else {
        return Ok(default);
    };
    match given.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit {given:?} is not a whole number from 1 to {max}"
        ))),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({ "error": self.message, "status": self.status.as_u16() }))
    }
}
