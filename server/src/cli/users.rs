//! `server users add|remove|list|passwd`: the accounts of the user file.
//!
//! A password is typed twice at a terminal, without echo, or comes from the
//! first line of standard input with `--password-stdin` (for scripts). With
//! neither a terminal nor that flag the command refuses rather than wait for
//! input nobody will type. A running server sees every change at its next
//! login or refresh; removing an account or changing its password revokes
//! its refresh tokens (access tokens already issued live out their minutes).

use std::io::{BufRead as _, IsTerminal as _, Read as _};

use anyhow::bail;
use clap::Subcommand;

use crate::accounts::password;
use crate::accounts::store::{StoreError, User, UserStore, check_name};
use crate::config::Config;
use crate::session::auth::now_secs;

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Add an account.
    Add {
        /// The user name (1 to 64 of A-Z a-z 0-9 . _ @ -); the `sub` of its tokens.
        name: String,
        /// Give the account this role (repeatable; `admin` opens /admin).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account; its refresh tokens stop working.
    Remove { name: String },
    /// List the accounts: name, roles, when created.
    List,
    /// Set an account's password; its refresh tokens stop working.
    Passwd {
        name: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub fn run(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let store = UserStore::new(&config.users_file);
    match command {
        UsersCommand::Add {
            name,
            roles,
            password_stdin,
        } => {
            check_name("user name", &name)?;
            for role in &roles {
                check_name("role", role)?;
            }
            // Before the password is asked for, so nobody types one in vain.
            if store.load()?.get(&name).is_some() {
                return Err(StoreError::UserExists(name).into());
            }
            let password_hash = password::hash(&read_password(&name, password_stdin)?)?;
            let shown_roles = roles.join(", ");
            store.add(User {
                name: name.clone(),
                password_hash,
                roles,
                created_at: now_secs(),
            })?;
            match shown_roles.as_str() {
                "" => println!("added {name}"),
                roles => println!("added {name} (roles: {roles})"),
            }
        }
        UsersCommand::Remove { name } => {
            store.remove(&name)?;
            println!("removed {name}; its refresh tokens are revoked");
        }
        UsersCommand::List => list(&store)?,
        UsersCommand::Passwd { name, password_stdin } => {
            if store.load()?.get(&name).is_none() {
                return Err(StoreError::NoSuchUser(name).into());
            }
            let password_hash = password::hash(&read_password(&name, password_stdin)?)?;
            store.set_password(&name, password_hash)?;
            println!("changed the password of {name}; its refresh tokens are revoked");
        }
    }
    Ok(())
}

fn list(store: &UserStore) -> anyhow::Result<()> {
    let users = store.load()?;
    if users.is_empty() {
        println!(
            "no accounts in {}; add one with `server users add <name>`",
            store.path().display()
        );
        return Ok(());
    }
    let width = users.iter().map(|u| u.name.len()).max().unwrap_or(0).max(4);
    let roles: Vec<String> = users.iter().map(|u| u.roles.join(",")).collect();
    let roles_width = roles.iter().map(String::len).max().unwrap_or(0).max(5);
    println!("{:width$}  {:roles_width$}  CREATED", "NAME", "ROLES");
    for (user, roles) in users.iter().zip(&roles) {
        println!("{:width$}  {roles:roles_width$}  {}", user.name, utc(user.created_at));
    }
    Ok(())
}

/// Unix seconds as `2026-01-01T00:00:00Z`.
fn utc(secs: u64) -> String {
    match i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => secs.to_string(),
    }
}

/// The new password: from standard input's first line, or typed twice.
fn read_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        // One byte more than allowed (and the line end) is enough to say "too long".
        let limit = password::MAX_BYTES as u64 + 3;
        std::io::stdin().lock().take(limit).read_line(&mut line)?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        password::check(password)?;
        return Ok(password.to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!("standard input is not a terminal, so no password can be typed: pipe it in with --password-stdin");
    }
    let first = rpassword::prompt_password(format!("new password for {name}: "))?;
    password::check(&first)?;
    let again = rpassword::prompt_password("the same again: ")?;
    if first != again {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_show_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_767_225_600), "2026-01-01T00:00:00Z");
    }
}
