//! Turns AWS SDK errors into one line a CI engineer can act on: the remote code and message when the
//! service answered, the whole cause chain when it did not (no credentials, no connection, timeout).

use crate::report::chain;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use std::error::Error;

/// The remote error code (`AccessDeniedException`, `ExpiredToken`, …) when the service answered. An answer
/// the SDK could not parse is classified by its HTTP status (403 is access denied, 429 throttling).
pub fn code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    match err {
        SdkError::ServiceError(e) => e
            .err()
            .code()
            .map(String::from)
            .or_else(|| match e.raw().status().as_u16() {
                403 => Some("AccessDenied".into()),
                429 => Some("ThrottlingException".into()),
                _ => None,
            }),
        _ => None,
    }
}

/// `Code: message` from the service, else the HTTP status and message of an unparsed answer, else the
/// error with its causes.
pub fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
{
    match err {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => {
                    let raw = e.raw();
                    let body = raw.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
                    let status = raw.status().as_u16();
                    match between(&body, "<Message>", "</Message>") {
                        Some(message) => format!("HTTP {status}: {message}"),
                        None => format!(
                            "HTTP {status} with {} byte(s) that are not an AWS answer: whatever answered is not \
                             the AWS service (check AWS_ENDPOINT_URL, the proxy settings and the region)",
                            body.len()
                        ),
                    }
                }
            }
        }
        other => format!("{} (endpoint: {})", chain(other), endpoint::<E>()),
    }
}

/// Which endpoint the SDK talked to for the service of `E`, and where that came from: what a CI engineer
/// needs when the endpoint did not answer (connection refused, no answer within PLUGIN_TIMEOUT).
fn endpoint<E>() -> String {
    let name = std::any::type_name::<E>();
    let service = if name.contains("aws_sdk_sts") { "STS" } else { "ECR" };
    let specific = format!("AWS_ENDPOINT_URL_{service}");
    for key in [specific.as_str(), "AWS_ENDPOINT_URL"] {
        if let Some(url) = std::env::var(key).ok().filter(|v| !v.trim().is_empty()) {
            return format!("{} from {key}", crate::domain::grammar::printable(&url));
        }
    }
    format!(
        "the {service} endpoint of the region (https://{}.<region>.amazonaws.com; no AWS_ENDPOINT_URL is set)",
        service.to_ascii_lowercase()
    )
}

/// The host (`host[:port]`) the SDK talks to for `service` (`sts`, `ecr`) in `region`: from
/// `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL`, else the region's default.
pub fn endpoint_host(service: &str, region: &str) -> String {
    let specific = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
    for key in [specific.as_str(), "AWS_ENDPOINT_URL"] {
        if let Some(url) = std::env::var(key).ok().filter(|v| !v.trim().is_empty()) {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            return rest.split('/').next().unwrap_or(rest).to_string();
        }
    }
    format!("{service}.{region}.amazonaws.com")
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// True when the SDK failed before sending anything because no credentials could be found.
pub fn is_missing_credentials<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: Error + 'static,
{
    let text = chain(err);
    matches!(err, SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_))
        && (text.contains("no credentials") || text.contains("credentials provider") || text.contains("identity"))
}

/// The AWS managed policy that grants an ECR action, for "what to fix" messages.
pub fn managed_policy(action: &str) -> &'static str {
    match action {
        "GetAuthorizationToken"
        | "BatchCheckLayerAvailability"
        | "GetDownloadUrlForLayer"
        | "BatchGetImage"
        | "DescribeRepositories"
        | "DescribeImages"
        | "ListImages"
        | "GetLifecyclePolicy"
        | "GetRepositoryPolicy"
        | "ListTagsForResource"
        | "DescribeImageScanFindings" => "AmazonEC2ContainerRegistryReadOnly",
        "InitiateLayerUpload" | "UploadLayerPart" | "CompleteLayerUpload" | "PutImage" | "StartImageScan" => {
            "AmazonEC2ContainerRegistryPowerUser"
        }
        _ => "AmazonEC2ContainerRegistryFullAccess",
    }
}
