//! What an HTTP connection manager does to a request's path and host before its filters and
//! routing see them, as Envoy does, so that routes and RBAC match what the app will serve:
//! escaped slashes (`%2F`, `%5C`, either case) kept, refused, unescaped or redirected
//! (`path_with_escaped_slashes_action`); RFC 3986 normalization (`normalize_path`: dot
//! segments removed, percent-encoded unreserved characters decoded, other encodings kept as
//! sent, characters that must be encoded encoded), exactly as Envoy's `PathUtil::canonicalPath`
//! (Chromium's URL path canonicalizer, with `;` parameters dropped from dot segments); then
//! `merge_slashes`. And the host's trailing dot (`strip_trailing_host_dot`).
//!
//! Pure functions of the path and the options.

use std::borrow::Cow;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::PathWithEscapedSlashesAction,
};

/// What to do with `%2F` and `%5C` in a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Leave them (Envoy's default).
    #[default]
    Keep,
    /// Answer 400.
    Reject,
    /// Unescape them and redirect (307) the client to the result.
    UnescapeAndRedirect,
    /// Unescape them and go on.
    UnescapeAndForward,
}

/// The connection manager's path options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// `normalize_path` (Envoy's default: off).
    pub normalize: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
}

impl PathOptions {
    /// The options `hcm` sets.
    pub fn of(hcm: &HttpConnectionManager) -> Self {
        use PathWithEscapedSlashesAction as A;
        Self {
            normalize: hcm.normalize_path.as_ref().is_some_and(|b| b.value),
            merge_slashes: hcm.merge_slashes,
            escaped_slashes: match A::try_from(hcm.path_with_escaped_slashes_action) {
                Ok(A::RejectRequest) => EscapedSlashes::Reject,
                Ok(A::UnescapeAndRedirect) => EscapedSlashes::UnescapeAndRedirect,
                Ok(A::UnescapeAndForward) => EscapedSlashes::UnescapeAndForward,
                _ => EscapedSlashes::Keep,
            },
        }
    }

    /// Whether the options leave every path as it is.
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }
}

/// What becomes of a request's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized<'a> {
    /// Go on with this path (with its query).
    Forward(Cow<'a, str>),
    /// Redirect (307) the client to this path (escaped slashes were unescaped).
    Redirect(String),
}

/// Why a path is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathRejected {
    /// It carries a fragment (`#`), which a request target never may.
    #[error("the path carries a fragment")]
    Fragment,
    /// It has escaped slashes and the connection manager refuses them.
    #[error("the path has escaped slashes")]
    EscapedSlashes,
    /// It cannot be made canonical (an encoded or raw NUL, say).
    #[error("the path cannot be normalized")]
    NotCanonical,
}

/// `path` (with its query) as the connection manager passes it on, in Envoy's order:
/// fragment refused, escaped slashes, RFC 3986 normalization, slashes merged. The query is
/// never touched.
pub fn normalize<'a>(path: &'a str, options: &PathOptions) -> Result<Normalized<'a>, PathRejected> {
    if path.contains('#') {
        return Err(PathRejected::Fragment);
    }
    let mut out = Cow::Borrowed(path);
    let mut redirect = false;
    if options.escaped_slashes != EscapedSlashes::Keep
        && let Some(unescaped) = unescape_slashes(&out)
    {
        match options.escaped_slashes {
            EscapedSlashes::Reject => return Err(PathRejected::EscapedSlashes),
            EscapedSlashes::UnescapeAndRedirect => redirect = true,
            _ => {}
        }
        out = Cow::Owned(unescaped);
    }
    if options.normalize {
        let (only, query) = split_query(&out);
        let canonical = canonical_path(&strip_dot_segment_parameters(only))
            .ok_or(PathRejected::NotCanonical)?;
        if canonical != only {
            out = Cow::Owned(format!("{canonical}{query}"));
        }
    }
    if options.merge_slashes
        && let Some(merged) = merge_slashes(&out)
    {
        out = Cow::Owned(merged);
    }
    Ok(if redirect { Normalized::Redirect(out.into_owned()) } else { Normalized::Forward(out) })
}

/// The path before its query, and the query with its `?` (empty without one).
fn split_query(path: &str) -> (&str, &str) {
    path.split_at(path.find('?').unwrap_or(path.len()))
}

/// `%2F`/`%2f` to `/`, `%5C`/`%5c` to `\` in the path part; `None` when there are none.
fn unescape_slashes(path: &str) -> Option<String> {
    let (only, query) = split_query(path);
    let bytes = only.as_bytes();
    let mut out = String::with_capacity(path.len());
    let (mut i, mut last, mut found) = (0, 0, false);
    while i + 2 < bytes.len() {
        let replacement = match (bytes[i], bytes[i + 1], bytes[i + 2]) {
            (b'%', b'2', b'F' | b'f') => "/",
            (b'%', b'5', b'C' | b'c') => "\\",
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&only[last..i]);
        out.push_str(replacement);
        (i, last, found) = (i + 3, i + 3, true);
    }
    found.then(|| format!("{out}{}{query}", &only[last..]))
}

/// Adjacent slashes merged in the path part (`//a///b/` to `/a/b/`); `None` when there are
/// none.
fn merge_slashes(path: &str) -> Option<String> {
    let (only, query) = split_query(path);
    if !only.contains("//") {
        return None;
    }
    let prefix = if only.starts_with('/') { "/" } else { "" };
    let suffix = if only.ends_with('/') { "/" } else { "" };
    let segments: Vec<&str> = only.split('/').filter(|s| !s.is_empty()).collect();
    Some(format!("{prefix}{}{suffix}{query}", segments.join("/")))
}

/// `;` parameters dropped from dot segments (`/..;x/` to `/../`), so that normalization
/// resolves them as the app will (Envoy's fix for the `..;` bypass).
fn strip_dot_segment_parameters(path: &str) -> Cow<'_, str> {
    if !path.contains(".;") {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| {
            if s.starts_with("..;") {
                ".."
            } else if s.starts_with(".;") {
                "."
            } else {
                s
            }
        })
        .collect();
    Cow::Owned(segments.join("/"))
}

// Chromium's classes of path characters (`kPathCharLookup`).
const PASS: u8 = 0;
const SPECIAL: u8 = 1;
const ESCAPE: u8 = 2 | SPECIAL;
const UNESCAPE: u8 = 4;
const INVALID: u8 = 8 | SPECIAL;

fn class(c: u8) -> u8 {
    match c {
        0 => INVALID,
        b'.' => SPECIAL,
        b'-' | b'0'..=b'9' | b'A'..=b'Z' | b'_' | b'a'..=b'z' | b'~' => UNESCAPE,
        0x01..=0x20
        | b'"'
        | b'#'
        | b'%'
        | b'<'
        | b'>'
        | b'?'
        | b'\\'
        | b'^'
        | b'`'
        | b'{'
        | b'|'
        | b'}'
        | 0x7f..=0xff => ESCAPE,
        _ => PASS,
    }
}

fn is_slash(c: u8) -> bool {
    c == b'/' || c == b'\\'
}

/// The length of the dot at `i` (`.` or `%2e`), 0 if there is none.
fn dot_at(spec: &[u8], i: usize) -> usize {
    match spec.get(i..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

enum Dots {
    /// Part of a name.
    NotADirectory,
    /// `.`: this directory.
    Current,
    /// `..`: the parent.
    Up,
}

/// What the dot ending before `after` is, and how many more input bytes it takes (a second
/// dot and the slash after).
fn after_dot(spec: &[u8], after: usize) -> (Dots, usize) {
    if after == spec.len() {
        return (Dots::Current, 0);
    }
    if is_slash(spec[after]) {
        return (Dots::Current, 1);
    }
    let second = dot_at(spec, after);
    if second > 0 {
        let past = after + second;
        if past == spec.len() {
            return (Dots::Up, second);
        }
        if is_slash(spec[past]) {
            return (Dots::Up, second + 1);
        }
    }
    (Dots::NotADirectory, 0)
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The byte `%XY` at `i` encodes.
fn escaped_at(spec: &[u8], i: usize) -> Option<u8> {
    match spec.get(i..i + 3)? {
        [b'%', a, b] => Some(hex(*a)? << 4 | hex(*b)?),
        _ => None,
    }
}

fn push_escaped(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
}

/// Drops the last segment of `out` (which ends with `/`), never above the root.
fn up(out: &mut Vec<u8>) {
    let mut i = out.len() - 1;
    if i == 0 {
        return;
    }
    i -= 1;
    while out[i] != b'/' && i > 0 {
        i -= 1;
    }
    out.truncate(i + 1);
}

/// Chromium's `CanonicalizePath`, as Envoy runs it on a path without its query; `None` when
/// it fails (a NUL, raw or encoded).
pub fn canonical_path(path: &str) -> Option<String> {
    let spec = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(spec.len() + 1);
    if spec.first().is_none_or(|c| !is_slash(*c)) {
        out.push(b'/');
    }
    let mut ok = true;
    // Where in `out` the last `%` that began no valid escape is (see `nested_escape`).
    let mut bad_percent: Option<usize> = None;
    let mut i = 0;
    while i < spec.len() {
        let c = spec[i];
        let flags = class(c);
        if flags & SPECIAL == 0 {
            out.push(c);
        } else if let dot @ 1.. = dot_at(spec, i) {
            if out.last() == Some(&b'/') {
                match after_dot(spec, i + dot) {
                    (Dots::NotADirectory, _) => out.push(b'.'),
                    (Dots::Current, taken) => i += taken,
                    (Dots::Up, taken) => {
                        up(&mut out);
                        i += taken;
                    }
                }
            } else {
                out.push(b'.');
            }
            i += dot - 1;
        } else if c == b'\\' {
            out.push(b'/');
        } else if c == b'%' {
            match escaped_at(spec, i) {
                Some(value) if class(value) & UNESCAPE != 0 => {
                    out.push(value);
                    i += 2;
                    if let Some(p) = bad_percent
                        && p + 3 >= out.len()
                    {
                        nested_escape(spec, i + 1, p, &mut out);
                    }
                }
                Some(value) => {
                    // Kept as sent, hex case included (a server may care).
                    out.extend_from_slice(&spec[i..i + 3]);
                    i += 2;
                    if class(value) & INVALID == INVALID {
                        ok = false;
                    }
                }
                None => {
                    bad_percent = Some(out.len());
                    out.push(b'%');
                }
            }
        } else if flags == INVALID {
            push_escaped(&mut out, c);
            ok = false;
        } else if flags == ESCAPE {
            push_escaped(&mut out, c);
        }
        i += 1;
    }
    ok.then(|| String::from_utf8(out).ok()).flatten()
}

/// After an unescape near a `%` that began no valid escape (at `percent` in `out`): if the
/// two would now read as an escape (`%%30` became `%0` and the next input is `0`), the `%` is
/// written `%25`, so that normalizing again cannot decode what was never encoded.
fn nested_escape(spec: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let length = out.len();
    let Some(&last) = out.last() else { return };
    let append_next = percent + 2 == length;
    if append_next {
        match spec.get(next) {
            Some(&c) if c < 0x80 => out.push(c),
            _ => return,
        }
    }
    if escaped_at(out, percent).is_some() {
        if !append_next {
            out.push(out[percent + 1]);
        }
        out[percent + 1] = b'2';
        out[percent + 2] = b'5';
        out.push(last);
    } else if append_next {
        out.truncate(length);
    }
}

/// `host` without a trailing dot (`example.com.` and `example.com.:8080` name the same host
/// as without it), as Envoy's `strip_trailing_host_dot` does.
pub fn strip_trailing_host_dot(host: &str) -> Cow<'_, str> {
    let Some(dot) = host.rfind('.') else { return Cow::Borrowed(host) };
    if dot + 1 == host.len() {
        return Cow::Borrowed(&host[..dot]);
    }
    if host.as_bytes()[dot + 1] == b':' {
        return Cow::Owned(format!("{}{}", &host[..dot], &host[dot + 1..]));
    }
    Cow::Borrowed(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &str) -> Option<String> {
        canonical_path(path)
    }

    #[test]
    fn dot_segments_are_resolved_as_envoy_resolves_them() {
        for (path, expected) in [
            ("/xyz", "/xyz"),
            ("/x/y/z", "/x/y/z"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/./c", "/a/b/c"),
            ("a/b/../c", "/a/c"),
            ("/a/b/../../../../c", "/c"),
            ("/a/..\\c", "/c"),
            ("/./admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/a/b/%2E%2E/c", "/a/c"),
            ("/a/b/%2e%2e/c", "/a/c"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/.hidden", "/a/.hidden"),
            ("/a/b..c", "/a/b..c"),
            ("", "/"),
            ("//admin", "//admin"),
        ] {
            assert_eq!(canonical(path).as_deref(), Some(expected), "{path}");
        }
    }

    #[test]
    fn percent_encodings_of_unreserved_characters_are_decoded_and_others_kept_as_sent() {
        for (path, expected) in [
            ("/%61dmin", "/admin"),
            ("/%41%7e%2D%5f", "/A~-_"),
            ("/%c0%af", "/%c0%af"),
            ("/%5c%25", "/%5c%25"),
            ("/a/%2F%2f/c", "/a/%2F%2f/c"),
            ("/A/B/C", "/A/B/C"),
            ("/a b", "/a%20b"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/%zz", "/%zz"),
            ("/%%300", "/%2500"),
            ("/100%", "/100%"),
        ] {
            assert_eq!(canonical(path).as_deref(), Some(expected), "{path}");
        }
        for invalid in ["/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc", "/a\0b"] {
            assert_eq!(canonical(invalid), None, "{invalid:?}");
        }
    }

    fn run(path: &str, options: PathOptions) -> Result<Normalized<'_>, PathRejected> {
        normalize(path, &options)
    }

    fn forward(path: &str) -> Result<Normalized<'_>, PathRejected> {
        Ok(Normalized::Forward(Cow::Owned(path.to_owned())))
    }

    #[test]
    fn escaped_slashes_are_kept_refused_unescaped_or_redirected() {
        let with =
            |escaped_slashes| PathOptions { normalize: true, merge_slashes: true, escaped_slashes };
        assert_eq!(run("/a%2Fb", with(EscapedSlashes::Keep)), forward("/a%2Fb"));
        assert_eq!(run("/a%2fb", with(EscapedSlashes::Reject)), Err(PathRejected::EscapedSlashes));
        assert_eq!(run("/a%5Cb", with(EscapedSlashes::Reject)), Err(PathRejected::EscapedSlashes));
        assert_eq!(run("/a/b", with(EscapedSlashes::Reject)), forward("/a/b"));
        assert_eq!(run("/%2Fadmin", with(EscapedSlashes::UnescapeAndForward)), forward("/admin"));
        assert_eq!(
            run("/x%5c..%5cadmin", with(EscapedSlashes::UnescapeAndForward)),
            forward("/admin")
        );
        assert_eq!(
            run("/a%2Fb?q=%2F", with(EscapedSlashes::UnescapeAndRedirect)),
            Ok(Normalized::Redirect("/a/b?q=%2F".to_owned())),
            "the query is never touched"
        );
        assert_eq!(unescape_slashes("%%2fa/").as_deref(), Some("%/a/"));
        assert_eq!(unescape_slashes("%2%2fa/").as_deref(), Some("%2/a/"));
        assert_eq!(unescape_slashes("/abc%2"), None);
        assert_eq!(unescape_slashes("%5c%5C").as_deref(), Some("\\\\"));
    }

    #[test]
    fn slashes_merge_after_normalization_and_the_query_is_left_alone() {
        let merge = PathOptions { merge_slashes: true, ..PathOptions::default() };
        assert_eq!(run("//admin", merge), forward("/admin"));
        assert_eq!(run("/a//b?a=///c", merge), forward("/a/b?a=///c"));
        assert_eq!(run("/a/b/c//", merge), forward("/a/b/c/"));
        assert_eq!(run("/a", merge), Ok(Normalized::Forward(Cow::Borrowed("/a"))));
        let both = PathOptions { normalize: true, merge_slashes: true, ..PathOptions::default() };
        assert_eq!(run("//a/./..//admin?x=/../", both), forward("/admin?x=/../"));
        assert_eq!(run("/xyz/..;foo=bar/admin", both), forward("/admin"));
        assert_eq!(run("/admin#frag", both), Err(PathRejected::Fragment));
        assert_eq!(run("/a%00", both), Err(PathRejected::NotCanonical));
        // Without options a path goes on as sent, tricks and all.
        assert_eq!(
            run("/./admin", PathOptions::default()),
            Ok(Normalized::Forward(Cow::Borrowed("/./admin")))
        );
    }

    #[test]
    fn dot_segments_with_parameters_lose_them() {
        for (path, expected) in [
            ("/xyz/..;foo=bar/abc", "/xyz/../abc"),
            ("/xyz/.;foo=bar", "/xyz/."),
            ("/a/..;p1;p2/b", "/a/../b"),
            ("/xyz/...;foo", "/xyz/...;foo"),
            ("/xyz/..foo", "/xyz/..foo"),
        ] {
            assert_eq!(strip_dot_segment_parameters(path), expected, "{path}");
        }
    }

    #[test]
    fn a_trailing_dot_in_the_host_is_dropped() {
        assert_eq!(strip_trailing_host_dot("example.com."), "example.com");
        assert_eq!(strip_trailing_host_dot("example.com.:8080"), "example.com:8080");
        assert_eq!(strip_trailing_host_dot("example.com"), "example.com");
        assert_eq!(strip_trailing_host_dot("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(strip_trailing_host_dot("[::1]:80"), "[::1]:80");
    }
}
