//! `links` and each source's `links` (SPEC.md, "Links, byte budgets and on-demand
//! requests"): the networks a vehicle uploads over, named by the interfaces that carry
//! them, with a daily byte budget and a lowest priority each may carry.

use serde::Deserialize;
use serde_json::Value;

use super::{ConfigError, Quantity, Source, check_key_part, patterns, size, typed};
use crate::pattern::Pattern;

/// The link of an interface no configured link names, or of no default route.
pub const OTHER_LINK: &str = "other";

#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub name: String,
    /// Interface name globs (`wlan*`, `eth0`).
    pub interfaces: Vec<Pattern>,
    /// Bytes on the wire (after compression) the link may carry per local day.
    pub daily_bytes: Option<u64>,
    /// Only sources with at least this priority use the link.
    pub min_priority: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    name: String,
    interfaces: Vec<String>,
    daily_bytes: Option<Quantity>,
    min_priority: Option<i32>,
}

/// The `links` section: names safe and unique (and not `other`, the implicit link),
/// at least one interface glob each, a budget of at least one byte.
pub(super) fn links_config(raw: Vec<Value>) -> Result<Vec<LinkConfig>, ConfigError> {
    let mut links: Vec<LinkConfig> = Vec::with_capacity(raw.len());
    for (i, value) in raw.into_iter().enumerate() {
        let field = format!("links[{i}]");
        let raw: RawLink = typed(&field, value)?;
        check_key_part(&format!("{field}.name"), &raw.name)?;
        if raw.name == OTHER_LINK {
            return Err(ConfigError::field(
                format!("{field}.name"),
                "\"other\" is the link of every interface no link names: choose another name",
            ));
        }
        if links.iter().any(|l| l.name == raw.name) {
            return Err(ConfigError::field(
                format!("{field}.name"),
                format!("duplicate link name {:?}", raw.name),
            ));
        }
        if raw.interfaces.is_empty() {
            return Err(ConfigError::field(
                format!("{field}.interfaces"),
                "needs at least one interface name or glob (\"wlan*\")",
            ));
        }
        let interfaces = patterns(&format!("{field}.interfaces"), Some(raw.interfaces))?;
        let daily_bytes = match raw.daily_bytes {
            None => None,
            Some(q) => match size(&format!("{field}.daily_bytes"), q)? {
                0 => {
                    return Err(ConfigError::field(
                        format!("{field}.daily_bytes"),
                        "must be above 0 (to keep sources off a link, use min_priority or the \
                         sources' links)",
                    ));
                }
                n => Some(n),
            },
        };
        links.push(LinkConfig {
            name: raw.name,
            interfaces,
            daily_bytes,
            min_priority: raw.min_priority,
        });
    }
    Ok(links)
}

/// Each source's `links` names configured links (or `other`), and is not empty.
pub(super) fn check_source_links(
    sources: &[Source],
    links: &[LinkConfig],
) -> Result<(), ConfigError> {
    for (i, s) in sources.iter().enumerate() {
        let Some(names) = &s.links else {
            continue;
        };
        let field = format!("sources[{i}].links");
        if names.is_empty() {
            return Err(ConfigError::field(
                field,
                "an empty list would keep the source from every link: leave it out for all",
            ));
        }
        if let Some(n) = names
            .iter()
            .find(|n| *n != OTHER_LINK && !links.iter().any(|l| &l.name == *n))
        {
            let known: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            return Err(ConfigError::field(
                field,
                format!(
                    "no link named {n:?} (the config has {}{OTHER_LINK})",
                    known.iter().map(|k| format!("{k}, ")).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}
