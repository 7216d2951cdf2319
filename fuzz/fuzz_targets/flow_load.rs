//! Any flow file, in any of the three formats (the first byte chooses): loading and checking
//! report problems, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::config::Format;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let format = [Format::Json, Format::Toml, Format::Yaml][usize::from(first % 3)];
    let Ok(document) = weir::config::parse_text(text, format) else {
        return;
    };
    let Ok(flow) = weir::config::flow::parse_flow(document, None, &|_| None) else {
        return;
    };
    let _ = weir::assembly::build_flow(&flow);
});
