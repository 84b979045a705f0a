//! Incremental UTF-8 validation that fails as soon as a sequence cannot be completed.

/// Validates text that arrives in pieces. It keeps at most three bytes of an unfinished
/// character; an invalid byte is reported by the piece that contains it, even when the
/// message is not complete yet.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    partial: [u8; 4],
    len: usize,
}

fn width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// Checks the next piece. `Err` when the text so far cannot be the start of valid UTF-8.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), ()> {
        if self.len > 0 {
            let need = width(self.partial[0]);
            let take = (need - self.len).min(data.len());
            self.partial[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.partial[..self.len]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() => return Err(()),
                Err(_) => return Ok(()), // still unfinished, and `data` is used up
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(()),
            Err(e) => {
                let rest = &data[e.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.len = rest.len();
                Ok(())
            }
        }
    }

    /// The text ended: `Err` when it ends inside a character. Resets the validator.
    pub(crate) fn finish(&mut self) -> Result<(), ()> {
        let unfinished = self.len != 0;
        self.len = 0;
        if unfinished {
            Err(())
        } else {
            Ok(())
        }
    }

    pub(crate) fn reset(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_pieces(data: &[u8], cuts: &[usize]) -> Result<(), ()> {
        let mut v = Utf8Validator::default();
        let mut last = 0;
        for &c in cuts {
            let c = c.clamp(last, data.len());
            v.feed(&data[last..c])?;
            last = c;
        }
        v.feed(&data[last..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_inside_a_character() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"ok \xf4").is_ok());
        assert!(v.feed(b"\x90").is_err(), "F4 90 is above U+10FFFF");
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"\xce").is_ok());
        assert!(v.feed(b"\xba").is_ok());
        assert!(v.feed(b"\xed\xa0").is_err(), "a surrogate");
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"\xe2\x82").is_ok());
        assert!(v.finish().is_err(), "ends inside a character");
    }

    proptest! {
        #[test]
        fn agrees_with_std_however_split(data in proptest::collection::vec(
                prop_oneof![any::<u8>(), 0x80u8..0xc0, 0xe0u8..0xf5], 0..40),
                cuts in proptest::collection::vec(0usize..40, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(check_pieces(&data, &cuts).is_ok(), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn valid_text_passes_byte_by_byte(s in "\\PC*") {
            let cuts: Vec<usize> = (0..s.len()).collect();
            prop_assert!(check_pieces(s.as_bytes(), &cuts).is_ok());
        }
    }
}
