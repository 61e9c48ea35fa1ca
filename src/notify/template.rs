//! `{name}` placeholders in the e-mail subject and body templates, filled in
//! one pass: a value that itself contains `{event}` is not expanded again,
//! and an unknown `{name}` stays as written.

/// `template` with each `{name}` of `values` replaced by its value.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value, close))
        });
        match known {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn one_pass_unknown_names_kept() {
        let values = [("event", "e1"), ("data", "{event}"), ("channel", "news")];
        assert_eq!(
            render("[{channel}] {event}: {data} {other} {", &values),
            "[news] e1: {event} {other} {"
        );
        assert_eq!(render("", &values), "");
        assert_eq!(render("{{event}}", &values), "{e1}");
    }
}
