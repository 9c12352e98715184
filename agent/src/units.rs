//! The systemd ordering between the agent and the services its drain stops: each `stop_unit`
//! unit starts after the agent and so, at shutdown, stops before it, while the agent still
//! runs to archive what the service wrote while stopping. Written as a drop-in for the agent's
//! unit at image-bake time (`lifeguard-agent order-units`), from the same configuration the
//! agent reads.

use std::path::{Path, PathBuf};

use crate::config::AgentConfig;

/// The drop-in's path under a unit directory.
pub fn drop_in_path(unit_dir: &Path) -> PathBuf {
    unit_dir
        .join("lifeguard-agent.service.d")
        .join("50-drained-units.conf")
}

/// The drop-in for `config`; `None` when no step stops a unit.
pub fn drop_in(config: &AgentConfig, config_path: &Path) -> Option<String> {
    let units: Vec<&str> = config
        .drain
        .steps
        .iter()
        .filter_map(|s| s.stop_unit.as_deref())
        .collect();
    if units.is_empty() {
        return None;
    }
    Some(format!(
        "# Written by `lifeguard-agent order-units` from {}: the units the drain stops start after\n\
         # the agent and, at shutdown, stop before it. Run it again after changing the steps.\n\
         [Unit]\nBefore={}\n",
        config_path.display(),
        units.join(" ")
    ))
}

/// Whether `name` is a unit name systemd accepts with one of the suffixes a drain stops:
/// nothing that could end a line or a list in a unit file, or be read as an option.
pub fn is_unit_name(name: &str) -> bool {
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    let known = matches!(
        suffix,
        "service" | "socket" | "target" | "timer" | "path" | "scope" | "mount"
    );
    known
        && !stem.is_empty()
        && !stem.starts_with('-')
        && name.len() <= 255
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

/// Writes (or, with no `stop_unit` step, removes) the drop-in under `unit_dir`; what it did.
pub fn write(config: &AgentConfig, config_path: &Path, unit_dir: &Path) -> std::io::Result<String> {
    let path = drop_in_path(unit_dir);
    match drop_in(config, config_path) {
        Some(text) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
            Ok(format!(
                "wrote {}; run `systemctl daemon-reload`",
                path.display()
            ))
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => Ok(format!(
                "no step stops a unit: removed {}; run `systemctl daemon-reload`",
                path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok("no step stops a unit: nothing to order".to_string())
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_that_could_inject_into_a_unit_file_are_refused() {
        for good in [
            "app.service",
            "nginx.service",
            "getty@tty1.service",
            "web-2.socket",
        ] {
            assert!(is_unit_name(good), "{good}");
        }
        for bad in [
            "app",
            ".service",
            "app.service\nExecStartPre=/bin/sh",
            "a b.service",
            "--now.service",
            "app.exe",
            "app/../x.service",
            "",
        ] {
            assert!(!is_unit_name(bad), "{bad:?}");
        }
    }
}
