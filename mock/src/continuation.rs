//! Deterministic prefill continuation: the answer to a prompt is a fixed sequence of tokens, and a
//! request that carries the beginning of that answer continues it exactly where it ends.
//!
//! * Chat: a last message with `"role": "assistant"` is a prefill (llama.cpp's server continues
//!   it by default; vLLM with `continue_final_message: true, add_generation_prompt: false`). The
//!   answer is seeded by the messages before it; when its content is the first `k` tokens of that
//!   answer, generation starts at token `k`.
//! * Text: a prompt that ends with the first `k` tokens of the answer to the rest of it (the
//!   original prompt with the delivered text appended) continues from token `k`; the longest such
//!   split wins.
//!
//! Anything else is a fresh answer seeded by the whole prompt.

use super::tokens::{TokenSource, WORDS};

/// Where an answer starts: its token source and the first token index to generate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub(crate) tokens: TokenSource,
    pub(crate) first: u64,
}

/// The longest run of the answer's tokens a continuation may carry (bounds the search).
const MAX_PREFIX_TOKENS: u64 = 100_000;

/// How many tokens of `tokens`' answer `prefix` is, if it is exactly a beginning of it.
pub(crate) fn tokens_in(tokens: &TokenSource, prefix: &str) -> Option<u64> {
    let mut rest = prefix;
    let mut index = 0;
    while !rest.is_empty() && index < MAX_PREFIX_TOKENS {
        let token = tokens.token(index);
        rest = rest.strip_prefix(token.as_str())?;
        index += 1;
    }
    rest.is_empty().then_some(index)
}

/// Where a chat answer starts: `seed` is the text of the messages before a trailing assistant
/// message whose content is `prefill`.
pub(crate) fn chat(seed: &str, prefill: &str) -> Option<Start> {
    let tokens = TokenSource::for_prompt(seed);
    tokens_in(&tokens, prefill).map(|first| Start { tokens, first })
}

/// Where a text answer starts, if `prompt` is an earlier prompt followed by the beginning of its
/// answer (the longest such beginning).
pub(crate) fn text(prompt: &str) -> Option<Start> {
    // The answer's tokens after the first begin with a space: walk back over " word" pieces,
    // then try each known word as the first token.
    let mut end = prompt.len();
    let mut found = None;
    let mut pieces = 0u64;
    loop {
        for word in WORDS {
            let Some(head) = prompt[..end].strip_suffix(word) else {
                continue;
            };
            let tokens = TokenSource::for_prompt(head);
            if tokens_in(&tokens, &prompt[head.len()..]) == Some(pieces + 1) {
                found = Some(Start {
                    tokens,
                    first: pieces + 1,
                });
            }
        }
        // The next piece back: " word".
        let before = &prompt[..end];
        let Some(space) = before.rfind(' ') else {
            break;
        };
        let word = &before[space + 1..];
        if !WORDS.contains(&word) || pieces >= MAX_PREFIX_TOKENS {
            break;
        }
        end = space;
        pieces += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tokens: &TokenSource, from: u64, to: u64) -> String {
        (from..to).map(|i| tokens.token(i)).collect()
    }

    #[test]
    fn a_chat_prefill_continues_the_fixed_answer() {
        let tokens = TokenSource::for_prompt("tell me a story");
        let delivered = answer(&tokens, 0, 10);
        let start = chat("tell me a story", &delivered).expect("a continuation");
        assert_eq!(start.first, 10);
        let whole = delivered + &answer(&start.tokens, 10, 40);
        assert_eq!(whole, answer(&tokens, 0, 40));
        assert!(chat("tell me a story", "something else").is_none());
    }

    #[test]
    fn a_text_prompt_with_the_delivered_answer_appended_continues_it() {
        for original in ["Once upon a time ", "Say", "the model", ""] {
            let tokens = TokenSource::for_prompt(original);
            for k in 1..12 {
                let prompt = format!("{original}{}", answer(&tokens, 0, k));
                let start = text(&prompt).expect("a continuation");
                assert_eq!(start.first, k, "{prompt:?}");
                assert_eq!(
                    answer(&start.tokens, k, k + 5),
                    answer(&tokens, k, k + 5),
                    "{prompt:?}"
                );
            }
        }
    }
}
