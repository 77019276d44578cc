//! Inputs by path or URL: downloads into a cache, resumed with HTTP `Range`
//! after an interruption, retried with backoff, verified against the
//! SHA-256 the user gave.
//!
//! Cache layout: `<cache>/<sha256>/<file name>` — the expected hash names
//! the directory, so a cached file with the right hash is found and used
//! without any request, and a partial download (`<file name>.part`) is
//! resumed where it stopped. A finished download whose hash does not match
//! is deleted. The cache is `--cache-dir`, else `$XDG_CACHE_HOME/nodeimg`,
//! else `~/Library/Caches/nodeimg` on macOS and `~/.cache/nodeimg` elsewhere.

use crate::error::{Error, Result};
use crate::file_hashes::HashCache;
use imagegen::source::{sha256_file, to_hex};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a download reports its progress: `(done, total)` bytes, total when
/// the server said.
pub type OnProgress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

/// A local file ready to read, with its SHA-256 when known.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// As the user gave it (path or URL).
    pub what: String,
    pub sha256: Option<[u8; 32]>,
    /// Whether a URL was served from the cache without a request.
    pub cached: bool,
}

/// Whether `s` is an http(s) URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The default cache directory (see the module documentation).
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("nodeimg"));
    }
    let home = PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library/Caches/nodeimg")
    } else {
        home.join(".cache/nodeimg")
    })
}

/// `--sha256`: 64 hex digits, or a `SHA256SUMS`-style file (`HEX  NAME`
/// lines) in which the line for `name` is taken (or its only line).
pub fn expected_sha256(spec: &str, name: &str) -> Result<[u8; 32]> {
    if let Some(h) = crate::base::manifest::from_hex32(spec) {
        return Ok(h);
    }
    let path = Path::new(spec);
    if !path.is_file() {
        return Err(Error::refused(
            format!("--sha256 {spec:?}"),
            "is neither 64 hex digits nor a SHA256SUMS file",
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let (h, n) = l.trim().split_once(char::is_whitespace)?;
            Some((h, n.trim().trim_start_matches('*')))
        })
        .collect();
    let pick = lines
        .iter()
        .find(|(_, n)| *n == name || Path::new(n).file_name() == Path::new(name).file_name())
        .or(if lines.len() == 1 {
            lines.first()
        } else {
            None
        });
    match pick {
        Some((h, _)) => crate::base::manifest::from_hex32(h)
            .ok_or_else(|| Error::refused(spec, format!("{h:?} is not a SHA-256 (64 hex digits)"))),
        None => Err(Error::refused(spec, format!("no SHA-256 line for {name}"))),
    }
}

/// Options of [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub cache_dir: Option<PathBuf>,
    /// Hash local sources again even when their hash is remembered
    /// (`--rehash`).
    pub rehash: bool,
    /// Attempts per download (the first included).
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            cache_dir: None,
            rehash: false,
            attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Entries the source-hash cache keeps: the sources of the last runs.
const REMEMBERED_SOURCES: usize = 64;

/// The SHA-256s of local sources remembered between runs
/// ([`crate::file_hashes`]), in `<cache>/source-hashes/`; none without a
/// cache directory.
fn source_hashes(opts: &FetchOptions) -> HashCache {
    let dir = opts
        .cache_dir
        .clone()
        .or_else(default_cache_dir)
        .map(|d| d.join("source-hashes"));
    HashCache::open(dir.as_deref(), opts.rehash)
}

/// The SHA-256 of a local source: remembered when the file is exactly as
/// it was when last hashed, else read (and remembered).
fn local_sha256(p: &Path, mut hashes: HashCache) -> Result<[u8; 32]> {
    let sum = hashes.sha256(p)?;
    hashes.save_keeping(REMEMBERED_SOURCES);
    Ok(sum)
}

/// A SHA-256 being computed on a thread of its own.
pub struct HashLater(HashState);

enum HashState {
    Running(std::thread::JoinHandle<Result<[u8; 32]>>),
    Deferred(PathBuf, HashCache),
}

impl HashLater {
    fn spawn(p: PathBuf, hashes: HashCache) -> Result<HashState> {
        std::thread::Builder::new()
            .name("source-sha256".into())
            .spawn(move || local_sha256(&p, hashes))
            .map(HashState::Running)
            .map_err(|e| Error::io("spawning the source hash thread", e))
    }

    /// Starts hashing now if it was deferred.
    pub fn start(&mut self) -> Result<()> {
        if let HashState::Deferred(p, h) = &mut self.0 {
            let (p, h) = (std::mem::take(p), std::mem::take(h));
            self.0 = Self::spawn(p, h)?;
        }
        Ok(())
    }

    /// Waits for the hash (computed here if it was never started).
    pub fn wait(self) -> Result<[u8; 32]> {
        match self.0 {
            HashState::Running(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::refused("source", "hashing thread panicked"))),
            HashState::Deferred(p, h) => local_sha256(&p, h),
        }
    }
}

/// [`fetch`], except that a local file given without an expected hash
/// (so its hash is only recorded, never checked) is hashed on its own
/// thread: reading a multi-GB source twice in a row — once to hash, once
/// to copy — cost `base --provision` seconds the seed's `cp` does not
/// spend; on a thread it overlaps the copy and the customisation. With
/// `defer`, the thread starts only at [`HashLater::start`]: provisioning
/// runs its scripts under emulation on one core, and a hash on the other
/// slows them (the cores share the host's caches and memory bandwidth),
/// so it waits and runs beside the hash of the result instead. A file with
/// an expected hash is still checked before anything uses it.
pub fn fetch_overlapped(
    what: &str,
    sha256: Option<&str>,
    opts: &FetchOptions,
    defer: bool,
    progress: OnProgress<'_>,
) -> Result<(Fetched, Option<HashLater>)> {
    let path = PathBuf::from(what);
    if sha256.is_some() || is_url(what) || !path.is_file() {
        return fetch(what, sha256, opts, progress).map(|f| (f, None));
    }
    let mut hashes = source_hashes(opts);
    let mut fetched = Fetched {
        path: path.clone(),
        what: what.into(),
        sha256: None,
        cached: false,
    };
    // Unchanged since it was last hashed: nothing to read.
    if let Some(sum) = hashes.remembered(&path) {
        fetched.sha256 = Some(sum);
        return Ok((fetched, None));
    }
    let state = if defer {
        HashState::Deferred(path, hashes)
    } else {
        HashLater::spawn(path, hashes)?
    };
    Ok((fetched, Some(HashLater(state))))
}

/// Makes `what` (a path or URL) a local file. URLs need `sha256` (hex or a
/// SHUMS file, see [`expected_sha256`]); local files are checked against it
/// when given.
pub fn fetch(
    what: &str,
    sha256: Option<&str>,
    opts: &FetchOptions,
    progress: OnProgress<'_>,
) -> Result<Fetched> {
    let name = file_name_of(what);
    let expected = sha256.map(|s| expected_sha256(s, &name)).transpose()?;
    if !is_url(what) {
        let path = PathBuf::from(what);
        if !path.exists() {
            return Err(Error::refused(what, "no such file or directory"));
        }
        let sha = if path.is_file() {
            let got = local_sha256(&path, source_hashes(opts))?;
            if let Some(want) = expected {
                if got != want {
                    return Err(Error::refused(
                        what,
                        format!(
                            "SHA-256 is {}, not the expected {}",
                            to_hex(&got),
                            to_hex(&want)
                        ),
                    ));
                }
            }
            Some(got)
        } else {
            None
        };
        return Ok(Fetched {
            path,
            what: what.into(),
            sha256: sha,
            cached: false,
        });
    }
    let Some(want) = expected else {
        return Err(Error::refused(
            what,
            "a URL needs --sha256 (the hash published with the file, or its SHA256SUMS file)",
        ));
    };
    let cache = opts
        .cache_dir
        .clone()
        .or_else(default_cache_dir)
        .ok_or_else(|| {
            Error::refused(
                "cache",
                "no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME",
            )
        })?;
    let dir = cache.join(to_hex(&want));
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let done = dir.join(&name);
    if done.is_file() {
        let (got, _) = sha256_file(&done)?;
        if got == want {
            return Ok(Fetched {
                path: done,
                what: what.into(),
                sha256: Some(want),
                cached: true,
            });
        }
        fs::remove_file(&done).map_err(|e| Error::io(&done, e))?;
    }
    let part = dir.join(format!("{name}.part"));
    if let Err(e) = download(what, &part, opts, progress) {
        // Nothing fetched, nothing kept: the hash's directory goes when
        // it holds no partial download to resume.
        let _ = fs::remove_dir(&dir);
        return Err(e);
    }
    let (got, _) = sha256_file(&part)?;
    if got != want {
        let _ = fs::remove_file(&part);
        let _ = fs::remove_dir(&dir);
        return Err(Error::refused(
            what,
            format!(
                "downloaded SHA-256 is {}, not the expected {} (the download was deleted)",
                to_hex(&got),
                to_hex(&want)
            ),
        ));
    }
    fs::rename(&part, &done).map_err(|e| Error::io(&done, e))?;
    Ok(Fetched {
        path: done,
        what: what.into(),
        sha256: Some(want),
        cached: false,
    })
}

/// The last path segment of a URL or path, without query; `download` when
/// there is none.
fn file_name_of(what: &str) -> String {
    let no_query = what.split(['?', '#']).next().unwrap_or(what);
    // A URL's host is not a file name.
    let no_query = match no_query.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => no_query,
    };
    no_query
        .rsplit('/')
        .find(|s| !s.is_empty() && !s.contains(':'))
        .filter(|s| *s != "." && *s != "..")
        .unwrap_or("download")
        .to_string()
}

/// Why one attempt failed, and whether another may help.
enum Attempt {
    Retry(String),
    Fatal(String),
}

fn client() -> Result<reqwest::blocking::Client> {
    // One process-wide crypto provider; installing twice is harmless.
    // rustls 0.23.48 deprecates *ring*'s provider for lacking post-quantum
    // key exchange, pointing to aws-lc-rs; that one needs cmake and a C
    // compiler for every target (the macOS cross-build included), and
    // fetching published, SHA-256-checked images gains nothing from it.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(None)
        .user_agent(concat!("nodeimg/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::refused("HTTP client", e.to_string()))
}

/// Downloads `url` into `part`, resuming what is there.
fn download(url: &str, part: &Path, opts: &FetchOptions, progress: OnProgress<'_>) -> Result<()> {
    let client = client()?;
    let mut wait = opts.backoff;
    let mut last = String::new();
    for attempt in 0..opts.attempts.max(1) {
        if attempt > 0 {
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
        match try_once(&client, url, part, progress) {
            Ok(()) => return Ok(()),
            Err(Attempt::Fatal(why)) => return Err(Error::refused(url, why)),
            Err(Attempt::Retry(why)) => last = why,
        }
    }
    Err(Error::refused(
        url,
        format!("{last} (gave up after {} attempts)", opts.attempts.max(1)),
    ))
}

fn try_once(
    client: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    progress: OnProgress<'_>,
) -> std::result::Result<(), Attempt> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().map_err(|e| Attempt::Retry(e.to_string()))?;
    let status = resp.status();
    let (mut file, mut done, total) = if status == reqwest::StatusCode::PARTIAL_CONTENT {
        let total = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok());
        let f = OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(|e| Attempt::Fatal(format!("{}: {e}", part.display())))?;
        (f, have, total)
    } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // What we have is everything (or garbage): start over once.
        let _ = fs::remove_file(part);
        return Err(Attempt::Retry(
            "the server refused to resume; restarting".into(),
        ));
    } else if status.is_success() {
        let total = resp.content_length();
        let f =
            File::create(part).map_err(|e| Attempt::Fatal(format!("{}: {e}", part.display())))?;
        (f, 0, total)
    } else if status.is_server_error() {
        return Err(Attempt::Retry(format!("HTTP {status}")));
    } else {
        return Err(Attempt::Fatal(format!("HTTP {status}")));
    };
    progress(done, total);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.flush();
                return Err(Attempt::Retry(format!(
                    "connection lost after {done} bytes: {e}"
                )));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| Attempt::Fatal(format!("{}: {e}", part.display())))?;
        done += n as u64;
        progress(done, total);
    }
    file.flush()
        .map_err(|e| Attempt::Fatal(format!("{}: {e}", part.display())))?;
    if let Some(t) = total {
        if done < t {
            return Err(Attempt::Retry(format!("truncated: {done} of {t} bytes")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_source_hashed_later_has_the_same_hash_and_a_given_one_is_checked_first() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plain.img");
        std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
        let what = f.to_str().unwrap();
        let opts = FetchOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let now = fetch(what, None, &opts, &mut |_, _| {}).unwrap();
        for defer in [false, true] {
            let (later, h) = fetch_overlapped(what, None, &opts, defer, &mut |_, _| {}).unwrap();
            assert_eq!(later.sha256, None);
            let mut h = h.expect("a hash on its thread");
            h.start().unwrap();
            assert_eq!(Some(h.wait().unwrap()), now.sha256);
        }
        // Never started: computed when waited for.
        let (_, h) = fetch_overlapped(what, None, &opts, true, &mut |_, _| {}).unwrap();
        assert_eq!(Some(h.unwrap().wait().unwrap()), now.sha256);
        // With an expected hash: checked before anything uses the file.
        let wrong = "ab".repeat(32);
        assert!(fetch_overlapped(what, Some(&wrong), &opts, false, &mut |_, _| {}).is_err());
        let right = to_hex(&now.sha256.unwrap());
        let (checked, h) =
            fetch_overlapped(what, Some(&right), &opts, false, &mut |_, _| {}).unwrap();
        assert!(h.is_none());
        assert_eq!(checked.sha256, now.sha256);
    }

    #[test]
    fn an_unchanged_local_source_is_not_hashed_again_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plain.img");
        std::fs::write(&f, vec![9u8; 1 << 20]).unwrap();
        // Older than the racy window when it is first hashed.
        std::thread::sleep(Duration::from_millis(3300));
        let what = f.to_str().unwrap();
        let opts = FetchOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let (first, h) = fetch_overlapped(what, None, &opts, false, &mut |_, _| {}).unwrap();
        assert_eq!(first.sha256, None);
        let sum = h.expect("hashed on its thread").wait().unwrap();
        assert_eq!(sum, sha256_file(&f).unwrap().0);
        // Remembered: known at once, no thread.
        let (again, h) = fetch_overlapped(what, None, &opts, true, &mut |_, _| {}).unwrap();
        assert_eq!(again.sha256, Some(sum));
        assert!(h.is_none());
        // --rehash reads it anyway.
        let re = FetchOptions {
            rehash: true,
            ..opts.clone()
        };
        let (_, h) = fetch_overlapped(what, None, &re, false, &mut |_, _| {}).unwrap();
        assert_eq!(h.expect("hashed again").wait().unwrap(), sum);
        // Changed in place (same size): its ctime moved, so it is read.
        std::fs::write(&f, vec![8u8; 1 << 20]).unwrap();
        let (changed, h) = fetch_overlapped(what, None, &opts, false, &mut |_, _| {}).unwrap();
        assert_eq!(changed.sha256, None);
        assert_eq!(h.unwrap().wait().unwrap(), sha256_file(&f).unwrap().0);
        // A checked source uses the remembered hash too: a wrong one is refused.
        let wrong = "cd".repeat(32);
        assert!(fetch(what, Some(&wrong), &opts, &mut |_, _| {}).is_err());
    }

    #[test]
    fn names_and_sums() {
        assert_eq!(
            file_name_of("https://h/x/raspios.img.xz?x=1"),
            "raspios.img.xz"
        );
        assert_eq!(file_name_of("https://h/"), "download");
        let dir = tempfile::tempdir().unwrap();
        let sums = dir.path().join("SHA256SUMS");
        let h = "ab".repeat(32);
        std::fs::write(
            &sums,
            format!("{}  other.img\n{h} *raspios.img.xz\n", "cd".repeat(32)),
        )
        .unwrap();
        let s = sums.to_str().unwrap();
        assert_eq!(expected_sha256(s, "raspios.img.xz").unwrap(), [0xab; 32]);
        assert!(expected_sha256(s, "missing.img").is_err());
        assert_eq!(expected_sha256(&h, "x").unwrap(), [0xab; 32]);
        assert!(expected_sha256("abc", "x").is_err());
    }
}
