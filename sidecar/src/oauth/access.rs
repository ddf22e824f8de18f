//! Who may sign in and which scopes they get: `spec.oauthProxy.access` and `scopeGrants`,
//! compiled once per policy and checked against the facts the upstream provider gave about the
//! signed-in user. Pure functions; the facts are gathered in [`super::facts`].

use std::collections::HashSet;

use mcp_warden_policy::{IdentityMatch, OAuthProxySpec};

use super::provider::Identity;

/// The default claim groups are read from.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// Which identity facts the policy's entries read, so only those are fetched upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Verified email (GitHub: `/user/emails`).
    pub email: bool,
    /// The groups claim.
    pub groups: bool,
    /// GitHub organisations (`/user/orgs`).
    pub orgs: bool,
    /// GitHub teams (`/user/teams`).
    pub teams: bool,
}

impl Needs {
    /// The facts any entry of `access` or `scopeGrants` reads.
    pub fn of(spec: &OAuthProxySpec) -> Self {
        let access = spec.access.as_ref().map(|a| a.identities());
        access
            .iter()
            .chain(spec.scope_grants.values())
            .fold(Needs::default(), |n, m| Needs {
                email: n.email || !m.emails.is_empty() || !m.email_domains.is_empty(),
                groups: n.groups || !m.groups.is_empty(),
                orgs: n.orgs || !m.orgs.is_empty(),
                teams: n.teams || !m.teams.is_empty(),
            })
    }
}

/// One compiled entry: a user matches when any one of its lists does.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    anyone: bool,
    subjects: HashSet<String>,
    emails: HashSet<String>,
    email_domains: HashSet<String>,
    groups: HashSet<String>,
    orgs: HashSet<String>,
    teams: HashSet<String>,
    hosted_domains: HashSet<String>,
    tenants: HashSet<String>,
}

fn exact(list: &[String]) -> HashSet<String> {
    list.iter().cloned().collect()
}

fn folded(list: &[String]) -> HashSet<String> {
    list.iter().map(|s| s.to_lowercase()).collect()
}

impl Matcher {
    /// Compiles an entry; case-insensitive lists are lower-cased once here.
    pub fn new(m: &IdentityMatch) -> Self {
        Matcher {
            anyone: m.any_authenticated_user,
            subjects: exact(&m.subjects),
            emails: folded(&m.emails),
            email_domains: folded(&m.email_domains),
            groups: exact(&m.groups),
            orgs: folded(&m.orgs),
            teams: folded(&m.teams),
            hosted_domains: exact(&m.hosted_domains),
            tenants: exact(&m.tenants),
        }
    }

    /// Whether the user matches. An email counts only when the provider verified it.
    pub fn matches(&self, id: &Identity) -> bool {
        if self.anyone || self.subjects.contains(&id.subject) {
            return true;
        }
        let verified = id
            .email
            .as_deref()
            .filter(|_| id.email_verified)
            .map(str::to_lowercase);
        if let Some(email) = &verified {
            let domain = email.rsplit_once('@').map(|(_, d)| d);
            if self.emails.contains(email) || domain.is_some_and(|d| self.email_domains.contains(d))
            {
                return true;
            }
        }
        let any = |set: &HashSet<String>, values: &[String], fold: bool| {
            values.iter().any(|v| {
                if fold {
                    set.contains(&v.to_lowercase())
                } else {
                    set.contains(v)
                }
            })
        };
        any(&self.groups, &id.groups, false)
            || any(&self.orgs, &id.orgs, true)
            || any(&self.teams, &id.teams, true)
            || id
                .hosted_domain
                .as_ref()
                .is_some_and(|hd| self.hosted_domains.contains(hd))
            || id.tenant.as_ref().is_some_and(|t| self.tenants.contains(t))
    }
}

/// The access rules of one policy.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    /// `None` when the policy has no `access` (invalid; then nobody signs in).
    sign_in: Option<Matcher>,
    /// Scope → who may get it, only for scopes in `resource.scopesSupported`.
    grants: Vec<(String, Matcher)>,
    /// Every group, org and team some entry names (orgs and teams lower-cased).
    named: Named,
}

#[derive(Clone, Debug, Default)]
struct Named {
    groups: HashSet<String>,
    orgs: HashSet<String>,
    teams: HashSet<String>,
}

impl AccessPolicy {
    /// Compiles `access` and `scopeGrants`; grants of scopes the resource does not list are
    /// dropped (validation refuses them anyway).
    pub fn new(spec: &OAuthProxySpec, scopes_supported: &[String]) -> Self {
        let mut named = Named::default();
        for m in spec
            .access
            .iter()
            .map(|a| a.identities())
            .chain(spec.scope_grants.values().cloned())
        {
            named.groups.extend(exact(&m.groups));
            named.orgs.extend(folded(&m.orgs));
            named.teams.extend(folded(&m.teams));
        }
        AccessPolicy {
            named,
            sign_in: spec.access.as_ref().map(|a| Matcher::new(&a.identities())),
            grants: spec
                .scope_grants
                .iter()
                .filter(|(scope, _)| scopes_supported.contains(scope))
                .map(|(scope, m)| (scope.clone(), Matcher::new(m)))
                .collect(),
        }
    }

    /// Whether the user may sign in at all.
    pub fn allows(&self, id: &Identity) -> bool {
        self.sign_in.as_ref().is_some_and(|m| m.matches(id))
    }

    /// Drops the groups, orgs and teams no entry names, so a session keeps only the facts the
    /// policy decides on (the lists can be long, and are personal data).
    pub fn keep_named_facts(&self, id: &mut Identity) {
        id.groups.retain(|g| self.named.groups.contains(g));
        id.orgs
            .retain(|o| self.named.orgs.contains(&o.to_lowercase()));
        id.teams
            .retain(|t| self.named.teams.contains(&t.to_lowercase()));
    }

    /// Whether some user could be granted `scope`.
    pub fn grantable(&self, scope: &str) -> bool {
        self.grants.iter().any(|(s, _)| s == scope)
    }

    /// The requested scopes this user is granted, in request order.
    pub fn grant(&self, requested: &[String], id: &Identity) -> Vec<String> {
        requested
            .iter()
            .filter(|s| {
                self.grants
                    .iter()
                    .any(|(scope, m)| scope == *s && m.matches(id))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_warden_policy::PolicyDocument;

    fn spec(provider: &str, access: &str) -> OAuthProxySpec {
        let yaml = format!(
            "apiVersion: mcpwarden.dev/v1alpha1\nkind: McpAuthPolicy\nmetadata: {{name: p}}\nspec:\n  resource: {{url: 'https://mcp.example.com/mcp', scopesSupported: [mcp:tools, mcp:admin]}}\n  mode: oauthProxy\n  oauthProxy:\n    provider: {provider}\n    clientId: cid\n{access}"
        );
        PolicyDocument::from_yaml(&yaml)
            .unwrap()
            .spec
            .oauth_proxy
            .unwrap()
    }

    fn policy(provider: &str, access: &str) -> AccessPolicy {
        let s = spec(provider, access);
        AccessPolicy::new(&s, &["mcp:tools".into(), "mcp:admin".into()])
    }

    fn user(sub: &str) -> Identity {
        Identity {
            subject: sub.into(),
            ..Identity::default()
        }
    }

    #[test]
    fn email_counts_only_when_verified_and_domains_are_exact() {
        let p = policy(
            "oidc\n    issuer: https://idp.example",
            "    access: {emailDomains: [Example.com], emails: [boss@other.org]}\n",
        );
        let mut id = user("u1");
        id.email = Some("Ann@EXAMPLE.com".into());
        assert!(!p.allows(&id), "unverified");
        id.email_verified = true;
        assert!(p.allows(&id));
        id.email = Some("ann@sub.example.com".into());
        assert!(!p.allows(&id), "subdomains are not the domain");
        id.email = Some("ann@example.com.evil".into());
        assert!(!p.allows(&id));
        id.email = Some("BOSS@other.org".into());
        assert!(p.allows(&id));
    }

    #[test]
    fn github_orgs_and_teams_fold_case_groups_and_tenants_do_not() {
        let gh = policy(
            "github",
            "    access: {orgs: [Acme], teams: [acme/Platform]}\n",
        );
        let mut id = user("42");
        assert!(!gh.allows(&id));
        id.orgs = vec!["acme".into()];
        assert!(gh.allows(&id));
        id.orgs.clear();
        id.teams = vec!["ACME/platform".into()];
        assert!(gh.allows(&id));
        let entra = policy(
            "entra",
            "    access: {tenants: [72f988bf-86f1-41af-91ab-2d7cd011db47]}\n",
        );
        let mut id = user("x");
        id.tenant = Some("72F988BF-86F1-41AF-91AB-2D7CD011DB47".into());
        assert!(!entra.allows(&id), "tenant ids compare exactly");
        id.tenant = Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into());
        assert!(entra.allows(&id));
    }

    #[test]
    fn scopes_are_granted_per_entry_and_never_without_one() {
        let p = policy(
            "oidc\n    issuer: https://idp.example",
            "    access: {anyAuthenticatedUser: true}\n    scopeGrants:\n      mcp:tools: {anyAuthenticatedUser: true}\n      mcp:admin: {groups: [admins]}\n",
        );
        let requested: Vec<String> = vec!["mcp:admin".into(), "mcp:tools".into(), "x".into()];
        let mut id = user("anyone");
        assert!(p.allows(&id));
        assert_eq!(p.grant(&requested, &id), ["mcp:tools"]);
        id.groups = vec!["admins".into()];
        assert_eq!(p.grant(&requested, &id), ["mcp:admin", "mcp:tools"]);
        assert!(p.grantable("mcp:admin") && !p.grantable("x"));
        id.groups = vec!["dev".into(), "admins".into(), "x".into()];
        p.keep_named_facts(&mut id);
        assert_eq!(id.groups, ["admins"]);
        // No access entry at all: nobody.
        assert!(!AccessPolicy::default().allows(&id));
    }

    #[test]
    fn needs_name_only_the_facts_the_entries_read() {
        let s = spec(
            "github",
            "    scopes: [read:user, read:org]\n    access: {orgs: [acme]}\n    scopeGrants:\n      mcp:admin: {teams: [acme/admins]}\n",
        );
        assert_eq!(
            Needs::of(&s),
            Needs {
                email: false,
                groups: false,
                orgs: true,
                teams: true
            }
        );
    }
}
