//! The crate's layering, checked: a top-level module may use only modules of lower layers,
//! so no two modules import each other and the folders read bottom-up as the flow does.
//!
//! `cargo test --test layering -- --nocapture` prints the dependency table. The check reads
//! the source text for `crate::<module>` paths (in `use` lists too, nested or over several
//! lines) outside comments, and refuses the two ways around it: `super::super::…`, and
//! `use super::` at the top of a top-level module's own file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. Modules on one line are peers and must not use each other either.
const LAYERS: &[&[&str]] = &[
    &["json", "telemetry", "code"],
    &["event"],
    &["config"],
    &["collector"],
    &["mapping"],
    &["journal"],
    &["delivery"],
    &["redis"],
    &["runtime"],
    &["destinations", "sources"],
    &["streams"],
    &["assembly"],
    &["cli"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Top-level modules named by `crate::` paths in `text`, comments left out: `crate::a::b`,
/// and every item of a `crate::{a, b::{c, d}}` list, over as many lines as it takes.
fn used_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Split the list at its own commas (depth 0), up to its closing brace.
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for item in items {
                let name = item.trim().split("::").next().unwrap_or("").trim().to_owned();
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

/// `use super::` outside any inner module (not indented) of a top-level module's own file
/// reaches the crate root, past this check: not allowed.
fn reaches_the_root_through_super(text: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with("use super::") || line.starts_with("pub use super::"))
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let own_file = if path.is_dir() {
            path.join("mod.rs")
        } else {
            path.clone()
        };
        let own_text = std::fs::read_to_string(&own_file).unwrap();
        assert!(
            !reaches_the_root_through_super(&own_text),
            "{}: `use super::` at the top of a top-level module reaches the crate root; write crate::",
            own_file.display()
        );
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        let mut used = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains("super::super"),
                "{}: use a crate:: path, which this check can read",
                file.display()
            );
            used.extend(used_modules(&text));
        }
        used.remove(&name);
        graph.insert(name, used);
    }
    graph
}

#[test]
fn every_module_uses_only_lower_layers() {
    let graph = dependencies();
    let mut problems = Vec::new();
    for (module, used) in &graph {
        println!("{module:>12} -> {}", used.iter().cloned().collect::<Vec<_>>().join(" "));
        let Some(own) = rank(module) else {
            problems.push(format!("{module} is in no layer: add it to LAYERS"));
            continue;
        };
        for other in used {
            match rank(other) {
                None => problems.push(format!("{module} uses crate::{other}, which is no module of a layer")),
                Some(theirs) if theirs >= own => {
                    problems.push(format!("{module} (layer {own}) uses {other} (layer {theirs})"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_use_lists_and_skips_comments() {
    let used = used_modules(
        "use crate::{config::{join, typed}, event};\n// crate::cli\nlet x = crate::json::to_vec(&v);\n\
         use crate::{\n    delivery::Route,\n    // crate::assembly\n    mapping,\n};",
    );
    let expected: BTreeSet<String> = ["config", "delivery", "event", "json", "mapping"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(used, expected);
    assert!(reaches_the_root_through_super("//! docs\nuse super::assembly;\n"));
    assert!(!reaches_the_root_through_super("mod tests {\n    use super::*;\n}\n"));
}
