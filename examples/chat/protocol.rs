//! The chat's text protocol: one line per WebSocket text message.
//!
//! ```text
//! client → server   join <room> <name>     the first message; later ones are chat text
//!                   <anything>             a chat message (any text, newlines included)
//! server → client   members <name>...      to a new member: who was already there
//!                   joined <name>          someone joined your room (with several
//!                                          reactors, maybe someone `members` named:
//!                                          keep the members as a set)
//!                   left <name>            someone left it
//!                   msg <name> <text>      someone said <text>
//!                   error <why>            your join was refused, or you read too slowly
//!                                          for your room (the server then closes)
//! ```
//!
//! Room and member names are 1 to [`MAX_NAME_LEN`] bytes of letters, digits and ASCII
//! punctuation (so no spaces).

/// The longest room or member name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 32;

/// The `join` a new session must send first: the room and the name it asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Join<'a> {
    pub(crate) room: &'a str,
    pub(crate) name: &'a str,
}

/// Reads `join <room> <name>`, or says what is wrong with it.
pub(crate) fn parse_join(line: &str) -> Result<Join<'_>, &'static str> {
    let mut words = line.split(' ');
    if words.next() != Some("join") {
        return Err("the first message must be: join <room> <name>");
    }
    let (Some(room), Some(name), None) = (words.next(), words.next(), words.next()) else {
        return Err("join takes a room and a name: join <room> <name>");
    };
    if !is_name(room) || !is_name(name) {
        return Err("room and name: 1 to 32 bytes of letters, digits and punctuation");
    }
    Ok(Join { room, name })
}

fn is_name(word: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&word.len())
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || c.is_ascii_punctuation())
}

pub(crate) fn members<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.fold(String::from("members"), |mut line, name| {
        line.push(' ');
        line.push_str(name);
        line
    })
}

pub(crate) fn joined(name: &str) -> String {
    format!("joined {name}")
}

pub(crate) fn left(name: &str) -> String {
    format!("left {name}")
}

pub(crate) fn said(name: &str, text: &str) -> String {
    format!("msg {name} {text}")
}

pub(crate) fn error(why: &str) -> String {
    format!("error {why}")
}
