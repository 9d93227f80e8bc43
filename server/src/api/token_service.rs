//! `ork.v1.TokenService`: create, list and revoke API tokens (admin only, as
//! the auth layer's table says).

use chrono::Utc;
use ork_proto::v1::{self, token_service_server::TokenService};
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert;
use super::error::{ErrorKind, from_state, status};
use crate::auth::{Principal, credentials};
use crate::state::tokens::{NewToken, Role};

/// Longest token name.
pub const MAX_NAME_LEN: usize = 63;
/// Longest lifetime a token may be given: ten years.
pub const MAX_EXPIRES_IN_SECONDS: u32 = 10 * 366 * 24 * 3600;

pub struct TokenApi {
    pub(crate) ctx: ApiContext,
}

fn check_name(name: &str) -> Result<(), Status> {
    let fine = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(status(
            ErrorKind::InvalidArgument,
            format!(
                "field `name`: `{}` is not a valid token name; use 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` and `.` (e.g. `ci` or `pool-workers`)",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let created_by = Principal::of_grpc(&request).token().map(|t| t.name.clone());
        let req = request.into_inner();
        check_name(&req.name)?;
        let role = Role::parse(&req.role).ok_or_else(|| {
            status(
                ErrorKind::InvalidArgument,
                format!(
                    "field `role`: unknown role `{}`; use admin, operator, viewer or worker",
                    req.role.chars().take(40).collect::<String>()
                ),
            )
        })?;
        if req.expires_in_seconds > MAX_EXPIRES_IN_SECONDS {
            return Err(status(
                ErrorKind::InvalidArgument,
                format!(
                    "field `expires_in_seconds`: at most {MAX_EXPIRES_IN_SECONDS} (ten years); use 0 for a token that does not expire"
                ),
            ));
        }
        let now = Utc::now();
        let secret = credentials::generate().map_err(|e| {
            status(
                ErrorKind::Unavailable,
                format!("cannot make a random token: {e}; retry"),
            )
        })?;
        let new = NewToken {
            id: uuid::Uuid::now_v7().to_string(),
            name: req.name,
            role,
            hash: credentials::hash(&secret),
            created_at: now,
            expires_at: (req.expires_in_seconds > 0)
                .then(|| now + chrono::Duration::seconds(i64::from(req.expires_in_seconds))),
            created_by,
        };
        let record = self
            .ctx
            .auth
            .tokens()
            .create_token(&new)
            .await
            .map_err(from_state)?;
        tracing::info!(name = %record.name, role = %record.role, "token created");
        Ok(Response::new(v1::CreateTokenResponse {
            token: Some(convert::token(&record)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let records = self
            .ctx
            .auth
            .tokens()
            .list_tokens()
            .await
            .map_err(from_state)?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: records.iter().map(convert::token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(status(
                ErrorKind::InvalidArgument,
                "field `name`: name the token to revoke (its name or id; `ork token list` shows them)",
            ));
        }
        let record = self
            .ctx
            .auth
            .tokens()
            .revoke_token(&name, Utc::now())
            .await
            .map_err(from_state)?
            .ok_or_else(|| {
                status(
                    ErrorKind::NotFound,
                    format!(
                        "no live token is named `{}`; `ork token list` shows them",
                        name.chars().take(80).collect::<String>()
                    ),
                )
            })?;
        self.ctx.auth.forget(&record.id);
        tracing::info!(name = %record.name, "token revoked");
        Ok(Response::new(v1::RevokeTokenResponse {
            token: Some(convert::token(&record)),
        }))
    }
}
