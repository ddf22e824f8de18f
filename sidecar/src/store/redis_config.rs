//! Turns a policy's `storage.redis` into a checked connection target: addresses, TLS, database,
//! credentials and timeout. Pure, so every rule is unit-tested without a server.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use mcp_warden_policy::{RedisMode, RedisSpec};
use url::Url;

use super::StoreError;

const REDIS_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;

/// Where and how to reach Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Deployment shape.
    pub mode: RedisMode,
    /// `rediss://`: TLS with certificate and host name verification against the system roots
    /// (a private CA is trusted by pointing `SSL_CERT_FILE` at its bundle). There is no option to
    /// skip verification.
    pub tls: bool,
    /// Standalone: the server; sentinel: the sentinels; cluster: the seed nodes. Never empty.
    pub nodes: Vec<(String, u16)>,
    /// Database number (always 0 for cluster).
    pub db: i64,
    /// Sentinel master (service) name.
    pub sentinel_master: Option<String>,
    /// ACL user for the data nodes (sentinels are contacted without credentials).
    pub username: Option<String>,
    /// Password for the data nodes, from `passwordSecretRef`.
    pub password: Option<String>,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
}

fn config(msg: impl Into<String>) -> StoreError {
    StoreError::Config(msg.into())
}

impl RedisTarget {
    /// Reads the password secret (if any) and checks the spec.
    pub fn from_spec(spec: &RedisSpec, secrets_dir: &Path) -> Result<Self, StoreError> {
        let password = match &spec.password_secret_ref {
            Some(r) => Some(
                r.read(secrets_dir)
                    .map_err(|e| config(format!("storage.redis.passwordSecretRef: {e}")))?,
            ),
            None => None,
        };
        Self::parse(spec, password)
    }

    /// Checks the spec with an already read password.
    pub fn parse(spec: &RedisSpec, password: Option<String>) -> Result<Self, StoreError> {
        let url = Url::parse(&spec.url)
            .map_err(|e| config(format!("storage.redis.url {:?}: {e}", spec.url)))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(config(format!(
                    "storage.redis.url must start with redis:// or rediss://, not {other}://"
                )));
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(config(
                "storage.redis.url must not carry credentials; use storage.redis.username and passwordSecretRef",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(config("storage.redis.url takes no query or fragment"));
        }
        let default_port = match spec.mode {
            RedisMode::Sentinel => SENTINEL_PORT,
            RedisMode::Standalone | RedisMode::Cluster => REDIS_PORT,
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| config("storage.redis.url has no host"))?;
        let mut nodes = vec![(unbracket(host), url.port().unwrap_or(default_port))];
        for extra in &spec.extra_nodes {
            nodes.push(parse_node(extra, default_port)?);
        }
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            n => n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                config(format!(
                    "storage.redis.url path must be a database number, got {:?}",
                    url.path()
                ))
            })?,
        };
        match spec.mode {
            RedisMode::Standalone if !spec.extra_nodes.is_empty() => {
                return Err(config(
                    "storage.redis.extraNodes is only for mode sentinel or cluster",
                ));
            }
            RedisMode::Cluster if db != 0 => {
                return Err(config(
                    "Redis Cluster has only database 0; drop the path from storage.redis.url",
                ));
            }
            _ => {}
        }
        let sentinel_master = match (spec.mode, spec.sentinel_master.as_deref()) {
            (RedisMode::Sentinel, Some(name)) if !name.is_empty() => Some(name.to_owned()),
            (RedisMode::Sentinel, _) => {
                return Err(config(
                    "storage.redis.sentinelMaster is required for mode sentinel",
                ));
            }
            (_, Some(_)) => {
                return Err(config(
                    "storage.redis.sentinelMaster is only for mode sentinel",
                ));
            }
            (_, None) => None,
        };
        if spec.timeout_millis == 0 {
            return Err(config("storage.redis.timeoutMillis must be at least 1"));
        }
        if password.as_deref() == Some("") {
            return Err(config(
                "storage.redis.passwordSecretRef names an empty secret",
            ));
        }
        Ok(RedisTarget {
            mode: spec.mode,
            tls,
            nodes,
            db,
            sentinel_master,
            username: spec.username.clone().filter(|u| !u.is_empty()),
            password,
            timeout: Duration::from_millis(spec.timeout_millis.into()),
        })
    }

    /// The connection address of one node.
    pub fn addr(&self, (host, port): &(String, u16)) -> redis::ConnectionAddr {
        if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        }
    }

    /// Handshake settings for data nodes: database and ACL credentials.
    pub fn redis_settings(&self) -> redis::RedisConnectionInfo {
        let mut info = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            info = info.set_username(user);
        }
        if let Some(password) = &self.password {
            info = info.set_password(password);
        }
        info
    }

    /// Full connection info for one data node.
    pub fn connection_info(
        &self,
        node: &(String, u16),
    ) -> Result<redis::ConnectionInfo, StoreError> {
        use redis::IntoConnectionInfo;
        let info = self
            .addr(node)
            .into_connection_info()
            .map_err(|e| config(format!("storage.redis: {e}")))?;
        Ok(info.set_redis_settings(self.redis_settings()))
    }
}

/// `[::1]` → `::1`: the URL form of an IPv6 host is bracketed, a socket address is not.
fn unbracket(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// One `host:port` of `extraNodes` (`[v6]:port` for IPv6; the port defaults like the URL's).
fn parse_node(node: &str, default_port: u16) -> Result<(String, u16), StoreError> {
    let bad = || {
        config(format!(
            "storage.redis.extraNodes entry {node:?} is not host:port"
        ))
    };
    if node.contains(['/', '@', '?', '#']) {
        return Err(bad());
    }
    let url = Url::parse(&format!("redis://{node}")).map_err(|_| bad())?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    Ok((unbracket(host), url.port().unwrap_or(default_port)))
}

impl fmt::Display for RedisTarget {
    /// `standalone redis://host:6379/0` style, without credentials (safe to log).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        write!(f, "{mode} {scheme}://{}/{}", nodes.join(","), self.db)?;
        if let Some(master) = &self.sentinel_master {
            write!(f, " master {master}")?;
        }
        if let Some(user) = &self.username {
            write!(f, " user {user}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("target", &self.to_string())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, mode: RedisMode) -> RedisSpec {
        RedisSpec {
            url: url.into(),
            mode,
            extra_nodes: vec![],
            sentinel_master: None,
            username: None,
            password_secret_ref: None,
            timeout_millis: 250,
        }
    }

    fn err(spec: &RedisSpec) -> String {
        match RedisTarget::parse(spec, None) {
            Err(StoreError::Config(msg)) => msg,
            other => panic!("expected a config error for {spec:?}, got {other:?}"),
        }
    }

    #[test]
    fn standalone_url_with_database_and_credentials() {
        let mut s = spec("redis://redis.tools.svc:6380/2", RedisMode::Standalone);
        s.username = Some("warden".into());
        let t = RedisTarget::parse(&s, Some("pw".into())).unwrap();
        assert_eq!(t.nodes, vec![("redis.tools.svc".to_owned(), 6380)]);
        assert_eq!(
            (t.db, t.tls, t.timeout),
            (2, false, Duration::from_millis(250))
        );
        let info = t.connection_info(&t.nodes[0]).unwrap();
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("redis.tools.svc".into(), 6380)
        );
        let settings = info.redis_settings();
        assert_eq!(
            (settings.db(), settings.username(), settings.password()),
            (2, Some("warden"), Some("pw"))
        );
        assert_eq!(
            t.to_string(),
            "standalone redis://redis.tools.svc:6380/2 user warden"
        );
        assert!(
            !format!("{t:?}").contains("pw\""),
            "Debug redacts the password: {t:?}"
        );
    }

    #[test]
    fn rediss_means_verified_tls() {
        let t = RedisTarget::parse(
            &spec("rediss://redis.example.com", RedisMode::Standalone),
            None,
        )
        .unwrap();
        assert!(t.tls);
        assert_eq!(t.nodes[0].1, 6379);
        match t.addr(&t.nodes[0]) {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                assert_eq!(
                    (host.as_str(), port, insecure),
                    ("redis.example.com", 6379, false)
                );
            }
            other => panic!("expected TLS, got {other:?}"),
        }
    }

    #[test]
    fn sentinel_addresses_and_master() {
        let mut s = spec("redis://sentinel-0.redis:26380", RedisMode::Sentinel);
        s.extra_nodes = vec![
            "sentinel-1.redis:26381".into(),
            "sentinel-2.redis".into(),
            "[fd00::7]:26379".into(),
        ];
        s.sentinel_master = Some("mymaster".into());
        let t = RedisTarget::parse(&s, None).unwrap();
        assert_eq!(
            t.nodes,
            vec![
                ("sentinel-0.redis".to_owned(), 26380),
                ("sentinel-1.redis".to_owned(), 26381),
                ("sentinel-2.redis".to_owned(), 26379),
                ("fd00::7".to_owned(), 26379),
            ]
        );
        assert_eq!(t.sentinel_master.as_deref(), Some("mymaster"));
        assert_eq!(
            t.to_string(),
            "sentinel redis://sentinel-0.redis:26380,sentinel-1.redis:26381,sentinel-2.redis:26379,[fd00::7]:26379/0 master mymaster"
        );
        s.sentinel_master = None;
        assert!(err(&s).contains("sentinelMaster is required"));
    }

    #[test]
    fn cluster_seed_nodes() {
        let mut s = spec("rediss://node-0:7000", RedisMode::Cluster);
        s.extra_nodes = vec!["node-1:7001".into()];
        let t = RedisTarget::parse(&s, None).unwrap();
        assert_eq!(
            t.nodes,
            vec![("node-0".to_owned(), 7000), ("node-1".to_owned(), 7001)]
        );
        assert!(t.tls);
        s.url = "redis://node-0:7000/3".into();
        assert!(err(&s).contains("only database 0"));
    }

    #[test]
    fn rejects_unsafe_or_inconsistent_specs() {
        let cases = [
            (
                "http://redis:6379",
                RedisMode::Standalone,
                "redis:// or rediss://",
            ),
            (
                "redis://:pw@redis:6379",
                RedisMode::Standalone,
                "must not carry credentials",
            ),
            (
                "redis://user@redis:6379",
                RedisMode::Standalone,
                "must not carry credentials",
            ),
            (
                "rediss://redis:6379/#insecure",
                RedisMode::Standalone,
                "no query or fragment",
            ),
            (
                "redis://redis:6379/?protocol=resp3",
                RedisMode::Standalone,
                "no query or fragment",
            ),
            (
                "redis://redis:6379/zero",
                RedisMode::Standalone,
                "database number",
            ),
            ("redis:///0", RedisMode::Standalone, "no host"),
            ("not a url", RedisMode::Standalone, "storage.redis.url"),
        ];
        for (url, mode, expected) in cases {
            let msg = err(&spec(url, mode));
            assert!(msg.contains(expected), "{url}: {msg}");
        }
        let mut s = spec("redis://redis", RedisMode::Standalone);
        s.extra_nodes = vec!["other:6379".into()];
        assert!(err(&s).contains("only for mode sentinel or cluster"));
        let mut s = spec("redis://redis", RedisMode::Cluster);
        s.extra_nodes = vec!["a:1/2".into()];
        assert!(err(&s).contains("is not host:port"));
        let mut s = spec("redis://redis", RedisMode::Standalone);
        s.sentinel_master = Some("m".into());
        assert!(err(&s).contains("only for mode sentinel"));
        let mut s = spec("redis://redis", RedisMode::Standalone);
        s.timeout_millis = 0;
        assert!(err(&s).contains("timeoutMillis"));
        let s = spec("redis://redis", RedisMode::Standalone);
        assert!(matches!(
            RedisTarget::parse(&s, Some(String::new())),
            Err(StoreError::Config(_))
        ));
    }

    #[test]
    fn password_comes_from_the_secret_file() {
        let dir = std::env::temp_dir().join(format!("mcpw-redis-secret-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("redis")).unwrap();
        std::fs::write(dir.join("redis/password"), "hunter2\n").unwrap();
        let mut s = spec("redis://redis", RedisMode::Standalone);
        s.password_secret_ref = Some(mcp_warden_policy::SecretRef {
            name: "redis".into(),
            key: "password".into(),
        });
        let t = RedisTarget::from_spec(&s, &dir).unwrap();
        assert_eq!(t.password.as_deref(), Some("hunter2"));
        s.password_secret_ref.as_mut().unwrap().key = "missing".into();
        assert!(
            matches!(RedisTarget::from_spec(&s, &dir), Err(StoreError::Config(m)) if m.contains("passwordSecretRef"))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
