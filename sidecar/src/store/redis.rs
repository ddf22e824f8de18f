//! Redis [`Store`]: standalone (a reconnecting connection manager), sentinel (master looked up
//! through the sentinels, looked up again after a connection error) and cluster. Every command is
//! bounded by the configured timeout, so an unreachable Redis yields
//! [`StoreError::Unavailable`] promptly instead of a hanging request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Script,
    Value,
};

use super::{RedisTarget, Store, StoreError, check_ttl};
use mcp_warden_policy::RedisMode;

/// Replace the value only when it still equals the expected one (refresh-token rotation).
const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Count, and make sure the counter expires: INCR and PEXPIRE in one step, so a failure between
/// them cannot leave a counter without a TTL.
const INCR_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n";

/// The Redis store. Cheap to share: clones of the underlying connections are multiplexed.
pub struct RedisStore {
    conn: Connection,
    timeout: Duration,
    cas: Script,
    incr: Script,
}

enum Connection {
    Standalone(ConnectionManager),
    Sentinel(Arc<SentinelConnection>),
    Cluster(ClusterConnection),
}

/// The master connection of a sentinel deployment, dropped after any connection-level error so
/// the next command asks the sentinels again (the master may have moved).
struct SentinelConnection {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl RedisStore {
    /// Builds the connections without contacting Redis: they connect on first use and reconnect
    /// after failures, so a Redis that is down at start-up or restarts later is survived.
    pub fn open(target: &RedisTarget) -> Result<Self, StoreError> {
        let t = target.timeout;
        let config_err =
            |e: RedisError| StoreError::Config(format!("storage.redis ({target}): {e}"));
        let conn = match target.mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(target.connection_info(&target.nodes[0])?)
                    .map_err(config_err)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t))
                    .set_response_timeout(Some(t))
                    // Retry quickly and give up soon: the next command starts a new attempt.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(t);
                Connection::Standalone(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(config_err)?,
                )
            }
            RedisMode::Sentinel => {
                let master = target.sentinel_master.as_deref().unwrap_or_default();
                let sentinels = target.nodes.iter().map(|n| target.addr(n));
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
                        .map_err(config_err)?
                        .set_client_to_redis_db(target.db);
                if target.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                }
                if let Some(user) = &target.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                Connection::Sentinel(Arc::new(SentinelConnection {
                    client: tokio::sync::Mutex::new(builder.build().map_err(config_err)?),
                    current: Mutex::new(None),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(t))
                        .set_response_timeout(Some(t)),
                }))
            }
            RedisMode::Cluster => {
                let nodes = target
                    .nodes
                    .iter()
                    .map(|n| target.connection_info(n))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(t)
                    .response_timeout(t)
                    .retries(1);
                if target.tls {
                    builder = builder.tls(redis::TlsMode::Secure);
                }
                if let Some(user) = &target.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.password(password);
                }
                let client = builder.build().map_err(config_err)?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(t)
                    .set_response_timeout(t);
                Connection::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        Ok(RedisStore {
            conn,
            timeout: t,
            cas: Script::new(CAS_SCRIPT),
            incr: Script::new(INCR_SCRIPT),
        })
    }

    /// A connection for one command (a cheap clone of a multiplexed connection).
    async fn handle(&self) -> RedisResult<Handle> {
        match &self.conn {
            Connection::Standalone(m) => Ok(Handle::Manager(m.clone())),
            Connection::Cluster(c) => Ok(Handle::Cluster(c.clone())),
            Connection::Sentinel(s) => {
                if let Some(c) = s.current.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    return Ok(Handle::Multiplexed(c));
                }
                let mut client = s.client.lock().await;
                // Another task may have connected while this one waited for the lock.
                if let Some(c) = s.current.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    return Ok(Handle::Multiplexed(c));
                }
                let c = client.get_async_connection_with_config(&s.config).await?;
                *s.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                Ok(Handle::Multiplexed(c))
            }
        }
    }

    /// Runs `f` on a connection within the timeout and maps the outcome.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Handle) -> RedisResult<T>,
    {
        let attempt = async {
            let mut handle = self.handle().await?;
            f(&mut handle).await
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                self.forget_connection();
                return Err(StoreError::Unavailable(format!(
                    "Redis did not answer within {:?}",
                    self.timeout
                )));
            }
        };
        result.map_err(|e| {
            let mapped = map_error(&e);
            if matches!(mapped, StoreError::Unavailable(_)) {
                self.forget_connection();
            }
            mapped
        })
    }

    /// After a connection-level failure a sentinel deployment may have a new master.
    fn forget_connection(&self) {
        if let Connection::Sentinel(s) = &self.conn {
            s.current.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Data errors (a value this code did not write) are [`StoreError::Corrupt`]; everything else
/// (refused, reset, timed out, failing over, loading, auth) is [`StoreError::Unavailable`].
fn map_error(e: &RedisError) -> StoreError {
    let data_error = matches!(e.kind(), ErrorKind::UnexpectedReturnType | ErrorKind::Parse)
        || e.code() == Some("WRONGTYPE")
        || (e.kind() == ErrorKind::Server(redis::ServerErrorKind::ResponseError)
            && e.to_string().contains("not an integer"));
    if data_error {
        StoreError::Corrupt(e.to_string())
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        check_ttl(ttl)?;
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .to_owned();
        self.run(async |c| cmd.query_async::<()>(c).await).await
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        check_ttl(ttl)?;
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .to_owned();
        let stored: Option<String> = self.run(async |c| cmd.query_async(c).await).await?;
        Ok(stored.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cmd = redis::cmd("GET").arg(key).to_owned();
        self.run(async |c| cmd.query_async(c).await).await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cmd = redis::cmd("GETDEL").arg(key).to_owned();
        self.run(async |c| cmd.query_async(c).await).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let cmd = redis::cmd("DEL").arg(key).to_owned();
        self.run(async |c| cmd.query_async::<()>(c).await).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        check_ttl(ttl)?;
        let mut call = self.cas.key(key);
        call.arg(expected).arg(new).arg(millis(ttl));
        let swapped: i64 = self.run(async |c| call.invoke_async(c).await).await?;
        Ok(swapped == 1)
    }

    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        check_ttl(window)?;
        let mut call = self.incr.key(key);
        call.arg(millis(window));
        self.run(async |c| call.invoke_async(c).await).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let cmd = redis::cmd("PING");
        self.run(async |c| cmd.query_async::<()>(c).await).await
    }
}

/// One of the connection kinds, as a single [`ConnectionLike`] for commands and scripts.
enum Handle {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Manager(c) => c.req_packed_command(cmd),
            Handle::Multiplexed(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Manager(c) => c.get_db(),
            Handle::Multiplexed(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}
