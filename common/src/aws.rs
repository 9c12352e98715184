//! The one place SDK configurations are built: region, credentials, endpoint override,
//! timeouts and retries. The same binary talks to AWS or to the emulator depending only on
//! these settings.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Deserialize;

/// How the SDK retries throttled and transient failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// Exponential backoff with jitter.
    #[default]
    Standard,
    /// Standard, plus client-side rate limiting once AWS starts throttling.
    Adaptive,
}

/// `[aws]` in the agent's and the controller's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// AWS region. Default: the SDK's chain (`AWS_REGION`, profile, instance metadata).
    #[serde(default)]
    pub region: Option<String>,
    /// One endpoint for every AWS service (an emulator, a proxy). Default: AWS's own endpoints.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// S3 only, when it differs from `endpoint_url` (an S3 interface VPC endpoint).
    #[serde(default)]
    pub s3_endpoint_url: Option<String>,
    /// Attempts per call, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub retry_mode: RetryMode,
    /// Time allowed to open a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for one attempt of a call. Default: none (long polls and large uploads
    /// set their own bounds).
    #[serde(default)]
    pub attempt_timeout_secs: Option<u64>,
    /// Path-style S3 addressing (`endpoint/bucket/key`). Default: on when `endpoint_url` is set.
    #[serde(default)]
    pub s3_force_path_style: Option<bool>,
}

fn default_max_attempts() -> u32 {
    5
}

fn default_connect_timeout_ms() -> u64 {
    3_000
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            endpoint_url: None,
            s3_endpoint_url: None,
            max_attempts: default_max_attempts(),
            retry_mode: RetryMode::default(),
            connect_timeout_ms: default_connect_timeout_ms(),
            attempt_timeout_secs: None,
            s3_force_path_style: None,
        }
    }
}

impl AwsSettings {
    /// The test profile: an emulator on loopback, few retries, short connect timeout.
    pub fn for_emulator(endpoint_url: &str, region: &str) -> Self {
        AwsSettings {
            region: Some(region.to_string()),
            endpoint_url: Some(endpoint_url.to_string()),
            s3_endpoint_url: None,
            max_attempts: 2,
            connect_timeout_ms: 1_000,
            ..AwsSettings::default()
        }
    }

    fn path_style(&self) -> bool {
        self.s3_force_path_style
            .unwrap_or(self.endpoint_url.is_some() || self.s3_endpoint_url.is_some())
    }
}

/// Builds the shared SDK configuration. `credentials` overrides the SDK's credential chain
/// (tests and the emulator use static ones); `None` uses the chain (environment, profile,
/// container or instance role).
pub async fn sdk_config(settings: &AwsSettings, credentials: Option<Credentials>) -> SdkConfig {
    load(settings, credentials.map(SharedCredentialsProvider::new)).await
}

/// The SDK configuration of a program on an instance: the SDK's credential chain, with the
/// instance role read from the IMDS at `imds_url` (the one the agent is configured with), so
/// that what the agent sends to the queue is signed by its instance's own role, which is how the
/// controller knows a report comes from the instance it speaks of.
pub async fn instance_sdk_config(settings: &AwsSettings, imds_url: &str) -> SdkConfig {
    let imds = match aws_config::imds::Client::builder().endpoint(imds_url) {
        Ok(builder) => builder.build(),
        Err(error) => {
            tracing::warn!(imds_url, %error, "IMDS address not usable for credentials; the SDK's default applies");
            return load(settings, None).await;
        }
    };
    let mut chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .imds_client(imds);
    if let Some(region) = &settings.region {
        chain = chain.region(Region::new(region.clone()));
    }
    let chain = chain.build().await;
    load(settings, Some(SharedCredentialsProvider::new(chain))).await
}

async fn load(settings: &AwsSettings, credentials: Option<SharedCredentialsProvider>) -> SdkConfig {
    let retry = match settings.retry_mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Adaptive => RetryConfig::adaptive(),
    }
    .with_max_attempts(settings.max_attempts.max(1));
    let mut timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms));
    if let Some(secs) = settings.attempt_timeout_secs {
        timeouts = timeouts.operation_attempt_timeout(Duration::from_secs(secs));
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts.build());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}

pub use crate::retry::is_transient;

/// The error code and message of a service error, for matching specific AWS errors.
pub fn error_code_and_message<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> (Option<&str>, Option<&str>) {
    match error.as_service_error() {
        Some(service) => (service.code(), service.message()),
        None => (None, None),
    }
}

/// An S3 client honouring the path-style setting, which the shared configuration cannot carry.
pub fn s3_client(sdk: &SdkConfig, settings: &AwsSettings) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(settings.path_style());
    if let Some(endpoint) = &settings.s3_endpoint_url {
        config = config.endpoint_url(endpoint.clone());
    }
    let config = config.build();
    aws_sdk_s3::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn emulator_profile_sets_endpoint_region_and_retries() {
        let settings = AwsSettings::for_emulator("http://127.0.0.1:4566", "eu-west-1");
        let credentials = Credentials::new("test", "test", None, None, "static");
        let sdk = sdk_config(&settings, Some(credentials)).await;
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.retry_config().map(|r| r.max_attempts()), Some(2));
        assert_eq!(
            sdk.timeout_config().and_then(|t| t.connect_timeout()),
            Some(Duration::from_secs(1))
        );
        assert!(settings.path_style());
    }

    #[test]
    fn path_style_defaults_follow_the_endpoint() {
        assert!(!AwsSettings::default().path_style());
        let explicit = AwsSettings {
            endpoint_url: Some("https://s3.vpce.example".into()),
            s3_force_path_style: Some(false),
            ..AwsSettings::default()
        };
        assert!(!explicit.path_style());
    }

    #[test]
    fn settings_are_strict_toml() {
        let parsed: AwsSettings =
            toml::from_str("region = \"eu-west-1\"\nretry_mode = \"adaptive\"\n").unwrap();
        assert_eq!(parsed.retry_mode, RetryMode::Adaptive);
        assert_eq!(parsed.max_attempts, 5);
        assert!(toml::from_str::<AwsSettings>("regoin = \"x\"").is_err());
    }
}
