//! Which folder a credential watches: a name, or a special use (RFC 6154)
//! the server marks a folder with.
//!
//! Its own module because three layers name it without depending on each
//! other: the credential (what to watch), the mail (where it came from)
//! and the filter (which folders a subscriber wants). A plain value; it
//! depends only on the protocol's [`SpecialUse`].

use std::fmt;

use crate::proto::SpecialUse;

/// A folder a credential watches: by name, or by the special use the
/// server marks it with (RFC 6154). Made from a `&str`/`String` (a name)
/// or a [`SpecialUse`], so [`Credential::also_watch`](crate::Credential::also_watch) takes either.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Folder {
    /// The folder of this name (`INBOX` is case-insensitive).
    Named(String),
    /// The first selectable folder listed with this special-use attribute.
    SpecialUse(SpecialUse),
}

impl Folder {
    /// The folder with `INBOX` normalised, so that equal folders compare
    /// equal.
    pub(crate) fn normal(&self) -> Folder {
        match self {
            Folder::Named(n) => Folder::Named(normal_mailbox(n)),
            Folder::SpecialUse(u) => Folder::SpecialUse(*u),
        }
    }
}

impl fmt::Display for Folder {
    /// The name, or the attribute (`\Junk`) of a special use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Folder::Named(n) => f.write_str(n),
            Folder::SpecialUse(u) => f.write_str(u.attribute()),
        }
    }
}

impl From<&str> for Folder {
    fn from(name: &str) -> Self {
        Folder::Named(name.to_owned())
    }
}

impl From<String> for Folder {
    fn from(name: String) -> Self {
        Folder::Named(name)
    }
}

impl From<SpecialUse> for Folder {
    fn from(u: SpecialUse) -> Self {
        Folder::SpecialUse(u)
    }
}

/// A folder as people write it in a configuration file or on a command
/// line: `\Junk` (an RFC 6154 attribute, any case) is that special use;
/// anything else is a folder name. A name that starts with a backslash but
/// is no special use is refused rather than taken for a folder of that
/// name: it is far more likely a misspelt attribute (`\Spam`) than a
/// mailbox, and a watch of a folder that never exists would never say so.
///
/// ```
/// use emap::{Folder, SpecialUse};
/// assert_eq!("\\junk".parse::<Folder>().unwrap(), Folder::SpecialUse(SpecialUse::Junk));
/// assert_eq!("Notifications".parse::<Folder>().unwrap(), Folder::Named("Notifications".into()));
/// assert!("\\Spam".parse::<Folder>().is_err());
/// assert!("".parse::<Folder>().is_err());
/// ```
impl std::str::FromStr for Folder {
    type Err = crate::Error;

    fn from_str(text: &str) -> Result<Folder, crate::Error> {
        if text.is_empty() {
            return Err(crate::Error::InvalidConfig("a folder name is empty".into()));
        }
        if text.starts_with('\\') {
            return SpecialUse::from_attribute(text)
                .map(Folder::SpecialUse)
                .ok_or_else(|| {
                    let known: Vec<&str> = SpecialUse::ALL.iter().map(|u| u.attribute()).collect();
                    crate::Error::InvalidConfig(format!(
                        "unknown special use {text:?} (one of {})",
                        known.join(", ")
                    ))
                });
        }
        Ok(Folder::Named(text.to_owned()))
    }
}

/// `INBOX` is case-insensitive (RFC 3501 §5.1); every other name is kept.
pub(crate) fn normal_mailbox(mailbox: &str) -> String {
    if mailbox.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_owned()
    } else {
        mailbox.to_owned()
    }
}
