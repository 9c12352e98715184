//! Object keys from the operator's template, e.g.
//! `{prefix}/{asg}/{instance_id}/{principal}/{timestamp}-{reason}.{ext}`.
//!
//! `{principal}` is the id AWS knows the writer by (`aws:userid`: `ROLEID:i-…` for an instance
//! role). It is the one level of the key an IAM policy can tie to the caller
//! (`lifeguard/*/${aws:userid}/*`), so an instance can write only beneath its own.

const PLACEHOLDERS: [&str; 7] = [
    "prefix",
    "asg",
    "instance_id",
    "principal",
    "timestamp",
    "reason",
    "ext",
];

/// What a key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub prefix: &'a str,
    pub asg: &'a str,
    pub instance_id: &'a str,
    /// The writer's `aws:userid`; empty when the template does not use it.
    pub principal: &'a str,
    /// Compact UTC, sortable: `20261122T101500Z`.
    pub timestamp: &'a str,
    pub reason: &'a str,
    /// The archive's file extension for its compression: `tar.gz`, `tar.zst` or `tar`.
    pub ext: &'a str,
}

/// Refuses unknown placeholders and unbalanced braces.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {template:?}"))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched `}}` in {template:?}"));
    }
    if template.trim_matches('/').is_empty() {
        return Err("the template makes an empty key".to_string());
    }
    Ok(())
}

/// Whether rendering the template needs the writer's id (one STS call, made once).
pub fn needs_principal(template: &str) -> bool {
    template.contains("{principal}")
}

/// Renders a checked template. Values are made safe for a key segment: a `/` inside a group
/// name must not create a new level.
pub fn render(template: &str, parts: &KeyParts<'_>) -> String {
    let safe = |value: &str| -> String {
        value
            .chars()
            .map(|c| if c == '/' || c.is_control() { '_' } else { c })
            .collect()
    };
    let key = template
        .replace("{prefix}", parts.prefix.trim_matches('/'))
        .replace("{asg}", &safe(parts.asg))
        .replace("{instance_id}", &safe(parts.instance_id))
        .replace("{principal}", &safe(parts.principal))
        .replace("{timestamp}", &safe(parts.timestamp))
        .replace("{reason}", &safe(parts.reason))
        .replace("{ext}", &safe(parts.ext));
    // An empty prefix must not leave a leading or doubled slash.
    let mut cleaned = String::with_capacity(key.len());
    for segment in key.split('/').filter(|s| !s.is_empty()) {
        if !cleaned.is_empty() {
            cleaned.push('/');
        }
        cleaned.push_str(segment);
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(prefix: &'a str, asg: &'a str) -> KeyParts<'a> {
        KeyParts {
            prefix,
            asg,
            instance_id: "i-0abc",
            principal: "AROAEXAMPLEROLEID:i-0abc",
            timestamp: "20261122T101500Z",
            reason: "scale_in",
            ext: "tar.gz",
        }
    }

    #[test]
    fn default_template() {
        let template = "{prefix}/{asg}/{instance_id}/{principal}/{timestamp}-{reason}.tar.gz";
        check_template(template).unwrap();
        assert!(needs_principal(template));
        assert_eq!(
            render(template, &parts("lifeguard", "web")),
            "lifeguard/web/i-0abc/AROAEXAMPLEROLEID:i-0abc/20261122T101500Z-scale_in.tar.gz"
        );
        assert_eq!(
            render(template, &parts("", "team/web")),
            "team_web/i-0abc/AROAEXAMPLEROLEID:i-0abc/20261122T101500Z-scale_in.tar.gz"
        );
    }

    #[test]
    fn a_principal_cannot_add_a_level() {
        let template = "{prefix}/{asg}/{instance_id}/{principal}/{timestamp}.tar";
        let mut hostile = parts("lifeguard", "web");
        hostile.principal = "AROA:i-0abc/../i-0other";
        assert_eq!(
            render(template, &hostile),
            "lifeguard/web/i-0abc/AROA:i-0abc_.._i-0other/20261122T101500Z.tar"
        );
        assert!(!needs_principal(
            "{prefix}/{asg}/{instance_id}/{timestamp}.tar"
        ));
    }

    #[test]
    fn bad_templates() {
        assert!(
            check_template("{prefix}/{host}")
                .unwrap_err()
                .contains("{host}")
        );
        assert!(check_template("{prefix").unwrap_err().contains("unclosed"));
        assert!(check_template("a}b").unwrap_err().contains("unmatched"));
        assert!(check_template("//").is_err());
    }
}
