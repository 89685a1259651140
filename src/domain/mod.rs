//! Domain: the plain values every stage passes along, and the pure rules about them. No I/O, no printing,
//! no async: everything here can be unit-tested without a server, and everything above may use it.

pub mod branch;
pub mod ci;
pub mod credentials;
pub mod grammar;
pub mod link;
pub mod login;
pub mod manifest;
pub mod network;
pub mod record;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod repository;
pub mod scan;
pub mod secret;
pub mod soci;
pub mod source;
pub mod tag;
pub mod target;

/// Untrusted bytes (a file's start, a server's answer) as they may appear in a message: control characters
/// escaped, never raw (no terminal codes, no newlines), and cut at `max` characters.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        // Control characters (terminal codes, line breaks) escaped; the rest as it is.
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn excerpts_are_escaped_and_short() {
        assert_eq!(super::excerpt(b"\x1b[31mred\nline", 100), "\\u{1b}[31mred\\nline");
        assert_eq!(super::excerpt(b"abcdef", 3), "abc…");
        assert_eq!(super::excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }
}
