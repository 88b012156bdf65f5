//! Guards the coupling between our `gemm` dependency line and candle-core's.
//!
//! Cargo.toml names `gemm` only to switch on its `x86-v4` feature (the AVX-512 matmul kernels, 1.67x on the
//! 9 x 256 batch-1 benchmark, docs/benchmarks.md). Features apply to the one copy that both crates share only
//! while both ask for the same semver-compatible version: were candle-core to move to another gemm, Cargo would
//! resolve two copies, ours would carry the feature and candle's would not, and the native CPU path would lose
//! its AVX-512 kernels with no error. These tests read the committed lock file and fail in that case.

use std::path::Path;

struct Package {
    name: String,
    version: String,
    dependencies: Vec<String>,
}

/// The `[[package]]` entries of a Cargo.lock (version 3 or 4): name, version and dependency lines.
fn parse_lock(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    for block in text.split("[[package]]").skip(1) {
        let mut name = String::new();
        let mut version = String::new();
        let mut dependencies = Vec::new();
        let mut in_deps = false;
        for line in block.lines() {
            let line = line.trim();
            if in_deps {
                if line.starts_with(']') {
                    in_deps = false;
                } else {
                    dependencies.push(line.trim_end_matches(',').trim_matches('"').to_string());
                }
            } else if let Some(v) = line.strip_prefix("name = ") {
                name = v.trim_matches('"').to_string();
            } else if let Some(v) = line.strip_prefix("version = ") {
                version = v.trim_matches('"').to_string();
            } else if line.starts_with("dependencies = [") {
                in_deps = !line.ends_with(']');
            }
        }
        packages.push(Package {
            name,
            version,
            dependencies,
        });
    }
    packages
}

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The version requirement of the `gemm = { version = "..." ...}` line of Cargo.toml.
fn manifest_gemm_requirement(manifest: &str) -> String {
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("gemm = "))
        .expect("Cargo.toml has no `gemm = ...` dependency line");
    assert!(
        line.contains("\"x86-v4\""),
        "the gemm line of Cargo.toml no longer enables the x86-v4 feature: {line}"
    );
    let start = line.find("version = \"").expect("gemm line has no version") + "version = \"".len();
    let rest = &line[start..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn lock_file_parser_reads_packages_and_dependencies() {
    // A lock file with two gemm copies, written as Cargo writes it (dependencies qualified by version).
    let lock = r#"
version = 4

[[package]]
name = "candle-core"
version = "0.9.1"
dependencies = [
 "gemm 0.17.1",
 "half",
]

[[package]]
name = "gemm"
version = "0.17.1"

[[package]]
name = "gemm"
version = "0.19.0"
dependencies = [
 "dyn-stack",
]
"#;
    let packages = parse_lock(lock);
    assert_eq!(packages.len(), 3);
    assert_eq!(packages.iter().filter(|p| p.name == "gemm").count(), 2);
    assert_eq!(packages[0].dependencies, vec!["gemm 0.17.1", "half"]);
    assert_eq!(packages[2].version, "0.19.0");
    assert_eq!(packages[2].dependencies, vec!["dyn-stack"]);
}

#[test]
fn candle_and_this_crate_share_one_gemm_with_the_avx512_feature() {
    let packages = parse_lock(&read("Cargo.lock"));
    let gemms: Vec<&Package> = packages.iter().filter(|p| p.name == "gemm").collect();
    assert_eq!(
        gemms.len(),
        1,
        "Cargo.lock holds {} copies of gemm ({:?}): candle-core and Cargo.toml's gemm line ask for different \
         versions, so the x86-v4 feature no longer reaches candle's matmul; set Cargo.toml's gemm version to \
         candle-core's",
        gemms.len(),
        gemms.iter().map(|p| p.version.as_str()).collect::<Vec<_>>()
    );
    let locked = &gemms[0].version;

    // Both sides of the coupling: candle's matmul uses gemm, and this crate names it for the feature.
    for name in ["candle-core", "equivariant"] {
        let package = packages
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("Cargo.lock has no {name} package"));
        assert!(
            package.dependencies.iter().any(|d| d == "gemm"),
            "{name} no longer depends on gemm directly (its dependencies: {:?}); the x86-v4 line in \
             Cargo.toml then no longer reaches candle's matmul",
            package.dependencies
        );
    }

    // The requirement "0.19" must match the locked 0.19.x (for 0.x versions the minor is the semver major).
    let requirement = manifest_gemm_requirement(&read("Cargo.toml"));
    let prefix: Vec<&str> = requirement.split('.').collect();
    let version: Vec<&str> = locked.split('.').collect();
    assert!(
        prefix.len() <= version.len() && prefix.iter().zip(&version).all(|(a, b)| a == b),
        "Cargo.toml asks for gemm {requirement} but Cargo.lock holds {locked}"
    );
}
