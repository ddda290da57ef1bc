//! Fresh PostgreSQL databases for tests.
//!
//! Tests reach PostgreSQL at `ALLSOURCE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each [`TestDatabase`] is a new database with a
//! unique name, dropped when the value is dropped, so runs and tests never see each other.
//! Without PostgreSQL the Postgres tests are skipped with a loud message, unless
//! `ALLSOURCE_REQUIRE_POSTGRES=1` (CI) makes that a failure.

use std::io::Write;
use std::sync::OnceLock;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn admin_url() -> String {
    std::env::var("ALLSOURCE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn required() -> bool {
    std::env::var("ALLSOURCE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

/// A database created for one test, dropped (with its connections) on drop.
pub struct TestDatabase {
    name: String,
    url: String,
    /// The maintenance database it was created from (and is dropped from).
    admin: String,
}

impl TestDatabase {
    /// A fresh database, or `None` (after a loud message) when PostgreSQL is not reachable and
    /// not required.
    ///
    /// # Panics
    /// When PostgreSQL is required (`ALLSOURCE_REQUIRE_POSTGRES=1`) and not reachable.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let conn = match PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(e) => {
                if required() {
                    panic!(
                        "PostgreSQL is required (ALLSOURCE_REQUIRE_POSTGRES=1) but {admin} is \
                         unreachable: {e}"
                    );
                }
                static WARNED: OnceLock<()> = OnceLock::new();
                WARNED.get_or_init(|| {
                    // Written to stderr directly: the test harness captures `eprintln!` of
                    // passing tests, and this must be seen.
                    let message = format!(
                        "\n\n*** SKIPPING the PostgreSQL tests: cannot connect to {admin} ({e}).\n\
                         *** Start PostgreSQL (see README, 'Tests and PostgreSQL') or set \
                         ALLSOURCE_TEST_POSTGRES_URL. CI sets ALLSOURCE_REQUIRE_POSTGRES=1.\n\n"
                    );
                    let _ = std::io::stderr().lock().write_all(message.as_bytes());
                });
                return None;
            }
        };
        Some(Self::create_with(conn, &admin).await)
    }

    /// A fresh database on the server of `admin` (a URL naming a database to connect to).
    ///
    /// # Panics
    /// When the server is unreachable or refuses.
    pub async fn create_on(admin: &str) -> Self {
        let conn = PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {admin}: {e}"));
        Self::create_with(conn, admin).await
    }

    async fn create_with(mut conn: PgConnection, admin: &str) -> Self {
        let name = format!("allsource_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = conn.close().await;
        let url = match admin.rfind('/') {
            Some(slash) => format!("{}/{name}", &admin[..slash]),
            None => panic!("the PostgreSQL URL {admin} has no database part"),
        };
        Self {
            name,
            url,
            admin: admin.to_owned(),
        }
    }

    /// Name of the database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context; a short-lived thread with its own runtime does it.
        let name = self.name.clone();
        let admin = self.admin.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
