//! What a channel shows, built once per session and independent of the channel: the link message
//! (a short localized text naming the assistant and the service, and one button), and the text
//! that replaces it when the session settles.

use crate::domain::grant::Identity;
use crate::domain::lang::Lang;
use crate::domain::session::{Session, Status};

/// The message that carries the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkMessage {
    /// One sentence, without the URL (chat servers fetch URLs in text: previews).
    pub text: String,
    /// The button's label: short (WhatsApp allows 20 characters, Slack shows about 30).
    pub label: String,
    pub url: String,
    /// The service, for headers and HTML.
    pub provider: String,
    pub lang: Lang,
    /// The session, for channels whose clicks come back (a Slack button's `value`).
    pub session: String,
}

impl LinkMessage {
    pub fn new(session: &Session, bot_name: &str, url: String) -> Self {
        let lang = Lang::first_of(session.spec.locale.as_deref());
        let provider = session.spec.provider_name();
        let text = match lang {
            Lang::En => format!("{bot_name} asks you to connect your {provider} account."),
            Lang::De => format!("{bot_name} bittet Sie, Ihr {provider}-Konto zu verbinden."),
            Lang::Fr => format!("{bot_name} vous demande de connecter votre compte {provider}."),
            Lang::Es => format!("{bot_name} le pide que conecte su cuenta de {provider}."),
        };
        let label = match lang {
            Lang::En => format!("Connect {provider}"),
            Lang::De => format!("{provider} verbinden"),
            Lang::Fr => format!("Connecter {provider}"),
            Lang::Es => format!("Conectar {provider}"),
        };
        Self {
            text,
            label,
            url,
            provider,
            lang,
            session: session.spec.id.to_string(),
        }
    }

    /// The label cut to `max` characters (on a character boundary, with an ellipsis).
    pub fn label_within(&self, max: usize) -> String {
        if self.label.chars().count() <= max {
            return self.label.clone();
        }
        let mut cut: String = self.label.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The text a delivered link message is changed to when its session settles (no button, no
/// link).
pub fn settled_text(session: &Session, identity: Option<&Identity>) -> String {
    let lang = Lang::first_of(session.spec.locale.as_deref());
    let provider = session.spec.provider_name();
    let who = identity.and_then(Identity::shown);
    match (session.status, lang) {
        (Status::Completed, Lang::En) => match who {
            Some(who) => format!("Connected to {provider} as {who}."),
            None => format!("Connected to {provider}."),
        },
        (Status::Completed, Lang::De) => match who {
            Some(who) => format!("Mit {provider} verbunden als {who}."),
            None => format!("Mit {provider} verbunden."),
        },
        (Status::Completed, Lang::Fr) => match who {
            Some(who) => format!("Connecté à {provider} en tant que {who}."),
            None => format!("Connecté à {provider}."),
        },
        (Status::Completed, Lang::Es) => match who {
            Some(who) => format!("Conectado a {provider} como {who}."),
            None => format!("Conectado a {provider}."),
        },
        (Status::Expired, Lang::En) => "This link expired.".into(),
        (Status::Expired, Lang::De) => "Dieser Link ist abgelaufen.".into(),
        (Status::Expired, Lang::Fr) => "Ce lien a expiré.".into(),
        (Status::Expired, Lang::Es) => "Este enlace ha caducado.".into(),
        (Status::Cancelled, Lang::En) => "Cancelled.".into(),
        (Status::Cancelled, Lang::De) => "Abgebrochen.".into(),
        (Status::Cancelled, Lang::Fr) => "Annulé.".into(),
        (Status::Cancelled, Lang::Es) => "Cancelado.".into(),
        (_, Lang::En) => format!("Connecting {provider} did not work."),
        (_, Lang::De) => format!("Die Verbindung mit {provider} ist fehlgeschlagen."),
        (_, Lang::Fr) => format!("La connexion à {provider} a échoué."),
        (_, Lang::Es) => format!("No se pudo conectar {provider}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cut_on_characters() {
        let m = LinkMessage {
            text: String::new(),
            label: "Conectar Señorías Cloud".into(),
            url: String::new(),
            provider: String::new(),
            lang: Lang::Es,
            session: String::new(),
        };
        assert_eq!(m.label_within(20), "Conectar Señorías C…");
        assert_eq!(m.label_within(20).chars().count(), 20);
        assert_eq!(m.label_within(75), m.label);
    }
}
