//! A guard, not a codec: how deeply an AMQP encoding nests, found without recursion, before
//! `serde_amqp` (which recurses once per level) is given client bytes. A frame of nested
//! lists 256 KiB long would otherwise overflow the decoding thread's stack, which aborts
//! the whole process (found by `emulator/tests/fuzz.rs`).

/// Deepest nesting accepted: far beyond what any SDK sends (a message section is a
/// described map of values, four or five levels).
pub(crate) const MAX_DEPTH: usize = 64;

/// The width of a fixed-size value after its format code, or of the size field of a
/// variable-size one; `None` for compound, array and unknown codes.
fn width(code: u8) -> Option<Width> {
    Some(match code {
        0x40..=0x45 => Width::Fixed(0),
        0x50..=0x56 => Width::Fixed(1),
        0x60 | 0x61 => Width::Fixed(2),
        0x70..=0x74 => Width::Fixed(4),
        0x80..=0x84 => Width::Fixed(8),
        0x94 | 0x98 => Width::Fixed(16),
        0xa0 | 0xa1 | 0xa3 => Width::Sized(1),
        0xb0 | 0xb1 | 0xb3 => Width::Sized(4),
        _ => return None,
    })
}

enum Width {
    Fixed(usize),
    Sized(usize),
}

/// One open compound: how many values it still holds, and the constructor they share (an
/// array's elements have one constructor for all).
struct Open {
    left: u64,
    shared: Option<u8>,
}

fn read_size(bytes: &[u8], at: usize, width: usize) -> Option<u64> {
    let field = bytes.get(at..at + width)?;
    Some(field.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

/// Whether the values in `bytes` (back to back) nest no deeper than `max`. Input that is
/// truncated or malformed in a way that does not deepen the nesting passes: decoding it
/// fails later, without recursing.
pub(crate) fn within(bytes: &[u8], max: usize) -> bool {
    let mut open: Vec<Open> = Vec::new();
    let mut at = 0usize;
    loop {
        while open.last().is_some_and(|o| o.left == 0) {
            open.pop();
        }
        if at >= bytes.len() {
            return true;
        }
        let shared = match open.last_mut() {
            Some(o) => {
                o.left -= 1;
                o.shared
            }
            None => None,
        };
        let code = match shared {
            Some(code) => code,
            None => {
                let code = bytes[at];
                at += 1;
                code
            }
        };
        match code {
            // Described: a descriptor, then the value it describes.
            0x00 if shared.is_none() => open.push(Open {
                left: 2,
                shared: None,
            }),
            0xc0 | 0xc1 | 0xd0 | 0xd1 => {
                let w = if code < 0xd0 { 1 } else { 4 };
                let Some(count) = read_size(bytes, at + w, w) else {
                    return true;
                };
                at += 2 * w;
                open.push(Open {
                    left: count,
                    shared: None,
                });
            }
            0xe0 | 0xf0 => {
                let w = if code == 0xe0 { 1 } else { 4 };
                let Some(count) = read_size(bytes, at + w, w) else {
                    return true;
                };
                at += 2 * w;
                let Some(&element) = bytes.get(at) else {
                    return true;
                };
                at += 1;
                // A described element type is not followed (no SDK sends one): refused.
                if element == 0x00 {
                    return false;
                }
                open.push(Open {
                    left: count,
                    shared: Some(element),
                });
            }
            other => match width(other) {
                Some(Width::Fixed(n)) => at += n,
                Some(Width::Sized(w)) => {
                    let Some(size) = read_size(bytes, at, w) else {
                        return true;
                    };
                    at = at.saturating_add(w).saturating_add(size as usize);
                }
                // An unknown code: the decoder refuses it without going deeper.
                None => return true,
            },
        }
        if open.len() > max {
            return false;
        }
        // An array of empty-width elements (or a huge count) must not spin: every element
        // of a compound is at least its constructor byte, or a shared fixed width.
        if let Some(o) = open.last()
            && o.shared.is_some()
            && o.left > bytes.len() as u64
            && width(o.shared.unwrap_or(0)).is_some_and(|w| matches!(w, Width::Fixed(0)))
        {
            open.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_nesting_without_recursing() {
        // A described list holding a list holding a uint.
        let ok = [0x00, 0x53, 0x10, 0xc0, 0x04, 0x01, 0xc0, 0x02, 0x01, 0x43];
        assert!(within(&ok, 3));
        assert!(!within(&ok, 2));
        // 100,000 nested list8s: refused, and quickly.
        let deep: Vec<u8> = std::iter::repeat_n([0xc0u8, 0xff, 0x01], 100_000)
            .flatten()
            .collect();
        assert!(!within(&deep, MAX_DEPTH));
        // An array of a million empty lists is wide, not deep.
        let wide = [0xf0, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40, 0x45];
        assert!(within(&wide, 2));
        // Strings are skipped by their size, whatever they hold.
        let text = [0xa1, 0x03, 0xc0, 0xc0, 0xc0];
        assert!(within(&text, 0));
    }
}
