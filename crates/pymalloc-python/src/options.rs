//! Just enough of python3's command-line syntax to know, before the
//! interpreter starts, which allocator configuration applies: `-E` and `-I`
//! (the environment is ignored, PYTHONMALLOC included) and `-X dev` (debug
//! hooks unless PYTHONMALLOC says otherwise). CPython parses the command line
//! itself afterwards; this only has to agree with it on these options.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// What the allocator choice depends on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EarlyOptions {
    /// `-E` or `-I`: environment variables are ignored.
    pub ignore_environment: bool,
    /// `-X dev`, or `-X dev=...`.
    pub dev_mode: bool,
}

/// Parses `args` (without the program name) the way CPython's getopt does
/// for the options that matter here.
pub fn parse<'a>(args: impl IntoIterator<Item = &'a OsStr>) -> EarlyOptions {
    let mut out = EarlyOptions::default();
    let mut args = args.into_iter().map(OsStr::as_bytes);
    while let Some(arg) = args.next() {
        if arg == b"--" || arg == b"-" || !arg.starts_with(b"-") {
            break; // end of options: script, stdin, or "--"
        }
        if let Some(long) = arg.strip_prefix(b"--") {
            // The one long option with a separate argument.
            if long == b"check-hash-based-pycs" {
                args.next();
            }
            continue;
        }
        let flags = &arg[1..];
        for (i, &c) in flags.iter().enumerate() {
            match c {
                b'E' | b'I' => out.ignore_environment = true,
                // Everything after -c or -m belongs to the program.
                b'c' | b'm' => return out,
                b'W' | b'X' => {
                    let rest = &flags[i + 1..];
                    let value = if rest.is_empty() { args.next().unwrap_or(b"") } else { rest };
                    if c == b'X' && value.split(|&b| b == b'=').next() == Some(b"dev".as_slice()) {
                        out.dev_mode = true;
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> EarlyOptions {
        parse(args.iter().map(OsStr::new))
    }

    #[test]
    fn python_option_syntax() {
        assert_eq!(p(&[]), EarlyOptions::default());
        assert!(p(&["-E", "x.py"]).ignore_environment);
        assert!(p(&["-sIu"]).ignore_environment);
        assert!(p(&["-X", "dev"]).dev_mode);
        assert!(p(&["-Xdev", "-c", "pass"]).dev_mode);
        assert!(p(&["-X", "dev=1"]).dev_mode);
        assert!(!p(&["-X", "devx"]).dev_mode);
        assert!(!p(&["-X", "utf8"]).dev_mode);
        assert!(p(&["-bX", "dev"]).dev_mode);
        // Program arguments are not options.
        assert!(!p(&["-c", "pass", "-E"]).ignore_environment);
        assert!(!p(&["-m", "mod", "-X", "dev"]).dev_mode);
        assert!(!p(&["script.py", "-E"]).ignore_environment);
        assert!(!p(&["-", "-E"]).ignore_environment);
        assert!(!p(&["--", "-E"]).ignore_environment);
        assert!(!p(&["-cE"]).ignore_environment, "-cE runs the code 'E'");
        // Option arguments are not options.
        assert!(!p(&["-W", "-E"]).ignore_environment);
        assert!(!p(&["-X", "-E"]).ignore_environment);
        assert!(p(&["-Werror", "-E"]).ignore_environment);
        assert!(!p(&["--check-hash-based-pycs", "-E"]).ignore_environment);
        assert!(p(&["--check-hash-based-pycs", "always", "-I"]).ignore_environment);
    }
}
