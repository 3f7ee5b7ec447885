//! Access (SPEC §6): bearer tokens from a tokens file, each limited to namespaces. The file holds
//! only SHA-256 digests of tokens; a presented token is hashed and compared in constant time. The
//! file can be reloaded (SIGHUP) without dropping connections: calls see the new tokens at once.
//! Authentication happens before a call is decoded (interceptor); the namespace check after,
//! because the namespace is inside the message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::domain::check_name;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// Shown in logs and traces, never the token.
    name: String,
    /// Hex SHA-256 of the bearer token.
    sha256: String,
    /// Namespaces the token may use; `"*"` for all.
    namespaces: Vec<String>,
}

/// Who is calling: the name of the token that authenticated the call, and what it may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Only(BTreeSet<String>),
}

impl Caller {
    pub fn may_access(&self, namespace: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Only(namespaces) => namespaces.contains(namespace),
        }
    }

    /// True for a token that covers every namespace (`"*"`).
    pub fn covers_all(&self) -> bool {
        self.scope == Scope::All
    }
}

/// Why a call was refused before it reached the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `authorization: Bearer <token>` metadata")]
    Missing,
    #[error("unknown bearer token")]
    Unknown,
}

/// A call whose token does not cover what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token {caller:?} does not cover {what}")]
pub struct AccessDenied {
    pub caller: String,
    pub what: String,
}

/// One loaded tokens file.
#[derive(Debug)]
struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut digest).ok()?;
    Some(digest)
}

impl Tokens {
    fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| {
            format!(
                "tokens file {}: {}",
                path.display(),
                e.message().trim().replace('\n', " ")
            )
        })?;
        // An empty set would refuse every call: almost always a truncated or half-written file.
        if file.tokens.is_empty() {
            return Err(format!(
                "tokens file {}: lists no tokens, so every call would be refused; add a [[tokens]] entry, or \
                 run without --auth-tokens to require none",
                path.display()
            ));
        }
        let mut entries = Vec::with_capacity(file.tokens.len());
        let mut names = BTreeSet::new();
        for (index, token) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens file {}: token {} ({:?})", path.display(), index + 1, token.name);
            if token.name.trim().is_empty() {
                return Err(format!("{at}: name must not be empty"));
            }
            if !names.insert(token.name.clone()) {
                return Err(format!("{at}: name is used twice"));
            }
            let digest = parse_hex_digest(&token.sha256)
                .ok_or_else(|| format!("{at}: sha256 must be 64 hex digits (the SHA-256 of the token)"))?;
            if token.namespaces.is_empty() {
                return Err(format!("{at}: namespaces must list at least one namespace or \"*\""));
            }
            let scope = if token.namespaces.iter().any(|n| n == "*") {
                Scope::All
            } else {
                for namespace in &token.namespaces {
                    check_name("namespace", namespace)
                        .map_err(|e| format!("{at}: namespace {namespace:?} {}", e.problem))?;
                }
                Scope::Only(token.namespaces.into_iter().collect())
            };
            entries.push((
                digest,
                Caller {
                    name: token.name.into(),
                    scope,
                },
            ));
        }
        Ok(Tokens { entries })
    }

    fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every entry, so the time does not say which one matched.
        let mut found = None;
        for (digest, caller) in &self.entries {
            // Equal in time independent of where the digests differ.
            if bool::from(digest.ct_eq(&presented)) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// The tokens in force, reloadable.
#[derive(Debug, Clone)]
pub struct Authenticator {
    path: PathBuf,
    current: Arc<RwLock<Arc<Tokens>>>,
}

impl Authenticator {
    /// Loads the tokens file; the error is one line naming the file and the problem.
    pub fn load(path: &Path) -> Result<Authenticator, String> {
        let tokens = Tokens::load(path)?;
        Ok(Authenticator {
            path: path.to_owned(),
            current: Arc::new(RwLock::new(Arc::new(tokens))),
        })
    }

    /// The tokens file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; on error (an empty one included) the previous tokens stay in force.
    /// Returns the token count.
    pub fn reload(&self) -> Result<usize, String> {
        let tokens = Tokens::load(&self.path)?;
        let count = tokens.entries.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
        Ok(count)
    }

    /// Authenticates a call from its `authorization: Bearer <token>` metadata.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let tokens = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        tokens.authenticate(token).ok_or(AuthError::Unknown)
    }
}

/// The hex SHA-256 of a token, as the tokens file wants it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn tokens_file() -> tempfile::NamedTempFile {
        file(&format!(
            "[[tokens]]\nname = \"acme-prod\"\nsha256 = \"{}\"\nnamespaces = [\"acme\"]\n\n\
             [[tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nnamespaces = [\"*\"]\n",
            token_digest("s3cret-acme"),
            token_digest("s3cret-ops")
        ))
    }

    #[test]
    fn a_known_token_authenticates_with_its_name_and_namespaces() {
        let f = tokens_file();
        let auth = Authenticator::load(f.path()).unwrap();
        let acme = auth.authenticate(&metadata("Bearer s3cret-acme")).unwrap();
        assert_eq!(&*acme.name, "acme-prod");
        assert!(acme.may_access("acme") && !acme.may_access("globex") && !acme.covers_all());
        let ops = auth.authenticate(&metadata("Bearer s3cret-ops")).unwrap();
        assert!(ops.covers_all() && ops.may_access("anything"));
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused() {
        let f = tokens_file();
        let auth = Authenticator::load(f.path()).unwrap();
        assert_eq!(auth.authenticate(&MetadataMap::new()), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(&metadata("Basic abc")), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(&metadata("Bearer ")), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(&metadata("Bearer s3cret-acmE")),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn a_reload_replaces_the_tokens_and_a_bad_file_keeps_the_old_ones() {
        let f = tokens_file();
        let auth = Authenticator::load(f.path()).unwrap();
        std::fs::write(
            f.path(),
            format!(
                "[[tokens]]\nname = \"new\"\nsha256 = \"{}\"\nnamespaces = [\"acme\"]\n",
                token_digest("fresh")
            ),
        )
        .unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(auth.authenticate(&metadata("Bearer s3cret-acme")).is_err());
        assert!(auth.authenticate(&metadata("Bearer fresh")).is_ok());
        std::fs::write(f.path(), "[[tokens]]\nname = \"broken\"\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(
            auth.authenticate(&metadata("Bearer fresh")).is_ok(),
            "the previous tokens stay"
        );
        for empty in ["", "tokens = []\n"] {
            std::fs::write(f.path(), empty).unwrap();
            let err = auth.reload().unwrap_err();
            assert!(err.contains("lists no tokens"), "{empty:?}: {err}");
            assert!(
                auth.authenticate(&metadata("Bearer fresh")).is_ok(),
                "an empty file keeps the previous tokens"
            );
        }
    }

    #[test]
    fn bad_tokens_files_are_refused_with_one_line() {
        let cases = [
            (
                "[[tokens]]\nname = \"a\"\nsha256 = \"abc\"\nnamespaces = [\"x\"]\n",
                "64 hex digits",
            ),
            (
                "[[tokens]]\nname = \"a\"\nsha256 = \"{d}\"\nnamespaces = []\n",
                "at least one namespace",
            ),
            (
                "[[tokens]]\nname = \"a\"\nsha256 = \"{d}\"\nnamespaces = [\"a b\"]\n",
                "namespace \"a b\"",
            ),
            ("[[tokens]]\nname = \"a\"\ntoken = \"plain\"\n", "unknown field `token`"),
            ("", "lists no tokens"),
            ("tokens = []\n", "lists no tokens"),
            ("# every token was revoked\n", "lists no tokens"),
            (
                "[[tokens]]\nname = \"a\"\nsha256 = \"{d}\"\nnamespaces = [\"x\"]\n[[tokens]]\nname = \"a\"\nsha256 = \"{d}\"\nnamespaces = [\"y\"]\n",
                "used twice",
            ),
        ];
        for (text, expected) in cases {
            let f = file(&text.replace("{d}", &token_digest("t")));
            let err = Authenticator::load(f.path()).unwrap_err();
            assert!(err.contains(expected) && !err.contains('\n'), "{text:?}: {err}");
        }
    }
}
