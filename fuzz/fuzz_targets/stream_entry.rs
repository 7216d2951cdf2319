//! Any stream entry (fields from the input, on a stream named by its first line) decodes to
//! an event or to a reason, never a panic, whatever its form (weir's, walkerOS's flat,
//! Optimizely Agent's); and signature checks in both of Caracal's schemes only ever answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::collector::Collector;
use weir::config::flow::CollectorConfig;
use weir::redis::replies::Entry;
use weir::redis::signing::{Scheme, Signer, SigningKey};

fuzz_target!(|data: &[u8]| {
    // Line 1: the stream; then field / value pairs, one per line (values may be any bytes).
    let mut lines = data.split(|b| *b == b'\n');
    let Some(stream) = lines.next().and_then(|s| std::str::from_utf8(s).ok()) else {
        return;
    };
    let mut fields = Vec::new();
    while let (Some(name), Some(value)) = (lines.next(), lines.next()) {
        let Ok(name) = std::str::from_utf8(name) else { return };
        fields.push((name.to_owned(), value.to_vec()));
    }
    let entry = Entry {
        id: "1-0".to_owned(),
        fields,
    };
    let collector = Collector::new(&CollectorConfig::default());
    if let Ok(event) = weir::sources::redis_stream::decode(&entry, stream, &collector) {
        serde_json::from_slice::<serde_json::Value>(&event.to_json()).expect("decoded events are JSON");
    }
    let key = SigningKey::from_bytes(vec![7; 32]).expect("32 bytes");
    let borrowed: Vec<(&str, &[u8])> = entry.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    for scheme in [Scheme::Stream, Scheme::Audit] {
        let signer = Signer {
            key: key.clone(),
            scheme,
        };
        let _ = signer.verify_entry(stream, &borrowed);
        // What it signs, it verifies.
        if let Ok(signature) = signer.sign(stream, &borrowed) {
            let mut signed: Vec<(&str, &[u8])> =
                borrowed.iter().copied().filter(|(n, _)| *n != signer.field()).collect();
            signed.push((signer.field(), signature.as_bytes()));
            assert!(signer.verify_entry(stream, &signed), "a fresh signature verifies");
        }
    }
});
