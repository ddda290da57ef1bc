//! The `StateStore` contract suite, run against every adapter (memory, file, postgres).

use std::sync::Arc;

use allsource_application::ports::{StateError, StateStore};
use allsource_domain::TenantId;
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
use allsource_infrastructure::state::{FileStateStore, MemoryStateStore, PostgresStateStore};
use allsource_tests::pg::TestDatabase;
use serde_json::json;

/// A state store and how to reopen it on the same data (`None` for memory).
pub enum StateHarness {
    Memory,
    File(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl StateHarness {
    pub async fn memory() -> Option<Self> {
        Some(Self::Memory)
    }

    pub async fn file() -> Option<Self> {
        Some(Self::File(tempfile::tempdir().expect("tempdir")))
    }

    pub async fn postgres() -> Option<Self> {
        TestDatabase::create().await.map(Self::Postgres)
    }

    pub async fn open(&self) -> Arc<dyn StateStore> {
        match self {
            Self::Memory => Arc::new(MemoryStateStore::new()),
            Self::File(dir) => {
                Arc::new(FileStateStore::open(&dir.path().join("state")).expect("open"))
            }
            Self::Postgres(db) => {
                let config = PostgresConfig {
                    url: db.url().to_owned(),
                    max_connections: 4,
                    ..Default::default()
                };
                let events = PostgresStore::connect(&config, Arc::new(SystemClock))
                    .await
                    .expect("connect");
                Arc::new(PostgresStateStore::new(events.pool().clone()))
            }
        }
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

pub mod cases {
    use super::*;

    pub async fn versions_and_expectations(h: &StateHarness) {
        let s = h.open().await;
        let t = tenant("default");
        assert!(s.get(&t, "p", "k").await.unwrap().is_none());
        assert_eq!(
            s.put(&t, "p", "k", json!({"a": 1}), Some(0)).await.unwrap(),
            1
        );
        assert!(matches!(
            s.put(&t, "p", "k", json!(2), Some(0)).await,
            Err(StateError::VersionConflict {
                expected: 0,
                current: 1
            })
        ));
        assert_eq!(
            s.put(&t, "p", "k", json!({"a": 2}), Some(1)).await.unwrap(),
            2
        );
        assert!(matches!(
            s.put(&t, "p", "k", json!(3), Some(1)).await,
            Err(StateError::VersionConflict {
                expected: 1,
                current: 2
            })
        ));
        assert_eq!(s.put(&t, "p", "k", json!([3]), None).await.unwrap(), 3);
        let e = s.get(&t, "p", "k").await.unwrap().unwrap();
        assert_eq!((e.value, e.version), (json!([3]), 3));
        assert!(s.delete(&t, "p", "k").await.unwrap());
        assert!(!s.delete(&t, "p", "k").await.unwrap());
        assert!(s.get(&t, "p", "k").await.unwrap().is_none());
        assert_eq!(
            s.put(&t, "p", "k", json!(null), Some(0)).await.unwrap(),
            1,
            "a delete resets the key"
        );
    }

    pub async fn listing_is_ordered_paged_and_scoped(h: &StateHarness) {
        let s = h.open().await;
        let (a, b) = (tenant("alpha"), tenant("beta"));
        for key in ["b", "a", "c/1", "c/2", "Z", "d"] {
            s.put(&a, "ns", key, json!(key), None).await.unwrap();
        }
        s.put(&a, "other-ns", "a", json!(0), None).await.unwrap();
        s.put(&b, "ns", "a", json!(0), None).await.unwrap();
        let keys = |list: Vec<(String, allsource_application::ports::StateEntry)>| {
            list.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
        };
        assert_eq!(
            keys(s.list(&a, "ns", None, None, 100).await.unwrap()),
            ["Z", "a", "b", "c/1", "c/2", "d"]
        );
        assert_eq!(
            keys(s.list(&a, "ns", None, Some("a".into()), 2).await.unwrap()),
            ["b", "c/1"]
        );
        assert_eq!(
            keys(
                s.list(&a, "ns", Some("c/".into()), None, 100)
                    .await
                    .unwrap()
            ),
            ["c/1", "c/2"]
        );
        // Prefix and cursor together: a cursor before, inside and after the prefix's keys.
        let page = |after: &'static str| {
            let s = &s;
            let a = &a;
            async move {
                s.list(a, "ns", Some("c/".into()), Some(after.into()), 100)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(keys(page("a").await), ["c/1", "c/2"]);
        assert_eq!(keys(page("c/1").await), ["c/2"]);
        assert_eq!(keys(page("c/2").await), Vec::<String>::new());
        assert_eq!(keys(page("d").await), Vec::<String>::new());
        assert_eq!(
            keys(
                s.list(&a, "ns", Some("c/".into()), Some("c/".into()), 1)
                    .await
                    .unwrap()
            ),
            ["c/1"]
        );
        assert_eq!(
            keys(s.list(&b, "ns", None, None, 100).await.unwrap()),
            ["a"]
        );
        assert!(s.get(&b, "ns", "b").await.unwrap().is_none());
        assert!(
            s.list(&tenant("gamma"), "ns", None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn writes_survive_reopening(h: &StateHarness) {
        if matches!(h, StateHarness::Memory) {
            return;
        }
        {
            let s = h.open().await;
            let t = tenant("default");
            s.put(&t, "p", "kept", json!({"n": 1}), None).await.unwrap();
            s.put(&t, "p", "kept", json!({"n": 2}), None).await.unwrap();
            s.put(&t, "p", "gone", json!(1), None).await.unwrap();
            s.delete(&t, "p", "gone").await.unwrap();
        }
        let s = h.open().await;
        let t = tenant("default");
        let kept = s.get(&t, "p", "kept").await.unwrap().unwrap();
        assert_eq!((kept.value, kept.version), (json!({"n": 2}), 2));
        assert!(s.get(&t, "p", "gone").await.unwrap().is_none());
    }
}

macro_rules! state_suite {
    ($backend:ident => $make:expr; $($case:ident),* $(,)?) => {
        mod $backend {
            use super::StateHarness;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = $make.await else { return };
                    super::cases::$case(&harness).await;
                }
            )*
        }
    };
}

macro_rules! all_state_backends {
    ($($case:ident),* $(,)?) => {
        state_suite!(memory => StateHarness::memory(); $($case),*);
        state_suite!(file => StateHarness::file(); $($case),*);
        state_suite!(postgres => StateHarness::postgres(); $($case),*);
    };
}

all_state_backends!(
    versions_and_expectations,
    listing_is_ordered_paged_and_scoped,
    writes_survive_reopening
);
