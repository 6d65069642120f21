//! Deterministic fake tokens: the same prompt always yields the same words.

pub(crate) const WORDS: &[&str] = &[
    "the", "model", "answers", "with", "steady", "tokens", "while", "respawn", "keeps", "watch",
    "over", "every", "request", "and", "restarts", "servers", "that", "hang", "so", "clients",
    "never", "notice", "a", "thing", "quiet", "river", "stone", "light", "north", "signal",
    "harbor", "lantern",
];

/// A token stream seeded by the prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenSource {
    start: usize,
}

impl TokenSource {
    /// Seeds the words with a hash of the prompt (FNV-1a).
    pub(crate) fn for_prompt(prompt: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in prompt.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let start = usize::try_from(hash % WORDS.len() as u64).unwrap_or(0);
        Self { start }
    }

    /// The text of token `index` (0-based): a word, with a leading space after the first.
    pub(crate) fn token(&self, index: u64) -> String {
        let word = WORDS[(self.start + index as usize) % WORDS.len()];
        if index == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        }
    }
}

/// Counts prompt tokens the way the mock bills them: whitespace-separated words.
pub(crate) fn count_prompt_tokens(prompt: &str) -> u64 {
    prompt.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_prompt_same_tokens() {
        let a = TokenSource::for_prompt("hello there");
        let b = TokenSource::for_prompt("hello there");
        let ta: Vec<_> = (0..5).map(|i| a.token(i)).collect();
        let tb: Vec<_> = (0..5).map(|i| b.token(i)).collect();
        assert_eq!(ta, tb);
        assert!(!ta[0].starts_with(' '));
        assert!(ta[1].starts_with(' '));
    }

    #[test]
    fn counts_words() {
        assert_eq!(count_prompt_tokens("  one two\nthree "), 3);
        assert_eq!(count_prompt_tokens(""), 0);
    }
}
