//! A record on disk: a fixed header, then the payload.
//!
//! ```text
//! magic  u32  "wjr1", marks where a record starts, so a scan can find the next one
//! len    u32  payload length
//! seq    u64  the record's sequence number (strictly increasing through the journal)
//! time   u64  when it was appended, milliseconds since the Unix epoch
//! crc    u32  CRC-32C of len, seq, time and the payload
//! payload
//! ```
//!
//! All integers little-endian. The checksum covers the length, so a garbled length cannot
//! send a scan past good records: a candidate whose checksum fails is not a record, and the
//! scan moves one byte on and looks for the next magic.

use memchr::memmem;

pub const MAGIC: [u8; 4] = *b"wjr1";
pub const HEADER: usize = 4 + 4 + 8 + 8 + 4;

/// A record found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub seq: u64,
    pub time_ms: u64,
    /// Where the payload lies in the buffer.
    pub payload: (usize, usize),
    /// Where the next record starts.
    pub end: usize,
}

/// What lies at a position of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Record(Found),
    /// Bytes up to `to` hold no record (damage): the next candidate starts there, or the
    /// buffer ends there.
    Garbage {
        to: usize,
    },
    /// A record may start here but the buffer ends before it does (read on, or a torn tail).
    Short,
    /// Nothing left.
    End,
}

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, time_ms: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record payloads are bounded below 4 GiB");
    out.extend_from_slice(&MAGIC);
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads what lies at `at` in `buf`. `max_payload` bounds a believable length.
pub fn scan(buf: &[u8], at: usize, max_payload: usize) -> Scan {
    if at >= buf.len() {
        return Scan::End;
    }
    let rest = &buf[at..];
    if rest.len() < HEADER {
        // A header cut short is a short read if it starts like one, damage otherwise.
        return if MAGIC.starts_with(&rest[..rest.len().min(4)]) {
            Scan::Short
        } else {
            next_candidate(buf, at + 1)
        };
    }
    if rest[..4] != MAGIC {
        return next_candidate(buf, at + 1);
    }
    let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
    if len > max_payload {
        return next_candidate(buf, at + 1);
    }
    if rest.len() < HEADER + len {
        return Scan::Short;
    }
    let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    let time_ms = u64::from_le_bytes(rest[16..24].try_into().expect("8 bytes"));
    let stored = u32::from_le_bytes(rest[24..28].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rest[4..24]), &rest[HEADER..HEADER + len]);
    if crc != stored {
        return next_candidate(buf, at + 1);
    }
    Scan::Record(Found {
        seq,
        time_ms,
        payload: (at + HEADER, at + HEADER + len),
        end: at + HEADER + len,
    })
}

/// Damage from `from - 1` on: where the next magic starts (or where the buffer ends).
fn next_candidate(buf: &[u8], from: usize) -> Scan {
    Scan::Garbage { to: resync(buf, from) }
}

/// Where the next record may start at or after `from` (the buffer's end if nowhere): for a
/// scan to step over something that is not a record.
pub fn resync(buf: &[u8], from: usize) -> usize {
    let from = from.min(buf.len());
    memmem::find(&buf[from..], &MAGIC).map_or_else(|| partial_magic_at_end(buf, from), |i| from + i)
}

/// Where a magic cut off by the end of the buffer would start, else the buffer's end: a scan
/// over a buffer read in chunks must not skip a record whose magic straddles the chunk end.
fn partial_magic_at_end(buf: &[u8], from: usize) -> usize {
    (1..MAGIC.len())
        .rev()
        .map(|keep| buf.len().saturating_sub(keep))
        .find(|&start| start >= from && MAGIC.starts_with(&buf[start..]))
        .unwrap_or(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(buf: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match scan(buf, at, 1 << 20) {
                Scan::Record(found) => {
                    out.push((found.seq, buf[found.payload.0..found.payload.1].to_vec()));
                    at = found.end;
                }
                Scan::Garbage { to } => at = to,
                // The whole buffer is here: a record cut short is damage too.
                Scan::Short => at = resync(buf, at + 1),
                Scan::End => return out,
            }
        }
    }

    #[test]
    fn records_round_trip_and_a_scan_steps_over_damage_to_the_next_good_record() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 10, b"first");
        let second = buf.len();
        encode(&mut buf, 2, 11, b"second, with wjr1 inside");
        encode(&mut buf, 3, 12, b"");
        assert_eq!(
            records(&buf),
            vec![
                (1, b"first".to_vec()),
                (2, b"second, with wjr1 inside".to_vec()),
                (3, vec![])
            ]
        );
        // A flipped bit in the second record's payload: it is skipped, the third is found.
        let mut damaged = buf.clone();
        damaged[second + HEADER + 3] ^= 0x10;
        assert_eq!(records(&damaged), vec![(1, b"first".to_vec()), (3, vec![])]);
        // A garbled length: the checksum refuses it, the scan does not jump past record 3.
        let mut damaged = buf.clone();
        damaged[second + 4] = 0xff;
        assert_eq!(records(&damaged), vec![(1, b"first".to_vec()), (3, vec![])]);
    }

    #[test]
    fn a_cut_record_is_short_and_a_magic_cut_by_the_buffer_end_is_kept() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 0, b"payload");
        for cut in 1..buf.len() {
            assert_eq!(scan(&buf[..cut], 0, 1 << 20), Scan::Short, "cut at {cut}");
        }
        let mut junk = b"xxxxwj".to_vec();
        assert_eq!(scan(&junk, 0, 1 << 20), Scan::Garbage { to: 4 });
        junk.truncate(5);
        assert_eq!(scan(&junk, 0, 1 << 20), Scan::Garbage { to: 4 });
        assert_eq!(scan(b"xyz", 0, 1 << 20), Scan::Garbage { to: 3 });
    }
}
