//! Keystone v3: credentials as OpenStack users write them (`clouds.yaml` or the `OS_*`
//! environment), a scoped token with its service catalog, renewed before it expires and once
//! on a 401. Secrets never reach a log or an error: [`Credentials`]' `Debug` hides them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::targets::TargetError;

/// How to authenticate, and where the services are.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    /// Keystone's v3 URL (`/v3` appended when missing).
    pub auth_url: String,
    /// `password` or `v3applicationcredential`.
    pub method: Method,
    /// The catalog's region (default: the first endpoint of a service).
    pub region: Option<String>,
    /// The catalog's interface: `public` (default), `internal` or `admin`.
    pub interface: String,
}

/// The authentication method and its secrets.
#[derive(Clone, Default, PartialEq)]
pub enum Method {
    /// Nothing configured.
    #[default]
    None,
    /// A user's password, scoped to a project.
    Password {
        /// The user's name (or `user_id`).
        user: Named,
        /// The password.
        password: String,
        /// The project the token is scoped to.
        project: Named,
    },
    /// An application credential (scoped by itself).
    ApplicationCredential {
        /// Its id, or its name with the user.
        id: Option<String>,
        /// Its name (with `user`).
        name: Option<String>,
        /// Its owner, with `name`.
        user: Option<Named>,
        /// The secret.
        secret: String,
    },
}

/// A user or project by id, or by name within a domain (by name or id).
#[derive(Clone, Default, PartialEq, Debug)]
pub struct Named {
    /// Its id.
    pub id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Its domain's name.
    pub domain_name: Option<String>,
    /// Its domain's id.
    pub domain_id: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = match &self.method {
            Method::None => "none".to_owned(),
            Method::Password { user, project, .. } => format!(
                "password (user {:?}, project {:?}, password hidden)",
                user.name.as_ref().or(user.id.as_ref()),
                project.name.as_ref().or(project.id.as_ref())
            ),
            Method::ApplicationCredential { id, name, .. } => format!(
                "application credential {:?} (secret hidden)",
                id.as_ref().or(name.as_ref())
            ),
        };
        f.debug_struct("Credentials")
            .field("auth_url", &self.auth_url)
            .field("method", &method)
            .field("region", &self.region)
            .field("interface", &self.interface)
            .finish()
    }
}

/// A `clouds.yaml` entry's `auth` (the keys SimpleScaleVM's `OS_*` variables map to).
#[derive(Debug, Default, Deserialize)]
struct CloudAuth {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Cloud {
    #[serde(default)]
    auth: CloudAuth,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
    identity_api_version: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    clouds: BTreeMap<String, Cloud>,
}

/// Where `clouds.yaml` is looked for, as openstacksdk does.
fn clouds_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(file) = std::env::var_os("OS_CLIENT_CONFIG_FILE") {
        paths.push(PathBuf::from(file));
    }
    paths.push(PathBuf::from("clouds.yaml"));
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".config/openstack/clouds.yaml"));
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

impl Credentials {
    /// The entry `cloud` of the first `clouds.yaml` found (`OS_CLIENT_CONFIG_FILE`,
    /// `./clouds.yaml`, `~/.config/openstack/`, `/etc/openstack/`).
    pub fn from_clouds_yaml(cloud: &str) -> Result<Self, TargetError> {
        let refused = |m: String| TargetError::Refused(format!("openstack: {m}"));
        let paths = clouds_paths();
        let Some(path) = paths.iter().find(|p| p.is_file()) else {
            return Err(refused(format!(
                "no clouds.yaml for cloud {cloud:?} (looked in {})",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        Self::from_clouds_file(path, cloud)
    }

    /// The entry `cloud` of the `clouds.yaml` at `path`.
    pub fn from_clouds_file(path: &std::path::Path, cloud: &str) -> Result<Self, TargetError> {
        let refused = |m: String| TargetError::Refused(format!("openstack: {m}"));
        let text = std::fs::read_to_string(path)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        let mut file: CloudsFile =
            serde_yaml::from_str(&text).map_err(|e| refused(format!("{}: {e}", path.display())))?;
        let entry = file.clouds.remove(cloud).ok_or_else(|| {
            refused(format!(
                "{}: no cloud {cloud:?} (it has {})",
                path.display(),
                file.clouds.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Self::from_cloud(entry)
            .map_err(|m| refused(format!("{} cloud {cloud:?}: {m}", path.display())))
    }

    /// The `OS_*` environment variables (`OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`,
    /// `OS_PROJECT_NAME`/`_ID`, `OS_USER_DOMAIN_NAME`/`_ID`, `OS_PROJECT_DOMAIN_NAME`/`_ID`,
    /// `OS_REGION_NAME`, `OS_INTERFACE`, `OS_IDENTITY_API_VERSION`, `OS_AUTH_TYPE`,
    /// `OS_APPLICATION_CREDENTIAL_ID`/`_NAME`/`_SECRET`).
    pub fn from_environment() -> Result<Self, TargetError> {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    fn from_variables(var: impl Fn(&str) -> Option<String>) -> Result<Self, TargetError> {
        let v = |name: &str| var(&format!("OS_{name}")).filter(|s| !s.is_empty());
        let cloud = Cloud {
            auth: CloudAuth {
                auth_url: v("AUTH_URL"),
                username: v("USERNAME"),
                user_id: v("USER_ID"),
                password: v("PASSWORD"),
                project_name: v("PROJECT_NAME").or_else(|| v("TENANT_NAME")),
                project_id: v("PROJECT_ID").or_else(|| v("TENANT_ID")),
                user_domain_name: v("USER_DOMAIN_NAME"),
                user_domain_id: v("USER_DOMAIN_ID"),
                project_domain_name: v("PROJECT_DOMAIN_NAME"),
                project_domain_id: v("PROJECT_DOMAIN_ID"),
                domain_name: None,
                application_credential_id: v("APPLICATION_CREDENTIAL_ID"),
                application_credential_name: v("APPLICATION_CREDENTIAL_NAME"),
                application_credential_secret: v("APPLICATION_CREDENTIAL_SECRET"),
            },
            auth_type: v("AUTH_TYPE"),
            region_name: v("REGION_NAME"),
            interface: v("INTERFACE"),
            identity_api_version: v("IDENTITY_API_VERSION").map(Value::String),
        };
        Self::from_cloud(cloud)
            .map_err(|m| TargetError::Refused(format!("openstack: the OS_* environment: {m}")))
    }

    fn from_cloud(cloud: Cloud) -> Result<Self, String> {
        if let Some(version) = &cloud.identity_api_version {
            let text = match version {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !text.starts_with('3') {
                return Err(format!("identity API version {text}: only 3 is supported"));
            }
        }
        let a = cloud.auth;
        let auth_url = a.auth_url.ok_or("auth_url (OS_AUTH_URL) is missing")?;
        let auth_url = if auth_url.trim_end_matches('/').ends_with("/v3") {
            auth_url.trim_end_matches('/').to_owned()
        } else {
            format!("{}/v3", auth_url.trim_end_matches('/'))
        };
        let application = a.application_credential_secret.is_some()
            || cloud
                .auth_type
                .as_deref()
                .is_some_and(|t| t.contains("application"));
        let user = Named {
            id: a.user_id,
            name: a.username,
            domain_name: a.user_domain_name.or_else(|| a.domain_name.clone()),
            domain_id: a.user_domain_id,
        };
        let method = if application {
            let secret = a
                .application_credential_secret
                .ok_or("application_credential_secret is missing")?;
            if a.application_credential_id.is_none() && a.application_credential_name.is_none() {
                return Err("application_credential_id (or _name with the user) is missing".into());
            }
            Method::ApplicationCredential {
                id: a.application_credential_id,
                name: a.application_credential_name,
                user: (user.id.is_some() || user.name.is_some()).then_some(user),
                secret,
            }
        } else {
            if user.id.is_none() && user.name.is_none() {
                return Err("username (OS_USERNAME) is missing".into());
            }
            let password = a.password.ok_or("password (OS_PASSWORD) is missing")?;
            let project = Named {
                id: a.project_id,
                name: a.project_name,
                domain_name: a.project_domain_name.or(a.domain_name),
                domain_id: a.project_domain_id,
            };
            if project.id.is_none() && project.name.is_none() {
                return Err("project_name or project_id (OS_PROJECT_NAME) is missing".into());
            }
            Method::Password {
                user,
                password,
                project,
            }
        };
        Ok(Credentials {
            auth_url,
            method,
            region: cloud.region_name,
            interface: cloud.interface.unwrap_or_else(|| "public".into()),
        })
    }

    /// The body of `POST /v3/auth/tokens`.
    fn token_request(&self) -> Value {
        let named = |n: &Named| {
            let mut o = serde_json::Map::new();
            if let Some(id) = &n.id {
                o.insert("id".into(), json!(id));
            }
            if let Some(name) = &n.name {
                o.insert("name".into(), json!(name));
                let domain = match (&n.domain_id, &n.domain_name) {
                    (Some(id), _) => json!({ "id": id }),
                    (None, Some(name)) => json!({ "name": name }),
                    (None, None) => json!({ "id": "default" }),
                };
                o.insert("domain".into(), domain);
            }
            Value::Object(o)
        };
        match &self.method {
            Method::None => json!({}),
            Method::Password {
                user,
                password,
                project,
            } => {
                let mut user = named(user);
                user["password"] = json!(password);
                json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": user } },
                    "scope": { "project": named(project) },
                }})
            }
            Method::ApplicationCredential {
                id,
                name,
                user,
                secret,
            } => {
                let mut credential = serde_json::Map::new();
                if let Some(id) = id {
                    credential.insert("id".into(), json!(id));
                }
                if let Some(name) = name {
                    credential.insert("name".into(), json!(name));
                }
                if let Some(user) = user {
                    credential.insert("user".into(), named(user));
                }
                credential.insert("secret".into(), json!(secret));
                json!({ "auth": { "identity": {
                    "methods": ["application_credential"],
                    "application_credential": credential,
                }}})
            }
        }
    }
}

/// A token and the endpoints of its catalog.
#[derive(Clone)]
struct Token {
    value: String,
    expires: SystemTime,
    /// service type → endpoint URL (of the configured interface and region).
    endpoints: BTreeMap<String, String>,
}

/// Renew this long before the token expires, so no request carries a token about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(120);

/// A Keystone session: a token obtained on first use, renewed before expiry and on a 401.
pub struct Session {
    credentials: Credentials,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Tokens issued so far (the tests check renewal).
    issued: Mutex<u32>,
}

impl Session {
    /// A session that authenticates on first use.
    pub fn new(credentials: Credentials, http: reqwest::Client) -> Self {
        Session {
            credentials,
            http,
            token: tokio::sync::Mutex::new(None),
            issued: Mutex::new(0),
        }
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u32 {
        self.issued.lock().map(|n| *n).unwrap_or(0)
    }

    /// A valid token and the endpoint of `service` (a catalog type: `compute`, `network`).
    /// `stale`, the token a request was just refused with, forces a new one.
    pub async fn token_for(
        &self,
        service: &str,
        stale: Option<&str>,
    ) -> Result<(String, String), TargetError> {
        let mut held = self.token.lock().await;
        let fresh = held.as_ref().is_some_and(|t| {
            Some(t.value.as_str()) != stale
                && t.expires
                    .duration_since(SystemTime::now())
                    .is_ok_and(|left| left > RENEW_BEFORE)
        });
        if !fresh {
            *held = Some(self.issue().await?);
        }
        let token = held
            .as_ref()
            .ok_or_else(|| TargetError::Unavailable("openstack: no token".into()))?;
        let endpoint = token.endpoints.get(service).cloned().ok_or_else(|| {
            TargetError::Refused(format!(
                "openstack: the catalog has no {service} endpoint (interface {}, region {})",
                self.credentials.interface,
                self.credentials.region.as_deref().unwrap_or("any")
            ))
        })?;
        Ok((token.value.clone(), endpoint))
    }

    async fn issue(&self) -> Result<Token, TargetError> {
        let url = format!("{}/auth/tokens", self.credentials.auth_url);
        let response = self
            .http
            .post(&url)
            .json(&self.credentials.token_request())
            .send()
            .await
            .map_err(|e| TargetError::Unavailable(format!("openstack: keystone {url}: {e}")))?;
        let status = response.status();
        let value = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = super::read_capped(response, super::MAX_RESPONSE_BYTES, "keystone").await?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
            let text = format!("openstack: keystone refused the credentials ({status}): {message}");
            return Err(if status.as_u16() == 401 || status.as_u16() == 403 {
                TargetError::Refused(text)
            } else {
                TargetError::Unavailable(text)
            });
        }
        let value = value.ok_or_else(|| {
            TargetError::Unavailable("openstack: keystone sent no X-Subject-Token".into())
        })?;
        let expires = body["token"]["expires_at"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(
                SystemTime::now() + Duration::from_secs(600),
                SystemTime::from,
            );
        let mut endpoints = BTreeMap::new();
        for service in body["token"]["catalog"].as_array().into_iter().flatten() {
            let Some(kind) = service["type"].as_str() else {
                continue;
            };
            let chosen = service["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| {
                    e["interface"].as_str() == Some(self.credentials.interface.as_str())
                        && self.credentials.region.as_deref().is_none_or(|r| {
                            e["region_id"].as_str() == Some(r) || e["region"].as_str() == Some(r)
                        })
                });
            if let Some(url) = chosen.and_then(|e| e["url"].as_str()) {
                endpoints.insert(kind.to_owned(), url.trim_end_matches('/').to_owned());
            }
        }
        if let Ok(mut n) = self.issued.lock() {
            *n += 1;
        }
        Ok(Token {
            value,
            expires,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_os_variables_make_password_credentials_and_hide_the_password() {
        let c = Credentials::from_variables(vars(&[
            ("OS_AUTH_URL", "http://keystone:5000"),
            ("OS_USERNAME", "scaler"),
            ("OS_PASSWORD", "s3cret"),
            ("OS_PROJECT_NAME", "web"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_REGION_NAME", "RegionTwo"),
        ]))
        .expect("credentials");
        assert_eq!(c.auth_url, "http://keystone:5000/v3");
        assert_eq!(c.region.as_deref(), Some("RegionTwo"));
        assert_eq!(c.interface, "public");
        let body = c.token_request();
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["password"],
            "s3cret"
        );
        assert_eq!(body["auth"]["scope"]["project"]["domain"]["id"], "default");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    }

    #[test]
    fn an_application_credential_needs_no_project() {
        let c = Credentials::from_variables(vars(&[
            ("OS_AUTH_URL", "http://keystone:5000/v3/"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "abc"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s3cret"),
        ]))
        .expect("credentials");
        let body = c.token_request();
        assert_eq!(
            body["auth"]["identity"]["application_credential"]["id"],
            "abc"
        );
        assert!(body["auth"].get("scope").is_none());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn what_is_missing_is_named() {
        let err = Credentials::from_variables(vars(&[("OS_USERNAME", "u")])).expect_err("no url");
        assert!(err.to_string().contains("OS_AUTH_URL"), "{err}");
        let err = Credentials::from_variables(vars(&[
            ("OS_AUTH_URL", "http://k/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
        ]))
        .expect_err("no project");
        assert!(err.to_string().contains("OS_PROJECT_NAME"), "{err}");
        let err = Credentials::from_variables(vars(&[
            ("OS_AUTH_URL", "http://k"),
            ("OS_IDENTITY_API_VERSION", "2"),
        ]))
        .expect_err("v2");
        assert!(err.to_string().contains("only 3"), "{err}");
    }
}
