//! What the drill needs from Auto Scaling, EC2 and S3, behind one narrow trait.

use std::collections::HashMap;

use super::plan::DrillGroup;
use super::verify::ArchiveCheck;
use crate::fleet::FleetError;
use crate::marks::Marks;

/// One look at a drilled instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    /// Auto Scaling's lifecycle state; `None` once the instance has left the group.
    pub state: Option<String>,
    pub marks: Option<Marks>,
}

pub trait DrillApi: Send + Sync {
    fn group(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<DrillGroup>, FleetError>> + Send;

    /// Terminates the instance through its group, so the terminate hooks hold it.
    fn terminate(
        &self,
        instance_id: &str,
        decrement: bool,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// The instances of `instance_ids` as they stand in `group`.
    fn look(
        &self,
        group: &str,
        instance_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Look>, FleetError>> + Send;

    /// Every archive under `prefix`, each verified.
    fn archives(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ArchiveCheck>, FleetError>> + Send;
}
