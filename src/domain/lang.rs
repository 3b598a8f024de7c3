//! The languages people are addressed in (pages and chat messages): English, German, French,
//! Spanish; English otherwise.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
    Fr,
    Es,
}

impl Lang {
    /// The first supported language among `tags` (BCP 47, e.g. `fr-CA`), else English.
    pub fn first_of<'a>(tags: impl IntoIterator<Item = &'a str>) -> Lang {
        tags.into_iter()
            .find_map(
                |tag| match tag.get(..2).map(str::to_ascii_lowercase).as_deref() {
                    Some("en") => Some(Lang::En),
                    Some("de") => Some(Lang::De),
                    Some("fr") => Some(Lang::Fr),
                    Some("es") => Some(Lang::Es),
                    _ => None,
                },
            )
            .unwrap_or(Lang::En)
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Fr => "fr",
            Lang::Es => "es",
        }
    }
}
