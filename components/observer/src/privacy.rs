//! The seed's Tier 3 ("Anonymized text snippets … never stored"): what leaves
//! for the AI is the text with personal data replaced — e-mail addresses,
//! phone numbers, web addresses, @handles, long numbers, and capitalised words
//! inside a sentence (names of people and places) — and nothing else about the
//! user: no ids, no token, no dates.

fn is_email(word: &str) -> bool {
    let Some((user, domain)) = word.split_once('@') else {
        return false;
    };
    !user.is_empty() && domain.contains('.') && !domain.starts_with('.')
}

/// Replaces personal data in `text` with `[email]`, `[phone]`, `[link]`,
/// `[handle]`, `[number]` and `[name]`.
pub fn strip(text: &str) -> String {
    // Phone numbers first: runs of digits with spaces, dashes, dots or
    // parentheses, holding at least 7 digits.
    let chars: Vec<char> = text.chars().collect();
    let mut joined = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '+' || chars[i].is_ascii_digit() || chars[i] == '(' {
            let mut j = i;
            let mut digits = 0;
            while j < chars.len() && (chars[j].is_ascii_digit() || " -.()+".contains(chars[j])) {
                digits += usize::from(chars[j].is_ascii_digit());
                j += 1;
            }
            while j > i && !chars[j - 1].is_ascii_digit() {
                j -= 1;
            }
            if digits >= 7 {
                joined.push_str("[phone]");
                i = j;
                continue;
            }
        }
        joined.push(chars[i]);
        i += 1;
    }
    let mut out = Vec::new();
    let mut sentence_start = true;
    for word in joined.split_whitespace() {
        let core =
            word.trim_matches(|c: char| !c.is_alphanumeric() && c != '@' && c != '[' && c != ']');
        let tail: String = word
            .chars()
            .rev()
            .take_while(|c| ".,;:!?)\"'".contains(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let replaced = if is_email(core) {
            Some("[email]")
        } else if core.starts_with("http") || core.starts_with("www.") {
            Some("[link]")
        } else if core.starts_with('@') && core.len() > 1 {
            Some("[handle]")
        } else if core.chars().filter(char::is_ascii_digit).count() >= 4 && !core.starts_with('[') {
            Some("[number]")
        } else if !sentence_start
            && core != "I"
            && core.chars().next().is_some_and(char::is_uppercase)
            && !core.starts_with('[')
        {
            Some("[name]")
        } else {
            None
        };
        match replaced {
            Some(token) => out.push(format!("{token}{tail}")),
            None => out.push(word.to_string()),
        }
        sentence_start = word.ends_with(['.', '!', '?']);
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::strip;

    #[test]
    fn personal_data_is_replaced() {
        let text = "Met Alice Smith at 10 Downing Street. Mail me at alice@example.com or call +44 7700 900123! See https://x.io, @alice_s, card 4111111111111111.";
        assert_eq!(
            strip(text),
            "Met [name] [name] at 10 [name] [name]. Mail me at [email] or call [phone]! See [link], [handle], card [phone]."
        );
        assert_eq!(
            strip("I feel calm. Today I sat still."),
            "I feel calm. Today I sat still."
        );
        assert_eq!(strip("my pin is 4821"), "my pin is [number]");
    }
}
