//! AWS clients made on first use. An agent spends nearly all its life polling IMDS, and on most
//! instances never drains at all: loading the SDK's configuration and building its clients at
//! start would map code it may never run again, which was most of its idle resident memory.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use lifeguard_common::lifecycle::{
    AutoScaling, Completion, GroupMembership, HookInfo, LifecycleError, LifecycleResult,
};
use lifeguard_common::message::AgentReport;
use tokio::sync::OnceCell;
use tokio::sync::mpsc::Receiver;

use crate::report::ReportSink;
use crate::upload::{ArchiveStore, ObjectSpec, UploadError, UploadPolicy, UploadReceipt};

type Making<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A value made by `make` the first time it is needed, then kept.
pub struct OnFirstUse<T> {
    cell: OnceCell<T>,
    make: Box<dyn Fn() -> Making<T> + Send + Sync>,
}

impl<T> OnFirstUse<T> {
    pub fn new<F, Fut>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        OnFirstUse {
            cell: OnceCell::new(),
            make: Box::new(move || Box::pin(make())),
        }
    }

    pub async fn get(&self) -> &T {
        self.cell.get_or_init(|| (self.make)()).await
    }
}

impl<T: AutoScaling> AutoScaling for OnFirstUse<T> {
    async fn membership(
        &self,
        instance_id: &str,
    ) -> Result<Option<GroupMembership>, LifecycleError> {
        self.get().await.membership(instance_id).await
    }

    async fn hooks(&self, asg: &str) -> Result<Vec<HookInfo>, LifecycleError> {
        self.get().await.hooks(asg).await
    }

    async fn heartbeat(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<bool, LifecycleError> {
        self.get().await.heartbeat(asg, hook, instance_id).await
    }

    async fn complete(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
        result: LifecycleResult,
    ) -> Result<Completion, LifecycleError> {
        self.get()
            .await
            .complete(asg, hook, instance_id, result)
            .await
    }
}

impl<T: ArchiveStore> ArchiveStore for OnFirstUse<T> {
    async fn upload_stream(
        &self,
        object: &ObjectSpec,
        parts: Receiver<Bytes>,
        policy: &UploadPolicy,
    ) -> Result<UploadReceipt, UploadError> {
        self.get().await.upload_stream(object, parts, policy).await
    }

    async fn abort_leftover_uploads(&self, object: &ObjectSpec, policy: &UploadPolicy) -> usize {
        self.get()
            .await
            .abort_leftover_uploads(object, policy)
            .await
    }

    async fn put_object(
        &self,
        object: &ObjectSpec,
        body: Bytes,
        policy: &UploadPolicy,
    ) -> Result<UploadReceipt, UploadError> {
        self.get().await.put_object(object, body, policy).await
    }

    async fn writer_id(&self, bucket: &str) -> Result<String, UploadError> {
        self.get().await.writer_id(bucket).await
    }
}

impl<T: ReportSink> ReportSink for OnFirstUse<T> {
    async fn send(&self, report: &AgentReport) -> Result<(), String> {
        self.get().await.send(report).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn made_once_on_first_use_and_not_before() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let lazy = OnFirstUse::new(move || {
            let counter = counter.clone();
            async move { counter.fetch_add(1, Ordering::SeqCst) + 41 }
        });
        assert_eq!(made.load(Ordering::SeqCst), 0);
        assert_eq!(*lazy.get().await, 41);
        assert_eq!(*lazy.get().await, 41);
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }
}
