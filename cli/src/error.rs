//! The errors that decide `ork`'s exit code, and how each is reported.
//!
//! Commands return `anyhow::Error`; [`report`] looks inside it for one of the
//! typed errors below (or a gRPC `Status`) so scripts get a stable exit code.

use std::fmt;
use std::process::ExitCode;

/// Exit code: a run that ended other than `success`, or an error from the server.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad command-line usage or bad input files (also clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Bad input from the user (an unreadable file, a malformed `--input`, an
/// invalid workflow): exit 2, and the server was not called.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a [`UsageError`] from a command.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// No server answers at the address: exit 3, with a hint on how to get one.
#[derive(Debug)]
pub struct Unreachable {
    pub server: String,
    pub detail: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the ork server at {} ({})\n\
             hint: start one with `ork dev`, or point --server / ORK_SERVER at a running server",
            self.server, self.detail
        )
    }
}

impl std::error::Error for Unreachable {}

/// A waited-for run ended other than `success`. Its status was already printed.
#[derive(Debug)]
pub struct RunNotSuccessful {
    pub id: String,
    pub status: String,
}

impl fmt::Display for RunNotSuccessful {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {} ended {}", self.id, self.status)
    }
}

impl std::error::Error for RunNotSuccessful {}

/// A followed task ended other than `success`.
#[derive(Debug)]
pub struct TaskNotSuccessful {
    pub run: String,
    pub task: String,
    pub status: String,
}

impl fmt::Display for TaskNotSuccessful {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} of run {} ended {}; `ork run status {}` shows why",
            self.task, self.run, self.status, self.run
        )
    }
}

impl std::error::Error for TaskNotSuccessful {}

/// Whoever read our stdout closed it; like a Unix tool killed by SIGPIPE,
/// `ork` stops without a word.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Prints `error: ...` to stderr and returns the exit code for `err`.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<StdoutClosed>().is_some() {
        return ExitCode::SUCCESS;
    }
    let (code, message) = classify(err);
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn classify(err: &anyhow::Error) -> (u8, String) {
    if let Some(e) = err.downcast_ref::<UsageError>() {
        return (EXIT_USAGE, e.to_string());
    }
    if let Some(e) = err.downcast_ref::<Unreachable>() {
        return (EXIT_UNREACHABLE, e.to_string());
    }
    if let Some(e) = err.downcast_ref::<RunNotSuccessful>() {
        return (EXIT_FAILED, e.to_string());
    }
    if let Some(e) = err.downcast_ref::<TaskNotSuccessful>() {
        return (EXIT_FAILED, e.to_string());
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>()
        && let Some(cause) = transport_cause(status)
    {
        // Raised on this side: the connection broke, e.g. a TLS server
        // refused our certificate (TLS 1.3 says so only after the handshake).
        return (
            EXIT_UNREACHABLE,
            format!(
                "the connection to the ork server failed: {cause}\n\
                 hint: check --server / ORK_SERVER, and for TLS --ca-cert, --client-cert and --client-key"
            ),
        );
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        // The server's messages already name the task, the field and the fix,
        // so they are printed as they are, without the gRPC code around them.
        let message = if status.message().is_empty() {
            format!("the server answered {:?}", status.code())
        } else {
            status.message().to_owned()
        };
        if status.code() == tonic::Code::Unavailable {
            let hint = "hint: start one with `ork dev`, or point --server / ORK_SERVER at a running server";
            return (
                EXIT_UNREACHABLE,
                format!("the ork server is unavailable: {message}\n{hint}"),
            );
        }
        return (EXIT_FAILED, message);
    }
    // Anything else (a local I/O error, say) is a failure of this command.
    (EXIT_FAILED, chain_message(err))
}

/// The innermost cause of a status tonic raised on this side (a broken
/// connection); the server's own statuses carry no source.
fn transport_cause(status: &tonic::Status) -> Option<String> {
    use std::error::Error as _;
    let mut source = status.source()?;
    while let Some(next) = source.source() {
        source = next;
    }
    Some(source.to_string())
}

/// The context chain on one line (`a: b: c`), skipping a cause whose text
/// the message above it already includes, as errors that embed their source
/// in their own message do.
fn chain_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_print_the_server_message_and_exit_1() {
        for code in [
            tonic::Code::NotFound,
            tonic::Code::InvalidArgument,
            tonic::Code::FailedPrecondition,
        ] {
            let err = anyhow::Error::new(tonic::Status::new(code, "workflow \"etl\" not found"));
            assert_eq!(classify(&err), (1, "workflow \"etl\" not found".to_owned()));
        }
    }

    #[test]
    fn typed_errors_keep_their_code_under_context() {
        let err = usage("bad --input").context("starting run");
        assert_eq!(classify(&err).0, EXIT_USAGE);
        let err = anyhow::Error::new(Unreachable {
            server: "x".into(),
            detail: "y".into(),
        });
        assert_eq!(classify(&err).0, EXIT_UNREACHABLE);
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        #[derive(Debug)]
        struct Bind(std::io::Error);
        impl fmt::Display for Bind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "cannot listen on :7400: {}", self.0)
            }
        }
        impl std::error::Error for Bind {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Bind(io)).context("starting ork dev");
        assert_eq!(
            classify(&err),
            (
                1,
                "starting ork dev: cannot listen on :7400: address in use".to_owned()
            )
        );
    }
}
