//! Name resolution for the HTTP agents. ureq resolves the host before every request,
//! even one that reuses a pooled connection, and with a resolve timeout (which we set:
//! a dead DNS server must not hang an upload) it does so on a new thread each time: one
//! thread spawned per small file uploaded. This resolver keeps each host's addresses for
//! [`TTL`] instead, so a busy uploader resolves a few times a minute.
//!
//! (It uses ureq's `unversioned` resolver API, which may change in a minor release of
//! ureq: a compile error here after an update is where to look.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long resolved addresses are used. S3 endpoints rotate their addresses; pooled
/// connections outlive this anyway, it only matters for new ones.
pub const TTL: Duration = Duration::from_secs(30);
/// Hosts remembered at once (an agent talks to one or two).
const MAX_HOSTS: usize = 8;

#[derive(Debug, Default)]
pub struct Cached {
    inner: DefaultResolver,
    hosts: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for Cached {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        let now = Instant::now();
        {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, addrs)) = hosts.get(&key)
                && now.saturating_duration_since(*at) < TTL
            {
                return Ok(addrs.clone());
            }
        }
        // Not under the lock: a slow lookup must not hold up the other uploaders.
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(&key) {
            hosts.clear();
        }
        hosts.insert(key, (now, addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_kept_for_the_ttl_and_per_host() {
        let r = Cached::default();
        let config = Config::default();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::NotHappening,
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let uri: Uri = "http://127.0.0.1:9000/bucket/key".parse().expect("uri");
        let first = r.resolve(&uri, &config, timeout).expect("resolve");
        assert_eq!(first[0].to_string(), "127.0.0.1:9000");
        let other: Uri = "http://127.0.0.1:9001/x".parse().expect("uri");
        let second = r.resolve(&other, &config, timeout).expect("resolve");
        assert_eq!(second[0].port(), 9001, "per host and port");
        assert_eq!(r.hosts.lock().expect("lock").len(), 2);
        // A stale entry is looked up again.
        r.hosts
            .lock()
            .expect("lock")
            .values_mut()
            .for_each(|(at, _)| *at -= TTL);
        r.resolve(&uri, &config, timeout).expect("resolve");
        let fresh = r
            .hosts
            .lock()
            .expect("lock")
            .values()
            .filter(|(at, _)| at.elapsed() < TTL)
            .count();
        assert_eq!(fresh, 1);
    }
}
