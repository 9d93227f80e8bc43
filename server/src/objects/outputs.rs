//! Outputs too large for the database, kept in the object store and read
//! back by the state store when a downstream input needs them.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::check_segment;
use crate::state::OutputStore;

/// The object store as the state store's [`OutputStore`].
pub struct ObjectOutputs {
    store: Arc<dyn ObjectStore>,
}

impl ObjectOutputs {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }
}

/// Keys come from `layout::large_output`; each segment is checked again
/// here so a corrupt marker can never read outside the outputs folder.
fn path(key: &str) -> Result<object_store::path::Path, String> {
    let segments: Vec<&str> = key.split('/').collect();
    if segments.first() != Some(&"outputs") {
        return Err(format!("`{key}` is not an output key"));
    }
    for s in &segments {
        check_segment(s).map_err(|e| e.to_string())?;
    }
    Ok(object_store::path::Path::from_iter(segments))
}

#[async_trait]
impl OutputStore for ObjectOutputs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        let path = path(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let path = path(key)?;
        let result = self.store.get(&path).await.map_err(|e| e.to_string())?;
        let bytes = result.bytes().await.map_err(|e| e.to_string())?;
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_keys_outside_outputs() {
        let outputs = ObjectOutputs::new(Arc::new(object_store::memory::InMemory::new()));
        let key = crate::objects::layout::large_output("01abc", 2)
            .expect("key")
            .to_string();
        assert_eq!(key, "outputs/01abc/2.json");
        outputs.put(&key, b"[1,2]".to_vec()).await.expect("put");
        assert_eq!(outputs.get(&key).await.expect("get"), b"[1,2]");
        assert!(outputs.get("runs/x/run.json").await.is_err());
        assert!(outputs.get("outputs/../secrets").await.is_err());
    }
}
