//! `wasmscaler new`: a self-contained policy project that builds outside this repository:
//! the policy's source, the contract vendored (the narrowed world for the languages whose
//! bindings import a whole world), a build script, a sample context and a test that runs it
//! with `wasmscaler eval`. The Rust template vendors the SDK (`guests/sdk`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::contract::WIT;

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// The policy's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The policy's name: lower-case words joined by `-` (`my-policy`), each starting with a
    /// letter; the project's directory, crate and WIT world take it.
    name: String,
    /// Where to create the project [default: ./NAME]; it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Lang {
    /// Rust, with the wasmscaler-guest SDK (cargo and the wasm32-wasip2 target).
    Rust,
    /// JavaScript (componentize-js).
    Js,
    /// Python (componentize-py).
    Python,
    /// C (clang for wasm32-wasi, wit-bindgen's C bindings, `wasmscaler componentize`).
    C,
}

/// A template file: where it goes in the project, and its text with `{{…}}` placeholders.
type File = (&'static str, &'static str);

const COMMON: &[File] = &[
    (
        "README.md",
        include_str!("../../templates/common/README.md"),
    ),
    (
        "context.json",
        include_str!("../../templates/common/context.json"),
    ),
    (
        "pod-metrics.json",
        include_str!("../../templates/common/pod-metrics.json"),
    ),
    ("test.sh", include_str!("../../templates/common/test.sh")),
];

const NARROWED_WORLD: File = (
    "wit/world.wit",
    include_str!("../../templates/common/world.wit"),
);

const RUST: &[File] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    ("build.sh", include_str!("../../templates/rust/build.sh")),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
];

/// The SDK as `guests/sdk` holds it; [`sdk_file`] adapts it to live inside a project.
const SDK: &[File] = &[
    (
        "sdk/Cargo.toml",
        include_str!("../../../guests/sdk/Cargo.toml"),
    ),
    (
        "sdk/src/lib.rs",
        include_str!("../../../guests/sdk/src/lib.rs"),
    ),
    (
        "sdk/src/config.rs",
        include_str!("../../../guests/sdk/src/config.rs"),
    ),
    (
        "sdk/src/history.rs",
        include_str!("../../../guests/sdk/src/history.rs"),
    ),
    (
        "sdk/src/hpa.rs",
        include_str!("../../../guests/sdk/src/hpa.rs"),
    ),
    (
        "sdk/src/json.rs",
        include_str!("../../../guests/sdk/src/json.rs"),
    ),
];

/// The JavaScript and Python policies are the example guests' own sources.
const JS: &[File] = &[
    (
        "policy.js",
        include_str!("../../../guests/cpu-target-js/cpu-target.js"),
    ),
    ("build.sh", include_str!("../../templates/js/build.sh")),
];

/// The C policy: `guests/cpu-target-c` with its committed bindings and world (the bindings
/// are generated for that world, so its name stays `cpu-target`).
const C: &[File] = &[
    (
        "policy.c",
        include_str!("../../../guests/cpu-target-c/cpu_target.c"),
    ),
    ("build.sh", include_str!("../../templates/c/build.sh")),
    (
        "gen/cpu_target.c",
        include_str!("../../../guests/cpu-target-c/gen/cpu_target.c"),
    ),
    (
        "gen/cpu_target.h",
        include_str!("../../../guests/cpu-target-c/gen/cpu_target.h"),
    ),
    (
        "wit/world.wit",
        include_str!("../../../guests/cpu-target-c/wit/world.wit"),
    ),
];

/// The object wit-bindgen made of the C world's component type.
const C_COMPONENT_TYPE: (&str, &[u8]) = (
    "gen/cpu_target_component_type.o",
    include_bytes!("../../../guests/cpu-target-c/gen/cpu_target_component_type.o"),
);

const PYTHON: &[File] = &[
    (
        "app.py",
        include_str!("../../../guests/cpu-target-py/app.py"),
    ),
    ("build.sh", include_str!("../../templates/python/build.sh")),
];

/// The SDK's files as a project's path dependency: not a workspace of its own (the project
/// is), and its bindings read the contract vendored beside it.
fn sdk_file(path: &str, text: &str) -> String {
    match path {
        "sdk/Cargo.toml" => text.split("\n[workspace]\n").collect::<Vec<_>>().join("\n"),
        "sdk/src/lib.rs" => text.replace(r#"path: "../../wit""#, r#"path: "wit""#),
        _ => text.to_owned(),
    }
}

/// Why a name cannot name a policy, if it cannot.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.split('-').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a policy name: use lower-case words joined by '-', each starting with a letter (my-policy), at most 64 characters"
        ))
    }
}

/// Every file of a `lang` project named `name`: (path in the project, contents).
fn project(lang: Lang, name: &str) -> Vec<(String, Vec<u8>)> {
    let (language, wit_note, own): (&str, &str, &[File]) = match lang {
        Lang::Rust => (
            "Rust",
            "the SDK's bindings are generated from sdk/wit/policy.wit",
            RUST,
        ),
        Lang::Js => (
            "JavaScript",
            "wit/world.wit narrows it to what the policy imports; wit/deps/policy holds it whole",
            JS,
        ),
        Lang::Python => (
            "Python",
            "wit/world.wit narrows it to what the policy imports; wit/deps/policy holds it whole",
            PYTHON,
        ),
        Lang::C => (
            "C",
            "wit/world.wit narrows it to what the policy imports, gen/ holds its bindings; wit/deps/policy holds it whole",
            C,
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{package}}", name)
            .replace("{{language}}", language)
            .replace("{{wit_note}}", wit_note)
    };
    let mut files: Vec<(String, String)> = COMMON
        .iter()
        .chain(own)
        .map(|(path, text)| (path.to_string(), fill(text)))
        .collect();
    match lang {
        Lang::Rust => {
            files.extend(
                SDK.iter()
                    .map(|(path, text)| (path.to_string(), sdk_file(path, text))),
            );
            files.push(("sdk/wit/policy.wit".into(), WIT.to_owned()));
        }
        Lang::Js | Lang::Python => {
            files.push((NARROWED_WORLD.0.into(), fill(NARROWED_WORLD.1)));
            files.push(("wit/deps/policy/policy.wit".into(), WIT.to_owned()));
        }
        Lang::C => files.push(("wit/deps/policy/policy.wit".into(), WIT.to_owned())),
    }
    let mut files: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(path, text)| (path, text.into_bytes()))
        .collect();
    if let Lang::C = lang {
        files.push((C_COMPONENT_TYPE.0.into(), C_COMPONENT_TYPE.1.to_vec()));
    }
    files
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

pub(super) fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name).map_err(anyhow::Error::msg)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && !is_empty_dir(&dir) {
        anyhow::bail!(
            "{} exists and is not empty: choose another --dir or name",
            dir.display()
        );
    }
    for (path, text) in project(args.lang, &args.name) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{}: a {:?} policy; `bash {}/test.sh` builds it and runs it once",
        dir.display(),
        args.lang,
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kebab_words_starting_with_letters() {
        for good in ["p", "my-policy", "queue2-scaler"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "My",
            "my_policy",
            "2fast",
            "a--b",
            "a-2b",
            "-a",
            "a-",
            "a b",
            "../x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_the_sdk_is_made_a_member() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python, Lang::C] {
            for (path, bytes) in project(lang, "my-policy") {
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("{{name}}") && !text.contains("{{crate}}"),
                    "{lang:?} {path}"
                );
            }
        }
        let rust = project(Lang::Rust, "my-policy");
        let file = |p: &str| {
            rust.iter()
                .find(|(path, _)| path == p)
                .map(|(_, t)| String::from_utf8_lossy(t).into_owned())
        };
        let sdk_manifest = file("sdk/Cargo.toml").unwrap_or_default();
        assert!(sdk_manifest.contains("name = \"wasmscaler-guest\""));
        assert!(!sdk_manifest.contains("[workspace]"), "{sdk_manifest}");
        assert!(
            file("sdk/src/lib.rs")
                .unwrap_or_default()
                .contains(r#"path: "wit""#)
        );
        assert!(
            file("build.sh")
                .unwrap_or_default()
                .contains("my_policy.wasm")
        );
        assert_eq!(file("sdk/wit/policy.wit").as_deref(), Some(WIT));
    }
}
