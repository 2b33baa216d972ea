//! Request values quoted back in an `ErrorInfo`, cut to a readable length.
//!
//! An `ErrorInfo` names the value it refuses so the caller can find it, but a caller that sent
//! a 10 KB tag gains nothing from getting 10 KB back, and a server that copies every refused
//! value into its answers (and logs) hands its bandwidth to whoever sends the largest ones.

use std::fmt;

/// Bytes of a refused value shown before it is cut.
pub const ECHO_BYTES: usize = 64;

/// `text` for an `ErrorInfo`: quoted and escaped like `{:?}`; past [`ECHO_BYTES`], its first
/// bytes (cut on a character boundary), an ellipsis and its whole length.
pub fn echo(text: &str) -> Echo<'_> {
    Echo(text)
}

#[derive(Clone, Copy)]
pub struct Echo<'a>(&'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        if text.len() <= ECHO_BYTES {
            return write!(f, "{text:?}");
        }
        let mut cut = ECHO_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        f.write_str("\"")?;
        for c in text[..cut].chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        write!(f, "…\" ({} bytes)", text.len())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(echo("a\"b\n").to_string(), "\"a\\\"b\\n\"");
        let exact = "x".repeat(ECHO_BYTES);
        assert_eq!(echo(&exact).to_string(), format!("{exact:?}"));
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary_with_their_length() {
        let tag = "t".repeat(10_240);
        assert_eq!(
            echo(&tag).to_string(),
            format!("\"{}…\" (10240 bytes)", "t".repeat(ECHO_BYTES))
        );
        // 63 ASCII bytes then a 3-byte character straddling byte 64: it is left out whole.
        let text = format!("{}€€", "a".repeat(63));
        assert_eq!(
            echo(&text).to_string(),
            format!("\"{}…\" (69 bytes)", "a".repeat(63))
        );
    }
}
