//! Keeps the chain's credentials fresh. Temporary credentials are refetched on a thread
//! of its own ahead of their expiry (a fifth of their lifetime, at most 5 minutes,
//! before), so uploads never wait for a refresh; a request is never signed with
//! credentials within a second of their expiry: past it, [`Provider::current`] fails
//! (uploads pause, files stay queued) until the source answers again. A source that
//! fails is retried with backoff and jitter (1 s to 5 minutes), logged once when it
//! starts failing, once when the credentials run out, once when it works again.
//! Refused by a server (an expired or invalid token), the credentials are dropped and
//! fetched again at once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Credentials, CredentialsError, Source, process_env};
use crate::retry::{Jitter, backoff};

/// Signing stops this many seconds before the expiry.
const MARGIN_SECS: i64 = 1;
/// Refetched this long before the expiry at most (a fifth of the lifetime if less).
const AHEAD_SECS: i64 = 300;
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long a caller waits for a first fetch (or one asked for) before failing.
const FIRST_WAIT: Duration = Duration::from_secs(20);

pub struct Provider {
    source: Source,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    current: Option<Credentials>,
    /// Signing-clock second of the last successful fetch.
    fetched_at: i64,
    /// While the source fails: why (logged once per change).
    failing: Option<String>,
    failures: u32,
    next_try: Option<Instant>,
    /// A fetch at once (a caller waits for one, or a server refused the token); while
    /// the source fails, its backoff still holds.
    asked: bool,
    /// Fetches finished, for callers waiting on one.
    attempts: u64,
    expired_logged: bool,
    jitter: Option<Jitter>,
}

impl Provider {
    /// The chain's source for this process, its credentials read (static sources) or
    /// kept fresh by a thread (temporary ones).
    pub fn resolve(
        profile: Option<&str>,
        iot: Option<&super::IotConfig>,
    ) -> Result<Arc<Provider>, CredentialsError> {
        let source = Source::choose(profile, iot, &process_env)?;
        Provider::start(source)
    }

    pub fn start(source: Source) -> Result<Arc<Provider>, CredentialsError> {
        let mut state = State::default();
        if let Source::Static(_) = source {
            state.current = Some(source.fetch(&process_env)?);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        state.jitter = Some(Jitter::new(seed));
        let provider = Arc::new(Provider {
            source,
            state: Mutex::new(state),
            changed: Condvar::new(),
        });
        if !matches!(provider.source, Source::Static(_)) {
            let weak = Arc::downgrade(&provider);
            std::thread::Builder::new()
                .name("credentials".into())
                .spawn(move || refresher(&weak))
                .map_err(|e| CredentialsError::Setup(format!("credentials thread: {e}")))?;
        }
        Ok(provider)
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Temporary credentials from a provider (not fixed keys).
    pub fn is_temporary(&self) -> bool {
        !matches!(self.source, Source::Static(_))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Credentials valid for signing now; for a first fetch (or one asked for), waits
    /// for it. Fails while none are valid.
    pub fn current(&self) -> Result<Credentials, CredentialsError> {
        let mut st = self.lock();
        let deadline = Instant::now() + FIRST_WAIT;
        loop {
            let now = crate::clock::signing_now();
            if let Some(c) = st.current.as_ref().filter(|c| usable(c, now)) {
                return Ok(c.clone());
            }
            let waiting = st.failing.is_none() && !matches!(self.source, Source::Static(_));
            if !waiting || Instant::now() >= deadline {
                return Err(self.unavailable(&mut st));
            }
            st.asked = true;
            self.changed.notify_all();
            let seen = st.attempts;
            while st.attempts == seen && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                st = self
                    .changed
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }

    fn unavailable(&self, st: &mut State) -> CredentialsError {
        let why = match (&st.failing, &st.current) {
            (Some(why), _) => why.clone(),
            (None, Some(_)) => "they expired".into(),
            (None, None) => "no answer yet".into(),
        };
        if let Some(c) = &st.current
            && !st.expired_logged
        {
            st.expired_logged = true;
            log::warn!(
                "credentials from {} expired at {}: uploads wait until it answers",
                self.source.describe(),
                when(c.expires)
            );
        }
        CredentialsError::Fetch {
            source: self.source.describe(),
            why,
        }
    }

    /// After a server refused the credentials (an expired or invalid token, or keys an
    /// operator may have fixed): temporary ones are dropped and fetched again at once;
    /// static ones are read again, the old kept if that fails.
    pub fn refresh_now(&self) {
        if let Source::Static(_) = self.source {
            match self.source.fetch(&process_env) {
                Ok(c) => self.lock().current = Some(c),
                Err(e) => log::warn!("keeping the current credentials: {e}"),
            }
            return;
        }
        let mut st = self.lock();
        st.current = None;
        st.asked = true;
        self.changed.notify_all();
    }

    /// A fetch whose panic (ureq's TLS set-up panics on a device certificate rustls
    /// cannot use, an X.509 v1 one say) is an error naming it, not a dead refresher.
    fn fetch_guarded(&self) -> Result<Credentials, CredentialsError> {
        let fetch = std::panic::AssertUnwindSafe(|| self.source.fetch(&process_env));
        std::panic::catch_unwind(fetch).unwrap_or_else(|panic| {
            let said = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no reason given");
            Err(CredentialsError::Fetch {
                source: self.source.describe(),
                why: format!("its client could not be set up: {said}"),
            })
        })
    }

    /// One step of the refresher: a wait, or a fetch.
    fn step(&self) {
        let st = self.lock();
        if let Some(wait) = self.wait_for(&st) {
            let _unused = self
                .changed
                .wait_timeout(st, wait.min(Duration::from_secs(5)));
            return;
        }
        drop(st);
        let fetched = self.fetch_guarded().and_then(|c| self.fresh(c));
        let mut st = self.lock();
        st.asked = false;
        st.attempts += 1;
        self.settle(&mut st, fetched);
        self.changed.notify_all();
    }

    /// How long until the next fetch is due; `None`: now.
    fn wait_for(&self, st: &State) -> Option<Duration> {
        if st.asked && st.failing.is_none() {
            return None;
        }
        if let Some(t) = st.next_try {
            let now = Instant::now();
            return (now < t).then(|| t - now);
        }
        let c = st.current.as_ref()?;
        let Some(expires) = c.expires else {
            return Some(Duration::from_secs(3600));
        };
        let ahead = ((expires - st.fetched_at) / 5).clamp(0, AHEAD_SECS);
        let left = expires - ahead - crate::clock::signing_now();
        (left > 0).then(|| Duration::from_secs(left as u64))
    }

    /// Credentials already past their expiry by the signing clock are an error (else the
    /// refresher would fetch again at once, and again).
    fn fresh(&self, c: Credentials) -> Result<Credentials, CredentialsError> {
        let now = crate::clock::signing_now();
        if usable(&c, now) {
            return Ok(c);
        }
        Err(CredentialsError::Fetch {
            source: self.source.describe(),
            why: format!(
                "it handed out credentials that expire at {}, already past by this clock ({})",
                when(c.expires),
                when(Some(now))
            ),
        })
    }

    fn settle(&self, st: &mut State, fetched: Result<Credentials, CredentialsError>) {
        match fetched {
            Ok(c) => {
                if st.failing.take().is_some() {
                    log::info!(
                        "credentials from {} again, valid until {}",
                        self.source.describe(),
                        when(c.expires)
                    );
                } else {
                    log::debug!("credentials refreshed, valid until {}", when(c.expires));
                }
                st.current = Some(c);
                st.fetched_at = crate::clock::signing_now();
                st.failures = 0;
                st.next_try = None;
                st.expired_logged = false;
            }
            Err(e) => {
                st.failures += 1;
                let jitter = st.jitter.get_or_insert_with(|| Jitter::new(1));
                st.next_try =
                    Some(Instant::now() + backoff(st.failures, RETRY_FIRST, RETRY_MAX, jitter));
                let why = match &e {
                    CredentialsError::Fetch { why, .. } => why.clone(),
                    other => other.to_string(),
                };
                if st.failing.as_deref() != Some(why.as_str()) {
                    let now = crate::clock::signing_now();
                    let meanwhile = match st.current.as_ref().filter(|c| usable(c, now)) {
                        Some(c) => format!("the current ones serve until {}", when(c.expires)),
                        None => "uploads wait".into(),
                    };
                    log::warn!("{e}; {meanwhile}; trying again with backoff");
                }
                st.failing = Some(why);
            }
        }
    }
}

/// Valid for a request signed now.
fn usable(c: &Credentials, now: i64) -> bool {
    c.expires.is_none_or(|e| now + MARGIN_SECS < e)
}

fn when(expires: Option<i64>) -> String {
    match expires.and_then(|e| jiff::Timestamp::from_second(e).ok()) {
        Some(t) => t.to_string(),
        None => "never".into(),
    }
}

fn refresher(weak: &Weak<Provider>) {
    while let Some(p) = weak.upgrade() {
        p.step();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_until_a_second_before_expiry() {
        let c = Credentials {
            access_key_id: "A".into(),
            secret_access_key: "S".into(),
            session_token: None,
            source: String::new(),
            expires: Some(100),
        };
        assert!(usable(&c, 98));
        assert!(!usable(&c, 99));
        assert!(usable(&Credentials { expires: None, ..c }, i64::MAX - 5));
    }
}
