//! The two EC2 calls wasmscaler needs — `DescribeInstances` (addresses, launch times, tags)
//! and `CreateTags` (lifecycle state, enrolment) — as signed Query API requests, instead of
//! linking aws-sdk-ec2 (minutes of build time for two calls).

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_xml::decode::{Document, ScopedDecoder, XmlDecodeError, try_data};

use super::AwsError;

/// The EC2 Query API version these calls use.
const API_VERSION: &str = "2016-11-15";

/// One instance as DescribeInstances reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ec2Instance {
    /// Instance id.
    pub id: String,
    /// Private IPv4 address.
    pub private_address: Option<String>,
    /// Launch time, ms since the Unix epoch.
    pub launch_time_ms: Option<i64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A minimal EC2 client.
#[derive(Clone)]
pub struct Ec2 {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    config: SdkConfig,
}

impl Ec2 {
    /// A client for the region and endpoint of `config`.
    pub fn new(config: &SdkConfig) -> Result<Self, AwsError> {
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or(AwsError::NoRegion)?;
        let endpoint = config
            .endpoint_url()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| AwsError::transport("EC2 client", e))?;
        Ok(Ec2 {
            http,
            endpoint,
            region,
            config: config.clone(),
        })
    }

    /// Sends `call` with `params` and returns the answer's body.
    async fn call(
        &self,
        call: &'static str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let failed = |e: &dyn std::fmt::Display| AwsError::transport(call, e);
        // Built in its own scope: the serializer is not Send and must not live across an await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", call);
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.append_pair("Version", API_VERSION);
            form.finish()
        };
        let credentials = self
            .config
            .credentials_provider()
            .ok_or_else(|| AwsError::Credentials("no credentials provider".into()))?
            .provide_credentials()
            .await
            .map_err(|e| AwsError::Credentials(e.to_string()))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let signable = SignableRequest::new(
            "POST",
            &self.endpoint,
            [("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&self.endpoint)
            .header("content-type", content_type)
            .body(body)
            .map_err(|e| failed(&e))?;
        instructions.apply_to_request_http1x(&mut request);
        let request = reqwest::Request::try_from(request).map_err(|e| failed(&e))?;
        let response = self.http.execute(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| failed(&e))?;
        if !status.is_success() {
            return Err(AwsError::Service {
                call,
                code: tag_text(&text, "Code").unwrap_or_else(|| status.to_string()),
                message: tag_text(&text, "Message")
                    .unwrap_or_else(|| crate::redact::bounded(&text, 200)),
            });
        }
        Ok(text)
    }

    /// Sets tags on an instance.
    pub(crate) async fn create_tags(
        &self,
        instance: &str,
        tags: &[(&str, &str)],
    ) -> Result<(), AwsError> {
        let mut params = vec![("ResourceId.1".to_owned(), instance.to_owned())];
        for (i, (k, v)) in tags.iter().enumerate() {
            params.push((format!("Tag.{}.Key", i + 1), (*k).to_owned()));
            params.push((format!("Tag.{}.Value", i + 1), (*v).to_owned()));
        }
        self.call("CreateTags", &params).await.map(|_| ())
    }

    /// Describes the given instances.
    pub async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Ec2Instance>, AwsError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone()))
            .collect();
        let xml = self.call("DescribeInstances", &params).await?;
        parse_instances(&xml).map_err(|e| AwsError::Answer {
            call: "DescribeInstances",
            message: e.to_string(),
        })
    }
}

/// Longest code or message of an EC2 error answer kept, in bytes: it ends up in logs and
/// status.
const MAX_ERROR_TEXT: usize = 1024;

/// The text of the first `<tag>` of an EC2 error answer (`Code`, `Message`), bounded.
fn tag_text(xml: &str, tag: &str) -> Option<String> {
    xml.split_once(&format!("<{tag}>"))
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map(|(text, _)| crate::redact::bounded(text, MAX_ERROR_TEXT))
}

/// Walks `DescribeInstancesResponse/reservationSet/item/instancesSet/item`.
fn parse_instances(xml: &str) -> Result<Vec<Ec2Instance>, XmlDecodeError> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element()?;
    let mut found = Vec::new();
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().matches("reservationSet") {
            while let Some(mut reservation) = tag.next_tag() {
                while let Some(mut field) = reservation.next_tag() {
                    if field.start_el().matches("instancesSet") {
                        while let Some(mut item) = field.next_tag() {
                            found.push(parse_instance(&mut item)?);
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

fn text(tag: &mut ScopedDecoder) -> Result<String, XmlDecodeError> {
    try_data(tag).map(|t| t.to_string())
}

fn parse_instance(item: &mut ScopedDecoder) -> Result<Ec2Instance, XmlDecodeError> {
    let mut instance = Ec2Instance::default();
    while let Some(mut field) = item.next_tag() {
        let name = field.start_el().local().to_owned();
        match name.as_str() {
            "instanceId" => instance.id = text(&mut field)?,
            "privateIpAddress" => instance.private_address = Some(text(&mut field)?),
            "launchTime" => {
                instance.launch_time_ms = text(&mut field)?
                    .parse::<jiff::Timestamp>()
                    .ok()
                    .map(|t| t.as_millisecond());
            }
            "tagSet" => {
                while let Some(mut tag) = field.next_tag() {
                    let (mut key, mut value) = (String::new(), String::new());
                    while let Some(mut part) = tag.next_tag() {
                        if part.start_el().matches("key") {
                            key = text(&mut part)?;
                        } else if part.start_el().matches("value") {
                            value = text(&mut part)?;
                        }
                    }
                    instance.tags.insert(key, value);
                }
            }
            _ => {}
        }
    }
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::{parse_instances, tag_text};

    #[test]
    fn error_answers_give_their_code_and_message() {
        let xml = "<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>\
            <Message>The instance ID 'i-9' does not exist</Message></Error></Errors></Response>";
        assert_eq!(
            tag_text(xml, "Code").as_deref(),
            Some("InvalidInstanceID.NotFound")
        );
        assert_eq!(
            tag_text(xml, "Message").as_deref(),
            Some("The instance ID 'i-9' does not exist")
        );
        assert_eq!(tag_text("<html>502</html>", "Code"), None);
        // A flood in the answer is cut, not carried into logs and status.
        let flood = format!("<Message>{}</Message>", "x".repeat(1 << 20));
        let kept = tag_text(&flood, "Message").unwrap_or_default();
        assert!(
            kept.len() <= super::MAX_ERROR_TEXT,
            "{} bytes kept",
            kept.len()
        );
    }

    #[test]
    fn describe_instances_answers_are_parsed() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <reservationSet><item><reservationId>r-1</reservationId><instancesSet>
    <item><instanceId>i-1</instanceId><privateIpAddress>10.0.0.5</privateIpAddress>
      <launchTime>2026-11-22T04:00:00.000Z</launchTime>
      <tagSet><item><key>role</key><value>node</value></item></tagSet></item>
    <item><instanceId>i-2</instanceId></item>
  </instancesSet></item></reservationSet>
</DescribeInstancesResponse>"#;
        let found = parse_instances(xml).expect("parse");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id, "i-1");
        assert_eq!(found[0].private_address.as_deref(), Some("10.0.0.5"));
        assert_eq!(found[0].launch_time_ms, Some(1_795_320_000_000));
        assert_eq!(found[0].tags.get("role").map(String::as_str), Some("node"));
        assert_eq!(found[1].private_address, None);
    }
}
