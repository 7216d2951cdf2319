//! Gzip for request bodies, with the deflate state kept between requests.
//!
//! flate2's `GzEncoder` cannot be reset: a new one per request allocates and zeroes its
//! deflate state (hundreds of KiB) every time, which was a tenth of weir's time at the SDK's
//! 20 events per request. So the body is deflated with a pooled [`flate2::Compress`], reset
//! after each use, and framed here: the gzip member around raw deflate is a fixed 10-byte
//! header and an 8-byte trailer (CRC-32 and length, RFC 1952), written by hand because
//! flate2 offers no resettable gzip writer.

use std::sync::Mutex;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// RFC 1952's member header: magic, deflate, no flags, no time, no extra flags, unknown OS
/// (what flate2's `GzEncoder` writes at the default level).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Compressors to reuse: one per request in flight at most.
#[derive(Default)]
pub struct Gzip {
    idle: Mutex<Vec<Compress>>,
}

impl Gzip {
    /// `input` as one gzip member.
    pub fn compress(&self, input: &[u8]) -> Result<Vec<u8>, flate2::CompressError> {
        let pooled = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut deflate = pooled.unwrap_or_else(|| Compress::new(Compression::default(), false));
        let mut out = Vec::with_capacity(HEADER.len() + input.len() / 4 + 64);
        out.extend_from_slice(&HEADER);
        deflate_all(&mut deflate, input, &mut out)?;
        // Only a compressor that finished cleanly goes back (one that failed is dropped).
        deflate.reset();
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(deflate);
        let mut crc = Crc::new();
        crc.update(input);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
        Ok(out)
    }
}

fn deflate_all(deflate: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), flate2::CompressError> {
    let start = deflate.total_in();
    loop {
        let taken = (deflate.total_in() - start) as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        if deflate.compress_vec(&input[taken..], out, FlushCompress::Finish)? == Status::StreamEnd {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn members_decode_to_their_input_also_when_the_compressor_is_reused() {
        let gzip = Gzip::default();
        // Incompressible and larger than the first reservation, then small, then empty.
        let mut noise = Vec::new();
        let mut state = 0x2545_f491_u32;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            noise.push(state as u8);
        }
        let json = br#"{"batch":[{"type":"track","event":"page view"}]}"#.repeat(50);
        for input in [&noise[..], &json[..], b"", &json[..]] {
            let member = gzip.compress(input).unwrap();
            assert_eq!(gunzip(&member), input);
            assert_eq!(&member[..10], &HEADER);
        }
        // One compressor served all four, one after the other.
        assert_eq!(gzip.idle.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_member_matches_flate2s_gz_encoder_byte_for_byte_at_the_default_level() {
        use std::io::Write;
        let input = br#"{"batch":[{"type":"identify","userId":"u1"}],"sentAt":"2026-12-07T00:00:00.000Z"}"#;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(input).unwrap();
        let gzip = Gzip::default();
        gzip.compress(b"something else first").unwrap();
        assert_eq!(gzip.compress(input).unwrap(), encoder.finish().unwrap());
    }
}
