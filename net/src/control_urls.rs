//! Several control-plane URLs with failover: hosts, routers, relays and the CLI take a
//! comma-separated list, send each request to the URL that worked last, and move on to the next
//! one when a request fails in a way another control plane may not (the connection failed or
//! timed out, or the control plane answered 503). What counts as such a failure is decided by
//! each caller's error type ([`Failover`]), never by the text of an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a list of control-plane URLs was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlUrlsError {
    /// No URL was given.
    #[error("no control-plane URL given")]
    Empty,
    /// One entry is not an http:// or https:// URL.
    #[error("control-plane URL {0:?} must start with http:// or https://")]
    Scheme(String),
}

/// Whether a failed request should be tried again on the next control plane.
pub trait Failover {
    /// True when another control plane may succeed where this one failed: the connection
    /// failed or timed out, or the control plane answered 503 (it lost its store or is
    /// shutting down). A refusal on the request's merits (4xx, other 5xx) is final.
    fn fail_over(&self) -> bool;
}

/// The control planes one component talks to, and which of them worked last. Cheap to clone;
/// clones share the sticky choice.
#[derive(Debug, Clone)]
pub struct ControlUrls {
    urls: Arc<[String]>,
    current: Arc<AtomicUsize>,
}

impl ControlUrls {
    /// Parse a comma-separated list (spaces around entries ignored, a trailing `/` removed).
    pub fn parse(list: &str) -> Result<ControlUrls, ControlUrlsError> {
        ControlUrls::new(list.split(','))
    }

    /// The control planes in `urls`, each entry possibly itself a comma-separated list (so
    /// repeated flags and lists mix).
    pub fn new<S: AsRef<str>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<ControlUrls, ControlUrlsError> {
        let mut list = Vec::new();
        for entry in urls {
            for url in entry.as_ref().split(',') {
                let url = url.trim().trim_end_matches('/');
                if url.is_empty() {
                    continue;
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ControlUrlsError::Scheme(url.to_string()));
                }
                if !list.iter().any(|u: &String| u == url) {
                    list.push(url.to_string());
                }
            }
        }
        if list.is_empty() {
            return Err(ControlUrlsError::Empty);
        }
        Ok(ControlUrls {
            urls: list.into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The URL requests go to now.
    pub fn current(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// Every URL, in the order given.
    pub fn all(&self) -> &[String] {
        &self.urls
    }

    /// The same control planes as a list of its own whose requests go first to the one at
    /// `index` (round the list): clients given successive indexes spread over the planes, as
    /// hosts configured with different orders do.
    pub fn starting_at(&self, index: usize) -> ControlUrls {
        ControlUrls {
            urls: self.urls.clone(),
            current: Arc::new(AtomicUsize::new(index % self.urls.len())),
        }
    }

    /// Send a request built by `attempt` (given a base URL, owned so the request may keep it)
    /// to the current control plane, and on a failure that [`Failover::fail_over`] to each
    /// other one in turn; the first that answers becomes the current one. The last failure if
    /// all fail.
    pub async fn try_each<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, E>
    where
        E: Failover,
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.try_in_turn(self.urls.len(), |_, base| attempt(base))
            .await
    }

    /// Like [`ControlUrls::try_each`], for `tries` attempts that go round the list from the
    /// current control plane (more tries than URLs try the current one again last), each told
    /// its number: 0 for the current control plane, so a caller may ask the first for more
    /// than the others (a heartbeat is held by the first, answered at once by the others).
    pub async fn try_in_turn<T, E, F, Fut>(&self, tries: usize, mut attempt: F) -> Result<T, E>
    where
        E: Failover,
        F: FnMut(usize, String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let count = self.urls.len();
        let tries = tries.max(1);
        let mut last = None;
        for step in 0..tries {
            let index = (start + step) % count;
            match attempt(step, self.urls[index].clone()).await {
                Ok(answer) => {
                    if index != start % count {
                        // Only move if no other request moved it meanwhile.
                        let _ = self.current.compare_exchange(
                            start,
                            index,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        tracing::info!(control = %self.urls[index], "failed over to this control plane");
                    }
                    return Ok(answer);
                }
                Err(err) if err.fail_over() && step + 1 < tries => {
                    tracing::debug!(control = %self.urls[index], "control plane failed; trying the next");
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.expect("at least one URL was tried"))
    }
}

impl std::fmt::Display for ControlUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.urls.join(","))
    }
}

impl std::str::FromStr for ControlUrls {
    type Err = ControlUrlsError;

    fn from_str(list: &str) -> Result<ControlUrls, ControlUrlsError> {
        ControlUrls::parse(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Err {
        Down,
        Refused,
    }

    impl Failover for Err {
        fn fail_over(&self) -> bool {
            *self == Err::Down
        }
    }

    #[test]
    fn lists_are_parsed_trimmed_and_deduplicated() {
        let urls = ControlUrls::new(["http://a:1/, http://b:2", "http://a:1,http://c:3"]).unwrap();
        assert_eq!(urls.all(), ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(urls.to_string(), "http://a:1,http://b:2,http://c:3");
        assert_eq!(
            ControlUrls::parse(" , ").unwrap_err(),
            ControlUrlsError::Empty
        );
        assert!(matches!(
            ControlUrls::parse("a:1"),
            Err(ControlUrlsError::Scheme(_))
        ));
    }

    #[test]
    fn a_list_started_elsewhere_goes_first_there_and_moves_on_its_own() {
        let urls = ControlUrls::parse("http://a,http://b,http://c").unwrap();
        let second = urls.starting_at(1);
        assert_eq!(second.current(), "http://b");
        assert_eq!(urls.starting_at(5).current(), "http://c", "round the list");
        second.current.store(2, Ordering::Relaxed);
        assert_eq!(urls.current(), "http://a", "the original list did not move");
        assert_eq!(second.all(), urls.all());
    }

    #[tokio::test]
    async fn a_down_control_plane_is_skipped_and_the_next_one_sticks() {
        let urls = ControlUrls::parse("http://a,http://b,http://c").unwrap();
        let mut tried = Vec::new();
        let answer = urls
            .try_each(|url| {
                tried.push(url.to_string());
                async move {
                    if url == "http://a" {
                        Err(Err::Down)
                    } else {
                        Ok(url.len())
                    }
                }
            })
            .await;
        assert_eq!(answer, Ok(8));
        assert_eq!(tried, ["http://a", "http://b"]);
        assert_eq!(urls.current(), "http://b", "the one that answered sticks");
    }

    #[tokio::test]
    async fn a_refusal_on_the_merits_is_not_retried_elsewhere() {
        let urls = ControlUrls::parse("http://a,http://b").unwrap();
        let mut tried = 0;
        let answer: Result<(), Err> = urls
            .try_each(|_| {
                tried += 1;
                async { Err(Err::Refused) }
            })
            .await;
        assert_eq!(answer, Err(Err::Refused));
        assert_eq!(tried, 1);
        assert_eq!(urls.current(), "http://a");
    }

    #[tokio::test]
    async fn extra_tries_go_round_to_the_current_one_again() {
        let urls = ControlUrls::parse("http://a,http://b").unwrap();
        let mut tried = Vec::new();
        let answer = urls
            .try_in_turn(3, |step, url| {
                tried.push((step, url.clone()));
                async move { if step < 2 { Err(Err::Down) } else { Ok(url) } }
            })
            .await;
        assert_eq!(answer, Ok("http://a".to_string()));
        assert_eq!(
            tried,
            [
                (0, "http://a".into()),
                (1, "http://b".into()),
                (2, "http://a".into())
            ]
        );
        assert_eq!(
            urls.current(),
            "http://a",
            "answered by the current one: no move"
        );
    }

    #[tokio::test]
    async fn when_all_are_down_the_last_failure_is_returned() {
        let urls = ControlUrls::parse("http://a,http://b").unwrap();
        let answer: Result<(), Err> = urls.try_each(|_| async { Err(Err::Down) }).await;
        assert_eq!(answer, Err(Err::Down));
    }
}
