//! `ork completions SHELL`: a completion script for bash, zsh, fish, ...

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = super::Cli::command();
    // Generated into memory first: clap_complete panics on a closed stdout.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ork", &mut script);
    crate::output::emit(&String::from_utf8_lossy(&script))
}
