//! Per-controller credentials (upstream `--use-service-account-credentials` and
//! clientbuilder's `SAControllerClientBuilder`): the controller-manager, as itself
//! (`system:kube-controller-manager`), makes sure the service account
//! `kube-system/<controller>` exists and asks the TokenRequest API for a token of it; the
//! controller then talks to the API server as `system:serviceaccount:kube-system:<controller>`,
//! bound by the bootstrap policy to `system:controller:<controller>`. Tokens are renewed in
//! the background before they expire.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Where the controllers' accounts live.
pub const NAMESPACE: &str = "kube-system";

/// How long a requested token lives (upstream's default for controller tokens).
const TOKEN_SECONDS: i64 = 3600;

/// Errors building a controller's client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service account {NAMESPACE}/{account}: {source}")]
    Account {
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error("token for {NAMESPACE}/{account}: {source}")]
    Token {
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error("the TokenRequest for {NAMESPACE}/{0} came back without a token")]
    NoToken(String),
    #[error("token for {NAMESPACE}/{0} is not a valid header value")]
    Header(String),
    #[error("client for {NAMESPACE}/{account}: {source}")]
    Client {
        account: String,
        #[source]
        source: kube::Error,
    },
}

/// Makes clients that act as a controller's own service account.
#[derive(Clone)]
pub struct ClientBuilder {
    /// The controller-manager's own client (creates accounts, requests tokens).
    manager: kube::Client,
    /// The API server's address and CA; its credentials are replaced by the token.
    config: kube::Config,
}

impl ClientBuilder {
    pub fn new(manager: kube::Client, mut config: kube::Config) -> Self {
        config.auth_info = Default::default();
        ClientBuilder { manager, config }
    }

    /// A client acting as `system:serviceaccount:kube-system:<account>`; its token is
    /// renewed until `shutdown`.
    pub async fn client_for(
        &self,
        account: &str,
        shutdown: &CancellationToken,
    ) -> Result<kube::Client, Error> {
        let (header, expires_in) = self.token(account).await?;
        let shared = Arc::new(RwLock::new(header));
        let with_token = shared.clone();
        let layer =
            tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
                if let Ok(h) = with_token.read() {
                    req.headers_mut().insert(AUTHORIZATION, h.clone());
                }
                req
            });
        let client = kube::client::ClientBuilder::try_from(self.config.clone())
            .map_err(|source| Error::Client {
                account: account.to_string(),
                source,
            })?
            .with_layer(&layer)
            .build();
        tokio::spawn(
            self.clone()
                .renew(account.to_string(), shared, expires_in, shutdown.clone()),
        );
        Ok(client)
    }

    /// Creates the account when missing and requests a token: (header, lifetime).
    async fn token(&self, account: &str) -> Result<(HeaderValue, Duration), Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.manager.clone(), NAMESPACE);
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(account.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                return Err(Error::Account {
                    account: account.to_string(),
                    source,
                })
            }
        }
        let req = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let tr = api
            .create_token_request(account, &PostParams::default(), &req)
            .await
            .map_err(|source| Error::Token {
                account: account.to_string(),
                source,
            })?;
        let status = tr
            .status
            .ok_or_else(|| Error::NoToken(account.to_string()))?;
        let header = HeaderValue::from_str(&format!("Bearer {}", status.token))
            .map_err(|_| Error::Header(account.to_string()))?;
        let left = status.expiration_timestamp.0.as_second()
            - k8s_openapi::jiff::Timestamp::now().as_second();
        Ok((header, Duration::from_secs(left.max(60).unsigned_abs())))
    }

    /// Replaces the token when 80% of its life has passed (or 10 s after a failure).
    async fn renew(
        self,
        account: String,
        shared: Arc<RwLock<HeaderValue>>,
        mut expires_in: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let wait = (expires_in * 4 / 5).max(Duration::from_secs(10));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.token(&account).await {
                Ok((header, lifetime)) => {
                    if let Ok(mut h) = shared.write() {
                        *h = header;
                    }
                    expires_in = lifetime;
                }
                Err(e) => {
                    tracing::warn!(account = %account, error = %e, "cannot renew controller token");
                    expires_in = Duration::from_secs(12);
                }
            }
        }
    }
}
