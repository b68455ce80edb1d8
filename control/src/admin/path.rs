//! Model names in admin paths. Names may hold `/`, `:`, spaces or any UTF-8
//! (`meta-llama/Llama-3-8B`, `org/model:tag`), so a path carries them percent-encoded (RFC 3986);
//! a raw `/` is accepted too, as clients and templating tools (Argo's `{{ args.model }}`) often
//! leave it as it is.

use std::borrow::Cow;

use rollgate_config::{percent_decode, PercentError};

/// Why an admin path does not name a model (or a model and an action).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(transparent)]
    Encoding(#[from] PercentError),
    #[error("no model in the path")]
    NoModel,
    #[error("no action: use POST /rollouts/{{model}}/{{action}} (the model percent-encoded)")]
    NoAction,
}

/// A command path's parts, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command<'a> {
    pub(crate) model: Cow<'a, str>,
    pub(crate) action: Cow<'a, str>,
}

// === impl PathError ===

impl PathError {
    /// 404 for a path without an action (no such route), 400 for a model that cannot be read.
    pub(crate) fn status(&self) -> hyper::StatusCode {
        match self {
            PathError::NoAction => hyper::StatusCode::NOT_FOUND,
            _ => hyper::StatusCode::BAD_REQUEST,
        }
    }
}

/// The model a path names when the model is the rest of it (`/status/models/{model}`), given
/// that rest: decoded, raw `/` kept.
pub(crate) fn model(rest: &str) -> Result<Cow<'_, str>, PathError> {
    let model = percent_decode(rest)?;
    if model.is_empty() {
        return Err(PathError::NoModel);
    }
    Ok(model)
}

/// `{model}/{action}` (what follows `/rollouts/`): the action is the last segment, the model
/// everything before it. Split before decoding, so an encoded `%2F` never ends the model.
pub(crate) fn command(rest: &str) -> Result<Command<'_>, PathError> {
    let Some((model_part, action)) = rest.rsplit_once('/') else {
        return Err(PathError::NoAction);
    };
    let action = percent_decode(action)?;
    if action.is_empty() {
        return Err(PathError::NoAction);
    }
    Ok(Command {
        model: model(model_part)?,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate_config::encode_path_segment;

    #[test]
    fn a_command_path_ends_with_its_action_and_decodes_its_model() {
        fn ok(model: &'static str, action: &'static str) -> Result<Command<'static>, PathError> {
            Ok(Command {
                model: model.into(),
                action: action.into(),
            })
        }
        let cases = [
            ("m/pause", ok("m", "pause")),
            ("org/model:tag/pin", ok("org/model:tag", "pin")),
            ("org%2Fmodel%3Atag/pin", ok("org/model:tag", "pin")),
            ("org/model%3Atag/unpin", ok("org/model:tag", "unpin")),
            (
                "meta-llama/Llama-3-8B/pause",
                ok("meta-llama/Llama-3-8B", "pause"),
            ),
            ("my%20model/resume", ok("my model", "resume")),
            ("my+model/resume", ok("my+model", "resume")),
            ("%E6%A8%A1%E5%9E%8B/abort", ok("模型", "abort")),
            ("%e6%a8%a1%e5%9e%8b/abort", ok("模型", "abort")),
            ("a%25b/pin", ok("a%b", "pin")),
            ("m", Err(PathError::NoAction)),
            ("m/", Err(PathError::NoAction)),
            ("org%2Fmodel", Err(PathError::NoAction)),
            ("/pin", Err(PathError::NoModel)),
            ("%zz/pin", Err(bad("%zz", 0))),
            ("m%2/pin", Err(bad("m%2", 1))),
            ("m%/pin", Err(bad("m%", 1))),
            ("%FF/pin", Err(not_utf8("%FF"))),
            ("%C3/pin", Err(not_utf8("%C3"))),
        ];
        for (rest, want) in cases {
            assert_eq!(command(rest), want, "{rest}");
        }
    }

    #[test]
    fn a_model_path_is_the_rest_decoded() {
        let cases = [
            ("m", Ok("m")),
            ("meta-llama/Llama-3-8B", Ok("meta-llama/Llama-3-8B")),
            ("meta-llama%2FLlama-3-8B", Ok("meta-llama/Llama-3-8B")),
            ("meta-llama%2fLlama%203", Ok("meta-llama/Llama 3")),
            ("%E6%A8%A1%E5%9E%8B", Ok("模型")),
            ("", Err(PathError::NoModel)),
            ("%zz", Err(bad("%zz", 0))),
            ("%+1", Err(bad("%+1", 0))),
            ("%FF", Err(not_utf8("%FF"))),
        ];
        for (rest, want) in cases {
            assert_eq!(model(rest).as_deref().map_err(Clone::clone), want, "{rest}");
        }
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters_and_round_trips() {
        assert_eq!(encode_path_segment("org/model:tag"), "org%2Fmodel%3Atag");
        assert_eq!(encode_path_segment("my model"), "my%20model");
        assert_eq!(encode_path_segment("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(encode_path_segment("模"), "%E6%A8%A1");
        for name in ["org/model:tag", "my model", "模型", "a%b+c?d#e", "m"] {
            let encoded = encode_path_segment(name);
            assert!(!encoded.contains('/'), "{encoded}");
            assert_eq!(model(&encoded).as_deref(), Ok(name));
            assert!(
                format!("http://h/rollouts/{encoded}/pin")
                    .parse::<hyper::Uri>()
                    .is_ok(),
                "{encoded}"
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            bad("m%2", 1).to_string(),
            "invalid percent-encoding in `m%2` at byte 1: `%` must be followed by two hex digits"
        );
        assert_eq!(
            not_utf8("%FF").to_string(),
            "`%FF` does not percent-decode to UTF-8"
        );
        assert_eq!(PathError::NoAction.status(), hyper::StatusCode::NOT_FOUND);
        assert_eq!(PathError::NoModel.status(), hyper::StatusCode::BAD_REQUEST);
    }

    fn bad(text: &str, at: usize) -> PathError {
        PercentError::BadEscape {
            text: text.into(),
            at,
        }
        .into()
    }

    fn not_utf8(text: &str) -> PathError {
        PercentError::NotUtf8(text.into()).into()
    }
}
