//! Request targets folded into endpoint templates: `/users/42?x=1` becomes `/users/{id}`.

/// Writes the template of a request target into `out` (cleared first): the path without query
/// or fragment, with every segment that looks like an id replaced by `{id}`. An absolute-form
/// target (`http://host/p`) keeps its path only; `*` stays `*`.
pub fn path_template(target: &str, out: &mut String) {
    out.clear();
    push_template(target, out);
}

/// [`path_template`] appended to `out`.
pub(super) fn push_template(target: &str, out: &mut String) {
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    if path.is_empty() {
        out.push('/');
        return;
    }
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
    }
}

/// True for a path segment that names one item rather than a route: all digits, a UUID, a
/// long hex string, or a long token mixing letters and digits (base64url ids, hashes).
fn is_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let hexish = |c: &u8| c.is_ascii_hexdigit() || *c == b'-';
    // UUID: 8-4-4-4-12 hex digits.
    if b.len() == 36
        && b.iter().all(hexish)
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter().filter(|&&c| c == b'-').count() == 4
    {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    // Hex ids (object ids, hashes): 16 or more hex digits with at least one decimal digit, so
    // that long words made of a-f letters stay words.
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) && digits > 0 {
        return true;
    }
    // Opaque tokens: 20 or more of [A-Za-z0-9_-] with both letters and digits.
    b.len() >= 20
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && digits > 0
        && b.iter().any(u8::is_ascii_alphabetic)
}
