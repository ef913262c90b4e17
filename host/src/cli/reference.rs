//! The command line's reference, generated from the same definitions clap parses with, so
//! `docs/cli.md` cannot drift from the binary (a unit test compares them).

use clap::CommandFactory;

use super::Cli;

/// Width the help text is wrapped at, so the reference does not depend on a terminal.
const WIDTH: usize = 100;

/// The reference of every command as Markdown: the top-level help, then each subcommand's
/// long help (nested subcommands too).
pub fn reference() -> String {
    let mut root = Cli::command().term_width(WIDTH).max_term_width(WIDTH);
    root.build();
    let mut out = String::from(
        "# The `wasmscaler` command line\n\n\
         Generated from the code (`WASMSCALER_BLESS=1 cargo test -p wasmscaler --lib \
         cli_reference` rewrites it); `wasmscaler help COMMAND` prints the same.\n",
    );
    section(&mut out, &mut root, "wasmscaler");
    out
}

fn section(out: &mut String, command: &mut clap::Command, path: &str) {
    // An environment variable's value where the reference is generated is nobody's default.
    let help = command
        .clone()
        .mut_args(|arg| arg.hide_env_values(true))
        .render_long_help()
        .to_string();
    out.push_str(&format!(
        "\n## `{path}`\n\n```text\n{}\n```\n",
        help.trim_end()
    ));
    let names: Vec<String> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        if let Some(sub) = command.find_subcommand_mut(&name) {
            section(out, sub, &format!("{path} {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_reference_in_docs_is_current() {
        crate::fsutil::assert_doc_current("cli.md", &super::reference(), "cli_reference");
    }
}
