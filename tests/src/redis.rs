//! Redis for tests: `ALLSOURCE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Without Redis
//! the Redis tests are skipped with a loud message, unless `ALLSOURCE_REQUIRE_REDIS=1` (CI) makes
//! that a failure.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn required() -> bool {
    std::env::var("ALLSOURCE_REQUIRE_REDIS").is_ok_and(|v| v == "1" || v == "true")
}

/// The Redis URL when Redis answers a PING, else `None` after a loud message.
///
/// # Panics
/// When Redis is required (`ALLSOURCE_REQUIRE_REDIS=1`) and does not answer.
pub async fn url() -> Option<String> {
    let url = std::env::var("ALLSOURCE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let reachable = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&host).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        buf[..n].starts_with(b"+PONG").then_some(())
    };
    let ok = tokio::time::timeout(Duration::from_secs(2), reachable)
        .await
        .ok()
        .flatten()
        .is_some();
    if ok {
        return Some(url);
    }
    if required() {
        panic!("Redis is required (ALLSOURCE_REQUIRE_REDIS=1) but {url} does not answer");
    }
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        let message = format!(
            "\n\n*** SKIPPING the Redis tests: {url} does not answer PING.\n\
             *** Start Redis (`redis-server --daemonize yes`) or set ALLSOURCE_TEST_REDIS_URL. \
             CI sets ALLSOURCE_REQUIRE_REDIS=1.\n\n"
        );
        let _ = std::io::stderr().lock().write_all(message.as_bytes());
    });
    None
}
