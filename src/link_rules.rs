//! Which sources may use which link (pure): `links[].min_priority` and the sources'
//! `links`, as the planner (what to dispatch) and the uploaders (whether a body may
//! go) both read them. The daemon builds them from the config.

use std::collections::HashMap;

/// One configured link's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub daily_bytes: Option<u64>,
    pub min_priority: Option<i32>,
}

/// A source's priority and the links it may use (`None`: every link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRule {
    pub priority: i32,
    pub links: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkRules {
    pub links: Vec<Rule>,
    pub sources: HashMap<String, SourceRule>,
}

impl LinkRules {
    /// No `links` configured: every source uses whatever network there is, unlimited.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether `source`'s files may go over `link` (budget aside).
    pub fn may_use(&self, source: &str, link: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(src) = self.sources.get(source) else {
            return false;
        };
        if src
            .links
            .as_ref()
            .is_some_and(|allowed| !allowed.iter().any(|l| l == link))
        {
            return false;
        }
        let floor = self
            .links
            .iter()
            .find(|r| r.name == link)
            .and_then(|r| r.min_priority);
        floor.is_none_or(|min| src.priority >= min)
    }

    pub fn daily_bytes(&self, link: &str) -> Option<u64> {
        self.links
            .iter()
            .find(|r| r.name == link)
            .and_then(|r| r.daily_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> LinkRules {
        let rule = |name: &str, daily_bytes, min_priority| Rule {
            name: name.into(),
            daily_bytes,
            min_priority,
        };
        let src = |priority, links: Option<&[&str]>| SourceRule {
            priority,
            links: links.map(|l| l.iter().map(|s| s.to_string()).collect()),
        };
        LinkRules {
            links: vec![
                rule("depot", None, None),
                rule("cellular", Some(200 << 20), Some(1)),
            ],
            sources: [
                ("logs".to_string(), src(0, None)),
                ("events".to_string(), src(1, None)),
                ("bags".to_string(), src(5, Some(&["depot"]))),
            ]
            .into(),
        }
    }

    #[test]
    fn min_priority_and_a_source_s_links_both_apply() {
        let r = rules();
        assert!(r.may_use("logs", "depot") && r.may_use("logs", "other"));
        assert!(!r.may_use("logs", "cellular"), "below min_priority");
        assert!(r.may_use("events", "cellular"));
        assert!(r.may_use("bags", "depot"));
        assert!(!r.may_use("bags", "cellular") && !r.may_use("bags", "other"));
        assert!(!r.may_use("unknown", "depot"));
        assert_eq!(r.daily_bytes("cellular"), Some(200 << 20));
        assert_eq!(r.daily_bytes("depot"), None);
        assert_eq!(r.daily_bytes("other"), None);
    }

    #[test]
    fn without_links_everything_goes_everywhere() {
        let r = LinkRules::default();
        assert!(r.is_empty() && r.may_use("anything", "other"));
    }
}
