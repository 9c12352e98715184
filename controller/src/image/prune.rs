//! Which versions and images prune may delete: never the default, `$Latest`, a pinned version
//! or an image something still uses.

use std::collections::BTreeSet;

use super::api::{ImageApi, TemplateView, VersionView};
use super::pipeline::IMAGE_TEMPLATE_TAG;
use crate::fleet::FleetError;

/// The versions to delete: all but the newest `keep`, the default, the latest and the pinned.
pub fn prunable(
    versions: &[VersionView],
    template: &TemplateView,
    pinned: &BTreeSet<i64>,
    keep: u32,
) -> Vec<i64> {
    let mut numbers: Vec<i64> = versions.iter().map(|v| v.number).collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let mut doomed: Vec<i64> = numbers
        .into_iter()
        .skip(keep)
        .filter(|n| {
            *n != template.default_version && *n != template.latest_version && !pinned.contains(n)
        })
        .collect();
    doomed.sort_unstable();
    doomed
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub versions: Vec<i64>,
    /// Versions EC2 refused to delete, with its reason.
    pub refused: Vec<(i64, String)>,
    pub images: Vec<String>,
    pub snapshots: Vec<String>,
}

/// Deletes the prunable versions and, if `deregister`, the images only they used, made by
/// lifeguard for this template (tagged [`IMAGE_TEMPLATE_TAG`]), with their snapshots.
pub async fn prune<A: ImageApi>(
    api: &A,
    template: &TemplateView,
    keep: u32,
    deregister: bool,
) -> Result<Pruned, FleetError> {
    let versions = api.versions(&template.id).await?;
    let pinned = api.pinned_versions(template).await?;
    let doomed = prunable(&versions, template, &pinned, keep);
    let mut pruned = Pruned::default();
    if !doomed.is_empty() {
        pruned.refused = api.delete_versions(&template.id, &doomed).await?;
        pruned.versions = doomed
            .iter()
            .copied()
            .filter(|n| !pruned.refused.iter().any(|(r, _)| r == n))
            .collect();
    }
    if !deregister || pruned.versions.is_empty() {
        return Ok(pruned);
    }
    let deleted: BTreeSet<i64> = pruned.versions.iter().copied().collect();
    let mut still_used: BTreeSet<String> = versions
        .iter()
        .filter(|v| !deleted.contains(&v.number))
        .filter_map(|v| v.image_id.clone())
        .collect();
    still_used.extend(api.launch_configuration_images().await?);
    let candidates: BTreeSet<String> = versions
        .iter()
        .filter(|v| deleted.contains(&v.number))
        .filter_map(|v| v.image_id.clone())
        .filter(|image| !still_used.contains(image))
        .collect();
    for image_id in candidates {
        let Some(image) = api.image(&image_id).await? else {
            continue;
        };
        if image.tags.get(IMAGE_TEMPLATE_TAG) != Some(&template.id) {
            // Not baked by lifeguard for this template: someone else's to remove.
            continue;
        }
        api.deregister_image(&image_id).await?;
        pruned.images.push(image_id);
        for snapshot in &image.snapshot_ids {
            api.delete_snapshot(snapshot).await?;
            pruned.snapshots.push(snapshot.clone());
        }
    }
    Ok(pruned)
}
