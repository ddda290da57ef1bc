//! [`ObjectStoreTarget`]: backups in an S3-compatible bucket, through `object_store` (the
//! version DataFusion already uses). A target URL `s3://bucket/prefix` keeps backup `ID`'s
//! files under `prefix/ID/`. Credentials and region come from the standard AWS environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...) unless the
//! settings give them; an endpoint (`backup.s3_endpoint`) points at an S3-compatible server
//! (MinIO, Ceph, moto), addressed path-style.

use std::sync::Arc;

use allsource_application::ports::{BackupIoError, BackupTarget};
use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutOptions, PutPayload};

/// How to reach an S3-compatible store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// `http(s)://host:port` of an S3-compatible server; AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: bool,
}

/// Backups under a prefix of a bucket.
pub struct ObjectStoreTarget {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without slashes at its ends).
///
/// # Errors
/// A URL that is not `s3://` with a bucket.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("'{url}' is not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("'{url}' names no bucket (s3://bucket/prefix)"));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

impl ObjectStoreTarget {
    /// A target for `s3://bucket/prefix`.
    ///
    /// # Errors
    /// A bad URL or options.
    pub fn s3(url: &str, options: &S3Options) -> anyhow::Result<Self> {
        let (bucket, prefix) = parse_s3_url(url).map_err(anyhow::Error::msg)?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(options.allow_http);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
            prefix,
            url: url.to_owned(),
        })
    }

    fn path(&self, path: &str) -> Result<Path, BackupIoError> {
        let full = if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.prefix)
        };
        Path::parse(&full).map_err(|e| BackupIoError::Internal(e.into()))
    }
}

fn unavailable(e: object_store::Error) -> BackupIoError {
    BackupIoError::Unavailable(format!("object store: {e}"))
}

#[async_trait]
impl BackupTarget for ObjectStoreTarget {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), BackupIoError> {
        let location = self.path(path)?;
        self.store
            .put_opts(&location, PutPayload::from(bytes), PutOptions::default())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, BackupIoError> {
        let location = self.path(path)?;
        match self.store.get_opts(&location, GetOptions::default()).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(unavailable)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list_dirs(&self) -> Result<Vec<String>, BackupIoError> {
        let prefix = (!self.prefix.is_empty())
            .then(|| Path::parse(&self.prefix))
            .transpose()
            .map_err(|e| BackupIoError::Internal(e.into()))?;
        let listed = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(unavailable)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        assert_eq!(parse_s3_url("s3://b/x/y/"), Ok(("b".into(), "x/y".into())));
        assert_eq!(parse_s3_url("s3://b"), Ok(("b".into(), String::new())));
        assert!(parse_s3_url("s3:///x").is_err());
        assert!(parse_s3_url("/srv/backups").is_err());
    }
}
