//! The credential stage: authenticate as the request says (GitHub OIDC inside Actions, the
//! default chain elsewhere) and mask every credential before anything else can print it.

use crate::aws::auth::{self, AuthRequest, Session, Source};
use crate::error::{Error, Result};
use crate::github::runner::Runner;

pub async fn session(req: &AuthRequest, source: Source, runner: &Runner) -> Result<Session> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| Error::Input(format!("cannot build an HTTP client: {e}")))?;
    let session = auth::authenticate(req, source, &http).await?;
    runner.mask(session.credentials.access_key_id());
    runner.mask(session.credentials.secret_access_key());
    if let Some(token) = session.credentials.session_token() {
        runner.mask(token);
    }
    Ok(session)
}
