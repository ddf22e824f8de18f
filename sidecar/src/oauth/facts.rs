//! Identity facts beyond the ID token, fetched only when the policy's `access` or
//! `scopeGrants` entries read them: userinfo claims the ID token lacks (email, the groups
//! claim), and for GitHub the primary verified email (`/user/emails`, scope `user:email`),
//! organisations (`/user/orgs`) and teams (`/user/teams`, both scope `read:org`). A failed
//! lookup fails the sign-in: a fact that cannot be read never admits anyone.

use super::OAuthProxy;
use super::provider::{
    Identity, IdentitySource, Upstream, UpstreamError, github_orgs, github_primary_email,
    github_teams, send,
};

/// GitHub list pages read at most (100 entries each).
const MAX_PAGES: usize = 10;

impl OAuthProxy {
    /// The user from the userinfo endpoint (GitHub: the user API).
    pub(super) async fn userinfo(
        &self,
        upstream: &Upstream,
        access_token: &str,
    ) -> Result<Identity, UpstreamError> {
        let call = upstream.identity_request(access_token).ok_or_else(|| {
            UpstreamError::Malformed("no ID token and no userinfo endpoint".into())
        })?;
        upstream.parse_identity(&self.get_ok(&call).await?)
    }

    /// Adds the facts the policy reads and `identity` lacks. `from_id_token`: the identity came
    /// from an ID token (so userinfo may add to it).
    pub(super) async fn complete_identity(
        &self,
        upstream: &Upstream,
        access_token: &str,
        mut identity: Identity,
        from_id_token: bool,
    ) -> Result<Identity, UpstreamError> {
        let needs = self.needs;
        match upstream.identity {
            IdentitySource::OpenIdConnect => {
                let lacking = (needs.email && !identity.email_verified)
                    || (needs.groups && identity.groups.is_empty());
                if lacking && from_id_token && upstream.userinfo_endpoint.is_some() {
                    let info = self.userinfo(upstream, access_token).await?;
                    if info.subject != identity.subject {
                        return Err(UpstreamError::Malformed(
                            "userinfo names another subject than the ID token".into(),
                        ));
                    }
                    identity.fill_from(info);
                }
            }
            IdentitySource::GithubUser => {
                if needs.email {
                    let body = self.github(upstream, "/emails", access_token).await?;
                    let primary = github_primary_email(&body)?;
                    identity.email_verified = primary.is_some();
                    identity.email = primary.or(identity.email);
                }
                if needs.orgs {
                    identity.orgs = self
                        .github_pages(upstream, "/orgs", access_token, github_orgs)
                        .await?;
                }
                if needs.teams {
                    identity.teams = self
                        .github_pages(upstream, "/teams", access_token, github_teams)
                        .await?;
                }
            }
        }
        Ok(identity)
    }

    async fn github(
        &self,
        upstream: &Upstream,
        path: &str,
        access_token: &str,
    ) -> Result<Vec<u8>, UpstreamError> {
        let call = upstream
            .github_request(path, access_token)
            .ok_or_else(|| UpstreamError::Malformed("no GitHub user API".into()))?;
        self.get_ok(&call).await
    }

    async fn github_pages(
        &self,
        upstream: &Upstream,
        path: &str,
        access_token: &str,
        parse: fn(&[u8]) -> Result<Vec<String>, UpstreamError>,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let body = self
                .github(
                    upstream,
                    &format!("{path}?per_page=100&page={page}"),
                    access_token,
                )
                .await?;
            let items = parse(&body)?;
            let last = items.len() < 100;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    async fn get_ok(&self, call: &super::provider::Prepared) -> Result<Vec<u8>, UpstreamError> {
        let (status, body) = send(&self.http, call).await?;
        if status != 200 {
            // GitHub answers 403/404 when the token lacks read:org or user:email.
            return Err(UpstreamError::Malformed(format!(
                "{} answered status {status}",
                call.url.split('?').next().unwrap_or_default()
            )));
        }
        Ok(body)
    }
}
