//! What the AWS credential chain gives each request, and what the tool says when it gives
//! nothing: a request's session token joins the redacted secrets before it is sent, and a chain
//! that found no credentials is one line naming where it looked, not a retried transport error.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;

/// Adds the session token of each request, as signed, to the redacted secrets before it is sent:
/// a token the credential chain read from a file, SSO or the instance's metadata is in no
/// environment variable, and an answer may echo it without its header's name. (The secret key
/// itself never leaves the machine, only signatures made with it.)
#[derive(Debug)]
pub(super) struct RedactSessionTokens;

impl aws_sdk_s3::config::Intercept for RedactSessionTokens {
    fn name(&self) -> &'static str {
        "RedactSessionTokens"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _config: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        if let Some(token) = context.request().headers().get("x-amz-security-token") {
            crate::store::credentials().add(token);
        }
        Ok(())
    }
}

/// What to do when the SDK's credential chain found nothing, with every place it looked.
pub(super) const NO_CREDENTIALS: &str = "no AWS credentials found: the chain looked in AWS_ACCESS_KEY_ID and \
    AWS_SECRET_ACCESS_KEY, the profile AWS_PROFILE names (else `default`) in ~/.aws/credentials and \
    ~/.aws/config (or AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE), SSO, web identity \
    (AWS_WEB_IDENTITY_TOKEN_FILE), the ECS container endpoint and the EC2 instance metadata; set \
    one of them";

/// Whether the request failed because the credential chain found no credentials: the SDK says
/// so in the error's chain of causes, in words of its own.
pub(super) fn missing_credentials<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = cause {
        if error
            .to_string()
            .contains("the credential provider was not enabled")
        {
            return true;
        }
        cause = error.source();
    }
    false
}
