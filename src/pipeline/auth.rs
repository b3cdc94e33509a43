//! The credential stage: authenticate as the request says (GitHub OIDC inside Actions, the
//! default chain elsewhere); `aws::auth::authenticate` masks every credential the moment it has it.

use crate::aws::auth::{self, AuthRequest, Session, Source};
use crate::error::{Error, Result};

pub async fn session(req: &AuthRequest, source: Source) -> Result<Session> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| Error::Input(format!("cannot build an HTTP client: {e}")))?;
    // authenticate masks every credential the moment it has it.
    Ok(auth::authenticate(req, source, &http).await?)
}
