//! Links and daily byte budgets (SPEC.md, "Links, byte budgets and on-demand
//! requests"): which network uploads go over now, and what each link carried today.
//!
//! [`Links`] is shared by the uploaders and the `links` thread. The thread
//! ([`LinkWatch`]) re-reads the default route when netlink rings (and every
//! [`REREAD`] at the latest), and tells the planner the link, the local day and whether
//! its budget is spent ([`LinkNow`]) whenever one of them changes. An uploader asks
//! [`Links::admit`] before each body (a file or a part): the link must be one the
//! file's source may use and the body must fit in what is left of the day's budget;
//! the body's bytes are then written to the ledger before they go.

pub mod ledger;
mod netlink;
pub mod route;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::{Config, OTHER_LINK};
use crate::link_rules::{LinkRules, Rule, SourceRule};
use crate::pattern::Pattern;
use crate::planner::{Hold, LinkNow};
use crate::status::{LinkUsage, LinkView};
use ledger::Ledger;

/// The route tables are read again at least this often, netlink or not.
pub const REREAD: Duration = Duration::from_secs(10);
/// How often the thread looks at the day and the budgets between route changes.
const TICK_MS: i32 = 1000;

/// A link's bytes today, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub name: String,
    pub used: u64,
    pub daily_bytes: Option<u64>,
}

#[derive(Debug)]
pub struct Links {
    rules: LinkRules,
    /// Each configured link's interface globs, in config order (the first match wins).
    interfaces: Vec<(String, Vec<Pattern>)>,
    utc_offset_seconds: i64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: String,
    iface: Option<String>,
    ledger: Option<Ledger>,
    /// Bytes per link not yet published as `LinkBytes`.
    unpublished: BTreeMap<String, u64>,
}

impl Links {
    /// No `links` configured: every body is admitted and nothing is counted.
    pub fn none() -> Links {
        Links {
            rules: LinkRules::default(),
            interfaces: Vec::new(),
            utc_offset_seconds: 0,
            inner: Mutex::new(Inner {
                current: OTHER_LINK.to_string(),
                iface: None,
                ledger: None,
                unpublished: BTreeMap::new(),
            }),
        }
    }

    /// The config's links, with the ledger in its state dir (none without links).
    pub fn from_config(config: &Config) -> Result<Links, String> {
        if config.links.is_empty() {
            return Ok(Links::none());
        }
        let links = Links::configured(config);
        let ledger = Ledger::open(&config.state_dir, links.day()).map_err(|e| {
            format!(
                "{}: {e}",
                config.state_dir.join(ledger::LEDGER_FILE).display()
            )
        })?;
        links.lock().ledger = Some(ledger);
        links.update(true);
        Ok(links)
    }

    /// For `status` while no daemon runs: the links, the route now and the ledger as it
    /// is, nothing written. `None` without links.
    pub fn read_only(config: &Config) -> Option<Links> {
        if config.links.is_empty() {
            return None;
        }
        let links = Links::configured(config);
        links.lock().ledger = Some(Ledger::read(&config.state_dir, links.day()));
        links.update(true);
        Some(links)
    }

    fn configured(config: &Config) -> Links {
        let mut links = Links::none();
        links.rules = rules(config);
        links.interfaces = config
            .links
            .iter()
            .map(|l| (l.name.clone(), l.interfaces.clone()))
            .collect();
        links.utc_offset_seconds = config
            .schedule
            .as_ref()
            .map_or(0, |s| i64::from(s.utc_offset_seconds));
        links
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The local day (at `schedule.utc_offset`) by the schedule's clock.
    pub fn day(&self) -> i64 {
        (crate::clock::schedule_now() + self.utc_offset_seconds).div_euclid(86_400)
    }

    /// The link of interface `iface` (`None`: no default route).
    pub fn link_of(&self, iface: Option<&str>) -> String {
        iface
            .and_then(|i| {
                self.interfaces
                    .iter()
                    .find(|(_, globs)| globs.iter().any(|g| g.matches(i)))
            })
            .map_or_else(|| OTHER_LINK.to_string(), |(name, _)| name.clone())
    }

    /// Reads the default route again when `reread`, and returns the link now.
    pub fn update(&self, reread: bool) -> LinkNow {
        if reread && self.enabled() {
            let iface = route::default_interface();
            let name = self.link_of(iface.as_deref());
            let mut g = self.lock();
            g.current = name;
            g.iface = iface;
        }
        self.now()
    }

    /// The link now, the day, and whether the link's budget is spent.
    pub fn now(&self) -> LinkNow {
        let day = self.day();
        let mut g = self.lock();
        let name = g.current.clone();
        let used = g.ledger.as_mut().map_or(0, |l| l.used(&name, day));
        let spent = self.rules.daily_bytes(&name).is_some_and(|d| used >= d);
        LinkNow { name, day, spent }
    }

    /// The interface carrying the default route, as last read.
    pub fn interface(&self) -> Option<String> {
        self.lock().iface.clone()
    }

    /// May a body of `len` bytes of `source`'s file go now? If so its bytes are counted
    /// (and written to the ledger) before it goes. A requested file (an on-demand
    /// request) goes over any link, whatever the budget; its bytes count all the same.
    pub fn admit(&self, source: &str, requested: bool, len: u64) -> Result<(), Hold> {
        if !self.enabled() {
            return Ok(());
        }
        let day = self.day();
        let mut g = self.lock();
        let link = g.current.clone();
        let daily = self.rules.daily_bytes(&link);
        let Inner {
            ledger,
            unpublished,
            ..
        } = &mut *g;
        let Some(ledger) = ledger.as_mut() else {
            return Ok(());
        };
        if !requested {
            if !self.rules.may_use(source, &link) {
                return Err(Hold::Link);
            }
            if daily.is_some_and(|d| ledger.used(&link, day) + len > d) {
                return Err(Hold::Budget);
            }
        }
        if let Err(e) = ledger.add(&link, len, day, daily.is_some()) {
            log::warn!("links: recording {len} bytes on {link}: {e}");
        }
        *unpublished.entry(link).or_insert(0) += len;
        Ok(())
    }

    /// Every configured link's bytes today (and `other`'s, if it carried any).
    pub fn usage(&self) -> Vec<Usage> {
        let day = self.day();
        let mut g = self.lock();
        let used = g.ledger.as_mut().map(|l| l.all(day)).unwrap_or_default();
        let mut out: Vec<Usage> = self
            .rules
            .links
            .iter()
            .map(|r| Usage {
                name: r.name.clone(),
                used: used.get(&r.name).copied().unwrap_or(0),
                daily_bytes: r.daily_bytes,
            })
            .collect();
        if let Some(&n) = used.get(OTHER_LINK) {
            out.push(Usage {
                name: OTHER_LINK.to_string(),
                used: n,
                daily_bytes: None,
            });
        }
        out
    }

    /// The configured links' names.
    pub fn names(&self) -> Vec<String> {
        self.rules.links.iter().map(|r| r.name.clone()).collect()
    }

    /// Bytes per link since the last call (for `LinkBytes`).
    pub fn take_unpublished(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.lock().unpublished)
    }

    /// Links whose budget is spent today (for `BudgetExhausted`).
    pub fn exhausted(&self) -> u64 {
        self.usage()
            .iter()
            .filter(|u| u.daily_bytes.is_some_and(|d| u.used >= d))
            .count() as u64
    }
}

/// The link now and each link's bytes today, for `status`.
pub fn view(links: &Links) -> LinkView {
    LinkView {
        current: links.now().name,
        interface: links.interface(),
        links: links
            .usage()
            .into_iter()
            .map(|u| LinkUsage {
                left_today: u.daily_bytes.map(|d| d.saturating_sub(u.used)),
                name: u.name,
                used_today: u.used,
                daily_bytes: u.daily_bytes,
            })
            .collect(),
    }
}

/// What the planner and the uploaders need of the config's links.
pub fn rules(config: &Config) -> LinkRules {
    LinkRules {
        links: config
            .links
            .iter()
            .map(|l| Rule {
                name: l.name.clone(),
                daily_bytes: l.daily_bytes,
                min_priority: l.min_priority,
            })
            .collect(),
        sources: config
            .sources
            .iter()
            .map(|s| {
                let rule = SourceRule {
                    priority: s.priority,
                    links: s.links.clone(),
                };
                (s.name.clone(), rule)
            })
            .collect(),
    }
}

/// The `links` thread; dropping it stops and joins it.
pub struct LinkWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LinkWatch {
    /// Follows the default route and sends each change of the link, the day or the
    /// budget's state to `tx` (the first at once).
    pub fn spawn(links: Arc<Links>, tx: Sender<LinkNow>) -> std::io::Result<LinkWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("links".into())
            .spawn(move || follow(&links, &tx, &flag))?;
        Ok(LinkWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow(links: &Links, tx: &Sender<LinkNow>, stop: &AtomicBool) {
    let mut events = match netlink::RouteEvents::open() {
        Ok(e) => Some(e),
        Err(e) => {
            log::warn!(
                "links: no netlink socket ({e}); the default route is read every {}s",
                REREAD.as_secs()
            );
            None
        }
    };
    let mut last: Option<LinkNow> = None;
    let mut read_at = Instant::now();
    let mut changed = true;
    while !stop.load(Ordering::Relaxed) {
        let reread = changed || read_at.elapsed() >= REREAD;
        if reread {
            read_at = Instant::now();
        }
        let now = links.update(reread);
        if last.as_ref() != Some(&now) {
            report(links, last.as_ref(), &now);
            if tx.send(now.clone()).is_err() {
                return;
            }
            last = Some(now);
        }
        changed = match events.as_mut().map(|e| e.wait(TICK_MS)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                log::warn!(
                    "links: netlink: {e}; the default route is read every {}s",
                    REREAD.as_secs()
                );
                events = None;
                false
            }
            None => {
                std::thread::sleep(Duration::from_millis(TICK_MS as u64));
                false
            }
        };
    }
}

/// One log line per change a reader cares about.
fn report(links: &Links, before: Option<&LinkNow>, now: &LinkNow) {
    let iface = links
        .interface()
        .unwrap_or_else(|| "no default route".into());
    match before {
        Some(b) if b.name == now.name && b.day != now.day => {
            log::info!("links: a new day: budgets start again");
        }
        Some(b) if b.name == now.name && now.spent && !b.spent => {
            log::warn!(
                "links: the daily budget of {} is spent: it carries only requested files until midnight",
                now.name
            );
        }
        Some(b) if b.name == now.name => {}
        _ => log::info!(
            "links: uploading over {} ({iface}){}",
            now.name,
            if now.spent {
                "; its daily budget is spent"
            } else {
                ""
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).expect("src");
        let text = format!(
            r#"{{"vehicle_id":"v","state_dir":{:?},
                "sources":[{{"name":"hi","path":{:?},"priority":1}},
                           {{"name":"lo","path":{:?},"recursive":false,"include":["*.x"]}}],
                "s3":{{"bucket":"bkt01","region":"us-east-1"}},
                "links":[{{"name":"any","interfaces":["*"],"daily_bytes":1000,"min_priority":1}}]}}"#,
            dir.join("state"),
            src,
            dir.join("src2"),
        );
        std::fs::create_dir_all(dir.join("src2")).expect("src2");
        Config::parse(&text, &|_| None).expect("config")
    }

    #[test]
    fn admit_counts_bodies_and_refuses_as_the_rules_and_the_budget_say() {
        let dir = std::env::temp_dir().join(format!("tvm-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).expect("dir");
        let c = config(&dir);
        let links = Links::from_config(&c).expect("links");
        assert!(links.enabled());
        // Whatever this machine's route is, the link is `any` from here.
        links.lock().current = "any".into();
        assert_eq!(
            links.admit("lo", false, 10),
            Err(Hold::Link),
            "min_priority"
        );
        assert_eq!(links.admit("hi", false, 600), Ok(()));
        assert_eq!(links.admit("hi", false, 600), Err(Hold::Budget));
        assert_eq!(links.admit("hi", true, 600), Ok(()), "a request goes");
        assert!(links.now().spent);
        assert_eq!(links.exhausted(), 1);
        assert_eq!(
            links.take_unpublished(),
            BTreeMap::from([("any".into(), 1200)])
        );
        assert!(links.take_unpublished().is_empty(), "taken");
        links.lock().current = OTHER_LINK.into();
        assert_eq!(
            links.admit("lo", false, 5),
            Ok(()),
            "other: no rule, no budget"
        );
        let usage = links.usage();
        assert_eq!(usage.len(), 2, "{usage:?}");
        assert_eq!((usage[1].name.as_str(), usage[1].used), (OTHER_LINK, 5));
        let v = view(&links);
        assert_eq!(v.current, OTHER_LINK);
        assert_eq!(v.links[0].left_today, Some(0));
        drop(links);
        // Read back as `status` does while no daemon runs.
        let again = Links::read_only(&c).expect("links");
        assert_eq!(again.usage()[0].used, 1200);
        assert_eq!(again.names(), ["any"]);
        assert_eq!(again.link_of(Some("wlan0")), "any");
        assert_eq!(again.link_of(None), OTHER_LINK);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_links_every_body_goes_uncounted() {
        let links = Links::none();
        assert!(!links.enabled());
        assert_eq!(links.admit("anything", false, u64::MAX), Ok(()));
        assert!(links.usage().is_empty() && links.take_unpublished().is_empty());
        assert_eq!(links.update(true).name, OTHER_LINK);
    }

    #[test]
    fn a_state_dir_that_cannot_hold_the_ledger_is_named() {
        let dir = std::env::temp_dir().join(format!("tvm-links-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let c = config(&dir);
        // The state dir is a file: the ledger cannot be opened there.
        std::fs::write(dir.join("state"), b"").expect("file");
        let e = Links::from_config(&c).expect_err("no ledger");
        assert!(e.contains("links.jsonl"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
