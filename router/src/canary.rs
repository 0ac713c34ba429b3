//! The router's part in spot checks: it asks the control plane for the checks due (signed with
//! its key; only routers the control plane trusts may carry them), sends each to the canary on
//! the one device the check names, reached as any replica is (over HTX, dialled or on the
//! device's attached connection), and reports the status and body that came back. The router
//! judges nothing: the control plane computes the right answer and keeps the verdict.

use std::sync::Arc;
use std::time::Duration;

use fog_proto::auth::Identity;
use fog_proto::canary::{Answer, Answers, Challenges, Reply};

use crate::Gateway;
use crate::error::ControlError;

/// How often the router asks for the checks due.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long the router waits after the control plane refused it (an untrusted router).
const REFUSED_PAUSE: Duration = Duration::from_secs(30);
/// Deadline of one check: the canary answers in microseconds; a device that takes this long
/// is not answering.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Carry spot checks until `shutdown` resolves.
pub async fn run(gateway: Arc<Gateway>, identity: Identity, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut last_error: Option<ControlError> = None;
    let mut pause = POLL_EVERY;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = POLL_EVERY;
        let carried = tokio::select! {
            () = &mut shutdown => return,
            carried = carry(&gateway, &identity) => carried,
        };
        match carried {
            Ok(()) => last_error = None,
            Err(err) => {
                if let ControlError::Status { status, .. } = &err
                    && status.is_client_error()
                {
                    pause = REFUSED_PAUSE;
                }
                if last_error.as_ref() != Some(&err) {
                    tracing::warn!("cannot carry spot checks: {err}");
                }
                last_error = Some(err);
            }
        }
    }
}

/// One round: take the checks due, carry them all at once, report what came back.
async fn carry(gateway: &Gateway, identity: &Identity) -> Result<(), ControlError> {
    const PATH: &str = "/v1/canary/challenges";
    let body = gateway.post_signed(PATH, b"{}".to_vec(), identity).await?;
    let Challenges { challenges } =
        serde_json::from_slice(&body).map_err(|e| ControlError::Malformed {
            path: PATH.to_string(),
            reason: e.to_string(),
        })?;
    if challenges.is_empty() {
        return Ok(());
    }
    let answers = futures::future::join_all(challenges.iter().map(|challenge| async move {
        let probed = tokio::time::timeout(CHECK_TIMEOUT, gateway.probe(challenge))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
        match probed {
            Ok((status, body)) => Answer {
                id: challenge.id.clone(),
                reply: Some(Reply {
                    status,
                    body_hex: hex::encode(&body),
                }),
                error: None,
            },
            Err(reason) => Answer {
                id: challenge.id.clone(),
                reply: None,
                error: Some(reason),
            },
        }
    }))
    .await;
    let body = serde_json::to_vec(&Answers { answers }).expect("API types always serialise");
    gateway
        .post_signed("/v1/canary/answers", body, identity)
        .await?;
    Ok(())
}
