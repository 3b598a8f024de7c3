//! Pages for people: small, accessible, no JavaScript, no third-party resources, never cached,
//! never leaking a Referer. Localized by the session's `locale` or `Accept-Language` (English,
//! German, French, Spanish; English otherwise).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use crate::domain::lang::Lang;

impl Lang {
    /// The session's locale wins; then the browser's first supported language.
    pub fn pick(locale: Option<&str>, headers: &HeaderMap) -> Lang {
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Lang::first_of(
            locale.into_iter().chain(
                accept
                    .split(',')
                    .map(|l| l.split(';').next().unwrap_or("").trim()),
            ),
        )
    }
}

/// Every message a page can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    ConnectTitle,
    ConnectBody,
    Continue,
    BindingFirst,
    SuccessTitle,
    SuccessAs,
    SuccessBody,
    BackToConversation,
    AlreadyTitle,
    AlreadyBody,
    ExpiredTitle,
    ExpiredBody,
    InvalidTitle,
    InvalidBody,
    DeniedTitle,
    DeniedBody,
    ErrorTitle,
    ErrorBody,
    BrowserTitle,
    BrowserBody,
    CodeTitle,
    CodeBody,
    TooManyTitle,
    TooManyBody,
    ForeignTitle,
    ForeignBody,
}

fn text(lang: Lang, msg: Msg) -> &'static str {
    use Lang::*;
    use Msg::*;
    match (msg, lang) {
        (ConnectTitle, En) => "Connect {provider}",
        (ConnectTitle, De) => "{provider} verbinden",
        (ConnectTitle, Fr) => "Connecter {provider}",
        (ConnectTitle, Es) => "Conectar {provider}",
        (ConnectBody, En) => {
            "{bot} asks for access to your {provider} account. You will sign in at {host}; {bot} never sees your password."
        }
        (ConnectBody, De) => {
            "{bot} bittet um Zugriff auf Ihr {provider}-Konto. Sie melden sich bei {host} an; {bot} sieht Ihr Passwort nie."
        }
        (ConnectBody, Fr) => {
            "{bot} demande l'accès à votre compte {provider}. Vous vous connecterez sur {host} ; {bot} ne voit jamais votre mot de passe."
        }
        (ConnectBody, Es) => {
            "{bot} solicita acceso a su cuenta de {provider}. Iniciará sesión en {host}; {bot} nunca ve su contraseña."
        }
        (BindingFirst, En) => "First you confirm who you are at {issuer}.",
        (BindingFirst, De) => "Zuerst bestätigen Sie bei {issuer}, wer Sie sind.",
        (BindingFirst, Fr) => "Vous confirmerez d'abord votre identité sur {issuer}.",
        (BindingFirst, Es) => "Primero confirmará quién es en {issuer}.",
        (Continue, En) => "Continue to {provider}",
        (Continue, De) => "Weiter zu {provider}",
        (Continue, Fr) => "Continuer vers {provider}",
        (Continue, Es) => "Continuar a {provider}",
        (SuccessTitle, En) => "{provider} is connected",
        (SuccessTitle, De) => "{provider} ist verbunden",
        (SuccessTitle, Fr) => "{provider} est connecté",
        (SuccessTitle, Es) => "{provider} está conectado",
        (SuccessAs, En) => "You signed in to {provider} as {who}.",
        (SuccessAs, De) => "Sie haben sich bei {provider} als {who} angemeldet.",
        (SuccessAs, Fr) => "Vous vous êtes connecté à {provider} en tant que {who}.",
        (SuccessAs, Es) => "Inició sesión en {provider} como {who}.",
        (SuccessBody, En) => "You can close this window and return to your conversation.",
        (SuccessBody, De) => {
            "Sie können dieses Fenster schließen und zu Ihrer Unterhaltung zurückkehren."
        }
        (SuccessBody, Fr) => "Vous pouvez fermer cette fenêtre et revenir à votre conversation.",
        (SuccessBody, Es) => "Puede cerrar esta ventana y volver a su conversación.",
        (BackToConversation, En) => "Back to the conversation",
        (BackToConversation, De) => "Zurück zur Unterhaltung",
        (BackToConversation, Fr) => "Retour à la conversation",
        (BackToConversation, Es) => "Volver a la conversación",
        (AlreadyTitle, En) => "Already connected",
        (AlreadyTitle, De) => "Bereits verbunden",
        (AlreadyTitle, Fr) => "Déjà connecté",
        (AlreadyTitle, Es) => "Ya conectado",
        (AlreadyBody, En) => "This link was already used. Return to your conversation.",
        (AlreadyBody, De) => {
            "Dieser Link wurde bereits verwendet. Kehren Sie zu Ihrer Unterhaltung zurück."
        }
        (AlreadyBody, Fr) => "Ce lien a déjà été utilisé. Revenez à votre conversation.",
        (AlreadyBody, Es) => "Este enlace ya se utilizó. Vuelva a su conversación.",
        (ExpiredTitle, En) => "This link has expired",
        (ExpiredTitle, De) => "Dieser Link ist abgelaufen",
        (ExpiredTitle, Fr) => "Ce lien a expiré",
        (ExpiredTitle, Es) => "Este enlace ha caducado",
        (ExpiredBody, En) => "Ask in the conversation for a new link.",
        (ExpiredBody, De) => "Bitten Sie in der Unterhaltung um einen neuen Link.",
        (ExpiredBody, Fr) => "Demandez un nouveau lien dans la conversation.",
        (ExpiredBody, Es) => "Pida un nuevo enlace en la conversación.",
        (InvalidTitle, En) => "This link is not valid",
        (InvalidTitle, De) => "Dieser Link ist ungültig",
        (InvalidTitle, Fr) => "Ce lien n'est pas valide",
        (InvalidTitle, Es) => "Este enlace no es válido",
        (InvalidBody, En) => {
            "It may have been cancelled, used already, or copied incompletely. Ask in the conversation for a new link."
        }
        (InvalidBody, De) => {
            "Er wurde vielleicht abgebrochen, schon verwendet oder unvollständig kopiert. Bitten Sie in der Unterhaltung um einen neuen Link."
        }
        (InvalidBody, Fr) => {
            "Il a peut-être été annulé, déjà utilisé ou copié de façon incomplète. Demandez un nouveau lien dans la conversation."
        }
        (InvalidBody, Es) => {
            "Puede que se haya cancelado, ya utilizado o copiado de forma incompleta. Pida un nuevo enlace en la conversación."
        }
        (DeniedTitle, En) => "Access was not granted",
        (DeniedTitle, De) => "Zugriff wurde nicht erteilt",
        (DeniedTitle, Fr) => "L'accès n'a pas été accordé",
        (DeniedTitle, Es) => "No se concedió el acceso",
        (DeniedBody, En) => {
            "Nothing was connected. Return to your conversation if you want to try again."
        }
        (DeniedBody, De) => {
            "Es wurde nichts verbunden. Kehren Sie zur Unterhaltung zurück, um es erneut zu versuchen."
        }
        (DeniedBody, Fr) => "Rien n'a été connecté. Revenez à la conversation pour réessayer.",
        (DeniedBody, Es) => {
            "No se conectó nada. Vuelva a la conversación si desea intentarlo de nuevo."
        }
        (ErrorTitle, En) => "Something went wrong",
        (ErrorTitle, De) => "Etwas ist schiefgelaufen",
        (ErrorTitle, Fr) => "Une erreur s'est produite",
        (ErrorTitle, Es) => "Algo salió mal",
        (ErrorBody, En) => {
            "The connection could not be completed. Return to your conversation and ask for a new link."
        }
        (ErrorBody, De) => {
            "Die Verbindung konnte nicht hergestellt werden. Bitten Sie in der Unterhaltung um einen neuen Link."
        }
        (ErrorBody, Fr) => {
            "La connexion n'a pas pu aboutir. Demandez un nouveau lien dans la conversation."
        }
        (ErrorBody, Es) => {
            "No se pudo completar la conexión. Pida un nuevo enlace en la conversación."
        }
        (BrowserTitle, En) => "Please use the same browser",
        (BrowserTitle, De) => "Bitte denselben Browser verwenden",
        (BrowserTitle, Fr) => "Utilisez le même navigateur",
        (BrowserTitle, Es) => "Use el mismo navegador",
        (BrowserBody, En) => {
            "Sign-in must finish in the browser where you opened the link. Open the link again and continue there."
        }
        (BrowserBody, De) => {
            "Die Anmeldung muss in dem Browser enden, in dem Sie den Link geöffnet haben. Öffnen Sie den Link erneut."
        }
        (BrowserBody, Fr) => {
            "La connexion doit se terminer dans le navigateur où vous avez ouvert le lien. Rouvrez le lien."
        }
        (CodeTitle, En) => "One more step",
        (CodeTitle, De) => "Noch ein Schritt",
        (CodeTitle, Fr) => "Encore une étape",
        (CodeTitle, Es) => "Un paso más",
        (CodeBody, En) => "Type this code into your conversation to finish connecting:",
        (CodeBody, De) => {
            "Geben Sie diesen Code in Ihrer Unterhaltung ein, um die Verbindung abzuschließen:"
        }
        (CodeBody, Fr) => "Saisissez ce code dans votre conversation pour terminer la connexion :",
        (CodeBody, Es) => "Escriba este código en su conversación para terminar de conectar:",
        (BrowserBody, Es) => {
            "El inicio de sesión debe terminar en el navegador donde abrió el enlace. Vuelva a abrir el enlace."
        }
        (TooManyTitle, En) => "Too many attempts",
        (TooManyTitle, De) => "Zu viele Versuche",
        (TooManyTitle, Fr) => "Trop de tentatives",
        (TooManyTitle, Es) => "Demasiados intentos",
        (TooManyBody, En) => "Please wait {seconds} seconds, then try again.",
        (TooManyBody, De) => {
            "Bitte warten Sie {seconds} Sekunden und versuchen Sie es dann erneut."
        }
        (TooManyBody, Fr) => "Veuillez patienter {seconds} secondes, puis réessayez.",
        (TooManyBody, Es) => "Espere {seconds} segundos y vuelva a intentarlo.",
        (ForeignTitle, En) => "This came from another website",
        (ForeignTitle, De) => "Das kam von einer anderen Website",
        (ForeignTitle, Fr) => "Cela venait d'un autre site web",
        (ForeignTitle, Es) => "Esto vino de otro sitio web",
        (ForeignBody, En) => {
            "Nothing was started. To connect your account, open the link from your conversation again and continue on its page."
        }
        (ForeignBody, De) => {
            "Es wurde nichts gestartet. Um Ihr Konto zu verbinden, öffnen Sie den Link aus Ihrer Unterhaltung erneut und fahren Sie auf dessen Seite fort."
        }
        (ForeignBody, Fr) => {
            "Rien n'a été lancé. Pour connecter votre compte, rouvrez le lien depuis votre conversation et continuez sur sa page."
        }
        (ForeignBody, Es) => {
            "No se inició nada. Para conectar su cuenta, vuelva a abrir el enlace desde su conversación y continúe en su página."
        }
    }
}

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: title, paragraph, and optional extra HTML (already escaped).
pub struct Page {
    pub status: StatusCode,
    pub lang: Lang,
    pub title: Msg,
    pub body: Msg,
    /// `{bot}`, `{provider}`, `{host}`, … in messages.
    pub vars: Vec<(&'static str, String)>,
    pub extra_html: String,
    /// Open Graph description for link unfurls.
    pub og: bool,
}

impl Page {
    pub fn new(status: StatusCode, lang: Lang, title: Msg, body: Msg) -> Self {
        Self {
            status,
            lang,
            title,
            body,
            vars: Vec::new(),
            extra_html: String::new(),
            og: false,
        }
    }

    /// `msg` with its placeholders filled, in one pass over the template: a value is never
    /// read again, so a display name containing `{host}` stays as written.
    pub fn t(&self, msg: Msg) -> String {
        let mut rest = text(self.lang, msg);
        let mut out = String::with_capacity(rest.len() + 64);
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let filled = after.split_once('}').and_then(|(name, tail)| {
                self.vars
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (v, tail))
            });
            match filled {
                Some((value, tail)) => {
                    out.push_str(value);
                    rest = tail;
                }
                // Not a placeholder of this page: the brace stays as text.
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub fn render(&self) -> String {
        let title = esc(&self.t(self.title));
        let body = esc(&self.t(self.body));
        let og = if self.og {
            format!(
                "<meta property=\"og:title\" content=\"{title}\">\n<meta property=\"og:description\" content=\"{body}\">\n<meta property=\"og:type\" content=\"website\">\n"
            )
        } else {
            String::new()
        };
        format!(
            "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"robots\" content=\"noindex\">\n{og}<title>{title}</title>\n<style>{CSS}</style>\n</head>\n\
<body>\n<main>\n<h1>{title}</h1>\n<p>{body}</p>\n{extra}</main>\n</body>\n</html>\n",
            lang = self.lang.code(),
            extra = self.extra_html,
        )
    }
}

const CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}\
main{max-width:28rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 3px #0002}\
h1{font-size:1.4rem;margin-top:0}button,a.button{display:inline-block;font:inherit;padding:.7rem 1.2rem;\
border:0;border-radius:8px;background:#0b5cd5;color:#fff;text-decoration:none;cursor:pointer}\
button:focus,a:focus{outline:3px solid #f5a623;outline-offset:2px}\
.code{font-size:2rem;letter-spacing:.3em;text-align:center}";

/// Headers every browser-facing response carries.
pub fn protect(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    // No scripts, no external loads; the form posts to ourselves and then redirects to the
    // provider, so `form-action` is deliberately not restricted (browsers apply it to redirects).
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    );
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.render()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        protect(h);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_exists_in_every_language() {
        for lang in [Lang::En, Lang::De, Lang::Fr, Lang::Es] {
            let p = Page::new(StatusCode::OK, lang, Msg::ConnectTitle, Msg::ConnectBody);
            assert!(!p.render().is_empty());
        }
    }

    #[test]
    fn language_comes_from_locale_then_browser() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("xx, de-DE;q=0.9, en;q=0.5"),
        );
        assert_eq!(Lang::pick(None, &h), Lang::De);
        assert_eq!(Lang::pick(Some("fr-CA"), &h), Lang::Fr);
        assert_eq!(Lang::pick(None, &HeaderMap::new()), Lang::En);
    }

    #[test]
    fn placeholders_inside_values_are_not_filled() {
        let names = ["bot", "provider", "host", "issuer", "who", "seconds"];
        let all: String = names.iter().map(|n| format!("{{{n}}}")).collect();
        let messages = [
            Msg::ConnectTitle,
            Msg::ConnectBody,
            Msg::Continue,
            Msg::BindingFirst,
            Msg::SuccessTitle,
            Msg::SuccessAs,
            Msg::TooManyBody,
        ];
        for lang in [Lang::En, Lang::De, Lang::Fr, Lang::Es] {
            for name in names {
                // The value under test comes first: filled first, it would be read again.
                let mut p = Page::new(StatusCode::OK, lang, Msg::ConnectTitle, Msg::ConnectBody);
                p.vars = std::iter::once((name, all.clone()))
                    .chain(
                        names
                            .iter()
                            .filter(|k| **k != name)
                            .map(|k| (*k, "v".into())),
                    )
                    .collect();
                for msg in messages {
                    if !text(lang, msg).contains(&format!("{{{name}}}")) {
                        continue;
                    }
                    let out = p.t(msg);
                    assert!(out.contains(&all), "{lang:?} {msg:?} {name}: {out}");
                    assert!(
                        !out.replace(&all, "").contains('{'),
                        "{lang:?} {msg:?} {name}: {out}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_value_containing_a_placeholder_is_shown_as_written() {
        let mut p = Page::new(
            StatusCode::OK,
            Lang::En,
            Msg::ConnectTitle,
            Msg::ConnectBody,
        );
        p.vars = vec![
            ("bot", "Bot {provider}".into()),
            ("provider", "Acme {host} {bot} {".into()),
            ("host", "login.example.com".into()),
        ];
        assert_eq!(
            p.t(Msg::ConnectBody),
            "Bot {provider} asks for access to your Acme {host} {bot} { account. \
You will sign in at login.example.com; Bot {provider} never sees your password."
        );
        assert_eq!(p.t(Msg::ConnectTitle), "Connect Acme {host} {bot} {");
    }

    #[test]
    fn variables_are_escaped() {
        let mut p = Page::new(
            StatusCode::OK,
            Lang::En,
            Msg::ConnectTitle,
            Msg::ConnectBody,
        );
        p.vars.push(("bot", "<script>x</script>".into()));
        p.vars.push(("provider", "Salesforce".into()));
        let html = p.render();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
