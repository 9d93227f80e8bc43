//! `ork token create --name NAME --role ROLE [--expires 30d]`.

use clap::Args;
use ork_proto::v1::CreateTokenRequest;

use crate::commands::Context;
use crate::error::usage;
use crate::output::{self, OutputFormat};

/// What a token may do.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Everything: deploy and delete workflows, manage tokens, and all below.
    Admin,
    /// Start, cancel and retry runs, and read.
    Operator,
    /// Read workflows, runs and logs.
    Viewer,
    /// Only what pool workers do (attach, report their attempts).
    Worker,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Operator => "operator",
            RoleArg::Viewer => "viewer",
            RoleArg::Worker => "worker",
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for people and for `ork token revoke` (unique among live tokens).
    #[arg(long)]
    name: String,
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Lifetime: seconds, or a number with s, m, h or d (e.g. 30d). Default:
    /// the token does not expire.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    expires: Option<u32>,
}

/// `90`, `90s`, `15m`, `12h`, `30d` → seconds.
fn parse_lifetime(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}`; use s, m, h or d (e.g. 30d)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 3600, 90m, 12h or 30d"))?;
    let seconds = n
        .checked_mul(scale)
        .and_then(|s| u32::try_from(s).ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("`{text}` must be more than 0 and at most ten years"))?;
    Ok(seconds)
}

pub async fn run(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.name.trim().is_empty() {
        return Err(usage("--name must not be empty"));
    }
    let client = ctx.connect().await?;
    let response = client
        .tokens
        .clone()
        .create_token(CreateTokenRequest {
            name: args.name,
            role: args.role.as_str().to_owned(),
            expires_in_seconds: args.expires.unwrap_or(0),
        })
        .await?
        .into_inner();
    let token = response.token.clone().unwrap_or_default();
    match ctx.output {
        OutputFormat::Json => output::print_json(&response)?,
        OutputFormat::Table => output::emit_line(&response.secret)?,
    }
    let expires = match &token.expires_at {
        Some(at) => format!(
            "expires {}",
            ork_proto::time::from_proto(at)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default()
        ),
        None => "does not expire".to_owned(),
    };
    eprintln!(
        "created token `{}` (role {}, {expires}); it is shown only this once: clients send it with --token or ORK_TOKEN",
        token.name, token.role
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90"), Ok(90));
        assert_eq!(parse_lifetime("15m"), Ok(900));
        assert_eq!(parse_lifetime("30d"), Ok(2_592_000));
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("3w").is_err());
        assert!(parse_lifetime("soon").is_err());
        assert!(parse_lifetime("99999999d").is_err());
    }
}
