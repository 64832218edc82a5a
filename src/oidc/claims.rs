//! From verified claims to an identity: name, email, groups and the claims kept for notebooks.

use serde_json::{Map, Value};

use super::config::ClaimNames;
use crate::User;

/// Who signed in, as the provider vouches for it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Identity {
    /// The provider's stable id for the user (`sub`): unique per issuer, never reassigned.
    pub(crate) subject: String,
    /// The display name: the first configured name claim that is a non-empty string, else
    /// `sub`.
    pub(crate) name: String,
    /// The email address, unless the provider marks it `email_verified: false`.
    pub(crate) email: Option<String>,
    /// The groups of every configured group claim, in order, without repeats.
    pub(crate) groups: Vec<String>,
    /// The configured extra claims that are present, verbatim.
    pub(crate) claims: Map<String, Value>,
}

/// The user a verified identity signs in as: its name, email, groups and kept claims.
impl From<Identity> for User {
    fn from(identity: Identity) -> Self {
        User::new(identity.name)
            .with_email(identity.email.unwrap_or_default())
            .with_groups(identity.groups)
            .with_claims(identity.claims)
    }
}

impl Identity {
    /// Reads the identity out of `claims` (the ID token's, with userinfo's merged in).
    pub(super) fn from_claims(claims: &Map<String, Value>, names: &ClaimNames) -> Self {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = names
            .name
            .iter()
            .filter_map(|name| lookup(claims, name)?.as_str())
            .find(|name| !name.is_empty())
            .unwrap_or(&subject)
            .to_owned();
        let verified = claims.get("email_verified").and_then(verified_flag);
        let email = lookup(claims, &names.email)
            .and_then(Value::as_str)
            .filter(|email| !email.is_empty() && verified != Some(false))
            .map(str::to_owned);
        let mut groups: Vec<String> = Vec::new();
        for value in names.groups.iter().filter_map(|name| lookup(claims, name)) {
            let found: Vec<&str> = match value {
                Value::String(group) => vec![group.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for group in found {
                if !group.is_empty() && !groups.iter().any(|have| have == group) {
                    groups.push(group.to_owned());
                }
            }
        }
        let claims = names
            .extra
            .iter()
            .filter_map(|name| Some((name.clone(), lookup(claims, name)?.clone())))
            .collect();
        Self {
            subject,
            name,
            email,
            groups,
            claims,
        }
    }
}

/// A claim by name: the top-level claim of that exact name (Auth0-style names such as
/// `https://example.com/groups` contain dots), else a dotted path into nested objects
/// (Keycloak's `realm_access.roles`).
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// `email_verified` as a boolean; some providers send the string `"true"`/`"false"`.
fn verified_flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// Merges userinfo claims into the ID token's: the signed ID token wins where both have a
/// claim; userinfo fills in what the ID token left out (many providers put only `sub` there).
pub(super) fn merge(id_token: &mut Map<String, Value>, userinfo: Map<String, Value>) {
    for (name, value) in userinfo {
        id_token.entry(name).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn name_email_and_groups_with_the_defaults() {
        let identity = Identity::from_claims(
            &claims(json!({
                "sub": "u-1", "preferred_username": "ada", "name": "Ada Lovelace",
                "email": "ada@example.com", "email_verified": true,
                "groups": ["analysts", "admins", "analysts", 7, ""],
            })),
            &ClaimNames::default(),
        );
        assert_eq!(identity.subject, "u-1");
        assert_eq!(identity.name, "ada");
        assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
        assert_eq!(identity.groups, ["analysts", "admins"]);
        assert!(identity.claims.is_empty());
    }

    #[test]
    fn name_falls_back_and_unverified_email_is_dropped() {
        let names = ClaimNames::default();
        let identity = Identity::from_claims(
            &claims(
                json!({"sub": "u-1", "preferred_username": "", "name": "Ada",
                           "email": "ada@example.com", "email_verified": "false"}),
            ),
            &names,
        );
        assert_eq!(identity.name, "Ada");
        assert_eq!(identity.email, None);
        assert!(identity.groups.is_empty());
        let bare = Identity::from_claims(&claims(json!({"sub": "u-2"})), &names);
        assert_eq!(bare.name, "u-2");
    }

    #[test]
    fn configured_group_claims_accept_strings_arrays_and_paths() {
        let names = ClaimNames {
            groups: vec![
                "roles".into(),
                "https://example.com/groups".into(),
                "realm_access.roles".into(),
                "missing.path".into(),
            ],
            extra: vec![
                "department".into(),
                "realm_access.roles".into(),
                "nope".into(),
            ],
            ..ClaimNames::default()
        };
        let identity = Identity::from_claims(
            &claims(json!({
                "sub": "u", "roles": "editor",
                "https://example.com/groups": ["a", "editor"],
                "realm_access": {"roles": ["kc-admin"]},
                "department": {"id": 7},
            })),
            &names,
        );
        assert_eq!(identity.groups, ["editor", "a", "kc-admin"]);
        assert_eq!(
            Value::Object(identity.claims),
            json!({"department": {"id": 7}, "realm_access.roles": ["kc-admin"]})
        );
    }

    #[test]
    fn the_id_token_wins_over_userinfo() {
        let mut merged = claims(json!({"sub": "u", "name": "from token"}));
        merge(
            &mut merged,
            claims(json!({"sub": "u", "name": "from userinfo", "email": "e@x"})),
        );
        assert_eq!(
            Value::Object(merged),
            json!({"sub": "u", "name": "from token", "email": "e@x"})
        );
    }
}
