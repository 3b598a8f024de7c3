//! The console's words, in the languages the other pages speak (English, German, French,
//! Spanish). `{x}` marks a value filled in (escaped) by the page.

use crate::domain::lang::Lang;

macro_rules! words {
    ($($key:ident => [$en:expr, $de:expr, $fr:expr, $es:expr],)*) => {
        /// Every text the console shows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum T { $($key),* }

        /// `t` in `lang`.
        pub fn tr(lang: Lang, t: T) -> &'static str {
            match t {
                $(T::$key => match lang {
                    Lang::En => $en,
                    Lang::De => $de,
                    Lang::Fr => $fr,
                    Lang::Es => $es,
                }),*
            }
        }
    };
}

words! {
    Console => ["authlink console", "authlink-Konsole", "Console authlink", "Consola de authlink"],
    SignIn => ["Sign in", "Anmelden", "Se connecter", "Iniciar sesión"],
    SignOut => ["Sign out", "Abmelden", "Se déconnecter", "Cerrar sesión"],
    SignInHelp => [
        "Sign in with the operator key or a bot's admin key. The key is exchanged for a session of one hour; it is not stored in this browser.",
        "Melden Sie sich mit dem Betreiberschlüssel oder dem Admin-Schlüssel eines Bots an. Der Schlüssel wird gegen eine Sitzung von einer Stunde getauscht und nicht in diesem Browser gespeichert.",
        "Connectez-vous avec la clé d'opérateur ou la clé d'administration d'un bot. La clé est échangée contre une session d'une heure ; elle n'est pas conservée dans ce navigateur.",
        "Inicie sesión con la clave de operador o la clave de administración de un bot. La clave se cambia por una sesión de una hora; no se guarda en este navegador."
    ],
    Key => ["Key", "Schlüssel", "Clé", "Clave"],
    BadKey => [
        "This key is not valid here: use the operator key or an admin key.",
        "Dieser Schlüssel gilt hier nicht: Verwenden Sie den Betreiber- oder einen Admin-Schlüssel.",
        "Cette clé n'est pas valable ici : utilisez la clé d'opérateur ou une clé d'administration.",
        "Esta clave no es válida aquí: use la clave de operador o una clave de administración."
    ],
    SignedOut => ["You are signed out.", "Sie sind abgemeldet.", "Vous êtes déconnecté.", "Ha cerrado la sesión."],
    Expired => [
        "Your console session has ended. Sign in again.",
        "Ihre Konsolensitzung ist beendet. Melden Sie sich erneut an.",
        "Votre session de console est terminée. Reconnectez-vous.",
        "Su sesión de consola ha terminado. Vuelva a iniciar sesión."
    ],
    Refused => [
        "This form is out of date or was sent from another site; nothing was changed. Reload the page and try again.",
        "Dieses Formular ist veraltet oder kam von einer anderen Website; nichts wurde geändert. Laden Sie die Seite neu und versuchen Sie es noch einmal.",
        "Ce formulaire est périmé ou vient d'un autre site ; rien n'a été modifié. Rechargez la page et réessayez.",
        "Este formulario está caducado o llegó desde otro sitio; no se cambió nada. Recargue la página e inténtelo de nuevo."
    ],
    Bots => ["Bots", "Bots", "Bots", "Bots"],
    NoBots => ["No bots yet.", "Noch keine Bots.", "Aucun bot pour l'instant.", "Todavía no hay bots."],
    NewBot => ["New bot", "Neuer Bot", "Nouveau bot", "Nuevo bot"],
    BotId => ["Bot id", "Bot-ID", "Identifiant du bot", "Id del bot"],
    Name => ["Name", "Name", "Nom", "Nombre"],
    WebhookUrl => ["Webhook URL", "Webhook-URL", "URL du webhook", "URL del webhook"],
    ReturnHosts => [
        "Allowed return hosts (space-separated)",
        "Erlaubte Rückkehr-Hosts (durch Leerzeichen getrennt)",
        "Hôtes de retour autorisés (séparés par des espaces)",
        "Hosts de retorno permitidos (separados por espacios)"
    ],
    WebhookHosts => [
        "Allowed webhook hosts (space-separated)",
        "Erlaubte Webhook-Hosts (durch Leerzeichen getrennt)",
        "Hôtes de webhook autorisés (séparés par des espaces)",
        "Hosts de webhook permitidos (separados por espacios)"
    ],
    Create => ["Create", "Anlegen", "Créer", "Crear"],
    Save => ["Save", "Speichern", "Enregistrer", "Guardar"],
    Saved => ["Saved.", "Gespeichert.", "Enregistré.", "Guardado."],
    Settings => ["Settings", "Einstellungen", "Paramètres", "Ajustes"],
    OperatorOnly => [
        "Only the operator can change these.",
        "Nur der Betreiber kann dies ändern.",
        "Seul l'opérateur peut modifier ceci.",
        "Solo el operador puede cambiar esto."
    ],
    Integrations => ["Integrations", "Integrationen", "Intégrations", "Integraciones"],
    NoIntegrations => ["No integrations yet.", "Noch keine Integrationen.", "Aucune intégration pour l'instant.", "Todavía no hay integraciones."],
    NewIntegration => ["New integration", "Neue Integration", "Nouvelle intégration", "Nueva integración"],
    Provider => ["Provider", "Anbieter", "Fournisseur", "Proveedor"],
    GenericOauth => ["Other OAuth 2.0 service", "Anderer OAuth-2.0-Dienst", "Autre service OAuth 2.0", "Otro servicio OAuth 2.0"],
    ApiKeys => ["API keys", "API-Schlüssel", "Clés d'API", "Claves de API"],
    Role => ["Role", "Rolle", "Rôle", "Rol"],
    RoleRuntime => ["runtime (sessions and tokens)", "Laufzeit (Sitzungen und Token)", "exécution (sessions et jetons)", "ejecución (sesiones y tokens)"],
    RoleAdmin => ["admin (configuration)", "Admin (Konfiguration)", "administration (configuration)", "administración (configuración)"],
    Revoke => ["Revoke", "Widerrufen", "Révoquer", "Revocar"],
    Revoked => ["Revoked.", "Widerrufen.", "Révoqué.", "Revocado."],
    ShownOnce => [
        "Copy it now: it is shown only this once.",
        "Kopieren Sie ihn jetzt: Er wird nur dieses eine Mal angezeigt.",
        "Copiez-la maintenant : elle n'est affichée qu'une seule fois.",
        "Cópiela ahora: solo se muestra esta vez."
    ],
    NewKey => ["New API key", "Neuer API-Schlüssel", "Nouvelle clé d'API", "Nueva clave de API"],
    WebhookSecrets => ["Webhook secrets", "Webhook-Geheimnisse", "Secrets de webhook", "Secretos de webhook"],
    NewSecret => ["New webhook secret", "Neues Webhook-Geheimnis", "Nouveau secret de webhook", "Nuevo secreto de webhook"],
    Retire => ["Retire", "Außer Dienst stellen", "Retirer", "Retirar"],
    Retired => ["Retired.", "Außer Dienst gestellt.", "Retiré.", "Retirado."],
    Channels => ["Channels", "Kanäle", "Canaux", "Canales"],
    NoChannels => [
        "No channels. Configure them with PUT /v1/bots/{bot}/channels/{name}.",
        "Keine Kanäle. Richten Sie sie mit PUT /v1/bots/{bot}/channels/{name} ein.",
        "Aucun canal. Configurez-les avec PUT /v1/bots/{bot}/channels/{name}.",
        "No hay canales. Configúrelos con PUT /v1/bots/{bot}/channels/{name}."
    ],
    Actions => ["Actions", "Aktionen", "Actions", "Acciones"],
    Delete => ["Delete", "Löschen", "Supprimer", "Eliminar"],
    Deleted => ["Deleted.", "Gelöscht.", "Supprimé.", "Eliminado."],
    Sessions => ["Recent sessions", "Letzte Sitzungen", "Sessions récentes", "Sesiones recientes"],
    NoSessions => ["No sessions yet.", "Noch keine Sitzungen.", "Aucune session pour l'instant.", "Todavía no hay sesiones."],
    Status => ["Status", "Status", "Statut", "Estado"],
    User => ["User", "Benutzer", "Utilisateur", "Usuario"],
    Created => ["Created", "Angelegt", "Créé", "Creado"],
    Delivery => ["Delivery", "Zustellung", "Remise", "Entrega"],
    DeadLetters => ["Dead letters", "Unzustellbare Ereignisse", "Événements non remis", "Eventos no entregados"],
    NoDeadLetters => ["No dead letters.", "Keine unzustellbaren Ereignisse.", "Aucun événement non remis.", "No hay eventos no entregados."],
    Event => ["Event", "Ereignis", "Événement", "Evento"],
    LastError => ["Last error", "Letzter Fehler", "Dernière erreur", "Último error"],
    Replay => ["Replay", "Erneut senden", "Renvoyer", "Reenviar"],
    Replayed => ["Queued again.", "Erneut eingereiht.", "Remis en file.", "Puesto de nuevo en cola."],
    Connections => ["Connections", "Verbindungen", "Connexions", "Conexiones"],
    NoConnections => ["Nobody is connected.", "Niemand ist verbunden.", "Personne n'est connecté.", "Nadie está conectado."],
    Identity => ["Identity", "Identität", "Identité", "Identidad"],
    Refreshed => ["Last refresh", "Letzte Erneuerung", "Dernier renouvellement", "Última renovación"],
    Test => ["Test", "Testen", "Tester", "Probar"],
    TestOk => ["The connection works.", "Die Verbindung funktioniert.", "La connexion fonctionne.", "La conexión funciona."],
    TestFailed => ["The connection does not work: {why}", "Die Verbindung funktioniert nicht: {why}", "La connexion ne fonctionne pas : {why}", "La conexión no funciona: {why}"],
    Disconnect => ["Disconnect", "Trennen", "Déconnecter", "Desconectar"],
    Disconnected => ["Disconnected.", "Getrennt.", "Déconnecté.", "Desconectado."],
    WhoAuthorizes => ["Who authorizes", "Wer autorisiert", "Qui autorise", "Quién autoriza"],
    ModeUser => [
        "Allow users to authorize the integration",
        "Benutzer die Integration autorisieren lassen",
        "Laisser les utilisateurs autoriser l'intégration",
        "Permitir que los usuarios autoricen la integración"
    ],
    ModePre => ["Pre-authorize the integration", "Integration vorab autorisieren", "Pré-autoriser l'intégration", "Preautorizar la integración"],
    MeansUser => [
        "Each user gets a sign-in link and acts as themselves.",
        "Jeder Benutzer erhält einen Anmeldelink und handelt als er selbst.",
        "Chaque utilisateur reçoit un lien de connexion et agit en son nom.",
        "Cada usuario recibe un enlace de inicio de sesión y actúa en su propio nombre."
    ],
    MeansPre => [
        "Every user acts as {who}.",
        "Jeder Benutzer handelt als {who}.",
        "Chaque utilisateur agit en tant que {who}.",
        "Cada usuario actúa como {who}."
    ],
    MeansPreNobody => [
        "Nobody has authorized yet: press Authorize and sign in; every user will then act as that account.",
        "Noch hat niemand autorisiert: Drücken Sie Autorisieren und melden Sie sich an; jeder Benutzer handelt dann als dieses Konto.",
        "Personne n'a encore autorisé : appuyez sur Autoriser et connectez-vous ; chaque utilisateur agira alors en tant que ce compte.",
        "Nadie ha autorizado aún: pulse Autorizar e inicie sesión; cada usuario actuará entonces como esa cuenta."
    ],
    WhichApp => ["OAuth app", "OAuth-App", "Application OAuth", "Aplicación OAuth"],
    AppSystem => ["OAuth – System", "OAuth – System", "OAuth – Système", "OAuth – Sistema"],
    AppCustom => ["OAuth – Custom", "OAuth – Eigene", "OAuth – Personnalisée", "OAuth – Personalizada"],
    SystemMeans => [
        "The operator's own app for this provider.",
        "Die eigene App des Betreibers für diesen Anbieter.",
        "L'application de l'opérateur pour ce fournisseur.",
        "La aplicación del operador para este proveedor."
    ],
    Profile => ["Authorization profile", "Autorisierungsprofil", "Profil d'autorisation", "Perfil de autorización"],
    NoProfiles => [
        "No authorization profiles yet: create one below.",
        "Noch keine Autorisierungsprofile: Legen Sie unten eines an.",
        "Aucun profil d'autorisation : créez-en un ci-dessous.",
        "Todavía no hay perfiles de autorización: cree uno abajo."
    ],
    Scopes => ["Scopes (space-separated)", "Scopes (durch Leerzeichen getrennt)", "Portées (séparées par des espaces)", "Ámbitos (separados por espacios)"],
    NewProfile => ["Create new authorization profile", "Neues Autorisierungsprofil anlegen", "Créer un profil d'autorisation", "Crear un perfil de autorización"],
    ClientId => ["Client Id", "Client-ID", "Identifiant client", "Id de cliente"],
    ClientSecret => ["Client Secret", "Client-Geheimnis", "Secret client", "Secreto de cliente"],
    AuthUrl => ["Authorization URL", "Autorisierungs-URL", "URL d'autorisation", "URL de autorización"],
    TokenUrl => ["Token URL", "Token-URL", "URL du jeton", "URL del token"],
    RefreshUrl => ["Refresh Token URL", "Refresh-Token-URL", "URL de renouvellement", "URL de renovación del token"],
    CallbackUrl => [
        "Callback URL to register at the provider",
        "Beim Anbieter zu registrierende Callback-URL",
        "URL de rappel à enregistrer chez le fournisseur",
        "URL de retorno que debe registrar en el proveedor"
    ],
    Copy => ["Copy", "Kopieren", "Copier", "Copiar"],
    Authorize => ["Authorize", "Autorisieren", "Autoriser", "Autorizar"],
    AuthorizeHelp => [
        "Signs you in at the provider in this browser and stores the grant every conversation uses.",
        "Meldet Sie in diesem Browser beim Anbieter an und speichert die Berechtigung, die jede Unterhaltung nutzt.",
        "Vous connecte chez le fournisseur dans ce navigateur et enregistre l'autorisation utilisée par chaque conversation.",
        "Inicia su sesión en el proveedor en este navegador y guarda la autorización que usa cada conversación."
    ],
    SignedInAs => ["Signed in as {who}.", "Angemeldet als {who}.", "Connecté en tant que {who}.", "Sesión iniciada como {who}."],
    Enabled => ["Enabled", "Aktiviert", "Activée", "Activada"],
    Disabled => [
        "Disabled: no new links or tokens are given out.",
        "Deaktiviert: Es werden keine neuen Links oder Token ausgegeben.",
        "Désactivée : aucun nouveau lien ni jeton n'est délivré.",
        "Desactivada: no se entregan nuevos enlaces ni tokens."
    ],
    Enable => ["Enable", "Aktivieren", "Activer", "Activar"],
    TryIt => ["Try it: a sign-in link", "Ausprobieren: ein Anmeldelink", "Essayer : un lien de connexion", "Probar: un enlace de inicio de sesión"],
    TryItHelp => [
        "Creates a session for this user id, as the dialog engine would, and shows its link. Open it to sign in.",
        "Legt für diese Benutzer-ID eine Sitzung an, wie es die Dialog-Engine täte, und zeigt ihren Link. Öffnen Sie ihn, um sich anzumelden.",
        "Crée une session pour cet identifiant d'utilisateur, comme le ferait le moteur de dialogue, et affiche son lien. Ouvrez-le pour vous connecter.",
        "Crea una sesión para este id de usuario, como lo haría el motor de diálogo, y muestra su enlace. Ábralo para iniciar sesión."
    ],
    UserId => ["User id", "Benutzer-ID", "Identifiant d'utilisateur", "Id de usuario"],
    CreateLink => ["Create link", "Link anlegen", "Créer le lien", "Crear enlace"],
    LinkReady => ["The link:", "Der Link:", "Le lien :", "El enlace:"],
    DisplayName => [
        "Display name (what people see)",
        "Anzeigename (was Personen sehen)",
        "Nom affiché (ce que voient les personnes)",
        "Nombre visible (lo que ven las personas)"
    ],
    Disable => ["Disable", "Deaktivieren", "Désactiver", "Desactivar"],
    Back => ["Back to the bot", "Zurück zum Bot", "Retour au bot", "Volver al bot"],
    NotFound => ["Not found.", "Nicht gefunden.", "Introuvable.", "No encontrado."],
    Unavailable => [
        "The store is unavailable; try again shortly.",
        "Der Speicher ist nicht erreichbar; versuchen Sie es gleich noch einmal.",
        "Le stockage est indisponible ; réessayez dans un instant.",
        "El almacén no está disponible; inténtelo de nuevo en breve."
    ],
}
