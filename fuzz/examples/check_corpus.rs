//! Runs every target's checks over the committed seed corpora (or over the
//! files given), without libFuzzer or nightly flags: a quick way to see
//! that the seeds still parse as intended and to replay an input under a
//! debugger. Run from `fuzz/`:
//!
//! ```sh
//! cargo run --example check_corpus                       # every corpus
//! cargo run --example check_corpus edge_config some.toml # one input
//! ```

use std::fs;
use std::path::Path;

type Check = fn(&str);

const TARGETS: &[(&str, Check)] = &[
    ("edge_config", config_fuzz::check_edge_config),
    ("controller_config", config_fuzz::check_controller_config),
    ("lab_topology", config_fuzz::check_lab_topology),
    ("chaos_plan", config_fuzz::check_chaos_plan),
    ("netem_rules", config_fuzz::check_netem_rules),
];

fn run(check: Check, path: &Path) {
    let bytes = fs::read(path).expect("read input");
    if let Ok(text) = std::str::from_utf8(&bytes) {
        check(text);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [target, files @ ..] = args.as_slice() {
        let (_, check) = TARGETS
            .iter()
            .find(|(t, _)| t == target)
            .unwrap_or_else(|| panic!("unknown target {target}"));
        for f in files {
            run(*check, Path::new(f));
            println!("{target}: {f} ok");
        }
        return;
    }
    for (target, check) in TARGETS {
        let mut paths: Vec<_> = fs::read_dir(Path::new("corpus").join(target))
            .expect("corpus dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        paths.sort();
        for p in &paths {
            run(*check, p);
        }
        println!("{target}: {} inputs ok", paths.len());
    }
}
