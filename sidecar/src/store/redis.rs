//! Redis [`Store`]: standalone, sentinel (the master looked up through the sentinels, and looked
//! up again after a connection error) and cluster. Connecting and
//! each response are bounded by the configured timeout, and a whole operation by twice that, so
//! an unreachable or hung Redis yields [`StoreError::Unavailable`] promptly instead of a hanging
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Script,
    Value,
};

use super::{LogBatch, RedisTarget, Store, StoreError, check_ttl};
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

/// Count (as INCR_SCRIPT) and read the other keys: a rate-limit check and the records a request
/// needs, in one round trip. Missing keys read as false (nil in the reply).
const COUNT_AND_GET_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local out = {n}
for i = 2, #KEYS do
  out[i] = redis.call('GET', KEYS[i])
end
return out";

/// Append to a stream, dropping entries older than the keep time (by the server's clock) and
/// making the stream expire after it.
const APPEND_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MINID', '~', tostring(now - tonumber(ARGV[2])), '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// The Redis store. Cheap to share: commands are multiplexed over one connection per node.
pub struct RedisStore {
    conn: Connection,
    /// Hard bound on one operation: connecting plus one response.
    deadline: Duration,
    cas: Script,
    incr: Script,
    count_and_get: Script,
    append: Script,
}

enum Connection {
    /// Standalone or sentinel: one connection to the primary, replaced after failures.
    Primary(Arc<PrimaryConnection>),
    /// Cluster: the library routes by slot and tracks the nodes.
    Cluster(ClusterConnection),
}

/// How to reach the primary.
enum Dialer {
    Direct(redis::Client),
    /// Ask the sentinels for the current master first: after a failover it has moved.
    Sentinel(SentinelClient),
}

/// The connection to the primary, dropped after any connection-level error or timeout so the
/// next command dials again. (A connection whose peer vanished without a FIN would otherwise
/// time out forever; after a sentinel failover the master is elsewhere.)
struct PrimaryConnection {
    dialer: tokio::sync::Mutex<Dialer>,
    /// The live connection and its generation (so a stale failure cannot drop a newer one).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
}

impl PrimaryConnection {
    fn new(dialer: Dialer, timeout: Duration) -> Self {
        PrimaryConnection {
            dialer: tokio::sync::Mutex::new(dialer),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
        }
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The live connection, dialling one if there is none (one dial at a time).
    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut dialer = self.dialer.lock().await;
        // Another task may have connected while this one waited for the lock.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let conn = match &mut *dialer {
            Dialer::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?
            }
            Dialer::Sentinel(client) => {
                client
                    .get_async_connection_with_config(&self.config)
                    .await?
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops connection `generation` if it is still the live one.
    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

impl RedisStore {
    /// Builds the clients without contacting Redis: connections are made on first use and made
    /// again after failures, so a Redis that is down at start-up or restarts later is survived.
    pub fn open(target: &RedisTarget) -> Result<Self, StoreError> {
        let t = target.timeout;
        let config_err =
            |e: RedisError| StoreError::Config(format!("storage.redis ({target}): {e}"));
        let conn = match target.mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(target.connection_info(&target.nodes[0])?)
                    .map_err(config_err)?;
                Connection::Primary(Arc::new(PrimaryConnection::new(Dialer::Direct(client), t)))
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
                let client = builder.build().map_err(config_err)?;
                Connection::Primary(Arc::new(PrimaryConnection::new(
                    Dialer::Sentinel(client),
                    t,
                )))
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
            deadline: t * 2,
            cas: Script::new(CAS_SCRIPT),
            incr: Script::new(INCR_SCRIPT),
            count_and_get: Script::new(COUNT_AND_GET_SCRIPT),
            append: Script::new(APPEND_SCRIPT),
        })
    }

    /// Runs `f` on a connection within the deadline and maps the outcome. After a
    /// connection-level failure or a timeout the primary connection is dropped and the next
    /// operation dials again.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Handle) -> RedisResult<T>,
    {
        // Generation of the primary connection used (0: none yet), to drop it after a failure.
        let used = AtomicU64::new(0);
        let attempt = async {
            let mut handle = match &self.conn {
                Connection::Primary(p) => {
                    let (generation, conn) = p.get().await?;
                    used.store(generation, Ordering::Relaxed);
                    Handle::Multiplexed(conn)
                }
                Connection::Cluster(c) => Handle::Cluster(c.clone()),
            };
            f(&mut handle).await
        };
        let result = match tokio::time::timeout(self.deadline, attempt).await {
            Ok(result) => result.map_err(|e| map_error(&e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.deadline
            ))),
        };
        if let (Err(StoreError::Unavailable(_)), Connection::Primary(p)) = (&result, &self.conn) {
            p.forget(used.load(Ordering::Relaxed));
        }
        result
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

    async fn count_and_get(
        &self,
        counter: Option<(&str, Duration)>,
        keys: &[&str],
    ) -> Result<(Option<u64>, Vec<Option<Vec<u8>>>), StoreError> {
        let Some((counter, window)) = counter else {
            if keys.is_empty() {
                return Ok((None, Vec::new()));
            }
            let cmd = redis::cmd("MGET").arg(keys).to_owned();
            let values = self.run(async |c| cmd.query_async(c).await).await?;
            return Ok((None, values));
        };
        check_ttl(window)?;
        let mut call = self.count_and_get.key(counter);
        for key in keys {
            call.key(*key);
        }
        call.arg(millis(window));
        let (count, values): (u64, Vec<Option<Vec<u8>>>) = self
            .run(async |c| {
                let reply: Vec<Value> = call.invoke_async(c).await?;
                let mut reply = reply.into_iter();
                let count = redis::from_redis_value(reply.next().unwrap_or(Value::Nil))?;
                let values = reply
                    .map(redis::from_redis_value)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((count, values))
            })
            .await?;
        Ok((Some(count), values))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let cmd = redis::cmd("PING");
        self.run(async |c| cmd.query_async::<()>(c).await).await
    }

    async fn append(&self, key: &str, entry: &[u8], keep: Duration) -> Result<(), StoreError> {
        check_ttl(keep)?;
        let mut call = self.append.key(key);
        call.arg(entry).arg(millis(keep));
        self.run(async |c| call.invoke_async::<i64>(c).await)
            .await
            .map(drop)
    }

    async fn read_log(
        &self,
        key: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<LogBatch, StoreError> {
        // `(id` starts after `id` (exclusive range, Redis 6.2+).
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let cmd = redis::cmd("XRANGE")
            .arg(key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .to_owned();
        let rows: Vec<(String, Vec<Vec<u8>>)> =
            self.run(async |c| cmd.query_async(c).await).await?;
        let cursor = rows
            .last()
            .map(|(id, _)| id.clone())
            .or_else(|| after.map(str::to_owned));
        let entries = rows
            .into_iter()
            .filter_map(|(_, mut fields)| (fields.len() == 2).then(|| fields.swap_remove(1)))
            .collect();
        Ok(LogBatch { entries, cursor })
    }
}

/// One of the connection kinds, as a single [`ConnectionLike`] for commands and scripts.
enum Handle {
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
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
            Handle::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Multiplexed(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}
