//! Logging: the log filter check and the `tracing` subscriber setup.
//!
//! `tracing_subscriber::EnvFilter` reads any bare word as a target name, so a
//! mistyped level (`verbose`, `warnings`) would silently turn every log line
//! off. [`parse_filter`] accepts a level, or directives whose every part ends
//! in a level (`info,rusher=debug`, `rusher::ws[connection]=trace`), and
//! refuses anything else with a message listing the valid levels.

use std::ffi::OsStr;
use thiserror::Error;
use tracing_subscriber::EnvFilter;

/// The levels a filter may name, as told to the user.
pub const LEVELS: &str = "trace, debug, info, warn, error, off";

/// Why a log filter was refused; the caller names the key that set it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// Nothing but separators.
    #[error("is empty; use one of {LEVELS}")]
    Empty,
    /// A bare word that is not a level (EnvFilter would take it as a target).
    #[error(
        "`{0}` is not a log level; use one of {LEVELS} (`warn`, not `warning`), \
         or directives such as `info,rusher=debug`"
    )]
    NotALevel(String),
    /// `target=level` whose level is not one.
    #[error("`{level}` in `{directive}` is not a log level; use one of {LEVELS}")]
    BadLevel {
        /// The whole directive.
        directive: String,
        /// What stands after `=`.
        level: String,
    },
    /// The target or span part is malformed (EnvFilter's own message).
    #[error("`{directive}` is not a valid filter directive: {reason}")]
    Syntax {
        /// The whole directive.
        directive: String,
        /// What tracing-subscriber said.
        reason: String,
    },
}

/// `word` as one of [`LEVELS`] (any case). `warning` is refused like any
/// other word: tracing has no such level, and taking it would hide what the
/// filter really is.
fn level(word: &str) -> Option<&'static str> {
    match word.to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" => Some("warn"),
        "error" => Some("error"),
        "off" => Some("off"),
        _ => None,
    }
}

/// Checks a filter (`server.log_level`, `RUSHER_LOG_LEVEL` or `RUST_LOG`) and
/// builds it.
///
/// Accepted: comma-separated directives, each a level or
/// `target[span{field=value}]=level` (tracing-subscriber's syntax), where a
/// level is one of [`LEVELS`]. A bare target (`rusher`), which
/// EnvFilter would read as "everything of that target", must be written with
/// its level (`rusher=trace`), so that a mistyped level is an error.
pub fn parse_filter(text: &str) -> Result<EnvFilter, FilterError> {
    let mut normalized = Vec::new();
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // The level follows the last `=` outside a span's `[...]`, whose
        // field filters may contain `=` themselves.
        let after_spans = directive.rfind(']').map_or(0, |i| i + 1);
        let Some(eq) = directive[after_spans..].rfind('=').map(|i| after_spans + i) else {
            let level = level(directive).ok_or_else(|| FilterError::NotALevel(directive.into()))?;
            normalized.push(level.to_string());
            continue;
        };
        let (target, written) = (&directive[..eq], directive[eq + 1..].trim());
        let level = level(written).ok_or_else(|| FilterError::BadLevel {
            directive: directive.into(),
            level: written.into(),
        })?;
        let rewritten = format!("{}={level}", target.trim());
        EnvFilter::try_new(&rewritten).map_err(|e| FilterError::Syntax {
            directive: directive.into(),
            reason: e.to_string(),
        })?;
        normalized.push(rewritten);
    }
    if normalized.is_empty() {
        return Err(FilterError::Empty);
    }
    EnvFilter::try_new(normalized.join(",")).map_err(|e| FilterError::Syntax {
        directive: text.into(),
        reason: e.to_string(),
    })
}

/// Whether to colour the log: only on a terminal, and not when `NO_COLOR`
/// is set to anything but the empty string (<https://no-color.org>).
pub fn use_colour(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the global subscriber: `filter` (already checked by the config),
/// JSON lines or text on stdout, coloured per [`use_colour`].
pub fn init(filter: &str, json: bool) -> Result<(), FilterError> {
    use std::io::IsTerminal;
    let filter = parse_filter(filter)?;
    let colour = use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour && !json);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_is_accepted_in_any_case_and_warning_is_not() {
        for word in ["trace", "debug", "info", "warn", "error", "off", "WARN"] {
            assert!(parse_filter(word).is_ok(), "{word}");
        }
        let err = parse_filter("warning").unwrap_err().to_string();
        assert!(err.contains("`warn`, not `warning`"), "{err}");
    }

    #[test]
    fn a_word_that_is_not_a_level_is_refused_with_the_levels_listed() {
        let err = parse_filter("verbose").unwrap_err();
        assert_eq!(err, FilterError::NotALevel("verbose".into()));
        assert!(err.to_string().contains(LEVELS), "{err}");
    }

    #[test]
    fn directives_with_targets_and_spans_are_accepted() {
        for text in [
            "info,rusher=debug",
            "warn, rusher::ws=trace",
            "rusher[connection]=debug",
            "rusher[connection{app_id=a}]=warn",
        ] {
            assert!(
                parse_filter(text).is_ok(),
                "{text}: {:?}",
                parse_filter(text).err()
            );
        }
    }

    #[test]
    fn a_bad_level_inside_a_directive_is_named() {
        let err = parse_filter("info,rusher=loud").unwrap_err();
        assert_eq!(
            err,
            FilterError::BadLevel {
                directive: "rusher=loud".into(),
                level: "loud".into()
            }
        );
    }

    #[test]
    fn a_bare_target_needs_its_level() {
        assert!(matches!(
            parse_filter("info,rusher"),
            Err(FilterError::NotALevel(word)) if word == "rusher"
        ));
    }

    #[test]
    fn an_empty_filter_is_refused() {
        assert_eq!(parse_filter(" , ").unwrap_err(), FilterError::Empty);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
