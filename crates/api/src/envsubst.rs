//! `${VAR}` substitution as Stash applies it to Task and Function definitions:
//! `${VAR:=default}` and `${VAR:-default}` use the default when VAR is unset or empty,
//! `${VAR=default}` and `${VAR-default}` only when it is unset.

use std::collections::BTreeMap;

pub fn substitute(input: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{input}`"))?;
        let expr = &after[..end];
        out.push_str(&eval(expr, vars));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let ops = [":=", ":-", "=", "-"];
    for op in ops {
        if let Some((name, default)) = expr.split_once(op) {
            if !is_name(name) {
                continue;
            }
            let v = vars.get(name);
            let use_default = if op.starts_with(':') {
                v.is_none_or(|v| v.is_empty())
            } else {
                v.is_none()
            };
            return if use_default {
                default.to_string()
            } else {
                v.cloned().unwrap_or_default()
            };
        }
    }
    vars.get(expr).cloned().unwrap_or_default()
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stash_forms() {
        let mut v = BTreeMap::new();
        v.insert("A".to_string(), "x".to_string());
        v.insert("EMPTY".to_string(), String::new());
        let s = |t: &str| substitute(t, &v).unwrap();
        assert_eq!(s("--a=${A}"), "--a=x");
        assert_eq!(
            s("--args=${args:=--all-databases}"),
            "--args=--all-databases"
        );
        assert_eq!(s("${EMPTY:=d}"), "d");
        assert_eq!(s("${EMPTY=d}"), "");
        assert_eq!(s("${MISSING=d}"), "d");
        assert_eq!(s("${MISSING}"), "");
        assert_eq!(s("${A:=a=b}"), "x");
        assert!(substitute("${A", &v).is_err());
    }
}
