//! Masking secrets in SQL text before it reaches an error, a status or a log. A failed
//! `CREATE USER ... IDENTIFIED BY PASSWORD '*6BB4...'` or `GRANT` statement is echoed by the
//! server ("... near 'IDENTIFIED BY ...'"), and the hash or password in it must not travel on.

/// Phrases after which the next quoted string is a secret (matched case-insensitively, with
/// any run of white space between words).
const BEFORE_SECRET: [&[&str]; 5] = [
    &["identified", "by", "password"],
    &["identified", "by"],
    &["using"],
    &["as"],
    &["password", "("],
];

const MASK: &str = "<redacted>";

/// `text` with every quoted string that follows IDENTIFIED BY [PASSWORD], IDENTIFIED
/// VIA/WITH plugin USING/AS, or PASSWORD( replaced by `'<redacted>'`, and any bare
/// mysql_native_password hash (`*` and 40 hex digits) masked. A quote that never closes (a
/// server message cut short) masks to the end.
pub fn sql(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_identified = false;
    // The last few words, lower-cased, to match the phrases against.
    let mut recent: Vec<String> = Vec::new();
    while !rest.is_empty() {
        let (word, tail) = next_token(rest);
        out.push_str(word);
        rest = tail;
        let w = word.trim().to_ascii_lowercase();
        if w.is_empty() {
            continue;
        }
        after_identified |= w == "identified";
        recent.push(w);
        if recent.len() > 3 {
            recent.remove(0);
        }
        if !ends_secret_phrase(&recent, after_identified) {
            continue;
        }
        // The secret is the next quoted string, after optional white space.
        let ws = rest.len() - rest.trim_start().len();
        let after = &rest[ws..];
        let Some(q) = after
            .chars()
            .next()
            .filter(|c| matches!(c, '\'' | '"' | '`'))
        else {
            continue;
        };
        out.push_str(&rest[..ws]);
        out.push(q);
        out.push_str(MASK);
        match closing_quote(&after[1..], q) {
            Some(end) => {
                out.push(q);
                rest = &after[1 + end + 1..];
            }
            None => rest = "",
        }
        recent.clear();
    }
    mask_hashes(&out)
}

/// One word (letters, digits, `_`) with the white space before it, or one other character.
fn next_token(s: &str) -> (&str, &str) {
    let ws = s.len() - s.trim_start().len();
    let body = &s[ws..];
    let n = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    let n = if n == 0 {
        body.chars().next().map_or(0, char::len_utf8)
    } else {
        n
    };
    s.split_at(ws + n)
}

/// Whether the last words are one of the phrases a secret follows.
fn ends_secret_phrase(recent: &[String], after_identified: bool) -> bool {
    BEFORE_SECRET.iter().any(|phrase| {
        // USING and AS introduce a secret only in an IDENTIFIED VIA/WITH clause.
        if matches!(phrase, [w] if *w == "using" || *w == "as") && !after_identified {
            return false;
        }
        recent.len() >= phrase.len()
            && recent[recent.len() - phrase.len()..]
                .iter()
                .zip(phrase.iter())
                .all(|(a, b)| a == b)
    })
}

/// The index of the quote closing a string, honouring doubled quotes and backslashes.
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c == q {
            if chars.peek().is_some_and(|(_, n)| *n == q) {
                chars.next();
            } else {
                return Some(i);
            }
        }
    }
    None
}

fn mask_hashes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if b[i] == b'*' && b.len() >= i + 41 && b[i + 1..i + 41].iter().all(u8::is_ascii_hexdigit) {
            out.push('*');
            out.push_str(MASK);
            i += 41;
        } else {
            let c = s[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sql;

    #[test]
    fn secrets_in_statements_are_masked() {
        let hash = "*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9";
        for (input, want) in [
            (
                format!("CREATE USER 'app'@'%' IDENTIFIED BY PASSWORD '{hash}'"),
                "CREATE USER 'app'@'%' IDENTIFIED BY PASSWORD '<redacted>'".to_string(),
            ),
            (
                "GRANT ALL ON *.* TO 'a'@'%' identified  by 'pa''ss' WITH GRANT OPTION".into(),
                "GRANT ALL ON *.* TO 'a'@'%' identified  by '<redacted>' WITH GRANT OPTION".into(),
            ),
            (
                "CREATE USER u IDENTIFIED VIA mysql_native_password USING 'x' OR ed25519 \
                 USING PASSWORD('y')"
                    .into(),
                "CREATE USER u IDENTIFIED VIA mysql_native_password USING '<redacted>' OR \
                 ed25519 USING PASSWORD('<redacted>')"
                    .into(),
            ),
            (
                "CREATE USER u IDENTIFIED WITH caching_sha2_password AS '$A$005$abc'".into(),
                "CREATE USER u IDENTIFIED WITH caching_sha2_password AS '<redacted>'".into(),
            ),
            (
                "SET PASSWORD FOR u = PASSWORD('s3cret')".into(),
                "SET PASSWORD FOR u = PASSWORD('<redacted>')".into(),
            ),
            (
                // A server message cuts the statement short, quote and all.
                format!("You have an error near 'IDENTIFIED BY PASSWORD '{hash}' REQU' at line 1"),
                "You have an error near 'IDENTIFIED BY PASSWORD '<redacted>' REQU' at line 1"
                    .into(),
            ),
            (
                "near 'IDENTIFIED BY 'half-a-passw".into(),
                "near 'IDENTIFIED BY '<redacted>".into(),
            ),
            (
                format!("hash {hash} alone"),
                "hash *<redacted> alone".into(),
            ),
            (
                "SELECT 'a' AS x FROM t USING (id)".into(),
                "SELECT 'a' AS x FROM t USING (id)".into(),
            ),
        ] {
            assert_eq!(sql(&input), want, "{input}");
        }
    }
}
