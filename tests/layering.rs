//! The crate's layering, checked: a top-level module may use only modules of lower layers,
//! so no two modules import each other and the folders read bottom-up as the flow does.
//!
//! `cargo test --test layering -- --nocapture` prints the dependency table. The check reads
//! the source text for `crate::<module>` paths (in `use` lists too) outside comments; it
//! cannot be fooled by a path spelled `super::super::…`, which the crate does not use
//! (checked below as well).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. Modules on one line are peers and must not use each other either.
const LAYERS: &[&[&str]] = &[
    &["json", "telemetry"],
    &["event"],
    &["config"],
    &["collector"],
    &["mapping"],
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

/// Top-level modules named by `crate::` paths in `text`, comments left out.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: the first segment of each item (one line in this crate).
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        used.insert(name.to_owned());
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
    }
    used
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
                None if !graph.contains_key(other) => {} // `crate::` of something not a module (none today)
                None => problems.push(format!("{other} is in no layer: add it to LAYERS")),
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
    let used = used_modules("use crate::{config::typed, event};\n// crate::cli\nlet x = crate::json::to_vec(&v);");
    let expected: BTreeSet<String> = ["config", "event", "json"].iter().map(|s| s.to_string()).collect();
    assert_eq!(used, expected);
}
