//! The console's HTML: one layout, forms whose errors sit next to their fields, and the headers
//! every console response carries (the pages' strict ones, plus this origin's one script).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::text::{T, tr};
use crate::domain::lang::Lang;
use crate::routes::pages::{esc, protect};

/// What every page needs: the language, and (signed in) the form token and whom it acts as.
pub struct Frame<'a> {
    pub lang: Lang,
    pub csrf: Option<&'a str>,
    /// The bots list for the operator; `None` for a bot admin.
    pub home: Option<&'a str>,
}

impl Frame<'_> {
    pub fn t(&self, t: T) -> &'static str {
        tr(self.lang, t)
    }

    /// `t` with `{name}` replaced by `value` (escaped).
    pub fn tv(&self, t: T, name: &str, value: &str) -> String {
        esc(self.t(t)).replace(&format!("{{{name}}}"), &esc(value))
    }

    /// A whole page.
    pub fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        let nav = match self.csrf {
            Some(csrf) => format!(
                "<nav aria-label=\"{console}\"><a href=\"{home}\">{console}</a>{out}</nav>",
                console = esc(self.t(T::Console)),
                home = self.home.unwrap_or("/console"),
                out = self.post_button("/console/sign-out", T::SignOut, csrf, "link"),
            ),
            None => String::new(),
        };
        let html = format!(
            "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"robots\" content=\"noindex\">\n<title>{title} · authlink</title>\n\
<style>{CSS}</style>\n<script src=\"/console/console.js\" defer></script>\n</head>\n<body>\n\
<header>{nav}</header>\n<main id=\"main\">\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
            lang = self.lang.code(),
            title = esc(title),
        );
        respond(status, "text/html; charset=utf-8", html)
    }

    /// A form that only posts (one button): revoke, replay, sign out…
    pub fn post_button(&self, action: &str, label: T, csrf: &str, class: &str) -> String {
        format!(
            "<form method=\"post\" action=\"{action}\" class=\"inline\">{token}\
<button type=\"submit\" class=\"{class}\">{label}</button></form>",
            action = esc(action),
            token = token(csrf),
            label = esc(self.t(label)),
        )
    }
}

/// The hidden field every console form carries.
pub fn token(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A labelled input with its error (if any) announced and tied to it; its id is `f-{name}`.
pub fn input(label: &str, name: &str, value: &str, kind: &str, error: Option<&str>) -> String {
    input_as(&format!("f-{name}"), label, name, value, kind, error)
}

/// `input` with its own id, for a field whose name another form on the page also has (ids are
/// unique per page, or the second field's label names the first).
pub fn input_as(
    id: &str,
    label: &str,
    name: &str,
    value: &str,
    kind: &str,
    error: Option<&str>,
) -> String {
    let id = esc(id);
    let (invalid, described, note) = match error {
        Some(e) => (
            " aria-invalid=\"true\"",
            format!(" aria-describedby=\"{id}-error\""),
            format!("<p class=\"error\" id=\"{id}-error\">{}</p>", esc(e)),
        ),
        None => ("", String::new(), String::new()),
    };
    let autocomplete = if kind == "password" {
        " autocomplete=\"off\""
    } else {
        ""
    };
    format!(
        "<div class=\"field\"><label for=\"{id}\">{label}</label>\
<input id=\"{id}\" name=\"{name}\" type=\"{kind}\" value=\"{value}\"{invalid}{described}{autocomplete}>{note}</div>",
        label = esc(label),
        name = esc(name),
        value = esc(value),
    )
}

/// A group of radio buttons with a legend: `(value, label, hint)` each.
pub fn radios(legend: &str, name: &str, options: &[(&str, &str, &str)], checked: &str) -> String {
    let mut out = format!("<fieldset><legend>{}</legend>", esc(legend));
    for (value, label, hint) in options {
        let id = format!("f-{name}-{value}");
        out.push_str(&format!(
            "<div class=\"choice\"><input type=\"radio\" id=\"{id}\" name=\"{name}\" value=\"{v}\"{c}>\
<label for=\"{id}\">{label}</label>{hint}</div>",
            v = esc(value),
            c = if *value == checked { " checked" } else { "" },
            label = esc(label),
            hint = if hint.is_empty() {
                String::new()
            } else {
                format!("<p class=\"hint\">{}</p>", esc(hint))
            },
        ));
    }
    out.push_str("</fieldset>");
    out
}

/// A read-only value with a copy button (the button appears with JavaScript).
pub fn copyable(label: &str, id: &str, value: &str, copy: &str) -> String {
    format!(
        "<div class=\"field\"><label for=\"{id}\">{label}</label><input id=\"{id}\" type=\"text\" \
readonly value=\"{value}\"><button type=\"button\" class=\"secondary\" data-copy=\"{id}\" hidden>{copy}</button></div>",
        label = esc(label),
        value = esc(value),
        copy = esc(copy),
    )
}

/// A table: headers, then rows of already-escaped cells.
pub fn table(caption: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let head: String = headers
        .iter()
        .map(|h| format!("<th scope=\"col\">{}</th>", esc(h)))
        .collect();
    let body: String = rows
        .iter()
        .map(|r| {
            let cells: String = r.iter().map(|c| format!("<td>{c}</td>")).collect();
            format!("<tr>{cells}</tr>")
        })
        .collect();
    format!(
        "<div class=\"scroll\"><table><caption class=\"sr\">{}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>",
        esc(caption)
    )
}

/// A status message (success) or an alert (failure), announced to screen readers.
pub fn notice(text: &str, ok: bool) -> String {
    if ok {
        format!("<p class=\"notice\" role=\"status\">{}</p>", esc(text))
    } else {
        format!("<p class=\"alert\" role=\"alert\">{}</p>", esc(text))
    }
}

/// A response with the console's headers.
pub fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    protect(h);
    // The pages' policy plus this origin's script; forms post only here.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

/// Progressive enhancement only: copy buttons. Every action works without it.
pub const SCRIPT: &str = "document.querySelectorAll('button[data-copy]').forEach(function(b){\
b.hidden=false;b.addEventListener('click',function(){var i=document.getElementById(b.dataset.copy);\
i.select();if(navigator.clipboard){navigator.clipboard.writeText(i.value);}});});\n";

// Colours meet WCAG AA contrast (text ≥ 4.5:1 on its background); focus is always visible.
const CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}\
header{background:#1b1f24;color:#fff}nav{display:flex;gap:1rem;align-items:center;max-width:60rem;margin:0 auto;padding:.6rem 1rem}\
nav a{color:#fff}nav form{margin-left:auto}\
main{max-width:60rem;margin:1.5rem auto;padding:1.5rem;background:#fff;border-radius:12px;box-shadow:0 1px 3px #0002}\
h1{font-size:1.5rem;margin-top:0}h2{font-size:1.2rem;margin-top:2rem;border-top:1px solid #d0d5dc;padding-top:1rem}\
.field{margin:.8rem 0}label{display:block;font-weight:600}\
input[type=text],input[type=url],input[type=password],select{width:100%;max-width:36rem;box-sizing:border-box;font:inherit;padding:.45rem;border:1px solid #6b7480;border-radius:6px}\
fieldset{border:1px solid #d0d5dc;border-radius:8px;margin:1rem 0;padding:.6rem 1rem}legend{font-weight:600}\
.choice{margin:.4rem 0}.choice label{display:inline;font-weight:400;margin-left:.4rem}\
.hint{margin:.1rem 0 .4rem;color:#4a525c;font-size:.9rem}.choice .hint{margin-left:1.6rem}.row{margin:1rem 0}\
button{font:inherit;padding:.5rem 1rem;border:0;border-radius:8px;background:#0b5cd5;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#0b5cd5;border:1px solid #0b5cd5;margin-left:.4rem}\
button.danger{background:#b3261e}button.link{background:none;color:#fff;text-decoration:underline;padding:0}\
a{color:#0b5cd5}a:focus,button:focus,input:focus{outline:3px solid #f5a623;outline-offset:2px}\
form.inline{display:inline}.error,.alert{color:#b3261e;font-weight:600}\
.notice{background:#e7f3ea;color:#1e5a2d;padding:.5rem .8rem;border-radius:6px}\
.alert{background:#fdecea;padding:.5rem .8rem;border-radius:6px}\
.secret{font-family:ui-monospace,monospace;background:#fff8e1;padding:.5rem;word-break:break-all}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem;border-bottom:1px solid #d0d5dc;vertical-align:top}td{overflow-wrap:anywhere}td button{white-space:nowrap;overflow-wrap:normal}\
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}\
code{font-family:ui-monospace,monospace}";
